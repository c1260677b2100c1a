"""Learning curves of query students (paper 2) and DE-k CE students (paper 1) on dev splits carved from training
data (``query_distill_curve.csv``): retention against training steps, minutes on a secondary axis."""

from __future__ import annotations

import pandas as pd

from ce_utils.report.style import REFERENCE, legend_right, minutes_axis, subplots, system_color
from ce_utils.report.tables import PCT, Output, distinct, saved, seeds_text

TARGETS = {"query-student": (0.925, "paper 2: 92.5% of the teacher (2 of 12 layers)"),
           "de-k-ce": (0.99, "paper 1: DE-2 CE within ~1% of the full DE")}
WHAT = {"query-student": "query students: asymmetric (teacher's documents)",
        "de-k-ce": "DE-k CE students: symmetric (own documents)"}


def draw_query_curve(plt, df: pd.DataFrame, target: float = 0.925):
    """Dev learning curves: retention (student / teacher NDCG@10 on dev queries carved from training data)
    against training steps, a panel per kind of student; per student the mean over dev collections bold
    (its minutes of training in the legend, and on a top axis when the panel has one student) and each
    collection thin; the paper's level dashed. ``None`` without dev rows."""
    d = df[df["phase"] == "dev"]
    if d.empty:
        return None
    d = d.assign(kind=d["kind"].fillna("query-student") if "kind" in d.columns else "query-student")
    kinds = list(dict.fromkeys(d["kind"]))
    fig, axes = subplots(plt, len(kinds), 1, width=8.5, height=3.3)
    targets = {**TARGETS, "query-student": (target, f"paper 2: {100 * target:.1f}% of the teacher (2 of 12 layers)")}
    for ax, kind in zip(axes[:, 0], kinds):
        _query_curve_panel(ax, d[d["kind"] == kind], *targets.get(kind, (target, "")), kind)
    return fig


def _query_curve_panel(ax, d: pd.DataFrame, target: float, target_label: str, kind: str) -> None:
    students = list(dict.fromkeys(d["student"]))
    for name in students:
        g = d[d["student"] == name]
        color = system_color(name)
        m = g.groupby("step").agg(retention=("retention", "mean"), minutes=("minutes", "max")).sort_index()
        layers = g["layers"].iloc[0] if "layers" in g.columns else None
        ax.plot(m.index, 100 * m["retention"], color=color, marker="o", ms=3, lw=2,
                label=f"{name}" + (f" (layers {layers})" if isinstance(layers, str) and layers else "")
                + f", mean ({m.index[-1]} steps = {m['minutes'].iloc[-1]:.1f} min)")
        for _, gd in g.groupby("dataset"):
            gd = gd.sort_values("step")
            ax.plot(gd["step"], 100 * gd["retention"], color=color, lw=0.8, alpha=0.6, ls=":")
        if len(students) == 1:
            minutes_axis(ax, m.index, m["minutes"])
    ax.plot([], [], color="0.4", lw=0.8, ls=":", label="thin: each dev collection (" + ", ".join(
        f"{ds} {sp}" for ds, sp in dict.fromkeys(zip(d["dataset"], d.get("split", d["dataset"])))) + ")")
    ax.axhline(100 * target, label=target_label, **REFERENCE)
    ax.set(xlabel="training step", ylabel="% of the full DE's NDCG@10 on dev",
           title=f"Learning curves on dev splits carved from training data\n{WHAT.get(kind, kind)}")
    ax.set_ylim(top=max(ax.get_ylim()[1], 100 * target + 3))  # the target line stays in view
    legend_right(ax, fontsize=6)


def retention_by_step(d: pd.DataFrame) -> pd.DataFrame:
    """Per student (in the CSV's order) and step: minutes, retention (%) per dataset and their mean."""
    if d.empty:
        return pd.DataFrame()
    tab = d.pivot_table(index=["student", "step"], columns="dataset", values="retention", aggfunc="mean")
    tab = 100 * tab[list(dict.fromkeys(d["dataset"]))]
    tab["mean"] = tab.mean(axis=1)
    tab.insert(0, "minutes", d.groupby(["student", "step"])["minutes"].max().reindex(tab.index))
    order = {s: i for i, s in enumerate(dict.fromkeys(d["student"]))}
    tab = tab.reset_index()
    return tab.assign(_s=tab["student"].map(order)).sort_values(["_s", "step"]).drop(columns="_s")


def query_curve_figure(plt, out: Output, df: pd.DataFrame, name: str = "query_distill_curve",
                       source: str = "query_distill_curve.csv") -> None:
    """The curve figure and table; ``name`` / ``source`` (relative to the results folder) for another
    profile's curve (paper 2's geometry)."""
    if not saved(out, draw_query_curve(plt, df), name, source, "has no dev rows"):
        return
    dev = df[df["phase"] == "dev"]
    tab = pd.concat([retention_by_step(dev).assign(phase="dev"),
                     retention_by_step(df[df["phase"] == "test"]).assign(phase="test (full collections)")],
                    ignore_index=True)
    tab = tab[["phase"] + [c for c in tab.columns if c != "phase"]]
    splits = ", ".join(f"{ds} {sp}" for ds, sp in dict.fromkeys(zip(dev["dataset"], dev.get("split", dev["dataset"]))))
    seeds = seeds_text(df)
    out.table(tab, name, [source],
              f"Retention (%) of the full DE's (the teacher's) NDCG@10 by training step of {', '.join(distinct(dev, 'student'))}"
              f", on dev splits carved from training data ({splits}) and, where given, on the full test collections "
              "after the last step; query students asymmetric (the teacher's documents), DE-k CE students symmetric"
              + (f"; {seeds}" if seeds else "") + ".", floatfmt=PCT)


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
