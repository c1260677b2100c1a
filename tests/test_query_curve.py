"""Learning curves of query students (ce_utils.experiments.curves): dev splits only, the schedule of
evaluations, and the CSV a rerun updates."""

from __future__ import annotations

import pandas as pd
import pytest

from ce_utils.core.config import ConfigError


def test_dev_split_is_never_a_test_split(smoke_cfg):
    from ce_utils.experiments.curves.run import dev_collections

    with pytest.raises(ConfigError, match="training data"):
        dev_collections(smoke_cfg, {"tiny-a": "test"})
    with pytest.raises(ConfigError, match="not a dataset"):
        dev_collections(smoke_cfg, {"nope": "train"})
    dev = dev_collections(smoke_cfg, {"tiny-a": "train"})
    assert all(q.startswith("train-") for q in dev["tiny-a"].query_ids)


def test_curve_scores_dev_queries_on_schedule_and_the_last_student_on_test(smoke_cfg, tmp_path):
    from ce_utils.experiments.curves.run import CURVE_COLUMNS, CURVE_CSV
    from ce_utils.report.curves import curve_summary as summary
    from ce_utils.cli import cmd_curve as main

    argv = ["--profile", smoke_cfg["profile_path"], "--strategy", "subset:0,5", "--max-steps", "5",
            "--eval-steps", "2", "--dev", "tiny-a=train", "--test", "--results-dir", str(tmp_path)]
    assert main(argv) == 0
    df = pd.read_csv(tmp_path / CURVE_CSV)
    assert set(CURVE_COLUMNS) <= set(df.columns)
    dev = df[df.phase == "dev"]
    assert sorted(dev["step"].unique()) == [0, 2, 4, 5]          # step 0, every 2nd step, and the last
    assert (dev["split"] == "train").all() and set(dev["dataset"]) == {"tiny-a"}
    assert dev["minutes"].is_monotonic_increasing
    assert (dev["retention"] - dev["value"] / dev["teacher_value"]).abs().max() < 1e-9
    test = df[df.phase == "test"]
    assert set(test["dataset"]) == set(smoke_cfg["datasets"]) and (test["step"] == 5).all()
    assert (test["model_id"] == "qd:L0_5@5").all() and df[df.phase == "dev"]["model_id"].isna().all()
    # the student moves: its dev score after training is not its score at step 0
    first, last = dev[dev.step == 0]["value"].iloc[0], dev[dev.step == 5]["value"].iloc[0]
    assert df["train_loss"].notna().all() and (first != last or dev["value"].nunique() > 1)
    lines = summary(df, target=0.0)
    assert any("reaches 0.0% at step 0" in l for l in lines) and any("full test collections" in l for l in lines)
    # a rerun of the same student replaces its rows
    assert main(argv) == 0
    assert len(pd.read_csv(tmp_path / CURVE_CSV)) == len(df)


def test_curve_arguments_are_checked(smoke_cfg, tmp_path):
    from ce_utils.cli import cmd_curve as main

    base = ["--profile", smoke_cfg["profile_path"], "--strategy", "subset:0,5", "--results-dir", str(tmp_path)]
    assert main(base + ["--dev", "tiny-a:train"]) == 2
    assert main(base + ["--dev", "tiny-a=test"]) == 2
    assert main(base + ["--max-steps", "0", "--dev", "tiny-a=train"]) == 2


def test_de2ce_curve_is_symmetric_and_checked(smoke_cfg, tmp_path):
    from ce_utils.experiments.curves.run import CURVE_CSV
    from ce_utils.cli import cmd_curve as main

    base = ["--profile", smoke_cfg["profile_path"], "--results-dir", str(tmp_path), "--dev", "tiny-a=train"]
    assert main(base) == 2                                   # neither a query student nor a DE-k CE student
    assert main(base + ["--de2ce", "ce"]) == 2               # INIT:K
    assert main(base + ["--de2ce", "de:1", "--max-steps", "3", "--eval-steps", "2", "--test"]) == 0
    df = pd.read_csv(tmp_path / CURVE_CSV)
    assert set(df["kind"]) == {"de-k-ce"} and set(df["mode"]) == {"symmetric"}
    dev = df[df.phase == "dev"]
    assert sorted(dev["step"].unique()) == [0, 2, 3] and (dev["student"] == "DE-2 DE").all()
    test = df[df.phase == "test"]
    assert set(test["dataset"]) == set(smoke_cfg["de2ce"]["datasets"]) and (test["model_id"] == "de2ce:DE-2 DE@3").all()
    # a student with the full DE's first two layers starts well above zero on its own documents
    assert dev[dev.step == 0]["value"].iloc[0] > 0
