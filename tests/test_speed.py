"""ce_utils.experiments.speed: analytic FLOPs, the timing helpers, and a papermill smoke run of notebook 04."""

import math

import numpy as np
from pathlib import Path

import pandas as pd
import pytest

from ce_utils.core.config import ConfigError
from ce_utils.experiments import speed
from ce_utils.report import speed as report_speed

ROOT = Path(__file__).resolve().parent.parent


def test_flops_per_token_by_hand():
    # h=4, I=8, 1 layer, L=2: embeddings 7h=28; layer 8h^2=128 + 4Lh=32 + 4hI=128 + 10h=40 -> 328; pool h=4
    assert speed.flops_per_token(4, 8, 1, 2) == pytest.approx(28 + 328 + 4)
    assert speed.flops_per_item(4, 8, 1, 2) == pytest.approx(2 * 360)
    # the pooler + head adds (2h^2 + 2h) per item
    assert speed.flops_per_item(4, 8, 1, 2, pooler=True) - speed.flops_per_item(4, 8, 1, 2) == pytest.approx(40)


def test_flop_ratio_of_minilm_students():
    de = speed.flops_per_item(384, 1536, 6, 10)
    two = speed.flops_per_item(384, 1536, 2, 10)
    ratio = speed.flop_ratio(de, two)
    assert 2.9 < ratio < 3.0  # layers dominate; embeddings and pooling keep it just under 6/2
    assert speed.flop_ratio(de, de) == 1.0
    # a CE pair of 240 tokens costs far more than a 10-token query through the same 6 layers
    assert speed.flop_ratio(de, speed.flops_per_item(384, 1536, 6, 240, pooler=True)) < 1 / 24
    with pytest.raises(ConfigError):
        speed.flops_per_token(0, 8, 1, 2)


class _Enc:
    def __init__(self, name, role="query-student"):
        self.name, self.role = name, role


def test_schedule_times_every_model_in_every_round():
    encs = [_Enc("DE-6 full", "de"), _Enc("DE-2 CE", "de-k-ce"), _Enc("qd", "query-student"), _Enc("CE (pair)", "ce")]
    sets = [{"device": "cpu", "dtype": "fp32", "threads": 1}]
    plan = speed.schedule(sets, encs, [1, 64], ["included"], rounds=5, seed=3, ce_max_batch_size=16)
    assert len(plan) == 5 * 2  # one block per round and batch size
    for r in range(5):
        for bs, n in ((1, 4), (64, 3)):  # the CE is skipped above its batch-size cap
            names = [[e.name for e in block] for rr, _, b, _, block in plan if rr == r and b == bs]
            assert len(names) == 1 and len(names[0]) == n and len(set(names[0])) == n  # each model once per block
    orders = {tuple(e.name for e in block) for rr, _, b, _, block in plan if b == 1}
    assert len(orders) > 1  # the starting order changes between rounds
    rounds = [p[0] for p in plan]
    assert rounds == sorted(rounds)  # a round finishes before the next begins


def test_interleave_takes_turns_call_by_call():
    """Batch i is encoded by every model before any model moves on; the order rotates per batch; a model
    with fewer batches drops out after its last; warm-up calls are not timed."""
    log = []
    steps = {m: [lambda m=m, i=i: log.append((m, i)) for i in range(n)] for m, n in (("a", 3), ("b", 3), ("ce", 2))}
    ticks = iter(range(1000))
    times = speed.interleave(steps, ["a", "b", "ce"], warmup=1, clock=lambda: float(next(ticks)))
    assert log[:3] == [("a", 0), ("b", 0), ("ce", 0)]  # warm-up: each model's first batch, untimed
    timed = log[3:]
    assert timed == [("a", 0), ("b", 0), ("ce", 0), ("b", 1), ("ce", 1), ("a", 1), ("a", 2), ("b", 2)]
    assert {m: len(t) for m, t in times.items()} == {"a": 3, "b": 3, "ce": 2}
    assert all(t == 1.0 for ts in times.values() for t in ts)  # one clock tick around each call only
    with pytest.raises(ConfigError, match="order"):
        speed.interleave(steps, ["a", "b"])


def test_batch_steps_cover_the_sample_and_cycle_to_min_calls():
    """Each model encodes every batch of the sample (so all models time the same batches); a sample of
    one batch is cycled to ``min_calls`` calls; without tokenisation the features are prepared beforehand."""
    prepared, seen = [], []

    def prepare(b):
        prepared.append(tuple(b))
        return {"b": b}

    enc = speed.Encoder(name="m", role="query-student", module=None, prepare=prepare,
                        run=lambda f: seen.append(tuple(f["b"])), n_layers=1, n_params=1, hidden=4, intermediate=8)
    items = [f"q{i}" for i in range(12)]
    batches = [items[i:i + 4] for i in range(0, 12, 4)]
    steps = speed.batch_steps(enc, batches, "cpu", tokenize=True, min_calls=2)
    assert len(steps) == 3 and not prepared
    for st in steps:
        st()
    assert [list(b) for b in seen] == batches and prepared == [tuple(b) for b in batches]
    prepared.clear(), seen.clear()
    steps = speed.batch_steps(enc, [items], "cpu", tokenize=False, min_calls=3)
    assert len(steps) == 3 and prepared == [tuple(items)]  # tokenised once, outside the timed calls
    for st in steps:
        st()
    assert seen == [tuple(items)] * 3 and len(prepared) == 1
    with pytest.raises(ConfigError, match="no batch"):
        speed.batch_steps(enc, [], "cpu", tokenize=True)


def _round_rows(values):
    rows = []
    for r, per_model in enumerate(values):
        for model, role, layers, ms in per_model:
            rows.append(dict(round=r, model=model, role=role, n_layers=layers, batch_size=1, threads=1, device="cpu",
                             dtype="fp32", tokenization="included", backend="torch", ms_per_batch=ms,
                             n_runs=3, queries_per_s=1e3 / ms, flop_ratio=6.0 / max(layers, 1)))
    return pd.DataFrame(rows)


def test_summary_uses_per_round_ratios():
    df = speed.add_round_ratios(_round_rows([[("DE-6 full", "de", 6, de), ("DE-2 CE", "de-k-ce", 2, st)]
                                             for de, st in ((10.0, 5.0), (20.0, 10.0), (12.0, 4.0))]))
    s = speed.summarize_rounds(df).set_index("model")
    assert s.loc["DE-2 CE", "median_ms"] == 5.0 and s.loc["DE-2 CE", "n_rounds"] == 3
    assert s.loc["DE-2 CE", "speedup_vs_de"] == 2.0  # median of 2, 2, 3 -- not 12 / 5
    assert s.loc["DE-2 CE", "iqr_ms"] == pytest.approx(np.percentile([5, 10, 4], 75) - np.percentile([5, 10, 4], 25))
    assert np.isnan(s.loc["DE-2 CE", "fixed_share"])  # no overhead model timed
    rows = df.assign(model=lambda d: d["model"] + d["round"].astype(str), n_layers=2)
    spread = speed.architecture_spread(speed.summarize_rounds(rows.query("round < 2 and role != 'de'")))
    assert spread["spread"].iloc[0] == 2.0


def test_robust_time_ignores_a_burst_in_one_round():
    """With per-call times: per call the median over rounds, then the mean over the pass; a burst that
    slowed one call of one round (30 ms instead of 3) changes nothing, a model's mix of short and long
    batches is kept, and the speed-up is the ratio of those times."""
    de = [[10.0, 20.0], [10.0, 20.0], [11.0, 21.0]]
    st = [[3.0, 7.0], [30.0, 7.0], [3.0, 7.0]]  # round 1: a burst during the first call
    rows = _round_rows([[("DE-6 full", "de", 6, float(np.mean(d))), ("DE-2 CE", "de-k-ce", 2, float(np.mean(m)))]
                        for d, m in zip(de, st)])
    rows["call_ms"] = [" ".join(str(x) for x in c) for pair in zip(de, st) for c in pair]
    assert speed.robust_ms(speed.call_matrix(rows[rows["model"] == "DE-2 CE"]["call_ms"])) == 5.0
    s = speed.summarize_rounds(speed.add_round_ratios(rows)).set_index("model")
    assert s.loc["DE-2 CE", "median_ms"] == 5.0 and s.loc["DE-6 full", "median_ms"] == 15.0
    assert s.loc["DE-2 CE", "speedup_vs_de"] == 3.0 and s.loc["DE-2 CE", "flop_efficiency"] == 1.0
    assert s.loc["DE-2 CE", "iqr_ms"] > 0  # the per-pass means still show the burst
    assert s.loc["DE-2 CE", "min_ms"] == 5.0 and s.loc["DE-6 full", "min_ms"] == 15.0  # fastest per call: 3, 7 / 10, 20
    twin = speed.summarize_rounds(speed.add_round_ratios(rows.assign(model=rows["model"].str.replace("DE-6 full", "L0_1"),
                                                                      role="query-student", n_layers=2)))
    spread = speed.architecture_spread(twin).iloc[0]
    assert spread["spread_min"] == 3.0 and not spread["within_target_min"]
    # the spread's noise comes from the bootstrap of the reported estimator, not from the pass means' IQR
    assert s.loc["DE-2 CE", "log_se"] > 0
    se = [speed.robust_log_se(speed.call_matrix(rows[rows["model"] == m]["call_ms"])) for m in ("DE-6 full", "DE-2 CE")]
    assert spread["spread_se"] == pytest.approx(np.hypot(*se))
    assert np.isnan(speed.robust_log_se(speed.call_matrix(pd.Series(["1 2"]))))  # one round: no error bar
    with pytest.raises(ValueError, match="same number of calls"):
        speed.call_matrix(pd.Series(["1 2", "1 2 3"]))


def test_fixed_cost_splits_time_into_fixed_and_per_layer_parts():
    """With the 0-layer model timed in the same pass: fixed 1 ms, the 6-layer DE 13 ms -> 2 ms per layer;
    a 2-layer model is expected at 13 / (1 + 2 x 2) = 2.6x, and its fixed share is 1 / its own time."""
    df = speed.add_round_ratios(_round_rows([[("DE-6 full", "de", 6, 13.0), ("DE-0 (no layers)", "overhead", 0, 1.0),
                                              ("L0_5", "query-student", 2, 5.2), ("L0", "query-student", 1, 3.25)]]))
    r = df.set_index("model")
    assert r.loc["L0_5", "expected_speedup"] == pytest.approx(2.6) and r.loc["L0_5", "speedup_vs_de"] == pytest.approx(2.5)
    assert r.loc["L0", "expected_speedup"] == pytest.approx(13 / 3) and r.loc["L0", "fixed_share"] == pytest.approx(1 / 3.25)
    assert r.loc["DE-6 full", "expected_speedup"] == pytest.approx(1.0)
    goal = report_speed.flop_goal_table(speed.summarize_rounds(df)).set_index("model")
    assert set(goal.index) == {"L0_5", "L0"}  # students only: not the DE, not the overhead model
    assert goal.loc["L0_5", "of_flop_ratio"] == pytest.approx(2.5 / 3.0) and not goal.loc["L0_5", "meets_goal"]


def test_architecture_spread_is_held_against_the_measurement_noise():
    base = dict(role="query-student", n_layers=2, batch_size=1, threads=1, device="cpu", dtype="fp32",
                tokenization="included", n_rounds=9)
    quiet = pd.DataFrame([dict(base, model="a", median_ms=10.0, iqr_ms=0.1), dict(base, model="b", median_ms=10.4, iqr_ms=0.1)])
    s = speed.architecture_spread(quiet).iloc[0]
    assert s["spread"] == pytest.approx(1.04) and s["limit"] == 1.05 and s["within_target"] and s["within_noise"]
    # a real 1.4x difference measured precisely is flagged
    off = quiet.assign(median_ms=[10.0, 14.0])
    assert not speed.architecture_spread(off).iloc[0]["within_noise"]
    # a 7% spread with an IQR of 20% over 9 rounds is within the noise, but not within the 5% target
    noisy = quiet.assign(median_ms=[10.0, 10.7], iqr_ms=[2.0, 2.0])
    s = speed.architecture_spread(noisy).iloc[0]
    expected_se = np.sqrt((1.2533 * 2.0 / 1.349 / 10.7 / 3) ** 2 + (1.2533 * 2.0 / 1.349 / 10.0 / 3) ** 2)
    assert s["spread_se"] == pytest.approx(expected_se)
    assert s["within_noise"] and not s["within_target"]


def test_settings_validate_threads_and_dtypes():
    s = speed.settings({"threads": [1, "all", 1], "gpu_dtypes": ["fp32", "fp16"]}, cuda_available=True)
    assert [x["threads"] for x in s if x["device"] == "cpu"][0] == 1
    assert {x["dtype"] for x in s if x["device"] == "cuda"} == {"fp32", "fp16"}
    assert all(x["device"] == "cpu" for x in speed.settings({"threads": [1]}, cuda_available=False))
    with pytest.raises(ConfigError, match="dtype"):
        speed.settings({"threads": [1], "gpu_dtypes": ["int3"]}, cuda_available=True)
    with pytest.raises(ConfigError, match="thread"):
        speed.settings({"threads": [0]}, cuda_available=False)


def test_ce_items_are_cut_to_ce_n_queries():
    ce = speed.Encoder(name="CE (pair)", role="ce", module=None, prepare=None, run=None, n_layers=6, n_params=1,
                       hidden=4, intermediate=8, pair=True, extra={"ce_mode": "pair"})
    de = speed.Encoder(name="DE", role="de", module=None, prepare=None, run=None, n_layers=6, n_params=1,
                       hidden=4, intermediate=8)
    qs, ds = [f"q{i}" for i in range(8)], [f"d{i}" for i in range(8)]
    assert speed.items_for(ce, qs, ds, 3) == [("q0", "d0"), ("q1", "d1"), ("q2", "d2")]
    assert speed.items_for(de, qs, ds, 3) == qs  # only the CE's sample is cut
    assert len(speed.items_for(ce, qs, ds, None)) == 8


def test_bad_student_k_is_a_config_error(smoke_cfg):
    sp = speed.speed_section(smoke_cfg)
    with pytest.raises(ConfigError, match="de_k_ce"):
        speed.build_encoders(smoke_cfg, {**sp, "de_k_ce": [6], "ce_modes": []})


@pytest.mark.slow
def test_notebook_04_smoke(tmp_path, smoke_profile, smoke_cfg):
    from ce_utils.runner import run_notebook

    run_notebook(ROOT / "notebooks" / "04_speed.ipynb", tmp_path / "out.ipynb",
                 {"profile": str(smoke_profile)}, progress=False)
    prof = pd.read_csv(Path(smoke_cfg["results_dir"]) / "call_profile.csv")   # one call, batch 1, one thread
    assert {"torch", "onnx-int8"} <= set(prof["backend"]) and set(prof["batch_size"]) == {1}
    assert {"call", "tokenise", "embeddings", "layer 0"} <= set(prof.loc[prof["backend"] == "torch", "part"])
    df = pd.read_csv(Path(smoke_cfg["results_dir"]) / "speed.csv")
    missing = [c for c in speed.SPEED_COLUMNS + ["cpu", "torch", "transformers", "git_commit"] if c not in df.columns]
    assert not missing, missing
    assert set(df["role"]) == {"de", "de-k-ce", "query-student", "ce", "overhead"}
    assert set(df["tokenization"]) == {"included", "excluded"}
    assert set(df["batch_size"]) == {1, 4} and set(df["threads"]) == {1}
    eager = {"DE-6 full", "DE-2 CE", "query-student L0", "query-student L0_5", "CE (pair)", "CE (self-pair)",
             "DE-0 (no layers)"}
    onnx = {"DE-6 full [onnx-int8]", "query-student L0 [onnx-int8]", "query-student L0_5 [onnx-int8]"}
    static = {m.replace("[onnx-int8]", "[onnx-int8-static]") for m in onnx}   # calibrated on training queries
    lean = {m.replace("[onnx-int8]", "[lean]") for m in onnx}             # tokenizers + ONNX Runtime, numpy features
    assert set(df["model"]) == eager | onnx | static | lean
    assert set(df[df["backend"] == "onnx-int8"]["model"]) == onnx
    assert set(df[df["backend"] == "onnx-int8"]["base_model"]) == {m.split(" [")[0] for m in onnx}
    both = df.set_index(["model", "batch_size", "tokenization"])
    de_eager, de_onnx = both.loc[("DE-6 full", 1, "included")], both.loc[("DE-6 full [onnx-int8]", 1, "included")]
    assert de_onnx["speedup_vs_de"] == 1.0  # same backend's full DE
    # times per batch are robust_ms of the committed per-call times; speed-ups are ratios of models timed in
    # the same interleaved passes; the per-pass ratios are in speed_rounds.csv
    rounds = pd.read_csv(Path(smoke_cfg["results_dir"]) / "speed_rounds.csv")
    r = rounds[(rounds["batch_size"] == 1) & (rounds["tokenization"] == "included")]
    robust = {m: speed.robust_ms(speed.call_matrix(g.sort_values("round")["call_ms"])) for m, g in r.groupby("model")}
    assert r["round"].nunique() == 2 and de_eager["median_ms"] == pytest.approx(robust["DE-6 full"])
    assert de_onnx["speedup_vs_eager_de"] == pytest.approx(robust["DE-6 full"] / robust["DE-6 full [onnx-int8]"])
    per_pass = r.pivot_table(index="round", columns="model", values="ms_per_batch")
    assert (r[r["model"] == "DE-2 CE"].sort_values("round")["speedup_vs_de"].to_numpy()
            == pytest.approx((per_pass["DE-6 full"] / per_pass["DE-2 CE"]).to_numpy()))
    df = df[df["backend"] == "torch"]
    assert (df["median_ms"] > 0).all() and (df["iqr_ms"] >= 0).all()
    assert (df["queries_per_s"] - 1e3 * df["batch_size"] / df["median_ms"]).abs().max() < 1e-6
    de = df[df["role"] == "de"]
    assert (de["speedup_vs_de"] == 1.0).all() and (de["flop_ratio"] == 1.0).all()
    by = df.groupby("model")["flop_ratio"].first()
    assert by["DE-2 CE"] == pytest.approx(by["query-student L0_5"])  # same architecture, same FLOPs
    assert by["query-student L0"] > by["DE-2 CE"] > 1 > by["CE (self-pair)"] > by["CE (pair)"]
    n = df.groupby("model")["n_layers"].first()
    assert n["DE-6 full"] == 6 and n["DE-2 CE"] == 2 and n["query-student L0"] == 1
    assert len(df) == 7 * 2 * 2 and (df["n_rounds"] == 2).all()
    rounds = pd.read_csv(Path(smoke_cfg["results_dir"]) / "speed_rounds.csv")
    assert len(rounds) == 2 * (len(df) + 6 * 2 * 3) and set(rounds["round"]) == {0, 1}   # 3 models x 3 backends
    assert rounds.groupby(["round", "batch_size", "tokenization"])["model"].nunique().eq(16).all()
    # the fixed per-call cost is split off every eager student's time (its arithmetic is tested on exact times in
    # test_fixed_cost_splits_time_into_fixed_and_per_layer_parts; measured times on a loaded machine may put the
    # 0-layer model above a 1-layer one, so only presence is asserted here)
    st = df[df["role"].isin(["de-k-ce", "query-student"])]
    assert st["fixed_share"].gt(0).all() and st["expected_speedup"].notna().all()
    assert df[df["role"] == "ce"]["fixed_share"].isna().all()
    assert not df["speedup_vs_de"].isna().any() and all(math.isfinite(x) for x in df["speedup_vs_de"])


def test_mean_tokens_reads_torch_and_numpy_features():
    """The lean backend's tokenizer gives numpy arrays, sentence-transformers gives tensors: both count alike."""
    import numpy as np
    import torch

    mask = [[1, 1, 1, 0], [1, 1, 0, 0]]
    for wrap in (torch.tensor, np.asarray):
        enc = speed.Encoder(name="m", role="query-student", module=None, prepare=lambda t, w=wrap: {"attention_mask": w(mask)},
                            run=lambda f: f, n_layers=1, n_params=1, hidden=4, intermediate=8)
        assert speed.mean_tokens(enc, ["a", "b"]) == 2.5
