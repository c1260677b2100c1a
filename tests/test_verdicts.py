"""The verdict table (ce_utils.report.verdicts): each rule on tiny result frames made here."""

import numpy as np
import pandas as pd

from ce_utils.report.verdicts import budget_trend, compare_verdict, seeds_text, verdict_table


def budgets(student, points, rate=1e-4, kind="query-student"):
    rows = []
    for steps, retention in points:
        for ds in ("a", "b"):
            rows.append({"student": student, "spec": "subset:0,5", "kind": kind, "sweep": "budget", "budget_steps": steps,
                         "step": steps, "seed": 42, "learning_rate": rate, "schedule": "linear", "phase": "dev",
                         "dataset": ds, "retention": retention})
    return pd.DataFrame(rows)


def query_distill(retentions, steps=80):
    rows = [{"student": "teacher", "layers": "0,1,2,3,4,5", "n_layers": 6, "metric": "NDCG@10", "dataset": "a",
             "value": 0.5, "seed": 42, "train_steps": 0}]
    for seed, r in zip((42, 43, 44), retentions):
        rows.append({"student": "L0_5", "layers": "0,5", "n_layers": 2, "metric": "retention_NDCG@10", "dataset": "mean",
                     "value": r, "seed": seed, "train_steps": steps})
    return pd.DataFrame(rows)


def row(table, prefix):
    hit = table[table["claim"].str.startswith(prefix)]
    assert len(hit) == 1, table["claim"].tolist()
    return hit.iloc[0]


def test_seeds_are_stated():
    assert seeds_text([49.6], unit="%") == "49.6% (1 seed)"
    assert seeds_text([1.0, 2.0, 3.0]) == "2.0 ± 1.0 (3 seeds)"


def test_budget_trend_says_rising_or_flat():
    rising = budgets("L0_5", [(80, 0.82), (160, 0.85), (320, 0.87)])
    assert budget_trend(rising, "L0_5").endswith("still rising")
    flat = budgets("L0_5", [(80, 0.82), (160, 0.85), (320, 0.87), (640, 0.874), (1280, 0.876)])
    assert budget_trend(flat, "L0_5").endswith("flat from 320 steps")
    assert budget_trend(rising, "DE-2 CE") == ""
    # tuned runs at the grid's best rate: the trend is that curve's, the rate named (the recipe's curve still rises)
    tuned = budgets("L0_5", [(320, 0.92), (640, 0.926), (1280, 0.929)], rate=8e-4).assign(sweep="tuned")
    trend = budget_trend(pd.concat([rising, tuned]), "L0_5")
    assert trend == "dev 92.0% → 92.9% at 320 → 1280 steps (lr 0.0008), flat from 320 steps"


def test_a_level_missed_while_the_sweep_rises_is_not_converged():
    res = {"query_distill.csv": query_distill([0.826]), "budgets.csv": budgets("L0_5", [(80, 0.82), (160, 0.85)])}
    r = row(verdict_table(res), "P2: bottom + top")
    assert r["verdict"] == "not reproduced (budget not converged)" and "(1 seed)" in r["ours"]
    flat = budgets("L0_5", [(80, 0.82), (160, 0.823), (320, 0.825)])
    r = row(verdict_table({"query_distill.csv": query_distill([0.826]), "budgets.csv": flat}), "P2: bottom + top")
    assert r["verdict"] == "not reproduced (at the budget measured)"
    r = row(verdict_table({"query_distill.csv": query_distill([0.92, 0.93, 0.925])}), "P2: bottom + top")
    assert r["verdict"] == "reproduced" and "3 seeds" in r["ours"]


def test_a_ce_gain_within_its_spread_is_a_tie():
    def cq(gains):
        rows = []
        for seed, g in zip((42, 43, 44), gains):
            rows += [{"stage": "first_stage", "metric": "NDCG@10", "value": 0.6, "seed": seed, "dataset": "s", "depth": 20},
                     {"stage": "ce_rerank", "metric": "NDCG@10", "value": 0.6 + g, "seed": seed, "dataset": "s", "depth": 20}]
        return pd.DataFrame(rows)

    assert row(verdict_table({"ce_quality.csv": cq([0.02, -0.01, 0.005])}), "P1: a CE re-ranks")["verdict"].startswith("tied")
    assert row(verdict_table({"ce_quality.csv": cq([0.03, 0.035, 0.04])}), "P1: a CE re-ranks")["verdict"] == "reproduced"
    assert row(verdict_table({"ce_quality.csv": cq([0.016])}), "P1: a CE re-ranks")["verdict"].startswith("partly")


def test_ce_seeds_decide_the_ce_rows_when_they_exist():
    def cs(gains, ds="scifact"):
        return pd.DataFrame([{"ce": "trained:ce", "seed": s, "dataset": ds, "metric": "NDCG@10", "first_stage": 0.6,
                              "reranked": 0.6 + g, "gain": g, "depth": 20} for s, g in zip((42, 43, 44), gains)])

    one_seed = pd.DataFrame([{"stage": st, "metric": "NDCG@10", "value": v, "seed": 42, "dataset": "scifact", "depth": 20}
                             for st, v in (("first_stage", 0.6), ("ce_rerank", 0.65))])
    tied = verdict_table({"ce_seeds.csv": cs([0.02, -0.01, 0.005]), "ce_quality.csv": one_seed})
    ce_rows = tied[tied["claim"].str.startswith("P1: a CE re-ranks")]
    assert len(ce_rows) == 1 and ce_rows["verdict"].iloc[0].startswith("tied")   # the seeds win over one run
    assert "ce_seeds.csv" in ce_rows["evidence"].iloc[0]
    both = verdict_table({"ce_seeds.csv": pd.concat([cs([0.03, 0.035, 0.04]), cs([0.01, 0.0, -0.01], "vaswani")])})
    assert row(both, "P1: a CE re-ranks the DE's top-20 (scifact)")["verdict"] == "reproduced"
    assert row(both, "P1: a CE re-ranks the DE's top-20 (vaswani)")["verdict"].startswith("tied")


def test_ce_start_against_de_start_follows_the_spread():
    rows = []
    for seed, (ce, de) in zip((42, 43, 44), ((0.50, 0.49), (0.47, 0.52), (0.52, 0.50))):
        for model, v in (("DE-6 full", 1.0), ("DE-2 CE", ce), ("DE-2 DE", de)):
            rows.append({"model": model, "init": "full" if model == "DE-6 full" else model[5:].lower(), "dataset": "a",
                         "metric": "NDCG@10", "value": v, "seed": seed, "train_steps": 150})
    r = row(verdict_table({"de2ce.csv": pd.DataFrame(rows)}), "P1: a CE start")
    assert r["verdict"].startswith("tied")
    assert row(verdict_table({"de2ce.csv": pd.DataFrame(rows)}), "P1: DE-2 CE retrieves")["ours"].endswith("(3 seeds), 150 steps")


def test_paper_1_is_answered_again_for_a_ce_trained_apart_from_the_de(tmp_path, monkeypatch):
    from ce_utils.report import build
    from ce_utils.report.verdicts import INDEPENDENT, independent_rows

    cq = pd.DataFrame([{"stage": st, "metric": "NDCG@10", "value": v, "seed": 42, "dataset": "scifact", "depth": 20,
                        "model": "m"} for st, v in (("first_stage", 0.6), ("ce_rerank", 0.66))])
    qd = pd.DataFrame([{"student": "L0_5", "strategy": "subset:0,5", "layers": "0,5", "n_layers": 2, "dataset": "mean",
                        "metric": "retention_NDCG@10", "value": 0.9, "seed": 42, "train_steps": 80}])
    t = independent_rows({"ce_quality.csv": cq, "query_distill.csv": qd}, profile="judge")
    assert len(t) == 1 and t["claim"].iloc[0].startswith(INDEPENDENT)          # paper 1's rows only
    assert "results/judge/ce_quality.csv" in t["evidence"].iloc[0]
    assert build.independent_results({"independent_ce": str(tmp_path / "none")}) is None
    cq.to_csv(tmp_path / "ce_quality.csv", index=False)
    where, res = build.independent_results({"independent_ce": str(tmp_path)})
    assert where == tmp_path and set(res) == {"ce_quality.csv"}


def headline_runs(student, per_seed, steps, kind="de-k-ce"):
    """The sweep's seed runs of ``student`` on two test collections (dataset a 2 points under b)."""
    return pd.DataFrame([{"student": student, "spec": "x", "kind": kind, "sweep": "seed", "budget_steps": steps,
                          "step": steps, "seed": seed, "learning_rate": 5e-4, "schedule": "linear", "phase": "test",
                          "dataset": ds, "retention": r + shift}
                         for seed, r in zip((42, 43, 44), per_seed) for ds, shift in (("a", -0.01), ("b", 0.01))])


def test_the_sweeps_headline_runs_decide_the_level_and_the_comparisons():
    """Where the budget sweep has seed runs on the test collections, they replace notebook 02's / 03's one run:
    the level at the chosen budget, DE-2 CE against DE-2 DE and against the untuned CE, with the spread."""
    nb02 = pd.DataFrame([{"model": m, "init": "full" if m == "DE-6 full" else m[5:].lower(), "dataset": "a",
                          "metric": "NDCG@10", "value": v, "seed": 42, "train_steps": 150}
                         for m, v in (("DE-6 full", 1.0), ("DE-2 CE", 0.50), ("DE-2 DE", 0.52))])
    sweep = pd.concat([budgets("DE-2 CE", [(150, 0.5), (300, 0.6)], 5e-4, "de-k-ce"),
                       headline_runs("DE-2 CE", (0.86, 0.87, 0.88), 1200),
                       headline_runs("DE-2 DE", (0.80, 0.81, 0.82), 1200),
                       headline_runs("DE-2 untuned CE", (0.865, 0.875, 0.87), 1200)])
    t = verdict_table({"de2ce.csv": nb02, "budgets.csv": sweep})
    level = row(t, "P1: DE-2 CE retrieves")
    assert level["ours"] == "87.0% ± 1.0% (3 seeds), 1200 steps" and "budgets.csv" in level["evidence"]
    assert level["verdict"].startswith("not reproduced")
    vs_de = row(t, "P1: a CE start beats a DE start")
    assert vs_de["verdict"] == "reproduced; CE derived from the DE" and vs_de["ours"].endswith(", 1200 steps")
    assert row(t, "P1: a relevance-trained CE start")["verdict"] == "tied (within the seed spread)"
    assert row(verdict_table({"de2ce.csv": nb02}), "P1: DE-2 CE retrieves")["ours"] == "50.0% (1 seed), 150 steps"
    judge = verdict_table({"budgets.csv": sweep}, profile="judge")
    assert row(judge, "P1: a CE start beats a DE start")["verdict"] == "reproduced"   # that CE is not the DE's
    qd = query_distill([0.826])
    p2 = row(verdict_table({"query_distill.csv": qd, "budgets.csv": headline_runs("L0_5", (0.92, 0.93, 0.94), 2560,
                                                                               "query-student")}), "P2: bottom + top")
    assert p2["ours"] == "93.0% ± 1.0% (3 seeds), 2560 steps" and p2["verdict"] == "reproduced"


def test_without_seed_runs_the_largest_tuned_run_is_the_level_and_pairs_compare_at_one_budget():
    """A sweep whose seeds still wait: the level is the largest tuned run's (one seed, tested), and DE-2 CE meets
    DE-2 DE at the largest budget both tuned curves reached, never at two budgets."""
    def tuned(student, points):
        return pd.concat([headline_runs(student, (r,), b) for b, r in points]).assign(sweep="tuned", learning_rate=2e-3)

    nb02 = pd.DataFrame([{"model": m, "init": "full" if m == "DE-6 full" else m[5:].lower(), "dataset": "a",
                          "metric": "NDCG@10", "value": v, "seed": 42, "train_steps": 150}
                         for m, v in (("DE-6 full", 1.0), ("DE-2 CE", 0.50), ("DE-2 DE", 0.52))])
    sweep = pd.concat([tuned("DE-2 CE", [(1200, 0.87), (2400, 0.90), (4800, 0.92)]),
                       tuned("DE-2 DE", [(1200, 0.85), (2400, 0.89)])])
    t = verdict_table({"de2ce.csv": nb02, "budgets.csv": sweep})
    assert row(t, "P1: DE-2 CE retrieves")["ours"] == "92.0% (1 seed), 4800 steps"
    vs_de = row(t, "P1: a CE start beats a DE start")
    assert vs_de["ours"] == "90.0% (1 seed) vs 89.0% (1 seed), 2400 steps"
    assert vs_de["verdict"] == "partly (1 seed); CE derived from the DE" and "budgets.csv" in vs_de["evidence"]
    only_ce = verdict_table({"de2ce.csv": nb02, "budgets.csv": sweep[sweep["student"] == "DE-2 CE"]})
    assert row(only_ce, "P1: a CE start beats a DE start")["ours"] == "50.0% (1 seed) vs 52.0% (1 seed), 150 steps"


def test_seeds_that_copied_ces_trained_on_different_cpus_say_so():
    """A trained CE is trained on first use per machine: DE-2 CE seeds that copied CEs trained on two CPUs are
    reported with that, in the level row and in the comparison; seeds on one CE are not."""
    runs = headline_runs("DE-2 CE", (0.86, 0.87, 0.88), 1200)
    mixed = runs.assign(ce_trained_on=runs["seed"].map({42: "cpu A", 43: "cpu B", 44: "cpu B"}))
    sweep = pd.concat([mixed, headline_runs("DE-2 DE", (0.80, 0.81, 0.82), 1200)])
    t = verdict_table({"budgets.csv": sweep})
    assert row(t, "P1: DE-2 CE retrieves")["ours"] == "87.0% ± 1.0% (3 seeds), 1200 steps; CEs trained on 2 CPUs"
    assert row(t, "P1: a CE start beats a DE start")["ours"].endswith("1200 steps; CEs trained on 2 CPUs")
    one = pd.concat([runs.assign(ce_trained_on="cpu A"), headline_runs("DE-2 DE", (0.80, 0.81, 0.82), 1200)])
    assert row(verdict_table({"budgets.csv": one}), "P1: DE-2 CE retrieves")["ours"].endswith("1200 steps")


def test_the_ce_sources_are_counted_over_the_runs_behind_the_number():
    """Runs outside the headline (a tuned run at the same budget, at another rate, on another CPU's CE) do not
    make the headline's seeds mixed: the CEs are counted over the rows the number is the mean of."""
    seeds = headline_runs("DE-2 CE", (0.86, 0.87, 0.88), 1200).assign(ce_trained_on="cpu A")
    other = headline_runs("DE-2 CE", (0.80,), 1200).assign(sweep="tuned", learning_rate=5e-4, ce_trained_on="cpu B")
    t = verdict_table({"budgets.csv": pd.concat([seeds, other])})
    assert row(t, "P1: DE-2 CE retrieves")["ours"] == "87.0% ± 1.0% (3 seeds), 1200 steps"
    mixed = pd.concat([seeds.assign(ce_trained_on=seeds["seed"].map({42: "cpu A", 43: "cpu B", 44: "cpu B"})), other])
    assert row(verdict_table({"budgets.csv": mixed}), "P1: DE-2 CE retrieves")["ours"].endswith("; CEs trained on 2 CPUs")


def test_a_lead_under_twice_the_seed_spread_is_reproduced_but_marked_narrow():
    a, b = np.array([92.8, 93.9, 94.6]), np.array([93.3, 92.4, 92.8])       # 0.93 pt apart, sd 0.91 and 0.45
    assert compare_verdict(a, b) == "reproduced (narrow: 0.93 pt apart, larger sd 0.91)"
    assert compare_verdict(b, a).startswith("not reproduced (narrow")
    assert compare_verdict(a + 1.0, b) == "reproduced"                         # 1.93 pt: more than twice the sd
    assert compare_verdict(a - 0.2, b) == "tied (within the seed spread)"


def test_the_twelve_layer_level_reads_its_own_budget_sweep():
    tab = pd.DataFrame([{"layers": "0,11", "paper_same_sets": 0.956, "ours_mean": 0.646}])
    agree = {"spearman_same_sets": 0.8, "best_2_ours": "0,11", "best_2_paper": "0,11", "n_subsets": 13}
    claim = "P2: the same level with a 12-layer teacher"
    r = row(verdict_table({}, geometry=(tab, agree)), claim)
    assert r["verdict"] == "not reproduced (budget not measured)" and r["ours"] == "64.6% (1 seed)"
    rising = budgets("L0_11", [(80, 0.70), (160, 0.78), (320, 0.85)])
    r = row(verdict_table({}, geometry=(tab, agree), geometry_budgets=rising), claim)
    assert r["verdict"] == "not reproduced (budget not converged)"
    assert "sweep dev 70.0% → 85.0% at 80 → 320 steps, still rising" in r["ours"]
    assert "results/mpnet/budgets.csv" in r["evidence"] and "results/mpnet/query_distill.csv" in r["evidence"]
    # its headline runs (3 seeds on test) replace notebook 03's one-seed number
    seeds = pd.concat([budgets("L0_11", [(640, v)]).assign(sweep="seed", phase="test", seed=s)
                       for s, v in ((42, 0.95), (43, 0.955), (44, 0.96))])
    r = row(verdict_table({}, geometry=(tab, agree), geometry_budgets=pd.concat([rising, seeds])), claim)
    assert r["ours"].startswith("95.5% ± 0.5% (3 seeds), 640 steps") and r["verdict"] == "reproduced"
    assert "query_distill.csv" not in r["evidence"]
