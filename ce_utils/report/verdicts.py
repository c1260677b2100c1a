"""The verdict table: every claim of both papers, the paper's number, ours (with its seeds or spread), a
verdict and the CSV it rests on -- computed from the result CSVs, so a rerun at other budgets or seeds
rewrites the verdicts with the numbers.

Rules (one place, stated so a reader can check them):

* ``reproduced``: ours within the claim's tolerance of the paper's number (or better), from a component
  that works; ``partly``: the claim's direction holds but its level or its premise does not;
  ``not reproduced``: it does not hold at the budget measured; ``not testable offline``: it needs what is
  not here (a GPU, the paper's models).
* A number from fewer than 3 seeds says so (``1 seed``); with >= 3 seeds it is ``mean +- sd`` and two
  systems within each other's spread are ``tied``.
* The budget sweep's evidence comes first: its headline runs (3 seeds at the chosen point), else its largest
  tuned run (one seed, scored on test); a comparison of two students is taken at one budget.
* A level claim missed while the budget sweep (``budgets.csv``) still rises at its largest measured budget
  says ``budget not converged`` (``budget not measured`` without a sweep): more training was not shown useless.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ce_utils.report.budgets import budget_runs, over_seeds, recipe_rates, tested_rows, tuned_rates
from ce_utils.report.ce_seeds import gain_summary
from ce_utils.report.de2ce import pct_of_full

COLUMNS = ["claim", "paper", "ours", "verdict", "evidence"]
TOLERANCE_PTS = 1.0        # retention points: "within ~1%" (paper 1), "92.5%" (paper 2)
SPEARMAN_AGREES = 0.7      # a ranking of layer subsets agrees with the paper's at this Spearman or above


def seeds_text(values: pd.Series | np.ndarray, fmt: str = "{:.1f}", unit: str = "") -> str:
    """``x (1 seed)`` or ``mean ± sd (n seeds)``, ``unit`` after each number."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return f"{fmt.format(v.mean())}{unit} (1 seed)"
    return f"{fmt.format(v.mean())}{unit} ± {fmt.format(v.std(ddof=1))}{unit} ({len(v)} seeds)"


def budget_trend(budgets: pd.DataFrame | None, student: str) -> str:
    """What the budget sweep says of ``student`` at its chosen learning rate (its tuned and seed runs' rate),
    else at its recipe's: ``dev 50.5% -> 69.5% at 150 -> 600 steps, still rising`` (two doublings gaining
    < 1 point: ``flat from N steps``; the chosen rate named); ``""`` when the sweep has no run of it."""
    if budgets is None or budgets.empty or student not in set(budgets["student"]):
        return ""
    runs = budget_runs(budgets)
    recipe = recipe_rates(budgets)
    chosen = tuned_rates(runs, recipe).get(student, [])
    rate = chosen[-1] if chosen else recipe[student]
    g = runs[(runs["student"] == student) & np.isclose(runs["learning_rate"], rate)]
    m = over_seeds(g, ["budget_steps"]).sort_values("budget_steps")
    if m.empty:
        return ""
    steps, ret = m["budget_steps"].astype(int).tolist(), (100 * m["retention"]).tolist()
    flat = next((steps[i] for i in range(len(steps) - 2) if ret[i + 2] - ret[i] < TOLERANCE_PTS), None)
    state = f"flat from {flat} steps" if flat is not None else (
        "still rising" if len(steps) > 1 and ret[-1] > ret[-2] else "not converged")
    lr = f" (lr {rate:g})" if chosen else ""
    return f"dev {ret[0]:.1f}% → {ret[-1]:.1f}% at {steps[0]} → {steps[-1]} steps{lr}, {state}"


def _sweep_rows(budgets: pd.DataFrame | None, student: str, sweep: str) -> pd.DataFrame:
    """``student``'s test rows of its ``sweep`` runs in the budget sweep (empty without any)."""
    t = tested_rows(budgets, sweep)
    return t[t["student"] == student]


def sweep_test(budgets: pd.DataFrame | None, student: str, sweep: str = "seed") -> dict[int, np.ndarray]:
    """``{budget_steps: per-seed mean test retention in %}`` of ``student``'s ``sweep`` runs in the budget sweep
    (``seed``: the headline runs; ``tuned``: the one-seed runs of the curve at the chosen rate, scored on test too)."""
    t = _sweep_rows(budgets, student, sweep)
    return {int(b): 100 * g.groupby("seed")["retention"].mean().to_numpy() for b, g in t.groupby("budget_steps")}


def headline_sweep(budgets: pd.DataFrame | None, student: str) -> str | None:
    """Which runs are ``student``'s test evidence: its headline runs (``"seed"``), without them its tuned curve
    (``"tuned"``), else ``None``."""
    return next((sw for sw in ("seed", "tuned") if not _sweep_rows(budgets, student, sw).empty), None)


def seed_headline(budgets: pd.DataFrame | None, student: str) -> tuple[np.ndarray, int | None]:
    """The budget sweep's test evidence of ``student``: its headline runs (``sweep == "seed"``) per seed, in %, and
    their budget; without them, its largest tuned run's (one seed, still a curve); empty and ``None`` without either."""
    sweep = headline_sweep(budgets, student)
    if sweep is None:
        return np.asarray([]), None
    runs = sweep_test(budgets, student, sweep)
    return runs[max(runs)], max(runs)


def ce_sources(budgets: pd.DataFrame | None, student: str, steps: int | None, sweep: str | None = None) -> str:
    """``"; CEs trained on 2 CPUs"`` when the runs behind ``student``'s number at ``steps`` (its ``sweep`` runs;
    by default those ``seed_headline`` reads) copied CEs trained on more than one CPU (``ce_trained_on``: the same
    recipe gives another CE on another CPU), else ``""``."""
    sweep = sweep or headline_sweep(budgets, student)
    if budgets is None or steps is None or sweep is None or "ce_trained_on" not in budgets.columns:
        return ""
    t = _sweep_rows(budgets, student, sweep)
    n = t.loc[t["budget_steps"] == steps, "ce_trained_on"].dropna().nunique()
    return f"; CEs trained on {n} CPUs" if n > 1 else ""


def paired_headline(budgets: pd.DataFrame | None, a: str, b: str):
    """Two students' sweep test evidence at one budget where they can be compared: both headlines (their own
    budgets); else the largest budget both have tuned runs at; else ``None``. With the sweep the runs are of."""
    sa, sb = sweep_test(budgets, a), sweep_test(budgets, b)
    if sa and sb:
        return sa[max(sa)], max(sa), sb[max(sb)], max(sb), "seed"
    ta, tb = sweep_test(budgets, a, "tuned"), sweep_test(budgets, b, "tuned")
    common = sorted(set(ta) & set(tb))
    if common:
        return ta[common[-1]], common[-1], tb[common[-1]], common[-1], "tuned"
    return None


def level_evidence(budgets: pd.DataFrame | None, student: str, fallback: np.ndarray, fallback_steps: int | None,
                   fallback_src: str) -> tuple[np.ndarray, int | None, list[str], str]:
    """A level claim's evidence: the budget sweep's headline runs of ``student`` where they exist (:func:`seed_headline`),
    else ``fallback`` (per-seed %) from ``fallback_src`` at ``fallback_steps``; the CSVs it rests on (budgets.csv too
    when the sweep has a trend) and the sweep's :func:`budget_trend`."""
    trend = budget_trend(budgets, student)
    ours, steps = seed_headline(budgets, student)
    src = "budgets.csv"
    if not len(ours):
        ours, steps, src = fallback, fallback_steps, fallback_src
    return ours, steps, list(dict.fromkeys([src, "budgets.csv"])) if trend else [src], trend


def compare_verdict(a: np.ndarray, b: np.ndarray) -> str:
    """``a`` better than ``b`` (values in points)? With >= 3 seeds each: tied when the means differ by no more than
    the larger sd, else reproduced / not reproduced, marked narrow with the gap and the sd while the gap is under
    twice the larger sd; with fewer, the direction and the seed count."""
    if len(a) >= 3 and len(b) >= 3:
        gap, sd = abs(a.mean() - b.mean()), max(a.std(ddof=1), b.std(ddof=1))
        if gap <= sd:
            return "tied (within the seed spread)"
        verdict = "reproduced" if a.mean() > b.mean() else "not reproduced"
        return verdict + (f" (narrow: {gap:.2f} pt apart, larger sd {sd:.2f})" if gap < 2 * sd else "")
    n = min(len(a), len(b))
    return f"partly ({n} seed{'s' if n > 1 else ''})" if a.mean() > b.mean() else f"not reproduced ({n} seed{'s' if n > 1 else ''})"


def _level_verdict(ours: float, paper: float, trend: str) -> str:
    if ours >= paper - TOLERANCE_PTS:
        return "reproduced"
    why = ("budget not measured" if not trend else
           "budget not converged" if "rising" in trend or "not converged" in trend else "at the budget measured")
    return f"not reproduced ({why})"


def _link(profile: str, name: str) -> str:
    return f"[{name}](results/{profile}/{name})"


def verdict_table(results: dict, metric: str = "NDCG@10", profile: str = "default",
                  geometry: tuple[pd.DataFrame, dict] | None = None,
                  geometry_budgets: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per claim of both papers (and the evaluator check first), from whatever CSVs exist."""
    rows = []
    L = lambda *names: ", ".join(_link(profile, n) for n in names)  # noqa: E731
    budgets = results.get("budgets.csv")
    pc = results.get("peer_check.csv")
    if pc is not None:
        for _, r in pc[pc["metric"] == metric].iterrows():
            ok = abs(r["delta"]) <= r["tolerance"]
            rows.append(["Our evaluator scores a public DE as published (check)", f"MTEB {r['published']:.3f}",
                         f"{r['value']:.3f} (Δ {r['delta']:+.3f})", "reproduced" if ok else "not reproduced",
                         L("peer_check.csv")])
    probe = results.get("layer_probe.csv")
    if probe is not None:
        ret = probe[(probe["section"] == "retrieval") & (probe["metric"] == metric)]
        best, early = [], []
        for _, g in ret.groupby("dataset"):
            by = {k: s.groupby("layer")["value"].mean() for k, s in g.groupby("model_kind")}
            if "ce" in by and "de" in by:
                best.append(int(by["ce"].idxmax()))
                early.append(100 * by["ce"][by["ce"].index <= 2].mean() / by["de"][by["de"].index <= 2].mean())
        cka = probe[(probe["section"] == "control") & (probe["model_kind"] == "ce-vs-de") & (probe["metric"] == "CKA")
                    & (probe["layer"] <= 2)]["value"]
        if best:
            shape = all(b <= 2 for b in best) and min(early) >= 100 - TOLERANCE_PTS
            shared = not cka.empty and cka.min() >= 0.9
            verdict = ("partly (CE fine-tuned from the DE: shared early weights, CKA ≥ "
                       f"{np.floor(100 * cka.min()) / 100:.2f})" if shape and shared else
                       "reproduced" if shape else "not reproduced")
            rows.append(["P1: a CE's early-layer self-pair embeddings work for retrieval",
                         "best at early layers, worse with depth",
                         f"CE best at layer {'/'.join(map(str, sorted(set(best))))} on {len(best)} sets; "
                         f"{min(early):.0f}-{max(early):.0f}% of the DE over layers 0-2", verdict,
                         L("layer_probe.csv")])
    cs = results.get("ce_seeds.csv")
    if cs is not None and not cs.empty:  # the CE trained with several seeds: its gain with its spread
        verdicts = {"beats": "reproduced", "tie": "tied (gain within its spread of 0)", "worse": "not reproduced"}
        for _, r in gain_summary(cs[cs["metric"] == metric]).iterrows():
            g = cs[(cs["ce"] == r["ce"]) & (cs["dataset"] == r["dataset"]) & (cs["metric"] == metric)]
            rows.append([f"P1: a CE re-ranks the DE's top-{int(g['depth'].iloc[0])} ({r['dataset']})",
                         "gains over the first stage", f"{metric} {seeds_text(g['gain'], '{:+.3f}')}",
                         verdicts.get(r["verdict"], f"partly ({r['verdict']}: no spread)" if r["mean"] > 0
                                      else "not reproduced"), L("ce_seeds.csv")])
    cq = results.get("ce_quality.csv") if cs is None or cs.empty else None
    if cq is not None:
        d = cq[cq["metric"] == metric]
        for ds, g in d.groupby("dataset"):
            first = g[g["stage"] == "first_stage"].groupby("seed")["value"].mean()
            ce = g[g["stage"] == "ce_rerank"].groupby("seed")["value"].mean()
            gain = (ce - first.reindex(ce.index)).dropna()
            if gain.empty:
                continue
            depth = int(g["depth"].iloc[0])
            if len(gain) >= 3:
                lo = gain.mean() - gain.std(ddof=1)
                verdict = "reproduced" if lo > 0 else "tied (gain within its spread of 0)"
            else:
                verdict = "partly (1 seed: no spread)" if gain.iloc[0] > 0 else "not reproduced"
            rows.append([f"P1: a CE re-ranks the DE's top-{depth} ({ds})", "gains over the first stage",
                         f"{metric} {seeds_text(gain, '{:+.3f}')}", verdict, L("ce_quality.csv")])
    de2ce = results.get("de2ce.csv")
    d = de2ce[de2ce["metric"] == metric] if de2ce is not None else None

    def de2(student: str) -> tuple[np.ndarray, int | None, str]:
        """Per seed, % of the full DE on the test collections: the sweep's headline runs where they exist (the
        chosen budget), else notebook 02's students; their steps and the CSV."""
        vals, steps = seed_headline(budgets, student)
        if len(vals):
            return vals, steps, "budgets.csv"
        return nb02(student)

    def nb02(student: str) -> tuple[np.ndarray, int | None, str]:
        """Notebook 02's student: per seed, % of the full DE on the test collections; its steps and the CSV."""
        if d is None or d[d["model"] == student].empty:
            return np.asarray([]), None, ""
        return pct_of_full(d, student)[0], int(d.loc[d["model"] == student, "train_steps"].max()), "de2ce.csv"

    ce2, ce_steps, ce_src = de2("DE-2 CE")
    if len(ce2):
        trend = budget_trend(budgets, "DE-2 CE") or budget_trend(budgets, "DE-2 DE")
        rows.append(["P1: DE-2 CE retrieves within ~1% of the full DE", "~99%",
                     f"{seeds_text(ce2, unit='%')}, {ce_steps} steps"
                     + (ce_sources(budgets, "DE-2 CE", ce_steps) if ce_src == "budgets.csv" else ""),
                     _level_verdict(ce2.mean(), 99.0, trend),
                     L(*dict.fromkeys([ce_src, "budgets.csv"])) if trend else L(ce_src)])
    derived = "; CE derived from the DE" if profile == "default" else ""
    for other, claim in (("DE-2 DE", "P1: a CE start beats a DE start (DE-2 CE vs DE-2 DE)"),
                         ("DE-2 untuned CE", "P1: a relevance-trained CE start beats its untuned start "
                                             "(DE-2 CE vs DE-2 untuned CE)")):
        pair = paired_headline(budgets, "DE-2 CE", other)  # the sweep's, where it has both
        if pair is not None:
            a, a_steps, vals, steps, sweep = pair
            a_src = src = "budgets.csv"
        else:  # else notebook 02's two students, trained alike
            (a, a_steps, a_src), (vals, steps, src), sweep = nb02("DE-2 CE"), nb02(other), None
        if len(a) and len(vals):
            rows.append([claim, "CE start better",
                         f"{seeds_text(a, unit='%')} vs {seeds_text(vals, unit='%')}"
                         + (f", {a_steps} steps" if a_steps == steps else f", {a_steps} vs {steps} steps")
                         + (ce_sources(budgets, "DE-2 CE", a_steps, sweep) if a_src == "budgets.csv" else ""),
                         compare_verdict(a, vals) + (derived if other == "DE-2 DE" else ""),
                         L(*dict.fromkeys([a_src, src]))])
    top, top_steps, top_src = de2("DE-2 CE+top")
    if len(top):
        rows.append(["Beyond both: DE-2 CE with the full DE's top layer (DE-2 CE+top)", "—",
                     f"{seeds_text(top, unit='%')} of the full DE, {top_steps} steps", "—", L(top_src)])
    sp = results.get("speed.csv")
    if sp is not None:
        keep = {"tokenization": "included", "device": "cpu", "threads": 1, "backend": "torch"}
        one = sp[np.logical_and.reduce([sp[c] == v for c, v in keep.items() if c in sp.columns] + [np.ones(len(sp), bool)])]
        for model, claim, paper in (("DE-2 CE", "P1: DE-2 CE encodes faster than the full DE", "5.15x (GPU)"),
                                    ("query-student L0_5", "P2: a 2-layer query encoder is faster", "GPU throughput")):
            g = one[one["model"] == model]
            if not g.empty:
                rows.append([claim, paper, f"CPU {g['speedup_vs_de'].min():.2f}-{g['speedup_vs_de'].max():.2f}x "
                             f"(FLOP ratio {g['flop_ratio'].iloc[0]:.1f})", "not testable offline (no GPU)",
                             L("speed.csv")])
    qd = results.get("query_distill.csv")
    if qd is not None:
        ret = qd[(qd["metric"] == f"retention_{metric}") & (qd["dataset"] == "mean") & (qd["n_layers"] == 2)]
        teacher = qd[qd["student"] == "teacher"]
        n_t = int(teacher["n_layers"].max()) if not teacher.empty and teacher["n_layers"].notna().any() else None
        pick = ret[ret["layers"].astype(str) == f"0,{n_t - 1}"] if n_t else ret.iloc[0:0]
        if not pick.empty:
            student = str(pick["student"].iloc[0])
            ours, steps, srcs, trend = level_evidence(
                budgets, student, (100 * pick.groupby("seed")["value"].mean()).to_numpy(),
                int(qd.loc[qd["student"] == student, "train_steps"].max()), "query_distill.csv")
            rows.append([f"P2: bottom + top layers keep 92.5% of the teacher ({{{pick['layers'].iloc[0]}}} of {n_t})",
                         "92.5% (15 BEIR sets)", f"{seeds_text(ours, unit='%')}, {steps} steps",
                         _level_verdict(ours.mean(), 92.5, trend), L(*srcs)])
    if geometry is not None and not geometry[0].empty:
        tab, agree = geometry
        ok = agree["spearman_same_sets"] >= SPEARMAN_AGREES and agree["best_2_ours"] == agree["best_2_paper"]
        rows.append([f"P2: the ranking of its {agree['n_subsets']} layer subsets (12-layer teacher)",
                     f"best 2-layer {{{agree['best_2_paper']}}}",
                     f"Spearman {agree['spearman_same_sets']:.2f}; best {{{agree['best_2_ours']}}}",
                     "reproduced" if ok else "not reproduced", "[query_distill.csv](results/mpnet/query_distill.csv)"])
        row = tab[tab["layers"] == "0,11"]
        if not row.empty:
            r = row.iloc[0]
            # the geometry profile's own budget sweep (results/mpnet/budgets.csv), where it has run
            ours, steps, srcs, trend = level_evidence(geometry_budgets, "L0_11", np.asarray([100 * r["ours_mean"]]),
                                                      None, "query_distill.csv")
            rows.append(["P2: the same level with a 12-layer teacher ({0,11})",
                         f"{100 * r['paper_same_sets']:.1f}% (same sets)",
                         seeds_text(ours, unit="%") + (f", {steps} steps" if steps is not None else "")
                         + (f"; sweep {trend}" if trend else ""),
                         _level_verdict(ours.mean(), 100 * r["paper_same_sets"], trend),
                         ", ".join(_link("mpnet", n) for n in srcs)])
    return pd.DataFrame(rows, columns=COLUMNS)


INDEPENDENT = "P1, CE trained apart from the DE:"


def independent_rows(results: dict, metric: str = "NDCG@10", profile: str = "judge") -> pd.DataFrame:
    """Paper 1's claims answered a second time, on the results of a profile whose CE is not derived from the DE
    (the judge profile): its P1 rows of :func:`verdict_table`, their claims marked :data:`INDEPENDENT` and their
    evidence linked to that profile's folder. Empty when the profile has no results."""
    t = verdict_table(results, metric, profile)
    t = t[t["claim"].str.startswith("P1:")].copy()
    t["claim"] = t["claim"].str.replace("P1:", INDEPENDENT, n=1, regex=False)
    return t.reset_index(drop=True)
