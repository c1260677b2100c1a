"""Paper 1 (Ananthakrishnan et al., 2025), part two: DE-k CE students (light dual encoders from the CE's early
layers) against the full DE and controls, and the pipelines that retrieve with one and re-rank with the CE."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ce_utils.core.io import LATENCY_METRICS, LATENCY_MS, QUERIES_ONLY
from ce_utils.report.style import grid
from ce_utils.report.tables import Output, saved


def de2ce_order(d: pd.DataFrame) -> list[str]:
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
    order = de2ce_order(d)
    datasets = sorted(d["dataset"].unique())
    fig, axes = grid(plt, len(datasets), width=max(3.8, 0.3 * len(order) + 1), height=4.2, ncols=1)
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
    if not saved(out, draw_de2ce(plt, df, metric), "de2ce", "de2ce.csv", f"has no {metric} rows"):
        return
    d = df[df["metric"] == metric]
    order = de2ce_order(d)
    datasets = sorted(d["dataset"].unique())
    tab = d.pivot_table(index="model", columns="dataset", values="value", aggfunc="mean").reindex(order)
    full = [m for m in order if "full" in m]
    if full:
        for ds in datasets:
            tab[f"{ds} % of full"] = 100 * tab[ds] / tab.loc[full[0], ds]
    out.table(tab.reset_index(), "de2ce", ["de2ce.csv"], f"{metric} of the DE-k CE students and controls.")


def pipeline_stages(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    d = df[df["metric"] == metric].copy()
    d["stage"] = np.where(d["reranker"].astype(str) == "none", "first stage",
                          d["reranker"].astype(str) + " @" + d["depth"].astype(int).astype(str))
    return d


def draw_pipeline(plt, df: pd.DataFrame, metric: str = "NDCG@10"):
    """Grouped bars: each first stage alone and after CE re-ranking of its top-k (``None`` without
    rows). Used by notebook 02 and :func:`pipeline_figure`."""
    d = pipeline_stages(df, metric)
    if d.empty:
        return None
    datasets = sorted(d["dataset"].unique())
    fig, axes = grid(plt, len(datasets), width=4.0)
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
    if not saved(out, draw_pipeline(plt, df, metric), "pipeline", "pipeline.csv", f"has no {metric} rows"):
        return
    d = pipeline_stages(df, metric)
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

