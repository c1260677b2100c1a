"""Paper 1 (Ananthakrishnan et al., 2025), part two: DE-k CE students (light dual encoders from the CE's early
layers) against the full DE and controls, and the pipelines that retrieve with one and re-rank with the CE."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.patches import Patch

from ce_utils.core.io import LATENCY_METRICS, LATENCY_MS, QUERIES_ONLY
from ce_utils.report.style import CE, REFERENCE, grid, subplots, system_color, wrap_queries_only
from ce_utils.report.tables import PCT, SCORE, Output, datasets_text, distinct, saved, seeds_text, span, values_text

PAPER1_LEVEL = 99.0   # paper 1: DE-2 CE within ~1% of the full DE



def pct_of_full(d: pd.DataFrame, model: str) -> tuple[np.ndarray, list[str]]:
    """Per seed, the mean over datasets of ``model``'s score as % of the full DE's (rows of de2ce.csv at one
    metric), and the datasets it is taken over (those where both have a score)."""
    full = d[d["init"] == "full"].groupby("dataset")["value"].mean()
    two = d[d["model"] == model]
    common = sorted(x for x in set(two["dataset"]) if x in full.index and full[x])
    by_seed = two.groupby("seed") if "seed" in two.columns else [(None, two)]
    per_seed = [100 * np.mean([g.loc[g["dataset"] == x, "value"].mean() / full[x] for x in common])
                for _, g in by_seed] if common else []
    return np.asarray(per_seed), common


def de2ce_order(d: pd.DataFrame) -> list[str]:
    """Models by size in the CSV's order, each student's queries-only row right after its symmetric one."""
    names = list(dict.fromkeys(d.sort_values(["n_layers"], kind="stable")["model"]))
    base = [m for m in names if not m.endswith(QUERIES_ONLY)]
    out = []
    for m in base:
        out += [m] + ([m + QUERIES_ONLY] if m + QUERIES_ONLY in names else [])
    return out + [m for m in names if m not in out]


def full_de_name(d: pd.DataFrame) -> str | None:
    """The full DE's model name in de2ce.csv (``init == "full"``, else a name with ``full``)."""
    rows = d[d["init"].astype(str) == "full"] if "init" in d.columns else d.iloc[0:0]
    names = list(rows["model"]) or [m for m in d["model"] if "full" in str(m)]
    return str(names[0]) if names else None


def de2ce_wide(df: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, list[str], str | None]:
    """(table, datasets, full DE): ``metric`` per model and dataset, each dataset's % of the full DE and their mean
    (``mean % of full DE``, the headline number); rows in :func:`de2ce_order`."""
    d = df[df["metric"] == metric]
    datasets = list(dict.fromkeys(d["dataset"].astype(str)))
    tab = d.pivot_table(index="model", columns="dataset", values="value", aggfunc="mean").reindex(de2ce_order(d))
    tab = tab[datasets]
    full = full_de_name(d)
    if full is not None and full in tab.index:
        pct = 100 * tab[datasets] / tab.loc[full, datasets]
        for ds in datasets:
            tab[f"{ds} % of full DE"] = pct[ds]
        tab["mean % of full DE"] = pct.mean(axis=1)
    return tab, datasets, full


def draw_de2ce(plt, df: pd.DataFrame, metric: str = "NDCG@10"):
    """Horizontal bars, a panel per dataset and one for the mean over datasets, the models listed once: each
    student's ``metric`` as % of the full DE's, with reference lines at the full DE (100%) and paper 1's level
    (~99% for DE-2 CE); hatched: the student encodes queries only, against the full DE's documents. Without a
    full DE row, the raw ``metric``. ``None`` without rows. Used by notebook 02 and :func:`de2ce_figure`."""
    if df[df["metric"] == metric].empty:
        return None
    tab, datasets, full = de2ce_wide(df, metric)
    relative = "mean % of full DE" in tab.columns
    cols = [f"{ds} % of full DE" for ds in datasets] + ["mean % of full DE"] if relative else datasets
    titles = [f"{ds}\n(full DE {tab.loc[full, ds]:.3f})" for ds in datasets] + ["mean over datasets\n(the headline)"] \
        if relative else datasets
    models = [m for m in tab.index if not (relative and m == full)]
    fig, axes = subplots(plt, 1, len(cols), width=2.35, height=0.6 + 0.24 * len(models), sharey=True)
    y = np.arange(len(models))
    for ax, col, title in zip(axes[0], cols, titles):
        vals = tab.loc[models, col].to_numpy(dtype=float)
        bars = ax.barh(y, np.nan_to_num(vals), color=[system_color(m) for m in models], height=0.75)
        for bar, m, v in zip(bars, models, vals):
            if m.endswith(QUERIES_ONLY):   # the student encodes queries; the full DE's documents are searched
                bar.set_hatch("///")
                bar.set_edgecolor("white")
            if np.isfinite(v):
                ax.text(v, bar.get_y() + bar.get_height() / 2, f" {v:.1f}" if relative else f" {v:.3f}",
                        va="center", fontsize=6)
        if relative:
            ax.axvline(100, label="full DE (100%)", **REFERENCE)
            ax.axvline(PAPER1_LEVEL, color="C3", ls=":", lw=1.2, label="paper 1: DE-2 CE ~99% of the full DE")
            ax.set_xlim(0, 125)
        ax.set_title(title, fontsize=8)
        ax.grid(axis="y", visible=False)
    axes[0, 0].set_yticks(y, models, fontsize=7)
    axes[0, 0].invert_yaxis()
    fig.supxlabel(f"% of the full DE's {metric}" if relative else metric, fontsize=8)
    if relative:
        fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside right lower")
    fig.suptitle("DE-k CE: light dual encoders from the CE's early layers vs controls\n(hatched: the student "
                 "encodes queries only, against the full DE's documents)", fontsize=8)
    return fig


def training_text(d: pd.DataFrame) -> str:
    """``MSE, 150 steps on 4,800 texts; MNRL, 30 steps on 919 texts; seed 42`` from de2ce.csv's training columns."""
    trained = d[d["init"].astype(str) != "full"] if "init" in d.columns else d
    if "train_steps" not in trained.columns:
        return ""
    parts = []
    for loss, g in (trained.groupby("loss", sort=False) if "loss" in trained.columns else [("", trained)]):
        texts = f" on {span(g, 'train_texts')} texts" if "train_texts" in g.columns else ""
        parts.append(f"{str(loss).upper()}{', ' if loss else ''}{span(g, 'train_steps')} steps{texts}")
    return "; ".join(parts) + (f"; {seeds_text(trained)}" if seeds_text(trained) else "")


def de2ce_figure(plt, out: Output, df: pd.DataFrame, metric: str) -> None:
    if not saved(out, draw_de2ce(plt, df, metric), "de2ce", "de2ce.csv", f"has no {metric} rows"):
        return
    d = df[df["metric"] == metric]
    tab, datasets, full = de2ce_wide(df, metric)
    budget = training_text(d)
    out.table(tab.reset_index(), "de2ce", ["de2ce.csv"],
              f"{metric} of the DE-k CE students (the CE's embeddings and first k-1 layers, or the controls' from the "
              f"DE / random), trained toward the full DE's embeddings ({budget}), on the full test collections "
              f"({datasets_text(d)}); symmetric unless 'queries only' (the student encodes queries against the full "
              f"DE's documents). % of the full DE ({full}) per dataset and their mean: the headline number "
              f"(paper 1: DE-2 CE ~99%).", formats={**{ds: SCORE for ds in datasets},
                                                   **{c: PCT for c in tab.columns if "%" in str(c)}})


def pipeline_stages(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    d = df[df["metric"] == metric].copy()
    d["stage"] = np.where(d["reranker"].astype(str) == "none", "first stage",
                          d["reranker"].astype(str) + " @" + d["depth"].astype(int).astype(str))
    return d


def draw_pipeline(plt, df: pd.DataFrame, metric: str = "NDCG@10"):
    """Grouped bars: each first stage alone (in its system colour) and after the CE (blue) re-ranks its top-k,
    a shade per depth (``None`` without rows). Used by notebook 02 and :func:`pipeline_figure`."""
    d = pipeline_stages(df, metric)
    if d.empty:
        return None
    datasets = list(dict.fromkeys(d["dataset"].astype(str)))
    fig, axes = grid(plt, len(datasets), width=5.4, height=3.2)
    for ax, ds in zip(axes, datasets):
        w = d[d["dataset"] == ds].pivot_table(index="first_stage", columns="stage", values="value", aggfunc="mean",
                                              sort=False)
        cols = ["first stage"] + sorted([c for c in w.columns if c != "first stage"],
                                        key=lambda s: int(s.rsplit("@", 1)[1]))
        w = w[[c for c in cols if c in w.columns]]
        width = 0.8 / max(1, len(w.columns))
        reranked = [c for c in w.columns if c != "first stage"]
        handles = [Patch(facecolor="0.75", edgecolor="0.3", label="first stage alone (in its own colour)")]
        for i, c in enumerate(w.columns):
            x = np.arange(len(w)) + i * width
            if c == "first stage":
                ax.bar(x, w[c].values, width, color=[system_color(f) for f in w.index])
                continue
            shade = 0.45 + 0.55 * (reranked.index(c) + 1) / len(reranked)
            ax.bar(x, w[c].values, width, color=CE, alpha=shade)
            handles.append(Patch(facecolor=CE, alpha=shade,
                                 label=f"{c.split(' @')[0]} re-ranks its top-{c.rsplit('@', 1)[1]}"))
        ax.set_xticks(np.arange(len(w)) + 0.4 - width / 2, [wrap_queries_only(f) for f in w.index], fontsize=7)
        ax.set(title=ds, ylabel=metric)
        ax.grid(axis="x", visible=False)
    fig.legend(handles=handles, loc="outside right upper")
    fig.suptitle("First-stage retrieval, then CE re-ranking of the top-k")
    return fig


def pipeline_figure(plt, out: Output, df: pd.DataFrame, metric: str) -> None:
    if not saved(out, draw_pipeline(plt, df, metric), "pipeline", "pipeline.csv", f"has no {metric} rows"):
        return
    d = pipeline_stages(df, metric)
    tab = d.pivot_table(index=["dataset", "first_stage"], columns="stage", values="value", aggfunc="mean",
                        sort=False)
    ce = ", ".join(str(m) for m in distinct(d[d["reranker"].astype(str) != "none"], "reranker_model")) or "the CE"
    out.table(tab.reset_index(), "pipeline", ["pipeline.csv"],
              f"{metric} of each first stage alone and after the cross encoder ({ce}) re-ranks its top "
              f"{values_text(d[d['depth'] > 0], 'depth')}, on the full test collections ({datasets_text(d)}).")
    lat = pipeline_latency_table(df, metric)
    if not lat.empty:
        out.table(lat, "pipeline_latency", ["pipeline.csv"],
                  f"Each pipeline's {metric} (every test query) and its measured end-to-end CPU time per query "
                  f"({span(lat, 'threads')} thread; median and IQR over {span(lat, 'latency queries')} sampled queries "
                  "answered one at a time; parts: encode, search, CE re-rank), on the full test collections.",
                  floatfmt=".1f", formats={metric: SCORE, "latency queries": ".0f", "threads": ".0f"})


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
