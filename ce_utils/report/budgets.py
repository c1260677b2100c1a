"""The budget sweep (``ce_utils.experiments.curves.budgets``, `make budgets`; ``results/<profile>/budgets.csv``): how
many steps, at which learning rate, each kind of student needs, from independent runs with their own complete
schedule, scored on dev splits carved from training data.

A run is (spec, budget_steps, seed, learning_rate, schedule, precision); its score is the mean retention over
its dev collections. Runs in fp32 and in bf16 autocast make up one curve once the precision sweep shows them
equal (``precision_table``). A partial CSV (a sweep still running) is drawn as far as it goes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ce_utils.core.io import seed_spread
from ce_utils.report.style import REFERENCE, legend_right, minutes_axis, subplots, system_color
from ce_utils.report.tables import PCT, Output, saved

RUN = ["spec", "budget_steps", "seed", "learning_rate", "schedule", "precision"]
KINDS = {"query-student": ("query students (asymmetric: the teacher's documents)", 92.5,
                           "paper 2: 92.5% of the teacher (2 of 12 layers)"),
         "de-k-ce": ("DE-k CE students (symmetric: own documents)", 99.0, "paper 1: DE-2 CE ~99% of the full DE")}
PAPER_SETS = "15 BEIR sets"  # where KINDS' query-student level comes from


def spec_layers(spec: str) -> str | None:
    """``"subset:0,11"`` -> ``"0,11"``: the teacher layers a query student keeps; ``None`` for other specs."""
    kind, _, layers = str(spec).partition(":")
    return layers if kind == "subset" and layers else None


def paper_level(kind: str, spec: str, same_sets: dict | None = None) -> tuple[float | None, str]:
    """The paper's level (%) a student is held against and where it comes from: the paper's own number for the
    student's layer subset on the same collections where ``same_sets`` (layers -> %, a 12-layer teacher's
    :func:`ce_utils.report.paper2.geometry_table`) has it, else the kind's headline (:data:`KINDS`)."""
    layers = spec_layers(spec)
    if same_sets and layers in same_sets:
        return float(same_sets[layers]), "the same sets"
    level = KINDS.get(kind, ("", None, ""))[1]
    return level, (PAPER_SETS if kind == "query-student" else "paper 1") if level is not None else ""


def budget_runs(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run: student, kind, sweep, its score (``retention``: mean over its dev collections), the
    number of those, minutes of training and epochs of text; dev rows at the run's last step only."""
    d = df[df["phase"] == "dev"] if "phase" in df.columns else df
    if "step" in d.columns:
        d = d[d["step"].isna() | (d["step"] == d["budget_steps"])]
    d = d.assign(**{c: d.get(c, default) for c, default in (("schedule", "linear"), ("minutes", np.nan),
                                                           ("epochs_of_text", np.nan), ("precision", "fp32"))})
    d = d.assign(precision=d["precision"].fillna("fp32"))  # rows written before the column: fp32
    return d.groupby(RUN, as_index=False, sort=False, dropna=False).agg(
        student=("student", "first"), kind=("kind", "first"), sweep=("sweep", "first"),
        retention=("retention", "mean"), n_datasets=("dataset", "nunique"), minutes=("minutes", "max"),
        epochs_of_text=("epochs_of_text", "first"))


def recipe_rates(df: pd.DataFrame) -> dict[str, float]:
    """Each student's recipe learning rate: the most frequent ``learning_rate`` of its ``sweep == "budget"``
    rows (of all its rows when it has none)."""
    out = {}
    for student, g in df.groupby("student", sort=False):
        b = g[g["sweep"] == "budget"]
        out[student] = float((b if not b.empty else g)["learning_rate"].mode().sort_values().iloc[0])
    return out


def over_seeds(runs: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Runs grouped by ``by``: mean, min and max retention over seeds, the number of seeds, mean minutes and
    epochs of text, and the sweeps they came from."""
    return runs.groupby(by, as_index=False, sort=False).agg(
        retention=("retention", "mean"), lo=("retention", "min"), hi=("retention", "max"), seeds=("seed", "nunique"),
        runs=("seed", "size"), minutes=("minutes", "mean"), epochs_of_text=("epochs_of_text", "mean"),
        sweep=("sweep", lambda s: "+".join(dict.fromkeys(s.astype(str)))),
        precision=("precision", lambda s: "+".join(sorted(set(s.astype(str))))))


def tuned_rates(runs: pd.DataFrame, rates: dict) -> dict[str, list[float]]:
    """Each student's chosen learning rates other than its recipe's: those of its ``tuned`` and ``seed`` runs."""
    t = runs[runs["sweep"].isin(["tuned", "seed"])]
    return {student: sorted(x for x in g["learning_rate"].unique() if not np.isclose(x, rates[student]))
            for student, g in t.groupby("student", sort=False)}


def minutes_per_step(runs: pd.DataFrame) -> float:
    """The median over ``runs`` (of :func:`budget_runs`) of each run's minutes of training per step; NaN
    without timed runs. The runs' own minutes stay in the budgets table: machines and thread counts differ."""
    timed = runs[runs["minutes"].notna() & (runs["budget_steps"] > 0)]
    return float((timed["minutes"] / timed["budget_steps"]).median()) if not timed.empty else float("nan")


def _curve(ax, g: pd.DataFrame, color, label: str, ls: str = "-") -> None:
    """One budget curve: mean over seeds per budget, min-max bars where >= 2 seeds."""
    m = over_seeds(g, ["budget_steps"]).sort_values("budget_steps")
    ax.plot(m["budget_steps"], 100 * m["retention"], marker="o", ms=3, color=color, ls=ls, label=label)
    spread = m[m["seeds"] >= 2]
    if not spread.empty:
        ax.errorbar(spread["budget_steps"], 100 * spread["retention"], fmt="none", ecolor=color, capsize=3,
                    yerr=[100 * (spread["retention"] - spread["lo"]), 100 * (spread["hi"] - spread["retention"])])


def _budget_panel(ax, runs: pd.DataFrame, rates: dict, kind: str, same_sets: dict | None = None) -> None:
    title, level, label = KINDS.get(kind, (kind, None, ""))
    tuned = tuned_rates(runs, rates)
    for student, g in runs.groupby("student", sort=False):
        color = system_color(student)
        _curve(ax, g[np.isclose(g["learning_rate"], rates[student])], color, f"{student} (lr {rates[student]:g})")
        for lr in tuned.get(student, []):  # the curve at the grid's best rate (dashed), where the headline sits
            _curve(ax, g[np.isclose(g["learning_rate"], lr)], color, f"{student} (lr {lr:g}, chosen)", ls="--")
    if level is not None:
        ax.axhline(level, label=label + (f" over {PAPER_SETS}" if kind == "query-student" else ""), **REFERENCE)
    for spec, g in runs.groupby("spec", sort=False):  # the paper's own row for this subset, on our collections
        own, where = paper_level(kind, spec, same_sets)
        if where == "the same sets":
            ax.axhline(own, color=system_color(g["student"].iloc[0]), ls=":", lw=1.2,
                       label=f"paper 2, {{{spec_layers(spec)}}} on the same sets: {own:.1f}%")
    budgets = sorted(runs["budget_steps"].unique())
    ax.set_xscale("log", base=2)
    ax.set_xticks(budgets, [str(int(b)) for b in budgets], fontsize=6, rotation=45)
    ax.minorticks_off()
    ax.set(xlabel="budget (training steps; log 2)", ylabel="mean dev retention (%)")
    ax.set_title(title, pad=24)
    rate = minutes_per_step(runs)
    if np.isfinite(rate) and rate > 0:
        minutes_axis(ax, budgets, [b * rate for b in budgets], ticks=True,
                     label=f"minutes of training at this panel's median {60 * rate:.2f} s/step (CPU; each run's own "
                           "in the budgets table)")
    ax.plot([], [], color="0.4", marker="|", ls="", label="bars: min-max over seeds")
    legend_right(ax, fontsize=6)


def _lr_panel(ax, runs: pd.DataFrame, rates: dict) -> None:
    """The learning-rate grid: every run of a student at the budget of its ``sweep == "lr"`` runs (the recipe's
    rate hollow), mean over seeds, against the learning rate."""
    lr = runs[runs["sweep"] == "lr"]
    for (student, budget), _ in lr.groupby(["student", "budget_steps"], sort=False):
        at = runs[(runs["student"] == student) & (runs["budget_steps"] == budget)]
        m = over_seeds(at, ["learning_rate"]).sort_values("learning_rate")
        color = system_color(student)
        ax.plot(m["learning_rate"], 100 * m["retention"], marker="s", ms=3, color=color,
                label=f"{student} at {int(budget)} steps")
        recipe = m[np.isclose(m["learning_rate"], rates[student])]
        ax.plot(recipe["learning_rate"], 100 * recipe["retention"], "o", ms=7, mfc="none", mec=color)
    rates_seen = sorted(runs.loc[runs["student"].isin(set(lr["student"])) & runs["budget_steps"].isin(
        set(lr["budget_steps"])), "learning_rate"].unique())
    ax.set_xscale("log")
    ax.set_xticks(rates_seen, [f"{r:g}" for r in rates_seen], fontsize=6, rotation=30)
    ax.minorticks_off()
    ax.set(title="learning-rate grid at one budget (circled: the recipe's rate)", xlabel="learning rate (log)",
           ylabel="mean dev retention (%)")
    if not lr.empty:
        legend_right(ax, fontsize=6)
    else:  # this kind's grid has not run yet (a sweep still running)
        ax.text(0.5, 0.5, "no learning-rate grid yet", ha="center", va="center", transform=ax.transAxes, fontsize=8)
        ax.set_yticks([])


def draw_budgets(plt, df: pd.DataFrame, same_sets: dict | None = None):
    """Retention (%) against the budget in steps (log 2; minutes of training on the top axis, at the panel's median
    rate), a panel per kind of student, a line per student at
    its recipe's learning rate and a dashed one at its chosen rate (tuned and seed runs), with min-max bars over
    seeds where a budget has >= 2, the paper's level as a reference (and, dotted, the paper's number for the
    student's own subset on the same collections where ``same_sets`` has it: :func:`paper_level`); below, the
    learning-rate grid runs (retention against learning rate at their budget). ``None`` without runs."""
    runs = budget_runs(df)
    if runs.empty:
        return None
    rates = recipe_rates(df)
    kinds = list(dict.fromkeys(runs["kind"]))
    with_lr = (runs["sweep"] == "lr").any()
    fig, axes = subplots(plt, 2 if with_lr else 1, len(kinds), width=5.2 if len(kinds) > 1 else 7.6, height=3.2,
                         gridspec_kw={"height_ratios": [1.6, 1.0]} if with_lr else None)
    for i, kind in enumerate(kinds):
        _budget_panel(axes[0, i], runs[runs["kind"] == kind], rates, kind, same_sets)
        if with_lr:
            _lr_panel(axes[1, i], runs[runs["kind"] == kind], rates)
    fig.suptitle("Budget sweep: independent runs, each with its own complete schedule,"
                 + (" " if len(kinds) > 1 else "\n") + "scored on dev splits carved from training data", fontsize=9)
    return fig


def budgets_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per student, budget and learning rate: mean retention (%) over its runs (seeds, and fp32 / bf16 where both
    ran), its min-max, the number of seeds and runs, the precisions, minutes of training and epochs of text."""
    runs = budget_runs(df)
    t = over_seeds(runs, ["kind", "student", "budget_steps", "learning_rate"])
    order = {s: i for i, s in enumerate(dict.fromkeys(runs["student"]))}
    t = t.assign(_s=t["student"].map(order)).sort_values(["_s", "learning_rate", "budget_steps"], kind="stable")
    return pd.DataFrame({
        "student": t["student"], "kind": t["kind"], "budget (steps)": t["budget_steps"].astype(int),
        "learning rate": [f"{x:g}" for x in t["learning_rate"]], "sweep": t["sweep"],
        "retention % (mean)": 100 * t["retention"], "min %": 100 * t["lo"], "max %": 100 * t["hi"],
        "seeds": t["seeds"], "runs": t["runs"], "precision": t["precision"], "minutes": t["minutes"],
        "epochs of text": t["epochs_of_text"]}).reset_index(drop=True)


def tested_rows(df: pd.DataFrame | None, sweep: str = "seed") -> pd.DataFrame:
    """The rows of one sweep's runs on the full test collections (``seed``: the headline runs; ``tuned``: the
    tuned curve's); empty without them."""
    if df is None or df.empty or "phase" not in df.columns:
        return pd.DataFrame(columns=["student", "kind", "budget_steps", "learning_rate", "seed", "dataset", "retention"])
    return df[(df["phase"] == "test") & (df["sweep"] == sweep)]


def budget_headline_table(df: pd.DataFrame, same_sets: dict | None = None) -> pd.DataFrame:
    """The headline runs (``sweep == "seed"``: the chosen budget and learning rate, every seed) on the full test
    collections: per student, each collection's retention (%, mean over seeds), the mean over collections (mean
    over seeds of each run's mean) with its sd and min-max, the number of seeds, and the paper's level
    (:func:`paper_level`: its own subset on the same sets where ``same_sets`` has it) with the difference (points)
    and where that level comes from. Empty without test rows."""
    t = tested_rows(df)
    if t.empty:
        return pd.DataFrame()
    by = ["kind", "student", "budget_steps", "learning_rate"]
    spread = seed_spread(t, by).set_index(by)
    rows = []
    for (kind, student, budget, lr), g in t.groupby(by, sort=False):
        m = spread.loc[(kind, student, budget, lr)]
        level, where = paper_level(kind, g["spec"].iloc[0] if "spec" in g else "", same_sets)
        row = {"student": student, "kind": kind, "budget (steps)": int(budget), "learning rate": f"{lr:g}"}
        row.update({f"{ds} %": 100 * v for ds, v in g.groupby("dataset", sort=False)["retention"].mean().items()})
        row.update({"mean %": 100 * m["mean"], "sd (pt)": 100 * m["sd"], "min %": 100 * m["lo"], "max %": 100 * m["hi"],
                    "seeds": int(m["seeds"]), "paper %": level,
                    "ours - paper (pt)": 100 * m["mean"] - level if level else np.nan, "paper on": where})
        rows.append(row)
    return pd.DataFrame(rows)


def precision_table(df: pd.DataFrame) -> pd.DataFrame:
    """The precision sweep: per student and budget where both fp32 and bf16 runs exist, each precision's mean
    dev retention (%) over seeds, its sd, seeds and minutes per run, and bf16 - fp32 (points)."""
    runs = budget_runs(df)
    rows = []
    for (student, budget, lr), g in runs.groupby(["student", "budget_steps", "learning_rate"], sort=False):
        if g["precision"].nunique() < 2:
            continue
        by = g.groupby("precision")
        m, sd, n, mins = by["retention"].mean(), by["retention"].std(), by["seed"].nunique(), by["minutes"].mean()
        rows.append({"student": student, "budget (steps)": int(budget), "learning rate": f"{lr:g}",
                     "fp32 %": 100 * m.get("fp32", np.nan), "fp32 sd": 100 * sd.get("fp32", np.nan),
                     "fp32 seeds": int(n.get("fp32", 0)), "bf16 %": 100 * m.get("bf16", np.nan),
                     "bf16 sd": 100 * sd.get("bf16", np.nan), "bf16 seeds": int(n.get("bf16", 0)),
                     "bf16 - fp32 (pt)": 100 * (m.get("bf16", np.nan) - m.get("fp32", np.nan)),
                     "fp32 min/run": mins.get("fp32", np.nan), "bf16 min/run": mins.get("bf16", np.nan)})
    return pd.DataFrame(rows)


def budgets_figure(plt, out: Output, df: pd.DataFrame, same_sets: dict | None = None) -> None:
    """The budget figure and its tables; ``same_sets``: see :func:`paper_level`."""
    if not saved(out, draw_budgets(plt, df, same_sets), "budgets", "budgets.csv", "holds no finished dev runs"):
        return
    dev = df[df["phase"] == "dev"] if "phase" in df.columns else df
    splits = ", ".join(f"{d} {s}" for d, s in dict.fromkeys(zip(dev["dataset"], dev.get("split", dev["dataset"]))))
    out.table(budgets_table(df), "budgets", ["budgets.csv"],
              "Budget sweep (independent runs, each with its own complete learning-rate schedule): per student, "
              "budget and learning rate, the mean over seeds of each run's dev retention (% of the teacher's / full "
              f"DE's NDCG@10, averaged over its dev collections: {splits}), its min-max over seeds, the number of seeds, "
              "minutes of training (CPU) and epochs of the training text.", floatfmt=PCT,
              formats={"minutes": ".1f", "epochs of text": ".2f"})
    head = budget_headline_table(df, same_sets)
    if not head.empty:
        out.table(head, "budget_headline", ["budgets.csv"],
                  "Headline runs of the budget sweep: each student at its chosen point (of every budget and learning "
                  "rate measured on dev, the smallest budget within 1 point of the best), one run per seed, scored on the full "
                  "test collections (every test query, whole corpus): retention (% of the teacher's / full DE's NDCG@10) "
                  "per collection (mean over seeds) and the mean over collections with its sd and min-max over seeds, "
                  "against the paper's level.", floatfmt=PCT)
    chk = precision_table(df)
    if not chk.empty:
        out.table(chk, "budget_precision", ["budgets.csv"],
                  "Precision sweep: the same runs trained in fp32 and in bf16 autocast (where the CPU computes bf16 natively) "
                  "at one budget, mean dev retention (%) over seeds with its sd; bf16 runs join the budget curves "
                  "where the two agree within the seed spread. Minutes per run are wall clock on a shared machine "
                  "under varying load, not a timing of the two precisions.", floatfmt=PCT,
                  formats={"fp32 min/run": ".1f", "bf16 min/run": ".1f"})
