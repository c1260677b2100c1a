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
