"""The matrix-multiply benchmark times each dtype at the model's shapes, interleaved, and sums a layer."""

import pytest

from ce_utils.experiments.speed import matmul as M
from ce_utils.report import speed as report_speed


def test_matmul_rows_cover_every_shape_dtype_and_round(monkeypatch):
    monkeypatch.setattr(M, "native_bf16", lambda device=None: False)
    rows = M.matmul_rows(token_counts=(3, 8), rounds=2, calls=2, hidden=16, intermediate=64)
    assert {r["dtype"] for r in rows} == {"fp32", "int8"}            # no bf16 where it is not native
    assert len(rows) == 2 * 3 * 2 * 2                                 # tokens x shapes x dtypes x rounds
    assert {r["shape"] for r in rows} == {"16x16", "16x64", "64x16"}
    r = next(r for r in rows if r["tokens"] == 8 and r["shape"] == "16x64")
    assert r["flops"] == 2 * 8 * 16 * 64 and r["gflop_per_s"] == pytest.approx(r["flops"] / (r["ms_per_call"] * 1e6))
    s = report_speed.matmul_summary(rows)
    assert (s["rounds"] == 2).all() and len(s) == 2 * 3 * 2
    lay = report_speed.layer_ms(s)
    one = s[(s["tokens"] == 3) & (s["dtype"] == "fp32")].set_index("op")["median_ms"]
    want = 4 * one["qkv+out"] + one["ffn-in"] + one["ffn-out"]
    assert lay[(lay["tokens"] == 3) & (lay["dtype"] == "fp32")]["layer_matmul_ms"].iloc[0] == pytest.approx(want)


def test_int8_and_bf16_ops_compute_the_same_product():
    import torch
    x, w = torch.randn(5, 32), torch.randn(48, 32) / 32 ** 0.5
    ref = x @ w.T
    assert torch.allclose(M._op("int8", x, w)(), ref, atol=0.1)
    assert torch.allclose(M._op("bf16", x, w)().float(), ref, atol=0.1)


def test_matmul_command_writes_its_csv(smoke_profile, tmp_path):
    import pandas as pd
    from ce_utils.cli import main

    assert main(["matmul", "--profile", str(smoke_profile), "--tokens", "4", "--rounds", "1",
                 "--results-dir", str(tmp_path)]) == 0
    df = pd.read_csv(tmp_path / "matmul.csv")
    assert set(df["tokens"]) == {4} and {"git_commit", "cpu"} <= set(df.columns)


def _matmul(tokens, dtype, ms_per_op):
    """Benchmark rows in which every multiply of one (tokens, dtype) takes ``ms_per_op`` ms (two rounds)."""
    return [{"tokens": tokens, "shape": s, "op": op, "dtype": dtype, "threads": 1, "round": r, "calls": 1,
             "ms_per_call": ms_per_op, "gflop_per_s": 1.0, "flops": 1.0}
            for s, op in (("4x4", "qkv+out"), ("4x16", "ffn-in"), ("16x4", "ffn-out")) for r in range(2)]


def test_the_multiply_floor_is_layers_times_a_layers_multiplies_in_the_backends_dtype():
    import pandas as pd
    mm = pd.DataFrame(_matmul(9, "fp32", 0.1) + _matmul(9, "int8", 0.05) + _matmul(1536, "fp32", 2.0)
                      + _matmul(192, "fp32", 0.5))
    base = {"device": "cpu", "threads": 1, "tokenization": "included", "mean_tokens": 9.0}
    speed = pd.DataFrame([
        {**base, "model": "DE-6 full", "backend": "torch", "role": "de", "n_layers": 6, "batch_size": 1, "median_ms": 6.0},
        {**base, "model": "L0_5", "backend": "torch", "role": "query-student", "n_layers": 2, "batch_size": 1, "median_ms": 4.0},
        {**base, "model": "L0_5 [onnx-int8]", "backend": "onnx-int8", "role": "query-student", "n_layers": 2,
         "batch_size": 1, "median_ms": 1.0},
        {**base, "model": "L0_5", "backend": "torch", "role": "query-student", "n_layers": 2, "batch_size": 128,
         "median_ms": 40.0},
        {**base, "model": "DE-0", "backend": "torch", "role": "overhead", "n_layers": 0, "batch_size": 1, "median_ms": 1.0},
    ])
    t = report_speed.multiply_floor_table(speed, mm).set_index(["model", "batch_size"])
    assert "DE-0" not in t.index.get_level_values(0)                  # the fixed cost has no layers to floor
    # a layer = 6 multiplies (4 qkv+out, ffn-in, ffn-out) at 0.1 ms in fp32, 0.05 ms in int8
    assert t.loc[("DE-6 full", 1), "floor_ms"] == pytest.approx(6 * 0.6)
    assert t.loc[("L0_5", 1), "floor_ms"] == pytest.approx(2 * 0.6)
    assert t.loc[("L0_5", 1), "floor_share"] == pytest.approx(1.2 / 4.0)
    assert t.loc[("L0_5", 1), "speedup_at_floor"] == pytest.approx(3.0)
    assert t.loc[("L0_5 [onnx-int8]", 1), "multiply_dtype"] == "int8"
    assert t.loc[("L0_5 [onnx-int8]", 1), "floor_ms"] == pytest.approx(2 * 0.3)
    # batch 128 takes the benchmark's 1536 tokens (12 per query), not 192 (1.5 per query)
    assert t.loc[("L0_5", 128), "tokens_per_query"] == 12
    assert t.loc[("L0_5", 128), "floor_ms"] == pytest.approx(2 * 12.0)
