"""Matplotlib set up the same for every figure, one colour per system across all figures, and the helpers the
figures share (panels in constrained layout, legends outside the data, reference lines)."""

from __future__ import annotations

import math
import re
import zlib

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from ce_utils.core.io import QUERIES_ONLY

# One colour per retrieval system, in every figure: the cross encoder blue, the full DE (paper 1's DE, paper 2's
# teacher) near-black, the DE fine-tuned on the CE's data green, DE-k CE students in cyan and orange shades,
# query students in reds, pinks and purples. A system not named here gets a stable colour from FALLBACK by its name.
CE, FULL_DE = "#1f77b4", "#303030"
SYSTEM_COLORS = {
    "ce": CE, "de": FULL_DE, "full de": FULL_DE, "teacher": FULL_DE, "teacher (full de)": FULL_DE,
    "de-ft": "#2ca02c", "judge": "#9467bd",
    "de-2 ce": "#17becf", "de-3 ce": "#0e7c86", "de-4 ce": "#7fd6de", "de-2 ce+top": "#ff7f0e",
    "de-2 ce (mnrl)": "#bcbd22", "de-2 de": "#8c564b", "de-2 random": "#9a9a9a",
    "l0_5": "#d62728", "l0_11": "#d62728", "l0_1_5": "#e377c2", "l0_1_10_11": "#e377c2", "l1_5": "#ff9896",
    "l0": "#c5b0d5", "l5": "#f7b6d2",
}
FALLBACK = ["#843c39", "#7b4173", "#756bb1", "#de9ed6", "#ad494a", "#a55194", "#bd9e39", "#e7969c", "#dbdb8d",
            "#9c9ede", "#ce6dbd"]   # reds, purples and ochres, away from the named systems' colours
PAPER_COLORS = ("#b0b0b0", "#dcdcdc")  # published numbers: grey bars beside ours (coloured by system)
REFERENCE = {"color": "k", "ls": "--", "lw": 0.8}


def system_key(name) -> str:
    """The system a label names: without the queries-only suffix, a backend (``[onnx]``, ``@onnx``), a
    ``[non-working CE]`` mark, the ``vs DE`` of a control, the ``(pair)`` / ``(self-pair)`` of a CE timing or
    the ``query-student`` prefix; lower case. ``DE-6 full`` and any ``DE-n full`` are the full DE."""
    s = str(name).replace(QUERIES_ONLY, "").strip()
    s = re.sub(r"\s*\[[^\]]*\]$", "", s)
    s = re.sub(r"@[\w-]+$", "", s)
    s = re.sub(r"\s+vs\s+\S+$", "", s, flags=re.I)
    s = re.sub(r"\s*\((self-)?pair\)$", "", s)
    s = re.sub(r"^query-student\s+", "", s).strip().lower()
    if re.fullmatch(r"de-\d+ full", s):
        return "full de"
    return "ce" if s.startswith("trained:ce") else s


def system_color(name) -> str:
    """The colour of a system in every figure (:data:`SYSTEM_COLORS`, else a stable pick from :data:`FALLBACK`)."""
    key = system_key(name)
    return SYSTEM_COLORS.get(key) or FALLBACK[zlib.crc32(key.encode()) % len(FALLBACK)]


def setup_matplotlib():
    """Fixed rcParams (figures deterministic byte for byte), the Agg backend unless one is forced; figures are
    saved with a tight bounding box, so no label is cut off."""
    matplotlib.use("Agg", force=False)
    plt.rcdefaults()
    plt.rcParams.update({
        "svg.hashsalt": "ce-embeddings", "pdf.compression": 6, "path.simplify": True,
        "font.size": 9, "axes.titlesize": 9, "legend.fontsize": 7, "figure.dpi": 100,
        "axes.grid": True, "grid.alpha": 0.3, "savefig.bbox": "tight", "savefig.pad_inches": 0.05,
    })
    return plt


def subplots(plt, nrows: int = 1, ncols: int = 1, width: float = 3.4, height: float = 2.8, **kw):
    """``plt.subplots`` in constrained layout (nothing overlaps, legends outside fit), ``width`` x ``height``
    inches per panel; axes always a 2-d array."""
    return plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, layout="constrained",
                        **kw)


def grid(plt, n: int, width: float = 3.4, height: float = 2.8, ncols: int | None = None):
    """``n`` panels in rows of ``ncols`` (at most 3), the unused ones hidden: (figure, list of axes)."""
    ncols = ncols or min(n, 3)
    fig, axes = subplots(plt, int(math.ceil(n / ncols)), ncols, width, height)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def legend_right(ax, **kw):
    """The axes' legend to its right, outside the data."""
    return ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, **kw)


def legend_above(ax, ncol: int = 3, **kw):
    """The axes' legend above it, outside the data."""
    return ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.01), borderaxespad=0.0, ncol=ncol, **kw)


def figure_legend(fig, axes, **kw):
    """One legend for the whole figure, to the right of every panel: each label once, in order of appearance."""
    seen = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, h)
    return fig.legend(list(seen.values()), list(seen.keys()), loc="outside right center", **kw)


def plain_log_ticks(axis) -> None:
    """Ticks of a log axis at 1, 2 and 5 times the powers of ten, labelled as plain numbers (``200``, not
    ``2 x 10^2``), no minor labels: they never crowd."""
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def wrap_queries_only(name) -> str:
    """A tick label with the queries-only suffix on a line of its own."""
    s = str(name)
    return s.replace(QUERIES_ONLY, "\n" + QUERIES_ONLY.strip()) if s.endswith(QUERIES_ONLY) else s


def minutes_axis(ax, steps, minutes, label: str = "minutes of training (CPU)", ticks: bool = False) -> None:
    """A top axis in minutes for a bottom axis in steps: piecewise linear between the measured points and
    extrapolated linearly beyond them, so that its ticks never pile up at the ends; ``ticks``: one tick at each
    of ``steps`` (for a log axis, whose default ticks would fall elsewhere), labelled with its minutes."""
    s, m = np.asarray(steps, dtype=float), np.asarray(minutes, dtype=float)
    if len(s) < 2 or not (np.diff(s) > 0).all() or not (np.diff(m) > 0).all():
        return
    lo, hi = (m[1] - m[0]) / (s[1] - s[0]), (m[-1] - m[-2]) / (s[-1] - s[-2])

    def forward(x):
        x = np.asarray(x, dtype=float)
        return np.where(x < s[0], m[0] + (x - s[0]) * lo, np.where(x > s[-1], m[-1] + (x - s[-1]) * hi,
                                                                      np.interp(x, s, m)))

    def inverse(y):
        y = np.asarray(y, dtype=float)
        return np.where(y < m[0], s[0] + (y - m[0]) / lo, np.where(y > m[-1], s[-1] + (y - m[-1]) / hi,
                                                                      np.interp(y, m, s)))

    top = ax.secondary_xaxis("top", functions=(forward, inverse))
    top.set_xlabel(label, **({"fontsize": 6} if ticks else {}))
    if ticks:
        top.set_xticks(m, [f"{v:.0f}" if v >= 10 else f"{v:.1f}" for v in m], fontsize=6)
        top.minorticks_off()
