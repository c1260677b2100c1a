"""ce_utils.speed: analytic FLOPs, the timing helpers, and a papermill smoke run of notebook 04."""

import math

import numpy as np
from pathlib import Path

import pandas as pd
import pytest

from ce_utils.config import ConfigError
from ce_utils import speed

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
    assert len(plan) == 5 * (4 + 3)  # the CE is skipped above its batch-size cap
    for r in range(5):
        for bs, n in ((1, 4), (64, 3)):
            names = [e.name for rr, _, b, _, e in plan if rr == r and b == bs]
            assert len(names) == n and len(set(names)) == n  # each model once per round and setting
    orders = {tuple(e.name for rr, _, b, _, e in plan if rr == r and b == 1) for r in range(5)}
    assert len(orders) > 1  # the order changes between rounds
    rounds = [p[0] for p in plan]
    assert rounds == sorted(rounds)  # a round finishes before the next begins


def test_summary_uses_per_round_ratios():
    rows = []
    for r, (de_ms, st_ms) in enumerate(((10.0, 5.0), (20.0, 10.0), (12.0, 4.0))):
        for model, role, ms in (("DE-6 full", "de", de_ms), ("DE-2 CE", "de-k-ce", st_ms)):
            rows.append(dict(round=r, model=model, role=role, n_layers=6 if role == "de" else 2, batch_size=1,
                             threads=1, device="cpu", dtype="fp32", tokenization="included", median_ms=ms,
                             iqr_ms=0.0, n_runs=3, queries_per_s=1e3 / ms, speedup_vs_de=de_ms / ms))
    s = speed.summarize_rounds(pd.DataFrame(rows)).set_index("model")
    assert s.loc["DE-2 CE", "median_ms"] == 5.0 and s.loc["DE-2 CE", "n_rounds"] == 3
    assert s.loc["DE-2 CE", "speedup_vs_de"] == 2.0  # median of 2, 2, 3 -- not 12 / 5
    assert s.loc["DE-2 CE", "iqr_ms"] == pytest.approx(np.percentile([5, 10, 4], 75) - np.percentile([5, 10, 4], 25))
    spread = speed.architecture_spread(pd.DataFrame(rows).assign(model=lambda d: d["model"] + d["round"].astype(str),
                                                                 n_layers=2).query("round < 2 and role != 'de'"))
    assert spread["spread"].iloc[0] == 2.0


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


def test_measure_returns_positive_median():
    m = speed.measure(lambda: sum(range(100)), threads=1, min_run_time=0.01, warmup=1)
    assert m["median_ms"] > 0 and m["iqr_ms"] >= 0 and m["n_runs"] >= 1


def test_every_measurement_is_a_whole_pass_over_the_sample():
    """Each timed call encodes every batch once, so two models are always timed on the same batches
    (a few calls would otherwise cover whichever short or long queries came first)."""
    seen = []
    enc = speed.Encoder(name="m", role="query-student", module=None, prepare=lambda b: {"b": b},
                        run=lambda f: seen.append(tuple(f["b"])), n_layers=1, n_params=1, hidden=4, intermediate=8)
    items = [f"q{i}" for i in range(12)]
    batches = [items[i:i + 4] for i in range(0, 12, 4)]
    fn = speed.batch_fn(enc, batches, "cpu", tokenize=True)
    assert fn.n_batches == 3
    fn.warm()
    assert seen == [tuple(batches[0])]
    seen.clear()
    m = speed.measure(fn, threads=1, min_run_time=0.01, warmup=0)
    assert len(seen) % 3 == 0 and len(seen) >= 3
    assert [list(b) for b in seen[:3]] == batches  # one call = batches 0, 1, 2 in order
    assert m["n_runs"] % 3 == 0  # batches encoded, whole passes only
    with pytest.raises(ConfigError, match="no batch"):
        speed.batch_fn(enc, [], "cpu", tokenize=True)


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
    df = pd.read_csv(Path(smoke_cfg["results_dir"]) / "speed.csv")
    missing = [c for c in speed.SPEED_COLUMNS + ["cpu", "torch", "transformers", "git_commit"] if c not in df.columns]
    assert not missing, missing
    assert set(df["role"]) == {"de", "de-k-ce", "query-student", "ce"}
    assert set(df["tokenization"]) == {"included", "excluded"}
    assert set(df["batch_size"]) == {1, 4} and set(df["threads"]) == {1}
    eager = {"DE-6 full", "DE-2 CE", "query-student L0", "query-student L0_5", "CE (pair)", "CE (self-pair)"}
    onnx = {"DE-6 full [onnx-int8]", "query-student L0 [onnx-int8]", "query-student L0_5 [onnx-int8]"}
    assert set(df["model"]) == eager | onnx
    assert set(df[df["backend"] == "onnx-int8"]["model"]) == onnx
    assert set(df[df["backend"] == "onnx-int8"]["base_model"]) == {m.split(" [")[0] for m in onnx}
    both = df.set_index(["model", "batch_size", "tokenization"])
    de_eager, de_onnx = both.loc[("DE-6 full", 1, "included")], both.loc[("DE-6 full [onnx-int8]", 1, "included")]
    assert de_onnx["speedup_vs_de"] == 1.0  # same backend's full DE
    # the speed-up over the eager full DE is a ratio within each round (never across rounds), then the median
    rounds = pd.read_csv(Path(smoke_cfg["results_dir"]) / "speed_rounds.csv")
    r = rounds[(rounds["batch_size"] == 1) & (rounds["tokenization"] == "included")].pivot_table(
        index="round", columns="model", values="median_ms")
    assert len(r) == 2 and de_eager["median_ms"] == pytest.approx(r["DE-6 full"].median())
    assert de_onnx["speedup_vs_eager_de"] == pytest.approx((r["DE-6 full"] / r["DE-6 full [onnx-int8]"]).median())
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
    assert len(df) == 6 * 2 * 2 and (df["n_rounds"] == 2).all()
    rounds = pd.read_csv(Path(smoke_cfg["results_dir"]) / "speed_rounds.csv")
    assert len(rounds) == 2 * (len(df) + 3 * 2 * 2) and set(rounds["round"]) == {0, 1}
    assert rounds.groupby(["round", "batch_size", "tokenization"])["model"].nunique().eq(9).all()
    assert not df["speedup_vs_de"].isna().any() and all(math.isfinite(x) for x in df["speedup_vs_de"])
