"""Every figure and table, from the committed result CSVs alone (notebook 05).

Reads ``results/<profile>/*.csv`` only -- no model, no data directory -- and writes

* ``figures/<profile>/<name>.png`` and ``.pdf`` (deterministic: fixed rcParams, ``svg.hashsalt``,
  no PDF creation date, so a rerun on unchanged CSVs does not change the files' content),
* ``results/<profile>/tables/<name>.md`` and ``.tex``,
* ``results/<profile>/figures_manifest.json``: for every figure and table, the CSVs it came
  from and their sha256 (a test checks that committed figures are not older than their CSVs).

A CSV that is absent skips its figures with a printed note; a CSV that exists with a wrong
schema raises :class:`SchemaError`.

Joining quality with speed (Pareto plot): by the explicit ``model_id`` every result CSV carries
(``ce_utils.core.io.add_model_ids``): a quality point takes the speed.csv row with the same id, and
a model without a timed row is left out (no guess by name or architecture). The full DE has one
point, whichever CSV it comes from. Pipelines (first stage + CE re-ranking of the top ``depth``)
cost one query encoding plus ``depth`` CE pair scorings per query.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ce_utils.core.config import repo_root
from ce_utils.core.io import LATENCY_METRICS, LATENCY_MS, QUERIES_ONLY, atomic_write_text, eager

SCHEMAS = {
    "layer_probe.csv": ["model", "model_kind", "layer", "dataset", "metric", "value"],
    "ce_quality.csv": ["model", "stage", "dataset", "metric", "value"],
    "layer_probe_extra.csv": ["model", "model_kind", "layer", "dataset", "metric", "value", "ce_works"],
    "ce_quality_extra.csv": ["model", "stage", "dataset", "metric", "value", "encode_dtype", "ce_works"],
    "de2ce.csv": ["model", "init", "n_layers", "dataset", "metric", "value"],
    "pipeline.csv": ["first_stage", "reranker", "depth", "dataset", "metric", "value"],
    "query_distill.csv": ["student", "strategy", "layers", "n_layers", "dataset", "metric", "value"],
    "ce_training.csv": ["model", "model_kind", "step", "minutes", "dev_NDCG@10", "first_stage_NDCG@10", "selected"],
    "peer_check.csv": ["model", "dataset", "metric", "value", "published", "delta", "tolerance", "source"],
    "peer_check_models.csv": ["model", "dataset", "metric", "value", "published", "delta", "tolerance", "source"],
    "speed.csv": ["model", "role", "n_layers", "batch_size", "threads", "device", "dtype", "tokenization",
                  "median_ms", "queries_per_s", "speedup_vs_de", "flop_ratio"],
    "query_distill_curve.csv": ["student", "phase", "step", "minutes", "dataset", "split", "value", "retention"],
    "backend_quality.csv": ["model", "backend", "dataset", "metric", "value", "delta_vs_torch_fp32"],
}
NUMERIC = {"value", "layer", "n_layers", "depth", "batch_size", "threads", "median_ms", "queries_per_s",
           "speedup_vs_de", "flop_ratio", "step", "minutes", "retention"}
DEFAULTS = {"metric": "NDCG@10", "sts_metric": "Spearman", "pareto_batch_size": 1, "pareto_threads": 1,
            "pareto_tokenization": "included", "pareto_datasets": None, "dpi": 150, "paper2_geometry": None}


class SchemaError(ValueError):
    """A result CSV exists but lacks columns (or holds unusable values)."""


# --------------------------------------------------------------------------- reading
def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_result(results_dir: str | Path, name: str, log: Callable = print) -> pd.DataFrame | None:
    """``results_dir/name`` checked against :data:`SCHEMAS`; ``None`` (and a note) when absent."""
    path = Path(results_dir) / name
    if not path.is_file():
        log(f"note: {path.name} not found in {Path(results_dir).name}/ -- its figures are skipped.")
        return None
    df = pd.read_csv(path)
    need = SCHEMAS.get(name, [])
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise SchemaError(f"{path} lacks column(s) {missing}; expected at least {need}. Rerun the notebook "
                          "that writes it, or update ce_utils.report.figures.SCHEMAS if its schema changed.")
    if df.empty:
        raise SchemaError(f"{path} holds no rows.")
    for col in need:
        if col in NUMERIC:
            conv = pd.to_numeric(df[col], errors="coerce")
            bad = conv.isna() & df[col].notna()
            if bad.any():
                raise SchemaError(f"{path}: column {col!r} holds non-numeric values, e.g. {df[col][bad].iloc[0]!r}.")
            df[col] = conv
    return df


def read_results(results_dir: str | Path, log: Callable = print) -> dict[str, pd.DataFrame]:
    out = {}
    for name in SCHEMAS:
        df = read_result(results_dir, name, log=log)
        if df is not None:
            out[name] = df
    return out


# --------------------------------------------------------------------------- determinism
def setup_matplotlib():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    plt.rcdefaults()
    plt.rcParams.update({
        "svg.hashsalt": "ce-embeddings", "pdf.compression": 6, "path.simplify": True,
        "font.size": 9, "axes.titlesize": 9, "legend.fontsize": 7, "figure.dpi": 100,
        "axes.grid": True, "grid.alpha": 0.3, "savefig.bbox": "standard",
    })
    return plt


@dataclass
class Output:
    """Figures and tables written by one :func:`make_all` run, with their sources."""

    figures_dir: Path
    tables_dir: Path
    results_dir: Path
    dpi: int = 150
    manifest: dict = field(default_factory=dict)

    def _rel(self, p: Path) -> str:
        try:
            return str(Path(p).resolve().relative_to(repo_root()))
        except ValueError:  # outside the repository (tests): an absolute path, never committed
            return str(Path(p).resolve())

    def _sources(self, sources: list[str]) -> dict:
        return {s: sha256(self.results_dir / s) for s in sources}

    def figure(self, fig, name: str, sources: list[str]) -> Path:
        import matplotlib.pyplot as plt

        self.figures_dir.mkdir(parents=True, exist_ok=True)
        png = self.figures_dir / f"{name}.png"
        pdf = self.figures_dir / f"{name}.pdf"
        fig.savefig(png, dpi=self.dpi, metadata={"Software": None})
        fig.savefig(pdf, metadata={"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None})
        plt.close(fig)
        self.manifest[f"figures/{name}"] = {"kind": "figure", "files": [self._rel(png), self._rel(pdf)],
                                           "sources": self._sources(sources)}
        return png

    def table(self, df: pd.DataFrame, name: str, sources: list[str], caption: str = "", floatfmt: str = ".3f") -> Path:
        self.tables_dir.mkdir(parents=True, exist_ok=True)
        md = self.tables_dir / f"{name}.md"
        tex = self.tables_dir / f"{name}.tex"
        atomic_write_text(md, to_markdown(df, floatfmt) + "\n")
        atomic_write_text(tex, to_latex(df, caption or name, name, floatfmt))
        self.manifest[f"tables/{name}"] = {"kind": "table", "files": [self._rel(md), self._rel(tex)],
                                          "sources": self._sources(sources)}
        return md

    def write_manifest(self) -> Path:
        path = self.results_dir / "figures_manifest.json"
        atomic_write_text(path, json.dumps(dict(sorted(self.manifest.items())), indent=1, sort_keys=True) + "\n")
        return path


def _fmt(v, floatfmt: str) -> str:
    if isinstance(v, (float, np.floating)):
        return "" if math.isnan(v) else format(float(v), floatfmt)
    return str(v)


def to_markdown(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v, floatfmt).replace("|", "/") for v in row) + " |")
    return "\n".join(lines)


def _tex_escape(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("$", r"\$"), ("{", r"\{"), ("}", r"\}")):
        s = s.replace(a, b) if a != "\\" else s.replace(a, b)
    return s


def to_latex(df: pd.DataFrame, caption: str, label: str, floatfmt: str = ".3f") -> str:
    cols = [_tex_escape(str(c)) for c in df.columns]
    body = [" & ".join(_tex_escape(_fmt(v, floatfmt)) for v in row) + r" \\" for row in df.itertuples(index=False)]
    return "\n".join([r"\begin{table}[t]", r"\centering", r"\small",
                      r"\begin{tabular}{" + "l" * len(cols) + "}", r"\toprule", " & ".join(cols) + r" \\",
                      r"\midrule", *body, r"\bottomrule", r"\end{tabular}",
                      r"\caption{" + _tex_escape(caption) + "}", r"\label{tab:" + _tex_escape(label) + "}",
                      r"\end{table}"]) + "\n"


# --------------------------------------------------------------------------- figures
def _grid(plt, n: int, width: float = 3.4, height: float = 2.8, ncols: int | None = None):
    ncols = ncols or min(n, 3)
    nrows = int(math.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _probe_lines(df: pd.DataFrame, ce_kinds: tuple = ("ce",)) -> pd.DataFrame:
    """A legend line per model (``model_kind``); rows of a CE kind (``ce_kinds``: prefixes) from a CE
    that does not beat its first stage are marked as such."""
    d = df.copy()
    if "pooling" in d.columns and d["pooling"].nunique() > 1:
        d["line"] = d["model_kind"].str.upper() + " (" + d["pooling"].astype(str) + ")"
    else:
        d["line"] = d["model_kind"].str.upper().str.replace("-VS-", " vs ", regex=False)
    if "ce_works" in d.columns:  # rows from a CE that does not beat its first stage are marked as such
        broken = (d["ce_works"].astype(str) == "False") & d["model_kind"].astype(str).str.startswith(tuple(ce_kinds))
        d.loc[broken, "line"] = d.loc[broken, "line"] + " [non-working CE]"
    return d


def draw_layer_probe(plt, df: pd.DataFrame, metric: str = "NDCG@10", sts_metric: str = "Spearman",
                     ce_kinds: tuple = ("ce",), title: str | None = None):
    """One panel per dataset (its ``metric``, or the STS / control metric), a line per model;
    ``None`` when there is nothing to draw. Used by notebook 01 and :func:`layer_probe_figure`."""
    d = _probe_lines(df, ce_kinds)
    panels = []
    for ds in sorted(d["dataset"].unique()):
        g = d[d["dataset"] == ds]
        for m in (metric, sts_metric, "CKA", "cosine"):
            if (g["metric"] == m).any():
                panels.append((ds, m))
                break
    if not panels:
        return None
    fig, axes = _grid(plt, len(panels))
    for ax, (ds, m) in zip(axes, panels):
        g = d[(d["dataset"] == ds) & (d["metric"] == m)]
        for line, gl in g.groupby("line", sort=True):
            gl = gl.groupby("layer", as_index=False)["value"].mean().sort_values("layer")
            ax.plot(gl["layer"], gl["value"], marker="o", ms=3, label=line)
        ax.set(title=ds, xlabel="layer (0 = embeddings)", ylabel=m)
        ax.legend()
    fig.suptitle(title or "Per-layer quality of mean-pooled embeddings: cross encoder (self-pair) vs dual encoders")
    fig.tight_layout()
    return fig


def _saved(out: Output, fig, name: str, csv: str, why: str) -> bool:
    """Write a figure drawn by a ``draw_*`` function; ``None`` (nothing to draw) skips it with a note."""
    csvs = [csv] if isinstance(csv, str) else list(csv)
    if fig is None:
        print(f"note: {csvs[-1]} {why} -- {name} figure skipped.")
        return False
    out.figure(fig, name, csvs)
    return True


def layer_probe_figure(plt, out: Output, df: pd.DataFrame, metric: str, sts_metric: str) -> None:
    if not _saved(out, draw_layer_probe(plt, df, metric, sts_metric), "layer_probe", "layer_probe.csv",
                  f"has no {metric}/{sts_metric} rows"):
        return
    d = _probe_lines(df)
    main = d[d["metric"].isin([metric, sts_metric])]
    tab = main.pivot_table(index=["dataset", "metric", "line"], columns="layer", values="value", aggfunc="mean")
    tab.columns = [f"L{int(c)}" for c in tab.columns]
    out.table(tab.reset_index().rename(columns={"line": "model"}), "layer_probe", ["layer_probe.csv"],
              f"{metric} / {sts_metric} per layer (0 = embedding output), CE self-pair vs DE.")


def other_ce_figure(plt, out: Output, probe: pd.DataFrame, extra: pd.DataFrame, quality: pd.DataFrame | None,
                    metric: str, sts_metric: str) -> None:
    """Cross encoders other than the profile's (``layer_probe_extra.csv``: e.g. the NLI judge) next to the
    profile's CE and DEs (``layer_probe.csv``), per layer; and their re-ranking check."""
    kinds = tuple(sorted(set(extra["model_kind"].astype(str)) - {k for k in extra["model_kind"].astype(str)
                                                                  if "-vs-" in k}))
    both = pd.concat([probe, extra], ignore_index=True)
    fig = draw_layer_probe(plt, both, metric, sts_metric, ce_kinds=("ce",) + kinds,
                           title="Per-layer quality: another cross encoder (self-pair) next to the profile's CE and DEs")
    _saved(out, fig, "layer_probe_other_ce", ["layer_probe.csv", "layer_probe_extra.csv"],
           f"has no {metric}/{sts_metric} rows")
    if quality is not None:
        q = quality[quality["metric"] == metric]
        if not q.empty:
            idx = [c for c in ("model", "stage", "depth", "n_queries", "encode_dtype", "ce_works") if c in q.columns]
            tab = q.pivot_table(index=idx, columns="dataset", values="value", aggfunc="mean").reset_index()
            out.table(tab, "ce_quality_other", ["ce_quality_extra.csv"],
                      f"{metric} of other cross encoders re-ranking the DE (full test set).")


def _de2ce_order(d: pd.DataFrame) -> list[str]:
    """Models by size in the CSV's order, each student's queries-only row right after its symmetric one."""
    names = list(dict.fromkeys(d.sort_values(["n_layers"], kind="stable")["model"]))
    base = [m for m in names if not m.endswith(QUERIES_ONLY)]
    out = []
    for m in base:
        out += [m] + ([m + QUERIES_ONLY] if m + QUERIES_ONLY in names else [])
    return out + [m for m in names if m not in out]


def draw_de2ce(plt, df: pd.DataFrame, metric: str = "NDCG@10"):
    """Bars of ``metric`` per model, one panel per dataset (``None`` without rows). Used by
    notebook 02 and :func:`de2ce_figure`."""
    d = df[df["metric"] == metric]
    if d.empty:
        return None
    order = _de2ce_order(d)
    datasets = sorted(d["dataset"].unique())
    fig, axes = _grid(plt, len(datasets), width=max(3.8, 0.3 * len(order) + 1), height=4.2, ncols=1)
    for ax, ds in zip(axes, datasets):
        g = d[d["dataset"] == ds].groupby("model")["value"].mean().reindex(order).dropna()
        colors = ["C3" if "full" in m else "C0" if " CE" in m else "C7" for m in g.index]
        bars = ax.bar(range(len(g)), g.values, color=colors)
        for bar, m in zip(bars, g.index):
            if m.endswith(QUERIES_ONLY):   # the student encodes queries; the full DE's documents are searched
                bar.set_hatch("///")
                bar.set_alpha(0.6)
        ax.set_xticks(range(len(g)), g.index, rotation=60, ha="right", fontsize=6)
        ax.set(title=ds, ylabel=metric)
    fig.suptitle("DE-k CE: light dual encoders from the CE's early layers\nvs controls and the full DE "
                 "(hatched: queries only, full DE's documents)", fontsize=8)
    fig.tight_layout()
    return fig


def de2ce_figure(plt, out: Output, df: pd.DataFrame, metric: str) -> None:
    if not _saved(out, draw_de2ce(plt, df, metric), "de2ce", "de2ce.csv", f"has no {metric} rows"):
        return
    d = df[df["metric"] == metric]
    order = _de2ce_order(d)
    datasets = sorted(d["dataset"].unique())
    tab = d.pivot_table(index="model", columns="dataset", values="value", aggfunc="mean").reindex(order)
    full = [m for m in order if "full" in m]
    if full:
        for ds in datasets:
            tab[f"{ds} % of full"] = 100 * tab[ds] / tab.loc[full[0], ds]
    out.table(tab.reset_index(), "de2ce", ["de2ce.csv"], f"{metric} of the DE-k CE students and controls.")


def _pipeline_stages(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    d = df[df["metric"] == metric].copy()
    d["stage"] = np.where(d["reranker"].astype(str) == "none", "first stage",
                          d["reranker"].astype(str) + " @" + d["depth"].astype(int).astype(str))
    return d


def draw_pipeline(plt, df: pd.DataFrame, metric: str = "NDCG@10"):
    """Grouped bars: each first stage alone and after CE re-ranking of its top-k (``None`` without
    rows). Used by notebook 02 and :func:`pipeline_figure`."""
    d = _pipeline_stages(df, metric)
    if d.empty:
        return None
    datasets = sorted(d["dataset"].unique())
    fig, axes = _grid(plt, len(datasets), width=4.0)
    for ax, ds in zip(axes, datasets):
        w = d[d["dataset"] == ds].pivot_table(index="first_stage", columns="stage", values="value", aggfunc="mean")
        cols = ["first stage"] + sorted([c for c in w.columns if c != "first stage"],
                                        key=lambda s: int(s.rsplit("@", 1)[1]))
        w = w[[c for c in cols if c in w.columns]]
        width = 0.8 / max(1, len(w.columns))
        for i, c in enumerate(w.columns):
            ax.bar(np.arange(len(w)) + i * width, w[c].values, width, label=c)
        ax.set_xticks(np.arange(len(w)) + 0.4 - width / 2, w.index, rotation=30, ha="right")
        ax.set(title=ds, ylabel=metric, ylim=(0, 1.35 * float(np.nanmax(w.values))))  # room for the legend
        ax.legend(fontsize=7, ncol=len(w.columns), loc="upper left")
    fig.suptitle("First-stage retrieval, then CE re-ranking of the top-k")
    fig.tight_layout()
    return fig


def pipeline_figure(plt, out: Output, df: pd.DataFrame, metric: str) -> None:
    if not _saved(out, draw_pipeline(plt, df, metric), "pipeline", "pipeline.csv", f"has no {metric} rows"):
        return
    d = _pipeline_stages(df, metric)
    tab = d.pivot_table(index=["dataset", "first_stage"], columns="stage", values="value", aggfunc="mean")
    out.table(tab.reset_index(), "pipeline", ["pipeline.csv"], f"{metric}: first stage and CE re-ranking.")
    lat = pipeline_latency_table(df, metric)
    if not lat.empty:
        out.table(lat, "pipeline_latency", ["pipeline.csv"],
                  f"Each pipeline's {metric} (every test query) and its measured end-to-end CPU time per query "
                  "(median and IQR over the latency sample; parts: encode, search, CE re-rank).", floatfmt=".4g")


def pipeline_latency_table(df: pd.DataFrame, metric: str = "NDCG@10") -> pd.DataFrame:
    """One row per (dataset, first stage, depth): quality and the measured latency rows of pipeline.csv
    (empty when it has none)."""
    if "metric" not in df or not (df["metric"] == LATENCY_MS).any():
        return pd.DataFrame()
    key = ["dataset", "first_stage", "depth"]
    lat = df[df["metric"].isin(LATENCY_METRICS.values())]
    t = lat.pivot_table(index=key, columns="metric", values="value", aggfunc="first")
    t = t.rename(columns={LATENCY_METRICS[c]: label for c, label in (("total", "ms / query"), ("encode", "encode ms"),
                                                                      ("search", "search ms"), ("rerank", "re-rank ms"))})
    total = lat[lat["metric"] == LATENCY_MS].set_index(key)
    t["IQR ms"] = total["latency_iqr_ms"] if "latency_iqr_ms" in total else np.nan
    q = df[df["metric"] == metric].set_index(key)["value"]
    t.insert(0, metric, q.reindex(t.index))
    t["latency queries"] = total["n_queries"]
    t["threads"] = total["latency_threads"] if "latency_threads" in total else np.nan
    cols = [metric, "ms / query", "IQR ms", "encode ms", "search ms", "re-rank ms", "latency queries", "threads"]
    return t[[c for c in cols if c in t.columns]].reset_index()


def draw_learning_curve(plt, df: pd.DataFrame):
    """Dev NDCG@10 of re-ranking the DE's top-k against training steps (top axis: minutes), a line
    per trained model, with the first stage's dev NDCG@10 dashed and the selected step marked
    (``ce_training.csv``; ``None`` without rows)."""
    if df is not None and "phase" in df.columns:
        df = df[df["phase"] == "training"]
    if df is None or df.empty:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for (label, kind), g in df.groupby(["model", "model_kind"], sort=False):
        g = g.sort_values("step")
        line = ax.plot(g["step"], g["dev_NDCG@10"], marker="o", ms=3, label=f"{kind}: {label}")[0]
        sel = g[g["selected"].astype(str) == "True"]
        ax.plot(sel["step"], sel["dev_NDCG@10"], "*", ms=10, color=line.get_color())
    first = df["first_stage_NDCG@10"].iloc[0]
    ax.axhline(first, color="k", ls="--", lw=1, label="first stage (DE) on dev")
    ax.set(xlabel="training step", ylabel="dev NDCG@10 (re-ranking the DE top-k)",
           title="Learning curves on the dev split of the training queries (* = selected)")
    mins = df.groupby("step")["minutes"].max().sort_index()
    if len(mins) > 1:
        top = ax.secondary_xaxis("top", functions=(lambda x, m=mins: np.interp(x, m.index, m.values),
                                                   lambda y, m=mins: np.interp(y, m.values, m.index)))
        top.set_xlabel("minutes of training")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def learning_curve_figure(plt, out: Output, df: pd.DataFrame) -> None:
    if not _saved(out, draw_learning_curve(plt, df), "ce_training", "ce_training.csv", "has no training rows"):
        return
    if "phase" not in df.columns:
        df = df.assign(phase="training")
    checks = df[df["phase"] != "training"].assign(row=lambda d: "dev check at max_length " + d["max_length"].astype(str))
    df = df[df["phase"] == "training"]
    sel = df[df["selected"].astype(str) == "True"]
    last = df.sort_values("step").groupby("model_kind").tail(1)
    tab = pd.concat([sel.assign(row="selected"), last.assign(row="last"), checks])[
        ["model_kind", "model", "row", "step", "minutes", "max_length", "dev_NDCG@10", "dev_MRR@10",
         "first_stage_NDCG@10"]]
    out.table(tab, "ce_training", ["ce_training.csv"], "Dev-split learning curves: selected and last step.")


def draw_query_curve(plt, df: pd.DataFrame, target: float = 0.925):
    """Dev learning curves of query students: retention (student / teacher NDCG@10 on dev queries carved
    from training data) against minutes of training, the mean over dev collections bold and each
    collection thin; the paper's 2-layer retention as a dashed line. ``None`` without dev rows."""
    d = df[df["phase"] == "dev"]
    if d.empty:
        return None
    if "kind" not in d.columns:
        d = d.assign(kind="query-student")
    kinds = list(dict.fromkeys(d["kind"].fillna("query-student")))
    fig, axes = plt.subplots(1, len(kinds), figsize=(8.4 * len(kinds), 3.8), squeeze=False)
    targets = {"query-student": (target, f"paper 2: {100 * target:.1f}% (2 of 12 layers)"),
               "de-k-ce": (0.99, "paper 1: DE-2 CE within ~1% of the full DE")}
    for ax, kind in zip(axes[0], kinds):
        _query_curve_panel(ax, d[d["kind"].fillna("query-student") == kind], *targets.get(kind, (target, "")),
                           kind=kind)
    fig.tight_layout()
    return fig


def _query_curve_panel(ax, d: pd.DataFrame, target: float, target_label: str, kind: str) -> None:
    for i, (name, g) in enumerate(d.groupby("student", sort=False)):
        color = f"C{i}"
        m = g.groupby("step").agg(retention=("retention", "mean"), minutes=("minutes", "max")).sort_index()
        layers = g["layers"].iloc[0]
        ax.plot(m["minutes"], 100 * m["retention"], color=color, marker="o", ms=3, lw=2,
                label=f"{name}" + (f" (layers {layers})" if isinstance(layers, str) and layers else "") + ", mean")
        for ds, gd in g.groupby("dataset"):
            gd = gd.sort_values("step")
            ax.plot(gd["minutes"], 100 * gd["retention"], color=color, lw=0.8, alpha=0.5, ls=":",
                    label=f"{name}: {ds} ({gd['split'].iloc[0]})")
    ax.axhline(100 * target, color="k", ls="--", lw=0.8, label=target_label)
    what = ("query students: asymmetric (teacher's documents)" if kind == "query-student"
            else "DE-k CE students: symmetric (own documents)")
    ax.set(xlabel="minutes of training (CPU)", ylabel="% of the full DE's NDCG@10 on dev",
           title=f"Learning curves on dev splits carved from training data\n{what}")
    ax.set_ylim(top=max(ax.get_ylim()[1], 100 * target + 3))  # the target line stays in view
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def query_curve_figure(plt, out: Output, df: pd.DataFrame, name: str = "query_distill_curve",
                       source: str = "query_distill_curve.csv") -> None:
    """The curve figure and table; ``name`` / ``source`` (relative to the results folder) for another
    profile's curve (paper 2's geometry)."""
    if not _saved(out, draw_query_curve(plt, df), name, source, "has no dev rows"):
        return
    dev = df[df["phase"] == "dev"]
    tab = dev.pivot_table(index=["student", "step"], columns="dataset", values="retention", aggfunc="mean")
    tab["mean"] = tab.mean(axis=1)
    tab = (100 * tab).round(1).reset_index()
    tab.insert(2, "minutes", dev.groupby(["student", "step"])["minutes"].max().values)
    test = df[df["phase"] == "test"]
    if not test.empty:
        t = test.pivot_table(index=["student", "step"], columns="dataset", values="retention", aggfunc="mean")
        t["mean"] = t.mean(axis=1)
        t = (100 * t).round(1).reset_index().assign(phase="test (full collections)")
        tab = pd.concat([tab.assign(phase="dev"), t], ignore_index=True)
    out.table(tab, name, [source], "Query students: retention (%) of the teacher's NDCG@10 by training step.",
              floatfmt=".1f")


def _paper_side_by_side(qd: pd.DataFrame, cfg: dict | None) -> pd.DataFrame | None:
    """Our retention next to the paper's (``ce_utils.experiments.query_distill``); ``None`` when unavailable."""
    try:
        from ce_utils.experiments import query_distill as q
    except Exception as exc:  # noqa: BLE001
        print(f"note: no paper overlay ({type(exc).__name__}: {exc}).")
        return None
    teacher = qd[qd["student"] == "teacher"]
    n_teacher = int(teacher["n_layers"].max()) if not teacher.empty and teacher["n_layers"].notna().any() else None
    if not n_teacher:
        idx = [int(x) for s in qd["layers"].dropna().astype(str) for x in s.split(",") if x.strip().isdigit()]
        n_teacher = max(idx) + 1 if idx else None
    if not n_teacher:
        return None
    try:
        paper, _ = q.paper_retention_table(cfg)
    except Exception as exc:  # noqa: BLE001
        print(f"note: no paper overlay ({type(exc).__name__}: {exc}).")
        return None
    return q.side_by_side(qd, paper, n_teacher, dataset_map=q.paper_dataset_map(qd["dataset"].astype(str).unique()))


def query_distill_figure(plt, out: Output, df: pd.DataFrame, metric: str, cfg: dict | None) -> pd.DataFrame | None:
    ret_metric = f"retention_{metric}"
    d = df[(df["metric"] == ret_metric) & (df["dataset"] == "mean")]
    if d.empty:
        print(f"note: query_distill.csv has no {ret_metric} rows (dataset 'mean') -- query-student figure skipped.")
        return None
    d = d.groupby(["student", "strategy", "layers", "n_layers"], as_index=False, dropna=False)["value"].mean()
    d = d.sort_values(["n_layers", "strategy", "student"], kind="stable")
    sbs = _paper_side_by_side(df, cfg)
    paper = {}
    if sbs is not None and not sbs.empty:
        paper = sbs[sbs["dataset"] == "mean"].groupby("student")["paper"].first().to_dict()
    fig, ax = plt.subplots(figsize=(max(5, 0.55 * len(d) + 2), 3.4))
    x = np.arange(len(d))
    ax.bar(x - 0.2, 100 * d["value"], 0.4, label="ours", color="C0")
    pv = [100 * paper.get(s, np.nan) for s in d["student"]]
    ax.bar(x + 0.2, pv, 0.4, label="paper (relative-position subset, 12-layer teacher)", color="C1")
    ax.axhline(100, color="k", lw=0.7)
    labels = [f"{s}\n[{l}] {st}" for s, l, st in zip(d["student"], d["layers"], d["strategy"])]
    ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=6)
    ax.set(ylabel=f"{metric} retention (% of teacher)", title="Query-encoder students by initialisation")
    ax.legend(loc="lower right")
    fig.tight_layout()
    out.figure(fig, "query_distill", ["query_distill.csv"])
    tab = d.assign(ours=100 * d["value"], paper=[p for p in pv]).drop(columns="value")
    out.table(tab, "query_distill", ["query_distill.csv"], f"Mean {metric} retention (%) of the query students.",
              floatfmt=".1f")
    return tab


def geometry_table(df: pd.DataFrame, metric: str = "NDCG@10", cfg: dict | None = None) -> tuple[pd.DataFrame, dict]:
    """A 12-layer teacher's query_distill.csv as paper 2's table (``query_distill.subset_table``) and the
    rank agreement with it; an empty table when the CSV has no teacher rows or none of the paper's subsets."""
    from ce_utils.experiments import query_distill as q

    teacher = df[df["student"] == "teacher"]
    if teacher.empty:
        return pd.DataFrame(), {}
    paper, _ = q.paper_retention_table(cfg)
    ours = df[df["metric"].isin([metric, f"retention_{metric}"])]
    tab = q.subset_table(ours, paper, int(teacher["n_layers"].max()))
    return tab, (q.rank_agreement(tab) if len(tab) else {})


def geometry_summary(cfg: dict | None, metric: str = "NDCG@10") -> list[str]:
    """Lines for notebook 05 and the README: the teacher's score, our best subsets against the paper's, and
    the Spearman agreement of the two rankings; empty when ``figures.paper2_geometry`` has no CSV."""
    path = geometry_results({**DEFAULTS, **((cfg or {}).get("figures") or {})})
    if path is None or not path.is_file():
        return []
    df = pd.read_csv(path)
    tab, agree = geometry_table(df, metric, cfg)
    if tab.empty:
        return []
    teacher = df[(df["student"] == "teacher") & (df["metric"] == metric)]
    lines = [f"teacher {teacher['teacher'].iloc[0]}: {metric} "
             + ", ".join(f"{d} {v:.4f}" for d, v in zip(teacher["dataset"], teacher["value"]))]
    t = tab.set_index("layers")
    for layers in ("0,11", "0,1,10,11"):
        if layers in t.index:
            r = t.loc[layers]
            lines.append(f"{{{layers}}}: ours {r['ours_mean']:.1%} (mean of our sets), paper {r['paper_same_sets']:.1%} "
                         f"on the same sets, {r['paper_mean']:.1%} over its 15 sets")
    lines.append(f"best 2-layer subset: ours {{{agree.get('best_2_ours')}}}, paper {{{agree.get('best_2_paper')}}}")
    lines.append(f"Spearman of the {agree['n_subsets']} subsets' retention: {agree['spearman_same_sets']:.2f} against "
                 f"the paper's on the same sets, {agree['spearman_paper_mean']:.2f} against its 15-set mean")
    curve = path.parent / "query_distill_curve.csv"
    if curve.is_file():   # a longer run of one subset on dev splits (python -m ce_utils.experiments.curves --profile mpnet)
        from ce_utils.experiments.curves import summary as curve_summary

        lines += curve_summary(pd.read_csv(curve))
    return lines


def geometry_figure(plt, out: Output, tab: pd.DataFrame, agree: dict, metric: str, source: str) -> dict | None:
    """Paper 2 in its own geometry (``make paper2-geometry``): every layer subset of the published table,
    our mean retention next to the paper's on the same datasets and over its 15 sets, and the Spearman
    agreement of the two rankings; ``tab`` / ``agree`` from :func:`geometry_table`. ``source``: the CSV's
    path relative to this profile's results folder."""
    if tab.empty:
        print(f"note: {source} holds no teacher rows or none of the paper's layer subsets -- the paper-geometry "
              "figure is skipped.")
        return None
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(tab) + 2), 3.4))
    x = np.arange(len(tab))
    for off, col, label, color in ((-0.27, "ours_mean", "ours (mean of our sets)", "C0"),
                                   (0.0, "paper_same_sets", "paper, same sets", "C1"),
                                   (0.27, "paper_mean", "paper, mean of 15 BEIR sets", "C3")):
        ax.bar(x + off, 100 * tab[col], 0.27, label=label, color=color)
    ax.axhline(100, color="k", lw=0.7)
    ax.set_xticks(x, [f"{{{l}}}" for l in tab["layers"]], rotation=45, ha="right", fontsize=7)
    lo = 100 * float(tab[["ours_mean", "paper_same_sets", "paper_mean"]].min().min())
    ax.set_ylim(max(0.0, lo - 10), 105)
    ax.set(ylabel=f"{metric} retention (% of teacher)",
           title=f"Paper 2's layer subsets of a 12-layer teacher: Spearman {agree['spearman_same_sets']:.2f} "
                 f"(same sets), {agree['spearman_paper_mean']:.2f} (15 sets)")
    ax.legend(loc="lower right", ncol=3)
    fig.tight_layout()
    out.figure(fig, "query_distill_geometry", [source])
    cols = [c for c in tab.columns if c.startswith(("ours_", "paper_")) and c != "paper_layers"]
    shown = tab.assign(**{c: 100 * tab[c] for c in cols})
    out.table(shown, "query_distill_geometry", [source],
              f"{metric} retention (%) of paper 2's layer subsets, ours (12-layer all-mpnet-base-v2 teacher) next to "
              f"the paper's (msmarco-bert-base-dot-v5); Spearman of the rankings {agree['spearman_same_sets']:.2f} on "
              f"the same sets, {agree['spearman_paper_mean']:.2f} against the paper's 15-set mean.", floatfmt=".1f")
    return agree


def speed_figure(plt, out: Output, df: pd.DataFrame) -> None:
    from ce_utils.experiments.speed import flop_goal_table

    df = eager(df)
    goal = flop_goal_table(df)
    if not goal.empty:
        out.table(goal, "speed_flop_goal", ["speed.csv"], "Every eager student (CPU, 1 thread) at batch 1 and the "
                  "largest batch: measured speed-up over the full DE, as a share of the FLOP ratio (goal: 0.9), next "
                  "to the speed-up that FLOPs plus the measured fixed per-call cost predict.", floatfmt=".3f")
    if "role" in df.columns:
        df = df[df["role"] != "overhead"]  # the full DE without layers: in the goal table's fixed cost only
    d = df[df["tokenization"] == "included"]
    if d.empty:
        d = df
    settings = d[["device", "dtype", "threads"]].drop_duplicates().sort_values(["device", "dtype", "threads"])
    fig, axes = _grid(plt, len(settings), width=4.0, height=3.2)
    for ax, s in zip(axes, settings.itertuples(index=False)):
        g = d[(d["device"] == s.device) & (d["dtype"] == s.dtype) & (d["threads"] == s.threads)]
        for name, gm in g.groupby("model", sort=False):
            gm = gm.sort_values("batch_size")
            ax.plot(gm["batch_size"], gm["queries_per_s"], marker="o", ms=3, label=name)
        ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="queries / s",
               title=f"{str(s.device).replace('cuda:', '')} {s.dtype}, {int(s.threads)} thread(s)")
    axes[-1].legend(fontsize=6)
    fig.suptitle("Query-encoding throughput (tokenisation included)")
    fig.tight_layout()
    out.figure(fig, "speed_throughput", ["speed.csv"])
    big = int(d["batch_size"].max())
    t = d[d["batch_size"].isin([1, big])].copy()
    t["setting"] = (t["device"].astype(str).str.replace("cuda:", "", regex=False) + " " + t["dtype"] + " "
                    + t["threads"].astype(int).astype(str) + "t bs" + t["batch_size"].astype(int).astype(str))
    tab = t.pivot_table(index=["model", "n_layers", "flop_ratio"], columns="setting", values="speedup_vs_de",
                        sort=False).reset_index()
    tab = tab.sort_values(["n_layers", "model"], ascending=[False, True], kind="stable").reset_index(drop=True)
    out.table(tab, "speed", ["speed.csv"], "Measured speed-up over the full DE (tokenisation included) next to the "
              "FLOP ratio.", floatfmt=".2f")


def backends_figure(plt, out: Output, sp: pd.DataFrame, bq: pd.DataFrame | None, metric: str) -> pd.DataFrame:
    """Per inference backend: speed-up over the eager full DE (CPU, 1 thread, batch 1 and the largest
    batch) against mean quality, for the full DE and each query student; table ``backends``."""
    from ce_utils.experiments.backends import backend_table

    if "backend" not in sp.columns or sp["backend"].nunique() < 2:
        return pd.DataFrame()
    big = int(sp["batch_size"].max())
    tab = backend_table(sp, bq, metric=metric, threads=1, batch_sizes=(1, big))
    if tab.empty:
        return tab
    qcol = f"mean {metric}"
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.6), sharey=qcol in tab)
    markers = {"torch": "o", "torch-int8": "s", "onnx": "^", "onnx-int8": "D"}
    for ax, bs in zip(axes, (1, big)):
        col = f"vs eager DE bs{bs}"
        if col not in tab:
            continue
        for i, (model, g) in enumerate(tab.groupby("model", sort=False)):
            for _, r in g.iterrows():
                y = r[qcol] if qcol in tab and pd.notna(r.get(qcol)) else float(r["n_layers"])
                ax.scatter(r[col], y, marker=markers.get(r["backend"], "x"), color=f"C{i}",
                           label=f"{model}" if r["backend"] == "torch" else None)
        ax.set(xscale="log", xlabel=f"speed-up over eager fp32 full DE (batch {bs}, 1 thread)",
               ylabel=f"mean {metric}" if qcol in tab else "layers", title=f"batch size {bs}")
    handles = [plt.Line2D([], [], marker=m, ls="", color="k", label=b) for b, m in markers.items()
               if b in set(tab["backend"])]
    axes[0].legend(fontsize=6, loc="lower right")
    axes[1].legend(handles=handles, fontsize=6, loc="lower right", title="backend", title_fontsize=6)
    fig.suptitle("Query encoders per inference backend (CPU)")
    fig.tight_layout()
    srcs = ["speed.csv"] + (["backend_quality.csv"] if bq is not None else [])
    out.figure(fig, "backends", srcs)
    out.table(tab, "backends", srcs, f"Query encoders per inference backend: speed-up (CPU, 1 thread) and mean "
              f"{metric} with its delta from the same model in eager fp32.", floatfmt=".3f")
    return tab


def speed_lookup(sp: pd.DataFrame, batch_size: int, threads: int, tokenization: str) -> pd.DataFrame:
    """One speed row per model in the chosen setting (CPU fp32, eager PyTorch, when present)."""
    sp = eager(sp)
    d = sp[(sp["tokenization"] == tokenization) & (sp["threads"] == threads)]
    if "dtype" in d.columns and (d["dtype"] == "fp32").any():
        d = d[d["dtype"] == "fp32"]
    if d["device"].eq("cpu").any():
        d = d[d["device"] == "cpu"]
    out = []
    for _, g in d.groupby("model_id" if "model_id" in d.columns else "model", sort=False):
        sizes = sorted(g["batch_size"].unique())
        bs = batch_size if batch_size in sizes else max([b for b in sizes if b <= batch_size] or [min(sizes)])
        out.append(g[g["batch_size"] == bs].iloc[0])
    return pd.DataFrame(out)


def quality_points(results: dict[str, pd.DataFrame], metric: str) -> pd.DataFrame:
    """One quality point per (model_id, dataset): (source, model_id, model, role, dataset, quality,
    depth, first_stage_id) from de2ce.csv, query_distill.csv (students and teacher) and pipeline.csv
    (CE re-ranking rows). A system that appears in several CSVs (the full DE) has one value there
    (tests/test_results_consistency.py), so it is kept once."""
    rows = []
    de2ce = results.get("de2ce.csv")
    if de2ce is not None and "model_id" in de2ce.columns:
        for _, r in de2ce[de2ce["metric"] == metric].iterrows():
            rows.append({"source": "de2ce.csv", "model_id": r["model_id"], "model": r["model"],
                         "role": "de" if r["init"] == "full" else "de-k-ce", "dataset": r["dataset"],
                         "quality": r["value"], "depth": 0})
    qd = results.get("query_distill.csv")
    if qd is not None and "model_id" in qd.columns:
        for _, r in qd[qd["metric"] == metric].iterrows():
            teacher = r["student"] == "teacher"
            rows.append({"source": "query_distill.csv", "model_id": r["model_id"],
                         "model": "teacher (full DE)" if teacher else r["student"],
                         "role": "de" if teacher else "query-student", "dataset": r["dataset"],
                         "quality": r["value"], "depth": 0})
    pl = results.get("pipeline.csv")
    if pl is not None and "model_id" in pl.columns:
        p = pl[(pl["metric"] == metric) & (pl["reranker"].astype(str) != "none")]
        for _, r in p.iterrows():
            rows.append({"source": "pipeline.csv", "model_id": r["model_id"],
                         "model": f"{r['first_stage']} + {r['reranker']}@{int(r['depth'])}",
                         "first_stage_id": str(r["model_id"]).split(" >> ")[0], "role": "pipeline",
                         "dataset": r["dataset"], "quality": r["value"], "depth": int(r["depth"])})
    out = pd.DataFrame(rows)
    return out.drop_duplicates(["model_id", "dataset"]) if not out.empty else out


def join_speed(points: pd.DataFrame, speed: pd.DataFrame, ce_pair_rows: pd.DataFrame | None = None,
               latency: pd.DataFrame | None = None) -> pd.DataFrame:
    """Attach measured queries/s to every quality point by its ``model_id`` (the speed row with the
    same id; a point without one gets NaN and is left out of the plot). A pipeline ``F >> CE@k`` takes
    its end-to-end time per query measured in notebook 02 (``latency``: pipeline.csv's ``latency_ms`` rows,
    by model id and dataset) when there is one; otherwise it costs F's query encoding plus ``k`` CE pair
    scorings, at the CE pair row (id ``<CE> (pair)``) of the largest measured batch size <= k
    (``ce_pair_rows``: those rows at every batch size)."""
    by_id = speed.drop_duplicates("model_id").set_index("model_id")
    measured = {}
    if latency is not None and not latency.empty:
        lat = latency[latency["metric"] == LATENCY_MS]
        measured = {(m, d): (v, n) for m, d, v, n in zip(lat["model_id"], lat["dataset"], lat["value"], lat["n_queries"])}
    qps, matched = [], []
    for _, p in points.iterrows():
        if p["role"] == "pipeline" and (p["model_id"], p["dataset"]) in measured:
            ms, n = measured[(p["model_id"], p["dataset"])]
            qps.append(1000.0 / float(ms))
            matched.append(f"pipeline.csv: measured end to end ({int(n)} queries, median)")
            continue
        mid = p["first_stage_id"] if p["role"] == "pipeline" else p["model_id"]
        if mid not in by_id.index:
            qps.append(np.nan)
            matched.append("")
            continue
        t = 1.0 / float(by_id.loc[mid, "queries_per_s"])
        src = str(mid)
        if p["role"] == "pipeline":
            ce_id = str(p["model_id"]).split(" >> ")[1].rsplit("@", 1)[0] + " (pair)"
            pairs = ce_pair_rows[ce_pair_rows["model_id"] == ce_id] if ce_pair_rows is not None else pd.DataFrame()
            if pairs.empty:
                qps.append(np.nan)
                matched.append("")
                continue
            ok = pairs[pairs["batch_size"] <= p["depth"]]
            pair_row = (ok if not ok.empty else pairs).sort_values("batch_size").iloc[-1]
            t += p["depth"] / float(pair_row["queries_per_s"])
            src += f" + {int(p['depth'])} x {ce_id} (batch {int(pair_row['batch_size'])})"
        qps.append(1.0 / t)
        matched.append(src)
    out = points.copy()
    out["queries_per_s"] = qps
    out["speed_row"] = matched
    return out


def pareto_front(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of the points not dominated (higher x and higher y are better), sorted by x."""
    idx = [i for i in range(len(x)) if not any((x[j] >= x[i] and y[j] >= y[i]) and (x[j] > x[i] or y[j] > y[i])
                                               for j in range(len(x)))]
    return np.array(sorted(idx, key=lambda i: x[i]), dtype=int)


def pareto_figure(plt, out: Output, results: dict, opts: dict) -> pd.DataFrame | None:
    sp = results.get("speed.csv")
    points = quality_points(results, opts["metric"])
    if sp is None or points.empty:
        print("note: the Pareto plot needs speed.csv and at least one quality CSV -- skipped.")
        return None
    speed = speed_lookup(sp, int(opts["pareto_batch_size"]), int(opts["pareto_threads"]), opts["pareto_tokenization"])
    if speed.empty:
        print("note: speed.csv has no row in the Pareto setting -- skipped.")
        return None
    if "model_id" not in sp.columns:
        print("note: speed.csv has no model_id column (rerun notebook 04) -- Pareto plot skipped.")
        return None
    pair_rows = sp[sp["model_id"].astype(str).str.endswith(" (pair)") & (sp["threads"] == int(opts["pareto_threads"]))
                   & (sp["tokenization"] == opts["pareto_tokenization"]) & (sp["dtype"] == "fp32")
                   & (sp["device"] == speed["device"].iloc[0])]
    j = join_speed(points, speed, pair_rows, results.get("pipeline.csv")).dropna(subset=["queries_per_s", "quality"])
    datasets = opts.get("pareto_datasets") or sorted(j["dataset"].unique())
    datasets = [d for d in datasets if d in set(j["dataset"]) and d != "mean"]
    if not datasets:
        print("note: no dataset with both quality and speed -- Pareto plot skipped.")
        return None
    sources = sorted({"speed.csv", *j["source"].unique()})
    fig, axes = _grid(plt, len(datasets), width=4.2, height=3.4)
    markers = {"de2ce.csv": "o", "query_distill.csv": "s", "pipeline.csv": "^"}
    colors = {"de2ce.csv": "C0", "query_distill.csv": "C2", "pipeline.csv": "C1"}
    for ax, ds in zip(axes, datasets):
        g = j[j["dataset"] == ds].groupby(["source", "model"], as_index=False).agg(
            quality=("quality", "mean"), queries_per_s=("queries_per_s", "first"))
        for src, gs in g.groupby("source"):
            ax.scatter(gs["queries_per_s"], gs["quality"], marker=markers.get(src, "o"), s=18,
                       color=colors.get(src, "C7"), label=src.replace(".csv", ""))
        front = pareto_front(g["queries_per_s"].to_numpy(), g["quality"].to_numpy())
        ax.plot(g["queries_per_s"].to_numpy()[front], g["quality"].to_numpy()[front], "k--", lw=0.7)
        for i in front:
            ax.annotate(str(g["model"].iloc[i]), (g["queries_per_s"].iloc[i], g["quality"].iloc[i]), fontsize=5,
                        xytext=(2, 2), textcoords="offset points")
        ax.set(xscale="log", title=ds, xlabel="queries / s (measured)", ylabel=opts["metric"])
        ax.legend(fontsize=6)
    fig.suptitle(f"Quality vs query-encoding speed (CPU, {opts['pareto_threads']} thread(s), batch "
                 f"{opts['pareto_batch_size']}, tokenisation {opts['pareto_tokenization']}); pipelines: measured "
                 "end to end per query", fontsize=9)
    fig.tight_layout()
    out.figure(fig, "pareto", sources)
    tab = j[j["dataset"].isin(datasets)].pivot_table(index=["source", "model", "speed_row"], columns="dataset",
                                                     values="quality", aggfunc="mean").reset_index()
    qps = j.groupby(["source", "model"])["queries_per_s"].first()
    tab.insert(3, "queries_per_s", [qps.get((s, m), np.nan) for s, m in zip(tab["source"], tab["model"])])
    out.table(tab, "pareto", sources, f"{opts['metric']} and measured queries/s of every model (join: see "
              "ce_utils.report.figures).", floatfmt=".3f")
    return j


# --------------------------------------------------------------------------- headline
def headline_table(results: dict, cfg: dict | None, metric: str = "NDCG@10",
                   geometry: tuple[pd.DataFrame, dict] | None = None) -> pd.DataFrame:
    """The papers' headline claims next to ours, computed from the CSVs; ``geometry``: paper 2's geometry
    as :func:`geometry_table` returns it."""
    rows = []
    sp = results.get("speed.csv")
    de2ce = results.get("de2ce.csv")
    qd = results.get("query_distill.csv")
    pc = results.get("peer_check.csv")
    cq = results.get("ce_quality.csv")
    if pc is not None:
        for _, r in pc[pc["metric"] == metric].iterrows():
            rows.append({"claim": f"evaluator check: {r['model']} on full {r['dataset']}, {metric} (published: MTEB)",
                         "paper": f"{r['published']:.5f}", "ours": f"{r['value']:.5f}", "delta": f"{r['delta']:+.5f}"})
    if cq is not None:
        d = cq[cq["metric"] == metric]
        for ds, g in d.groupby("dataset"):
            st = g.set_index("stage")["value"]
            if {"first_stage", "ce_rerank"} <= set(st.index):
                n, depth = int(g["n_queries"].iloc[0]), int(g["depth"].iloc[0])
                works = "" if "ce_works" not in g or g["ce_works"].astype(str).iloc[0] != "False" else " [NOT a working CE]"
                rows.append({"claim": f"the CE re-ranks the DE's top-{depth} on full {ds} ({n} queries), {metric}{works}",
                             "paper": "a CE re-ranks its first stage's top-k (MS MARCO CE)",
                             "ours": f"{st['first_stage']:.3f} -> {st['ce_rerank']:.3f}",
                             "delta": f"{st['ce_rerank'] - st['first_stage']:+.4f} (target: +0.02)"})
    if de2ce is not None:
        d = de2ce[de2ce["metric"] == metric]
        full = d[d["init"] == "full"].groupby("dataset")["value"].mean()
        for model, claim, paper in (
                ("DE-2 CE", "DE-2 CE", "within ~1% of the full DE"),
                ("DE-2 CE+top", "DE-2 CE+top (CE embeddings + CE layer 0 + the full DE's top layer)",
                 "not in paper 1 (its DE-2 CE: within ~1%)")):
            two = d[d["model"] == model].groupby("dataset")["value"].mean()
            common = [x for x in two.index if x in full.index and full[x]]
            if common:
                pct = float(np.mean([100 * two[x] / full[x] for x in common]))
                rows.append({"claim": f"{claim} {metric}, % of full DE (mean over {', '.join(common)})",
                             "paper": paper, "ours": f"{pct:.1f}%", "delta": f"{pct - 99:+.1f} pts vs 99%"})
    if sp is not None:
        d = sp[(sp["model"] == "DE-2 CE") & (sp["tokenization"] == "included") & (sp["device"] == "cpu")
               & (sp["threads"] == 1)]
        if not d.empty:
            lo, hi = d["speedup_vs_de"].min(), d["speedup_vs_de"].max()
            rows.append({"claim": "DE-2 CE query-encoding speed-up over the full DE (CPU, 1 thread, batch 1-128)",
                         "paper": "5.15x (paper's hardware)", "ours": f"{lo:.2f}x - {hi:.2f}x "
                         f"(FLOP ratio {d['flop_ratio'].iloc[0]:.2f})", "delta": "different hardware and depth"})
    pl = results.get("pipeline.csv")
    lat = pipeline_latency_table(pl, metric) if pl is not None else pd.DataFrame()
    if not lat.empty:
        lat = lat[lat["depth"] > 0].dropna(subset=["ms / query"])
        full_name = next((f for f in lat["first_stage"].unique() if "full" in str(f)), None)
        if cq is not None and set(cq["dataset"]) & set(lat["dataset"]):  # the CE's own check set; the table has all
            lat = lat[lat["dataset"].isin(set(cq["dataset"]))]
        for (ds, depth), g in lat.groupby(["dataset", "depth"]):
            if depth != lat["depth"].min() or full_name not in set(g["first_stage"]):
                continue
            ref = g[g["first_stage"] == full_name].iloc[0]
            for _, r in g[g["first_stage"] != full_name].iterrows():
                rows.append({"claim": f"pipeline on full {ds}: {r['first_stage']} retrieves, the CE re-ranks its top-{depth}; "
                                      f"{metric} and measured CPU ms per query ({int(r['threads'])} thread), "
                                      f"vs the full DE + the same CE",
                             "paper": "DE-2 CE + CE re-ranking (paper 1); first stage 5.15x faster",
                             "ours": f"{r[metric]:.3f} vs {ref[metric]:.3f}; {r['ms / query']:.0f} (IQR {r['IQR ms']:.0f}) "
                                     f"vs {ref['ms / query']:.0f} (IQR {ref['IQR ms']:.0f}) ms",
                             "delta": f"{r[metric] - ref[metric]:+.3f}; end to end {ref['ms / query'] / r['ms / query']:.2f}x"})
    if qd is not None:
        ret = qd[(qd["metric"] == f"retention_{metric}") & (qd["dataset"] == "mean")]
        two = ret[(ret["n_layers"] == 2)]
        if not two.empty:
            teacher = qd[qd["student"] == "teacher"]
            n_t = int(teacher["n_layers"].max()) if not teacher.empty and teacher["n_layers"].notna().any() else None
            top = f"0,{n_t - 1}" if n_t else None
            pick = two[two["layers"].astype(str) == top] if top else two.iloc[0:0]
            r = pick.iloc[0] if not pick.empty else two.sort_values("value").iloc[-1]
            rows.append({"claim": f"2-layer query student (bottom + top layer) keeps % of teacher {metric}",
                         "paper": "92.5% (layers 0,11 of 12; mean of 15 BEIR sets)",
                         "ours": f"{100 * r['value']:.1f}% (layers {r['layers']}; {r['student']})",
                         "delta": f"{100 * r['value'] - 92.5:+.1f} pts"})
    if geometry is not None and not geometry[0].empty:
        tab, agree = geometry
        row = tab[tab["layers"] == "0,11"]
        if not row.empty:
            r = row.iloc[0]
            rows.append({"claim": f"the same, in paper 2's geometry: layers 0,11 of a 12-layer teacher "
                                  f"(all-mpnet-base-v2), % of teacher {metric} (mean over our sets)",
                         "paper": f"{100 * r['paper_same_sets']:.1f}% on the same sets ({100 * r['paper_mean']:.1f}% "
                                  "over 15)",
                         "ours": f"{100 * r['ours_mean']:.1f}%",
                         "delta": f"{100 * (r['ours_mean'] - r['paper_same_sets']):+.1f} pts"})
            rows.append({"claim": f"ranking of paper 2's {agree['n_subsets']} layer subsets (Spearman, ours vs paper's "
                                  "retention on the same sets)",
                         "paper": f"best 2-layer subset {{{agree['best_2_paper']}}} over 15 sets "
                                  f"({{{agree['best_2_paper_same_sets']}}} on ours)",
                         "ours": f"{agree['spearman_same_sets']:.2f}; best 2-layer {{{agree['best_2_ours']}}}",
                         "delta": "same best subset" if agree["best_2_ours"] == agree["best_2_paper"]
                         else "another best subset"})
    return pd.DataFrame(rows, columns=["claim", "paper", "ours", "delta"])


# --------------------------------------------------------------------------- everything
def check_options(results: dict[str, pd.DataFrame], opts: dict) -> None:
    """Every figure option must name something the CSVs hold: a metric no quality CSV has (or an
    STS metric the probe lacks) would otherwise write near-empty figures over the committed ones."""
    from ce_utils.core.config import ConfigError

    quality = [n for n in ("layer_probe.csv", "ce_quality.csv", "de2ce.csv", "pipeline.csv", "query_distill.csv")
               if n in results]
    have = sorted({m for n in quality for m in results[n]["metric"].astype(str).unique()})
    if quality and opts["metric"] not in have:
        raise ConfigError(f"figures.metric {opts['metric']!r} is in none of {', '.join(quality)}; available: "
                          f"{', '.join(m for m in have if not m.startswith('retention_'))}.")
    if "layer_probe.csv" in results and opts["sts_metric"] not in set(results["layer_probe.csv"]["metric"]):
        raise ConfigError(f"figures.sts_metric {opts['sts_metric']!r} is not in layer_probe.csv.")
    ds = opts.get("pareto_datasets")
    known = {d for n in quality for d in results[n]["dataset"].astype(str).unique()}
    if ds and not set(ds) <= known:
        raise ConfigError(f"figures.pareto_datasets {sorted(set(ds) - known)} are in no result CSV; have "
                          f"{', '.join(sorted(known))}.")


def geometry_results(opts: dict) -> Path | None:
    """``figures.paper2_geometry`` (a results folder, relative to the repository root) -> its
    query_distill.csv; ``None`` when the option is unset."""
    where = opts.get("paper2_geometry")
    if not where:
        return None
    p = Path(where)
    return (p if p.is_absolute() else repo_root() / p) / "query_distill.csv"


def make_all(results_dir: str | Path, figures_dir: str | Path, cfg: dict | None = None,
             options: dict | None = None) -> dict:
    """Every figure and table the CSVs under ``results_dir`` allow; returns the manifest."""
    opts = {**DEFAULTS, **((cfg or {}).get("figures") or {}), **(options or {})}
    opts = {k: (DEFAULTS.get(k) if v is None and k in DEFAULTS and k != "pareto_datasets" else v)
            for k, v in opts.items()}
    results_dir = Path(results_dir)
    results = read_results(results_dir)
    check_options(results, opts)  # before anything is written: a bad option replaces no committed file
    plt = setup_matplotlib()
    out = Output(Path(figures_dir), results_dir / "tables", results_dir, dpi=int(opts["dpi"]))
    if "layer_probe.csv" in results:
        layer_probe_figure(plt, out, results["layer_probe.csv"], opts["metric"], opts["sts_metric"])
    if "ce_quality.csv" in results:
        cq = results["ce_quality.csv"]
        cq = cq[cq["metric"] == opts["metric"]]
        if not cq.empty:
            idx = [c for c in ("model", "stage", "depth") if c in cq.columns]
            tab = cq.pivot_table(index=idx, columns="dataset", values="value", aggfunc="mean").reset_index()
            out.table(tab, "ce_quality", ["ce_quality.csv"], f"{opts['metric']} of the cross encoder re-ranking the DE.")
    if "ce_training.csv" in results:
        learning_curve_figure(plt, out, results["ce_training.csv"])
    if "layer_probe_extra.csv" in results and "layer_probe.csv" in results:
        other_ce_figure(plt, out, results["layer_probe.csv"], results["layer_probe_extra.csv"],
                        results.get("ce_quality_extra.csv"), opts["metric"], opts["sts_metric"])
    peer_srcs = [n for n in ("peer_check.csv", "peer_check_models.csv") if n in results]
    if peer_srcs:
        pc = pd.concat([results[n] for n in peer_srcs], ignore_index=True)
        out.table(pc[["model", "dataset", "metric", "value", "published", "delta", "tolerance", "source"]],
                  "peer_check", peer_srcs, "Our evaluation next to published scores.", floatfmt=".4f")
    if "de2ce.csv" in results:
        de2ce_figure(plt, out, results["de2ce.csv"], opts["metric"])
    if "pipeline.csv" in results:
        pipeline_figure(plt, out, results["pipeline.csv"], opts["metric"])
    if "query_distill.csv" in results:
        query_distill_figure(plt, out, results["query_distill.csv"], opts["metric"], cfg)
    if "query_distill_curve.csv" in results:
        query_curve_figure(plt, out, results["query_distill_curve.csv"])
    geometry, geo = geometry_results(opts), None
    if geometry is not None:
        gdf = read_result(geometry.parent, geometry.name)
        if gdf is not None:
            geo = geometry_table(gdf, opts["metric"], cfg)
            geometry_figure(plt, out, *geo, opts["metric"], os.path.relpath(geometry, results_dir))
        curve = geometry.parent / "query_distill_curve.csv"
        if curve.is_file():
            query_curve_figure(plt, out, read_result(curve.parent, curve.name), "query_distill_geometry_curve",
                               os.path.relpath(curve, results_dir))
    if "speed.csv" in results:
        speed_figure(plt, out, results["speed.csv"])
        backends_figure(plt, out, results["speed.csv"], results.get("backend_quality.csv"), opts["metric"])
    pareto_figure(plt, out, results, opts)
    head = headline_table(results, cfg, opts["metric"], geometry=geo)
    if not head.empty:
        srcs = [s for s in ("peer_check.csv", "ce_quality.csv", "de2ce.csv", "speed.csv", "pipeline.csv", "query_distill.csv")
                if s in results] + ([os.path.relpath(geometry, results_dir)] if geo is not None else [])
        out.table(head, "headline", srcs, "Headline claims: the papers vs this reproduction.")
    out.write_manifest()
    return out.manifest


def check_manifest(results_dir: str | Path, root: str | Path | None = None) -> list[str]:
    """Problems with the committed figures: a listed file missing, or a source CSV whose sha256
    differs from the one recorded when the figure was made. Empty list = consistent."""
    results_dir = Path(results_dir)
    root = Path(root) if root else repo_root()
    path = results_dir / "figures_manifest.json"
    if not path.is_file():
        return [f"{path} is missing"]
    manifest = json.loads(path.read_text())
    problems = []
    for key, item in manifest.items():
        for f in item["files"]:
            if not (root / f).is_file():
                problems.append(f"{key}: {f} is missing")
        for src, digest in item["sources"].items():
            p = results_dir / src
            if not p.is_file():
                problems.append(f"{key}: source {src} is missing")
            elif sha256(p) != digest:
                problems.append(f"{key}: {src} changed after the figure was made (run `make figures`)")
    return problems
