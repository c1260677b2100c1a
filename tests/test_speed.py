"""ce_utils.speed: analytic FLOPs, the timing helpers, and a papermill smoke run of notebook 04."""

import math
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


def test_add_speedup_matches_settings():
    rows = []
    for bs, de_ms, st_ms in ((1, 10.0, 5.0), (4, 40.0, 10.0)):
        for model, role, ms in (("DE-6 full", "de", de_ms), ("DE-2 CE", "de-k-ce", st_ms)):
            rows.append(dict(model=model, role=role, batch_size=bs, threads=1, device="cpu", dtype="fp32",
                             tokenization="included", median_ms=ms))
    df = speed.add_speedup(pd.DataFrame(rows))
    got = df.set_index(["model", "batch_size"])["speedup_vs_de"]
    assert got[("DE-6 full", 1)] == 1.0 and got[("DE-2 CE", 1)] == 2.0 and got[("DE-2 CE", 4)] == 4.0


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
    assert set(df["model"]) == {"DE-6 full", "DE-2 CE", "query-student L0", "query-student L0_5",
                                "CE (pair)", "CE (self-pair)"}
    assert (df["median_ms"] > 0).all() and (df["iqr_ms"] >= 0).all()
    assert (df["queries_per_s"] - 1e3 * df["batch_size"] / df["median_ms"]).abs().max() < 1e-6
    de = df[df["role"] == "de"]
    assert (de["speedup_vs_de"] == 1.0).all() and (de["flop_ratio"] == 1.0).all()
    by = df.groupby("model")["flop_ratio"].first()
    assert by["DE-2 CE"] == pytest.approx(by["query-student L0_5"])  # same architecture, same FLOPs
    assert by["query-student L0"] > by["DE-2 CE"] > 1 > by["CE (self-pair)"] > by["CE (pair)"]
    n = df.groupby("model")["n_layers"].first()
    assert n["DE-6 full"] == 6 and n["DE-2 CE"] == 2 and n["query-student L0"] == 1
    assert len(df) == 6 * 2 * 2
    assert not df["speedup_vs_de"].isna().any() and all(math.isfinite(x) for x in df["speedup_vs_de"])
