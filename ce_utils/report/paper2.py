"""Paper 2 (Wang & Lyu, 2023): query-encoder students by initialisation next to the published table, and paper 2's
own geometry (its 13 layer subsets of a 12-layer teacher, from another profile's results)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ce_utils.core.config import ConfigError, repo_root
from ce_utils.report import reference as ref
from ce_utils.report.curves import curve_summary
from ce_utils.report.style import FULL_DE, PAPER_COLORS, legend_right, subplots, system_color
from ce_utils.report.tables import DEFAULTS, PCT, Output, datasets_text, distinct, seeds_text, span

PAPER_SETS = 15   # paper 2's headline mean is over 15 BEIR sets


def teacher_layers(qd: pd.DataFrame) -> int | None:
    """Our teacher's depth: its rows' ``n_layers``, else one more than the highest layer a student names."""
    teacher = qd[qd["student"] == "teacher"]
    if not teacher.empty and teacher["n_layers"].notna().any():
        return int(teacher["n_layers"].max())
    idx = [int(x) for s in qd["layers"].dropna().astype(str) for x in s.split(",") if x.strip().isdigit()]
    return max(idx) + 1 if idx else None


def _paper_side_by_side(qd: pd.DataFrame, cfg: dict | None) -> pd.DataFrame | None:
    """Our retention next to the paper's (:mod:`ce_utils.report.reference`); ``None`` when unavailable."""
    n_teacher = teacher_layers(qd)
    if not n_teacher:
        return None
    try:
        paper, _ = ref.paper_retention_table(cfg)
    except (ConfigError, OSError, KeyError, ValueError) as exc:  # a reference folder without a usable table
        print(f"note: no paper overlay ({type(exc).__name__}: {exc}).")
        return None
    return ref.side_by_side(qd, paper, n_teacher, dataset_map=ref.paper_dataset_map(qd["dataset"].astype(str).unique()))


def training_budget(df: pd.DataFrame) -> str:
    """``80 steps on 10,240 training queries, seed 42`` from a query_distill.csv's students."""
    st = df[df["student"] != "teacher"]
    parts = [f"{span(st, 'train_steps')} steps" if "train_steps" in st.columns else "",
             f"on {span(st, 'train_queries')} training queries" if "train_queries" in st.columns else "",
             seeds_text(st)]
    return ", ".join(p for p in (" ".join(parts[:2]).strip(), parts[2]) if p)


def paper_bars(ax, x, width: float, series: list[tuple[np.ndarray, str]]) -> None:
    """The published numbers as grey bars (hatched after the first) beside ours."""
    for i, (vals, label) in enumerate(series):
        ax.bar(x + (i + 1) * width, vals, width, color=PAPER_COLORS[i % 2], edgecolor="0.45", lw=0.5,
               hatch="///" if i else None, label=label)


def query_distill_figure(plt, out: Output, df: pd.DataFrame, metric: str, cfg: dict | None) -> pd.DataFrame | None:
    ret_metric = f"retention_{metric}"
    d = df[(df["metric"] == ret_metric) & (df["dataset"] == "mean")]
    if d.empty:
        print(f"note: query_distill.csv has no {ret_metric} rows (dataset 'mean') -- query-student figure skipped.")
        return None
    d = d.groupby(["student", "strategy", "layers", "n_layers"], as_index=False, dropna=False)["value"].mean()
    d = d.sort_values(["n_layers", "strategy", "student"], kind="stable")
    sbs = _paper_side_by_side(df, cfg)
    paper, paper_layers = {}, {}
    if sbs is not None and not sbs.empty:
        mean = sbs[sbs["dataset"] == "mean"].groupby("student")
        paper, paper_layers = mean["paper"].first().to_dict(), mean["paper_layers"].first().to_dict()
    n_t, per = teacher_layers(df), df[(df["metric"] == ret_metric) & (df["dataset"] != "mean")]
    n_sets = len(distinct(per, "dataset"))
    teacher = ", ".join(distinct(df, "teacher")) if "teacher" in df.columns else "the teacher"
    fig, axes = subplots(plt, width=max(5.0, 0.9 * len(d) + 1.5), height=3.6)
    ax, x = axes[0, 0], np.arange(len(d))
    pv = np.array([100 * paper.get(s, np.nan) for s in d["student"]])
    ax.bar(x - 0.2, 100 * d["value"], 0.4, color=[system_color(s) for s in d["student"]],
           label=f"ours (coloured by student):\nlayers of our {n_t}-layer teacher,\nmean of our {n_sets} sets")
    paper_bars(ax, x - 0.2, 0.4, [(pv, f"paper 2: the same relative layers\nof its {ref.PAPER_TEACHER_LAYERS}-layer "
                                       f"teacher,\nmean of {PAPER_SETS} BEIR sets")])
    ax.axhline(100, color=FULL_DE, lw=0.7)
    labels = [f"{s}\nours {{{l}}}\n{'paper {' + paper_layers[s] + '}' if s in paper_layers else 'paper -'}"
              for s, l in zip(d["student"], d["layers"])]
    ax.set_xticks(x, labels, fontsize=6)
    ax.set(ylabel=f"{metric} retention (% of teacher)", ylim=(0, 108),
           title=f"Query-encoder students by initialisation (teacher {teacher})")
    ax.grid(axis="x", visible=False)
    legend_right(ax)
    out.figure(fig, "query_distill", ["query_distill.csv"])
    tab = d.drop(columns="value").assign(
        paper_layers=[paper_layers.get(s, "") for s in d["student"]],
        **{f"ours: mean of {n_sets} sets": 100 * d["value"].to_numpy(),
           f"paper: mean of {PAPER_SETS} sets": pv}).rename(columns={"paper_layers": "paper layers"})
    out.table(tab, "query_distill", ["query_distill.csv"],
              f"Mean {metric} retention (% of the teacher's) of the query students. ours: layers of our {n_t}-layer "
              f"teacher ({teacher}), trained {training_budget(df)}, mean over our {n_sets} test collections "
              f"({datasets_text(per)}); paper: paper 2's student at the same relative position in its "
              f"{ref.PAPER_TEACHER_LAYERS}-layer teacher ({ref.PAPER_TEACHER}; paper layers), mean over its "
              f"{PAPER_SETS} BEIR sets, empty where it has no such subset.", floatfmt=PCT)
    return tab


def geometry_table(df: pd.DataFrame, metric: str = "NDCG@10", cfg: dict | None = None) -> tuple[pd.DataFrame, dict]:
    """A 12-layer teacher's query_distill.csv as paper 2's table (:func:`reference.subset_table`, with each
    subset's ``train_steps``) and the rank agreement with it; an empty table when the CSV has no teacher rows or none of the paper's subsets."""
    teacher = df[df["student"] == "teacher"]
    if teacher.empty:
        return pd.DataFrame(), {}
    paper, _ = ref.paper_retention_table(cfg)
    ours = df[df["metric"].isin([metric, f"retention_{metric}"])]
    tab = ref.subset_table(ours, paper, int(teacher["n_layers"].max()))
    if len(tab) and "train_steps" in df.columns:  # each subset's training budget (notebook 03's steps)
        steps = df[df["student"] != "teacher"].groupby(df["layers"].astype(str))["train_steps"].max()
        tab = tab.assign(train_steps=tab["layers"].astype(str).map(steps))
    return tab, (ref.rank_agreement(tab) if len(tab) else {})


def same_set_levels(df: pd.DataFrame | None, metric: str = "NDCG@10", cfg: dict | None = None) -> dict[str, float]:
    """Layers -> the paper's retention (%) for that subset, averaged over the collections ``df`` (a
    query_distill.csv) shares with the paper's table; only for a teacher of the paper's depth
    (``ref.PAPER_TEACHER_LAYERS``), where a subset is the paper's own row. Empty otherwise."""
    if df is None:
        return {}
    teacher = df[df["student"] == "teacher"]
    if teacher.empty or int(teacher["n_layers"].max()) != ref.PAPER_TEACHER_LAYERS:
        return {}
    tab, _ = geometry_table(df, metric, cfg)
    return {str(r["layers"]): 100 * float(r["paper_same_sets"]) for _, r in tab.iterrows()} if len(tab) else {}


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
    if curve.is_file():   # a longer run of one subset on dev splits (python -m ce_utils curve --profile mpnet)
        lines += curve_summary(pd.read_csv(curve))
    return lines


def geometry_figure(plt, out: Output, tab: pd.DataFrame, agree: dict, metric: str, source: str,
                    df: pd.DataFrame | None = None) -> dict | None:
    """Paper 2 in its own geometry (``make paper2-geometry``): every layer subset of the published table,
    our mean retention next to the paper's on the same datasets and over its 15 sets, and the Spearman
    agreement of the two rankings; ``tab`` / ``agree`` from :func:`geometry_table`, ``df`` the CSV they came
    from (its teacher and budget for the caption). ``source``: the CSV's path relative to this profile's
    results folder."""
    if tab.empty:
        print(f"note: {source} holds no teacher rows or none of the paper's layer subsets -- the paper-geometry "
              "figure is skipped.")
        return None
    teacher = ", ".join(distinct(df, "teacher")) if df is not None and "teacher" in df.columns else "a 12-layer teacher"
    fig, axes = subplots(plt, width=max(6.0, 0.62 * len(tab) + 2), height=3.6)
    ax, x = axes[0, 0], np.arange(len(tab))
    ax.bar(x - 0.27, 100 * tab["ours_mean"], 0.27, label="ours (coloured by subset), mean of our sets",
           color=[system_color("L" + str(l).replace(",", "_")) for l in tab["layers"]])
    paper_bars(ax, x - 0.27, 0.27, [(100 * tab["paper_same_sets"], "paper 2, the same sets"),
                                    (100 * tab["paper_mean"], f"paper 2, mean of {PAPER_SETS} BEIR sets")])
    ax.axhline(100, color=FULL_DE, lw=0.7)
    ax.set_xticks(x, [f"{{{l}}}" for l in tab["layers"]], rotation=45, ha="right", fontsize=7)
    ax.set(ylabel=f"{metric} retention (% of teacher)", ylim=(0, 108),
           title=f"Paper 2's layer subsets of a 12-layer teacher (ours: {teacher})\nSpearman of the rankings "
                 f"{agree['spearman_same_sets']:.2f} (same sets), {agree['spearman_paper_mean']:.2f} ({PAPER_SETS} sets)")
    ax.grid(axis="x", visible=False)
    legend_right(ax)
    out.figure(fig, "query_distill_geometry", [source])
    cols = [c for c in tab.columns if c.startswith(("ours_", "paper_")) and c != "paper_layers"]
    shown = tab.assign(**{c: 100 * tab[c] for c in cols})
    budget = training_budget(df) if df is not None else ""
    sets = datasets_text(df[df["student"] != "teacher"]) if df is not None else "our sets"
    out.table(shown, "query_distill_geometry", [source],
              f"{metric} retention (% of the teacher's) of paper 2's 13 layer subsets: ours (12-layer teacher "
              f"{teacher}{', trained ' + budget if budget else ''}; per test collection and the mean over {sets}) next "
              f"to the paper's ({ref.PAPER_TEACHER}) on the same sets and over its {PAPER_SETS}; Spearman of the "
              f"rankings {agree['spearman_same_sets']:.2f} on the same sets, {agree['spearman_paper_mean']:.2f} "
              f"against the paper's {PAPER_SETS}-set mean.", floatfmt=PCT)
    return agree


def geometry_results(opts: dict) -> Path | None:
    """``figures.paper2_geometry`` (a results folder, relative to the repository root) -> its
    query_distill.csv; ``None`` when the option is unset."""
    where = opts.get("paper2_geometry")
    if not where:
        return None
    p = Path(where)
    return (p if p.is_absolute() else repo_root() / p) / "query_distill.csv"
