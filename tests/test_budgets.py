"""The budget sweep (ce_utils.experiments.curves.budgets): which runs it plans from what is done, when it
stops doubling, that every point is an independent run with its own schedule, and that a killed sweep
resumes without redoing a finished run."""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
import yaml

from ce_utils.cli import cmd_budgets
from ce_utils.core.config import ConfigError
from ce_utils.experiments.curves import budgets as B

SWEEP = {"dev": {"tiny-a": "train"}, "multipliers": [1, 2, 4, 8], "seeds": [1, 2, 3], "flat": 0.01,
         "students": {"subset:0,1": {"base_steps": 10, "learning_rates": [1e-4, 3e-4], "lr_budget_steps": 20}}}


def cfg_with(sweep=SWEEP):
    return {"query_distill": {"learning_rate": 1e-4}, "budgets": copy.deepcopy(sweep)}


def done(points: dict, lr=1e-4, seed=1, spec="subset:0,1", sweep="budget") -> pd.DataFrame:
    """Finished runs: {budget: retention} at one learning rate and seed, two dev datasets each."""
    rows = [{"spec": spec, "budget_steps": b, "step": b, "seed": seed, "learning_rate": lr, "schedule": "linear",
             "phase": "dev", "dataset": d, "retention": r, "sweep": sweep} for b, r in points.items() for d in "ab"]
    return pd.DataFrame(rows)


def keys(runs):
    return [(r.sweep, r.budget_steps, r.learning_rate, r.seed) for r in runs]


def test_doubling_waits_for_each_result_and_stops_when_two_doublings_gain_less_than_a_point():
    cfg = cfg_with()
    assert keys(B.pending(cfg, None))[0] == ("budget", 10, 1e-4, 1)
    d = done({10: 0.50})
    assert keys(B.pending(cfg, d))[0] == ("budget", 20, 1e-4, 1)        # the next doubling, once 10 is measured
    d = done({10: 0.50, 20: 0.70, 40: 0.705, 80: 0.709})                 # 40 -> 80 -> ... flat: 20 -> 80 gains 0.9 pt
    assert B.flattened(B.mean_retention(d, "subset:0,1", 1e-4, 1))
    d = done({10: 0.50, 20: 0.70, 40: 0.705})
    assert ("budget", 80, 1e-4, 1) in keys(B.pending(cfg, d))          # 20 -> 40 is one doubling only
    d = done({10: 0.60, 20: 0.605, 40: 0.609})                          # two doublings < 1 point: no 80
    assert ("budget", 80, 1e-4, 1) not in keys(B.plan(cfg, d))
    assert B.converged_budget(B.mean_retention(d, "subset:0,1", 1e-4, 1)) == 10


def test_learning_rate_grid_then_seeds_at_the_chosen_budget_and_rate():
    cfg = cfg_with()
    d = done({10: 0.50, 20: 0.70, 40: 0.71, 80: 0.712})
    todo = keys(B.pending(cfg, d))
    assert todo == [("lr", 20, 3e-4, 1)]                      # 1e-4 at 20 steps is already the budget run
    d = pd.concat([d, done({20: 0.75}, lr=3e-4, sweep="lr")])
    assert keys(B.pending(cfg, d)) == [("lr", 20, 6e-4, 1)]   # the best rate is the grid's top: widened, x2
    d = pd.concat([d, done({20: 0.72}, lr=6e-4, sweep="lr")])
    # chosen rate: the grid's best (3e-4); its budget curve is measured again above the grid's budget, one doubling
    # at a time, before any seed run
    assert keys(B.pending(cfg, d)) == [("tuned", 40, 3e-4, 1)]
    assert "wait for the tuned budget run at 40 steps, lr 0.0003" in B.headline_notes(cfg, d)[0]
    d = pd.concat([d, done({40: 0.80}, lr=3e-4, sweep="tuned")])
    assert keys(B.pending(cfg, d)) == [("tuned", 80, 3e-4, 1)]
    d = pd.concat([d, done({80: 0.805}, lr=3e-4, sweep="tuned")])
    todo = keys(B.pending(cfg, d))
    # chosen budget: the smallest within 1 point of the best at 3e-4 (40, not the recipe curve's); its seed-1 run is
    # the tuned run (scored on test too), relabelled a seed run, so seeds 2 and 3 are left
    assert ("seed", 40, 3e-4, 1) in keys(B.plan(cfg, d))
    assert todo == [("seed", 40, 3e-4, 1), ("seed", 40, 3e-4, 2), ("seed", 40, 3e-4, 3)]  # no test rows here yet


def test_the_seeds_wait_for_the_tuned_curve_and_a_tuned_run_at_the_chosen_budget_becomes_a_seed_run(tmp_path):
    """A tuned run is scored on test too: the one at the chosen budget is the first seed, relabelled in the CSV,
    not trained again."""
    sweep = copy.deepcopy(SWEEP)
    sweep["lr_widen"] = 0
    cfg = cfg_with(sweep)
    d = pd.concat([done({10: 0.50, 20: 0.70, 40: 0.71, 80: 0.712}), done({20: 0.72}, lr=3e-4, sweep="lr")])
    assert keys(B.pending(cfg, d)) == [("tuned", 40, 3e-4, 1)]
    d = pd.concat([d, done({40: 0.78}, lr=3e-4, sweep="tuned"),
                   done({40: 0.80}, lr=3e-4, sweep="tuned").assign(phase="test")])
    assert keys(B.pending(cfg, d)) == [("tuned", 80, 3e-4, 1)]      # no seed before the last doubling
    path = tmp_path / "budgets.csv"
    d.to_csv(path, index=False)
    assert (B.mark_headline(cfg, path)["sweep"] != "seed").all()     # no headline yet: nothing relabelled
    d = pd.concat([d, done({80: 0.785}, lr=3e-4, sweep="tuned"),
                   done({80: 0.79}, lr=3e-4, sweep="tuned").assign(phase="test")])
    d.to_csv(path, index=False)
    d = B.mark_headline(cfg, path)                                   # 40 is within 1 point of 80: chosen
    assert keys(B.pending(cfg, d)) == [("seed", 40, 3e-4, 2), ("seed", 40, 3e-4, 3)]
    marked = pd.read_csv(path)
    tuned = marked[marked["learning_rate"] == 3e-4].groupby("budget_steps")["sweep"].unique().map(list).to_dict()
    assert tuned == {20: ["lr"], 40: ["seed"], 80: ["tuned"]}
    assert list(B.headline(marked, "subset:0,1")[["budget_steps", "seeds"]].iloc[0]) == [40, 1]
    lines = B.summary(marked, cfg)
    assert "subset:0,1 at the chosen lr 0.0003 (tuned): dev retention by budget 20 72.0%, 40 78.0%, 80 78.5%; " \
        "not flat yet." in lines
    assert "subset:0,1 headline point: 40 steps, lr 0.0003 (of every point measured on dev, the smallest budget " \
        "within 1 pt of the best)." in lines


def test_the_chosen_point_is_the_smallest_budget_within_a_point_of_the_best_at_any_rate(tmp_path):
    """The best point may lie on the recipe's curve (a long run at a low rate): the headline is the smallest budget
    within a point of it, here on the tuned curve; a seed run the plan no longer names headline loses the label."""
    sweep = copy.deepcopy(SWEEP)
    sweep["lr_widen"] = 0
    cfg = cfg_with(sweep)
    d = pd.concat([done({10: 0.50, 20: 0.70, 40: 0.75, 80: 0.80}), done({20: 0.785}, lr=3e-4, sweep="lr"),
                   done({40: 0.79, 80: 0.795}, lr=3e-4, sweep="tuned")])
    d = B.with_precision(d)
    assert B.chosen_point(d, "subset:0,1", 1) == (40, 3e-4)        # 0.79 is within a point of 0.80 (1e-4 at 80)
    assert B.converged_budget(B.mean_retention(d, "subset:0,1", 3e-4, 1)) == 20   # not the tuned curve's own best
    assert keys(B.pending(cfg, d))[0] == ("seed", 40, 3e-4, 1)
    stale = done({20: 0.785}, lr=3e-4, sweep="seed").assign(phase="test")   # once the headline, at 20 steps
    path = tmp_path / "budgets.csv"
    pd.concat([d, stale]).to_csv(path, index=False)
    marked = B.mark_headline(cfg, path)
    assert set(marked.loc[(marked["budget_steps"] == 20) & (marked["learning_rate"] == 3e-4), "sweep"]) == {"lr"}
    assert (marked["sweep"] != "seed").all()                        # the tuned run at 40 has no test rows here


def test_the_grid_widens_while_its_best_rate_is_at_an_edge_at_most_lr_widen_times():
    sweep = copy.deepcopy(SWEEP)
    sweep["lr_widen"] = 2
    cfg = cfg_with(sweep)
    s = B.student_settings(cfg)["subset:0,1"]
    d = done({10: 0.50, 20: 0.70, 40: 0.71, 80: 0.712})             # 1e-4 at 20 steps: 0.70
    d = pd.concat([d, done({20: 0.60}, lr=3e-4, sweep="lr")])       # worse above: the best is the bottom edge
    assert B.learning_rate_grid(d, "subset:0,1", s) == [1e-4, 3e-4, 5e-5]
    d = pd.concat([d, done({20: 0.72}, lr=5e-5, sweep="lr")])       # still the bottom: halved again
    assert B.learning_rate_grid(d, "subset:0,1", s) == [1e-4, 3e-4, 5e-5, 2.5e-5]
    d = pd.concat([d, done({20: 0.73}, lr=2.5e-5, sweep="lr")])     # at the edge, but widened twice: chosen
    assert [(r.sweep, r.learning_rate) for r in B.pending(cfg, d)] == [("tuned", 2.5e-5)]
    sweep["lr_widen"] = 0
    assert B.learning_rate_grid(d, "subset:0,1", B.student_settings(cfg_with(sweep))["subset:0,1"]) == [1e-4, 3e-4]


def test_bad_students_are_refused_with_the_fix():
    with pytest.raises(ConfigError, match="de2ce:de:1"):
        B.student_settings(cfg_with({"students": {"de2ce:nope:1": {"base_steps": 5}}}))
    with pytest.raises(ConfigError, match="base_steps"):
        B.student_settings(cfg_with({"students": {"subset:0,1": {}}}))
    with pytest.raises(ConfigError, match="name at least one student"):
        B.student_settings(cfg_with({"students": {}}))


def test_sweep_runs_independent_runs_and_resumes(smoke_cfg, tmp_path):
    """Each budget trains its own student with its own schedule (the learning rate reaches zero at that
    run's last step); a second call finds every run done and trains nothing."""
    prof = dict(copy.deepcopy({k: v for k, v in smoke_cfg.items() if k != "profile_path"}))
    prof["budgets"] = {"dev": {"tiny-a": "train"}, "multipliers": [1, 2], "seeds": [5, 6], "flat": 0.01, "lr_widen": 0,
                       "students": {"subset:0,1": {"base_steps": 2, "learning_rates": [1e-4, 3e-4],
                                                   "lr_budget_steps": 2, "pool": "all"}}}
    prof["query_distill"] = {**prof.get("query_distill", {}), "batch_size": 4}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(prof))
    out = tmp_path / "res"
    assert cmd_budgets(["--profile", str(path), "--results-dir", str(out), "--sweep", "lr"]) == 0
    first = pd.read_csv(out / B.BUDGETS_CSV)                # --sweep lr: the grid's one new run, no budget run
    assert set(first["sweep"]) == {"lr"} and set(first["learning_rate"]) == {3e-4}
    assert cmd_budgets(["--profile", str(path), "--results-dir", str(out)]) == 0
    df = pd.read_csv(out / B.BUDGETS_CSV)
    runs = df.groupby(B.KEY).size()
    assert set(B.COLUMNS) <= set(df.columns)
    assert (df["step"] == df["budget_steps"]).all() and set(df["phase"]) == {"dev", "test"}
    seed_runs = df[df["sweep"] == "seed"]                 # the headline runs: scored on the test collections too
    assert set(seed_runs["phase"]) == {"dev", "test"}
    assert set(df.loc[df["phase"] == "test", "sweep"]) <= {"seed", "tuned"}  # tuned runs: scored on test, never chosen on it
    assert len(B.headline(df, "subset:0,1")) == 1 and B.headline(df, "subset:0,1")["seeds"].iloc[0] == 2
    assert set(df.loc[df["sweep"] == "budget", "budget_steps"]) <= {2, 4}
    assert set(df.loc[df["budget_steps"] == 2, "learning_rate"]) == {1e-4, 3e-4}   # the grid at lr_budget_steps
    chosen, chosen_lr = B.chosen_point(B.with_precision(df), "subset:0,1", 5)
    at = df[(df["budget_steps"] == chosen) & ((df["learning_rate"] - chosen_lr).abs() < 1e-12)]
    assert set(at["seed"]) == {5, 6}                     # every seed at the chosen budget and rate
    assert (df["epochs_of_text"] > 0).all() and (df["steps_per_s"] > 0).all()
    stamp = (out / B.BUDGETS_CSV).stat().st_mtime_ns
    assert cmd_budgets(["--profile", str(path), "--results-dir", str(out)]) == 0   # resumed: nothing to do
    assert (out / B.BUDGETS_CSV).stat().st_mtime_ns == stamp
    assert len(pd.read_csv(out / B.BUDGETS_CSV).groupby(B.KEY).size()) == len(runs)


def test_precision_sweep_comes_first_and_finished_runs_keep_their_precision():
    """With bf16 new runs, the precision check trains each (budget, seed) of ``precision_check`` in both
    precisions first; a budget already measured in fp32 is not trained again in bf16, the next one is bf16;
    rows written before the precision column count as fp32."""
    sweep = copy.deepcopy(SWEEP)
    sweep["students"]["subset:0,1"]["precision_check"] = {10: [1, 2]}
    cfg = cfg_with(sweep)
    d = done({10: 0.50})                                   # no precision column: an fp32 run
    assert "precision" not in d.columns
    runs = B.pending(cfg, d, "bf16")
    assert [(r.sweep, r.budget_steps, r.seed, r.precision) for r in runs[:4]] == [
        ("precision", 10, 1, "bf16"), ("precision", 10, 2, "fp32"), ("precision", 10, 2, "bf16"),
        ("budget", 20, 1, "bf16")]
    assert all(r.key() not in B.done_keys(d) for r in runs)
    assert ("subset:0,1", 10, 1, 1e-4, "linear", "fp32") in B.done_keys(d)
    at10 = [r for r in B.plan(cfg, d, "bf16") if r.budget_steps == 10 and r.seed == 1]
    assert sorted(r.precision for r in at10) == ["bf16", "fp32"]     # the finished fp32 run, listed once
    assert not [r for r in B.pending(cfg, d, "fp32") if r.sweep == "precision"]  # fp32 runs need no check


def test_sweep_precision_resolves_auto_and_refuses_unknown(monkeypatch):
    monkeypatch.setattr(B, "native_bf16", lambda device=None: False)
    assert B.sweep_precision({"budgets": {"precision": "auto"}}) == "fp32"
    assert B.sweep_precision({"budgets": {"precision": "bf16"}}) == "fp32"   # emulated bf16 is slower: never
    monkeypatch.setattr(B, "native_bf16", lambda device=None: True)
    assert B.sweep_precision({"budgets": {"precision": "auto"}}) == "bf16"
    assert B.sweep_precision({"budgets": {}}) == "fp32"
    with pytest.raises(ConfigError, match="auto, fp32 or bf16"):
        B.sweep_precision({"budgets": {"precision": "fp16"}})


def test_precision_override_reaches_the_trainer(monkeypatch, tmp_path):
    from ce_utils.core import train as T
    monkeypatch.setattr(T, "native_bf16", lambda device=None: True)
    bf16 = T.trainer_kwargs(T.overrides(precision="bf16"), tmp_path, 1, "cpu", batch_size=4, learning_rate=1e-4)
    fp32 = T.trainer_kwargs({"cpu_mixed_precision": "bf16", **T.overrides(precision="fp32")}, tmp_path, 1, "cpu",
                            batch_size=4, learning_rate=1e-4)
    assert bf16.get("bf16") is True and not fp32.get("bf16")
    with pytest.raises(ConfigError, match="fp32, bf16"):
        T.overrides(precision="int8")


def test_precision_table_compares_the_two_precisions_at_a_budget():
    from ce_utils.report.budgets import budgets_table, precision_table
    d = pd.concat([done({10: 0.50}, seed=1).assign(precision="fp32"), done({10: 0.52}, seed=2).assign(precision="fp32"),
                   done({10: 0.53}, seed=1).assign(precision="bf16"), done({20: 0.6}).assign(precision="bf16")])
    d = d.assign(student="S", kind="query-student", minutes=1.0)
    t = precision_table(d)
    assert list(t["budget (steps)"]) == [10]                       # 20 has one precision only
    assert t["fp32 seeds"].iloc[0] == 2 and t["bf16 seeds"].iloc[0] == 1
    assert t["bf16 - fp32 (pt)"].iloc[0] == pytest.approx(100 * (0.53 - 0.51))
    b = budgets_table(d)
    row = b[b["budget (steps)"] == 10].iloc[0]
    assert row["runs"] == 3 and row["seeds"] == 2 and row["precision"] == "bf16+fp32"


def test_a_run_appends_to_a_csv_written_before_the_precision_column(tmp_path):
    path = tmp_path / B.BUDGETS_CSV
    done({10: 0.5}).to_csv(path, index=False)                          # no precision column
    new = done({10: 0.52}).assign(precision="bf16")
    out = B.append_run(path, new)
    assert sorted(out["precision"]) == ["bf16", "bf16", "fp32", "fp32"]   # both runs kept: different keys
    assert set(pd.read_csv(path)["precision"]) == {"fp32", "bf16"}


def test_a_de2_ce_sweep_trains_the_profiles_ce_first(smoke_cfg, tmp_path):
    """DE-2 CE starts from the profile's CE: the sweep trains it on first use instead of stopping."""
    prof = dict(copy.deepcopy({k: v for k, v in smoke_cfg.items() if k != "profile_path"}))
    prof["models_dir"] = str(tmp_path / "models")
    prof["budgets"] = {"dev": {"tiny-a": "train"}, "multipliers": [1], "seeds": [5], "flat": 0.01,
                       "students": {"de2ce:ce:1": {"base_steps": 2, "learning_rates": [5e-4], "lr_budget_steps": 2,
                                                   "pool": 16}}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(prof))
    out = tmp_path / "res"
    assert cmd_budgets(["--profile", str(path), "--results-dir", str(out)]) == 0
    df = pd.read_csv(out / B.BUDGETS_CSV)
    assert set(df["spec"]) == {"de2ce:ce:1"} and (tmp_path / "models" / "ce-tiny" / "training_info.json").is_file()
    record = json.loads((tmp_path / "models" / "ce-tiny" / "training_info.json").read_text())
    # every row names the CE it copied (a CE is trained on first use, per machine)
    assert (df["ce_trained_on"] == record["cpu"]).all() and (df["ce_selected_step"] == record["selected_step"]).all()


def test_a_student_set_to_null_is_not_swept():
    sweep = copy.deepcopy(SWEEP)
    sweep["students"]["de2ce:ce-base:1"] = {"base_steps": 5}
    sweep["students"]["subset:0,1"] = None
    assert list(B.student_settings(cfg_with(sweep))) == ["de2ce:ce-base:1"]
    with pytest.raises(ConfigError, match="name at least one student"):
        B.student_settings(cfg_with({"students": {"subset:0,1": None}}))


def test_headline_notes_say_what_the_seed_runs_wait_for():
    cfg = cfg_with()
    d = done({10: 0.50})
    assert "wait for the learning-rate grid at 20 steps" in B.headline_notes(cfg, d)[0]
    d = done({10: 0.50, 20: 0.70, 40: 0.71, 80: 0.712})
    assert "wait for the learning-rate grid at 20 steps" in B.headline_notes(cfg, d)[0]
    d = pd.concat([d, done({20: 0.65}, lr=3e-4, sweep="lr"), done({20: 0.66}, lr=5e-5, sweep="lr")])
    note = B.headline_notes(cfg, d)[0]
    assert "headline at 40 steps, lr 0.0001 (of every point measured on dev" in note and "[1, 2, 3] still to train" in note
    with pytest.raises(ConfigError, match="not in budgets.students"):
        B.only_students(cfg, ["subset:9"])


def test_the_precision_check_compares_runs_at_the_same_learning_rate_only():
    """A bf16 learning-rate-grid run at a budget where an fp32 run of another rate exists is no precision check."""
    fp32 = done({320: 0.867}).assign(precision="fp32")
    grid = pd.concat([done({320: r}, lr=lr, sweep="lr") for lr, r in ((5e-5, 0.845), (4e-4, 0.916))]).assign(precision="bf16")
    assert B.precision_check(pd.concat([fp32, grid]), "subset:0,1").empty
    same = done({320: 0.865}).assign(precision="bf16")
    chk = B.precision_check(pd.concat([fp32, grid, same]), "subset:0,1").set_index("precision")
    assert list(chk["learning_rate"]) == [1e-4, 1e-4] and chk.loc["bf16", "mean"] == pytest.approx(0.865)
    line = [x for x in B.summary(pd.concat([fp32, grid, same]), cfg_with()) if "precision check" in x]
    assert line == ["subset:0,1 precision check at 320 steps, lr 0.0001: bf16 86.5% (1 seed) vs fp32 86.7% (1 seed)."]
