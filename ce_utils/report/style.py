"""Matplotlib set up the same for every figure, and the helpers the figures share."""

from __future__ import annotations

import math

import matplotlib
import matplotlib.pyplot as plt


def setup_matplotlib():
    """Fixed rcParams (figures deterministic byte for byte), the Agg backend unless one is forced."""
    matplotlib.use("Agg", force=False)
    plt.rcdefaults()
    plt.rcParams.update({
        "svg.hashsalt": "ce-embeddings", "pdf.compression": 6, "path.simplify": True,
        "font.size": 9, "axes.titlesize": 9, "legend.fontsize": 7, "figure.dpi": 100,
        "axes.grid": True, "grid.alpha": 0.3, "savefig.bbox": "standard",
    })
    return plt


def grid(plt, n: int, width: float = 3.4, height: float = 2.8, ncols: int | None = None):
    """``n`` panels in rows of ``ncols`` (at most 3), the unused ones hidden: (figure, list of axes)."""
    ncols = ncols or min(n, 3)
    nrows = int(math.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]
