"""Paper 2 (Wang & Lyu, 2023): query-encoder students by initialisation next to the published table, paper 2's
own geometry (its 13 layer subsets of a 12-layer teacher) and the students' learning curves."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ce_utils.core.config import ConfigError, repo_root
from ce_utils.report import reference as ref
from ce_utils.report.tables import DEFAULTS, Output, saved


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
    if not saved(out, draw_query_curve(plt, df), name, source, "has no dev rows"):
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



def curve_summary(curve: pd.DataFrame, target: float = 0.925, flat: float = 0.005) -> list[str]:
    """Sentences from a curve: the mean dev retention at each student's first and last evaluation, the
    first step (and minutes) at which it reaches ``target``, and where it flattens (the first step after
    which the mean never gains more than ``flat`` again)."""
    lines = []
    dev = curve[curve["phase"] == "dev"]
    for name, g in dev.groupby("student", sort=False):
        m = g.groupby("step").agg(retention=("retention", "mean"), minutes=("minutes", "max")).sort_index()
        hit = m[m["retention"] >= target]
        best_after = m["retention"][::-1].cummax()[::-1]
        flat_at = next((s for s in m.index if best_after.loc[s] - m.loc[s, "retention"] <= flat), m.index[-1])
        lines.append(
            f"{name}: mean dev retention {100 * m['retention'].iloc[0]:.1f}% at step 0, "
            f"{100 * m['retention'].iloc[-1]:.1f}% at step {m.index[-1]} ({m['minutes'].iloc[-1]:.1f} min of "
            f"training); " + (f"reaches {100 * target:.1f}% at step {hit.index[0]} ({hit['minutes'].iloc[0]:.1f} min)"
                              if len(hit) else f"never reaches {100 * target:.1f}%")
            + f"; within {100 * flat:.1f} pts of its best from step {flat_at} on.")
    test = curve[curve["phase"] == "test"]
    for name, g in test.groupby("student", sort=False):
        lines.append(f"{name} after {int(g['step'].iloc[0])} steps, full test collections: mean retention "
                     f"{100 * g['retention'].mean():.1f}% ("
                     + ", ".join(f"{d} {100 * r:.1f}%" for d, r in zip(g["dataset"], g["retention"])) + ").")
    return lines


def _paper_side_by_side(qd: pd.DataFrame, cfg: dict | None) -> pd.DataFrame | None:
    """Our retention next to the paper's (:mod:`ce_utils.report.reference`); ``None`` when unavailable."""
    teacher = qd[qd["student"] == "teacher"]
    n_teacher = int(teacher["n_layers"].max()) if not teacher.empty and teacher["n_layers"].notna().any() else None
    if not n_teacher:
        idx = [int(x) for s in qd["layers"].dropna().astype(str) for x in s.split(",") if x.strip().isdigit()]
        n_teacher = max(idx) + 1 if idx else None
    if not n_teacher:
        return None
    try:
        paper, _ = ref.paper_retention_table(cfg)
    except (ConfigError, OSError, KeyError, ValueError) as exc:  # a reference folder without a usable table
        print(f"note: no paper overlay ({type(exc).__name__}: {exc}).")
        return None
    return ref.side_by_side(qd, paper, n_teacher, dataset_map=ref.paper_dataset_map(qd["dataset"].astype(str).unique()))


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
    """A 12-layer teacher's query_distill.csv as paper 2's table (:func:`reference.subset_table`) and the rank
    agreement with it; an empty table when the CSV has no teacher rows or none of the paper's subsets."""
    teacher = df[df["student"] == "teacher"]
    if teacher.empty:
        return pd.DataFrame(), {}
    paper, _ = ref.paper_retention_table(cfg)
    ours = df[df["metric"].isin([metric, f"retention_{metric}"])]
    tab = ref.subset_table(ours, paper, int(teacher["n_layers"].max()))
    return tab, (ref.rank_agreement(tab) if len(tab) else {})


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



def geometry_results(opts: dict) -> Path | None:
    """``figures.paper2_geometry`` (a results folder, relative to the repository root) -> its
    query_distill.csv; ``None`` when the option is unset."""
    where = opts.get("paper2_geometry")
    if not where:
        return None
    p = Path(where)
    return (p if p.is_absolute() else repo_root() / p) / "query_distill.csv"

