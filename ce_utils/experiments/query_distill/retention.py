"""Retention (paper 2's measure: student NDCG@10 / teacher NDCG@10) of notebook 03's students. The published
table and its comparison with ours are read by :mod:`ce_utils.report.reference`."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

RETENTION_METRIC = "NDCG@10"


def retention_rows(df: pd.DataFrame, metric: str = RETENTION_METRIC) -> pd.DataFrame:
    """Retention = student metric / teacher metric, per dataset, and its mean over datasets
    (dataset ``mean``): the paper's definition, with ``metric`` = NDCG@10."""
    base = df[(df["metric"] == metric)]
    teacher = base[base["student"] == "teacher"].set_index("dataset")["value"]
    out = []
    for student, grp in base[base["student"] != "teacher"].groupby("student", sort=False):
        per = []
        for _, r in grp.iterrows():
            t = teacher.get(r["dataset"])
            if t is None or t == 0:
                continue
            ratio = float(r["value"]) / float(t)
            per.append(ratio)
            out.append({**r.to_dict(), "metric": f"retention_{metric}", "value": ratio})
        if per:
            first = grp.iloc[0].to_dict()
            out.append({**first, "dataset": "mean", "metric": f"retention_{metric}", "value": float(np.mean(per)),
                        "approximate": bool(grp["approximate"].any()), "n_queries": int(grp["n_queries"].sum()),
                        "n_docs": int(grp["n_docs"].sum())})
    return pd.DataFrame(out, columns=list(df.columns))


# --------------------------------------------------------------------------- the paper's numbers


def plot_retention(ours: pd.DataFrame, side: pd.DataFrame, ax=None, title: str = ""):
    """Bars: our mean NDCG@10 retention per student; markers: the paper's retention for the
    relative-position subset (mean over its 15 datasets), where it exists."""

    ret = ours[(ours["metric"] == f"retention_{RETENTION_METRIC}") & (ours["dataset"] == "mean")]
    ret = ret.sort_values(["n_layers", "value"])
    if ax is None:
        _, ax = plt.subplots(figsize=(max(6, 0.7 * len(ret)), 4))
    x = np.arange(len(ret))
    ax.bar(x, ret["value"], color="tab:blue", label="ours (mean over our datasets)")
    paper = side[side["dataset"] == "mean"].set_index("student")["paper"]
    px = [i for i, s in enumerate(ret["student"]) if s in paper.index]
    ax.scatter(px, [paper[ret["student"].iloc[i]] for i in px], color="tab:red", marker="D", zorder=3,
               label="paper, same relative layers (mean of 15 BEIR sets)")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xticks(x, [f"{s}\n({n}L)" for s, n in zip(ret["student"], ret["n_layers"])], rotation=45, ha="right")
    ax.set_ylabel("NDCG@10 retention (student / teacher)")
    ax.set_ylim(0, max(1.05, float(ret["value"].max()) + 0.05))
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    return ax
