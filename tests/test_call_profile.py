"""The profile of one query-encoding call (ce_utils.experiments.speed.call_profile): which parts it names per kind
of backend, and the command that writes call_profile.csv. Structure only: no timing is asserted."""

import pandas as pd
import pytest

from ce_utils.core.config import ConfigError
from ce_utils.core.students import num_layers
from ce_utils.experiments.speed import backends, call_profile

pytest.importorskip("onnxruntime")

QUERIES = ["what do cross encoders learn?", "mean pooling of token embeddings", "covid vaccine"]


def test_an_eager_call_splits_into_tokeniser_embeddings_layers_and_the_rest(teacher):
    df = call_profile.profile_call(backends.build(teacher, "torch", "de"), QUERIES[:1], repeats=3, warmup=1)
    assert list(df.columns) == call_profile.COLUMNS
    layers = [f"layer {i}" for i in range(num_layers(teacher))]
    assert df["part"].tolist() == ["call", "tokenise", "embeddings", *layers, "rest of forward", "outside the model"]
    assert (df["ms"] >= 0).all() and df.loc[df["part"] == "call", "share"].iloc[0] == pytest.approx(1.0)
    assert set(df["batch_size"]) == {1} and set(df["backend"]) == {"torch"}


def test_an_onnx_call_splits_by_operator_type(teacher, tmp_path):
    bm = backends.build(teacher, "onnx", "de", work_dir=tmp_path)
    df = call_profile.profile_call(bm, QUERIES, repeats=3, warmup=1)
    parts = set(df["part"])
    assert {"call", "tokenise", "runtime outside nodes", "outside the model"} <= parts
    assert any("MatMul" in p for p in parts) and (df["ms"] >= 0).all() and set(df["batch_size"]) == {3}
    with pytest.raises(ConfigError, match="repeats >= 3"):
        call_profile.profile_call(bm, QUERIES, repeats=2)


def test_the_command_writes_one_row_set_per_setting(smoke_profile, tmp_path):
    from ce_utils import cli

    args = ["profile-call", "--profile", str(smoke_profile), "--results-dir", str(tmp_path), "--model", "de",
            "--backend", "torch", "--repeats", "3", "--batch-size", "1", "2"]
    assert cli.main(args) == 0
    assert cli.main(args) == 0                                   # again: replaces, does not append
    df = pd.read_csv(tmp_path / "call_profile.csv")
    assert set(df["batch_size"]) == {1, 2} and (df.groupby(["batch_size", "part"]).size() == 1).all()
    assert {"git_commit", "torch", "cpu"} <= set(df.columns)
    assert cli.main(["profile-call", "--profile", str(smoke_profile), "--results-dir", str(tmp_path),
                     "--model", "0,1", "--repeats", "3"]) == 2   # no trained student: the fix is named
