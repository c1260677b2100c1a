"""Inference backends give the eager model's embeddings (within a tolerance) for a tiny model."""

import numpy as np
import pytest

from ce_utils.experiments.speed import backends
from ce_utils.core.config import ConfigError
from ce_utils.report import speed as report_speed

TEXTS = ["a short query", "a somewhat longer query about cells and proteins", "x"]


def _cos(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


CALIBRATION = [f"training query {i} about cells proteins and genes" for i in range(40)]


@pytest.mark.parametrize("backend,min_cos", [("torch", 0.99999), ("onnx", 0.99999), ("torch-int8", 0.99),
                                             ("onnx-int8", 0.99), ("onnx-int8-pc", 0.99), ("onnx-int8-mm", 0.99),
                                             ("onnx-int8-static", 0.95), ("lean", 0.99999), ("lean-int8", 0.99)])
def test_backend_embeddings_match_eager_pytorch(teacher, tmp_path, backend, min_cos):
    ref = teacher.encode(TEXTS, convert_to_numpy=True)
    bm = backends.build(teacher, backend, "tiny", work_dir=tmp_path, calibration=CALIBRATION)
    got = bm.encode(TEXTS, batch_size=2)
    assert got.shape == ref.shape
    assert _cos(got, ref).min() >= min_cos
    if backend in ("onnx", "lean"):  # the exported graph is the model: equal to float rounding
        np.testing.assert_allclose(got, ref, atol=1e-4)
    if backend.startswith("lean"):  # its own tokenizer: the same token ids as the model's
        ours, theirs = bm.features(TEXTS), teacher.preprocess(TEXTS)
        assert all(np.array_equal(ours[k], theirs[k].numpy()) for k in ours)
    if backend.startswith("onnx"):
        assert bm.onnx_path.is_file() and bm.onnx_path.parent == tmp_path
        assert not list(tmp_path.glob("*partial*"))


def test_quantised_copy_leaves_the_model_alone(teacher):
    before = teacher.encode(TEXTS, convert_to_numpy=True)
    backends.build(teacher, "torch-int8", "tiny")
    np.testing.assert_array_equal(teacher.encode(TEXTS, convert_to_numpy=True), before)


def test_unknown_backend_names_the_fix():
    with pytest.raises(ConfigError, match="speed.backends"):
        backends.check_backends(["tensorrt"])


def test_quality_rows_compare_each_backend_with_eager_fp32(teacher, smoke_cfg, tmp_path):
    import pandas as pd

    from ce_utils.core.config import load_profile
    from ce_utils.core.students import layer_subset_student

    cfg = load_profile(smoke_cfg["profile_path"], {"cache_dir": str(tmp_path / "cache")})
    student = layer_subset_student(teacher, [0, 5])  # notebook 03's subset:0,5 student
    rows = pd.DataFrame(backends.quality_rows(cfg, [("full", "tiny", teacher), ("L0_5", "qd:L0_5", student)],
                                              ["onnx", "torch-int8"], teacher, ["tiny-a"], progress=False))
    assert set(rows["backend"]) == {"torch", "onnx", "torch-int8"}
    assert set(rows["model_id"]) >= {"tiny@torch", "qd:L0_5@onnx", "tiny@torch-int8"}
    ref = rows[rows["backend"] == "torch"]
    assert (ref["delta_vs_torch_fp32"] == 0).all() and ref["value"].between(0, 1).all()
    onnx = rows[rows["backend"] == "onnx"]
    assert onnx["delta_vs_torch_fp32"].abs().max() < 1e-3  # same graph: same ranking
    # the student's numbers are its own, not the teacher's
    nd = rows[(rows["metric"] == "NDCG@10") & (rows["backend"] == "torch")].set_index("model")["value"]
    assert nd["full"] != nd["L0_5"]


def test_backend_table_and_recommendation():
    import pandas as pd

    rows = []
    for backend, de_ms, st_ms in (("torch", 9.0, 3.0), ("onnx-int8", 4.0, 1.5), ("torch-int8", 6.0, 2.0)):
        for model, base, role, ms, n in ((f"DE-6 full{'' if backend == 'torch' else ' [' + backend + ']'}",
                                          "DE-6 full", "de", de_ms, 6),
                                         (f"query-student L0_5{'' if backend == 'torch' else ' [' + backend + ']'}",
                                          "query-student L0_5", "query-student", st_ms, 2)):
            rows.append(dict(model=model, base_model=base, backend=backend, role=role, n_layers=n, batch_size=1,
                             threads=1, device="cpu", dtype="fp32", tokenization="included", median_ms=ms,
                             speedup_vs_de=de_ms / ms, speedup_vs_eager_de=9.0 / ms, flop_ratio=6 / n))
    quality = pd.DataFrame([dict(model=m, backend=b, dataset="x", metric="NDCG@10", value=v, delta_vs_torch_fp32=d)
                            for m, b, v, d in (("full DE", "torch", 0.6, 0), ("full DE", "onnx-int8", 0.58, -0.02),
                                               ("full DE", "torch-int8", 0.598, -0.002), ("L0_5", "torch", 0.5, 0),
                                               ("L0_5", "onnx-int8", 0.499, -0.001),
                                               ("L0_5", "torch-int8", 0.5, 0.0))])
    tab = report_speed.backend_table(pd.DataFrame(rows), quality, batch_sizes=(1,))
    assert len(tab) == 6
    row = tab[(tab["model"] == "query-student L0_5") & (tab["backend"] == "onnx-int8")].iloc[0]
    assert row["vs eager DE bs1"] == 6.0 and row["vs DE same backend bs1"] == pytest.approx(4 / 1.5)
    assert row["NDCG@10 delta vs fp32"] == -0.001
    # the full DE loses too much in onnx-int8: torch-int8 is the fastest that keeps its quality
    assert backends.recommend(tab, "DE-6 full")["backend"] == "torch-int8"
    assert backends.recommend(tab, "query-student L0_5")["backend"] == "onnx-int8"


def test_quantisation_variants_quantise_what_they_say(teacher, tmp_path):
    """Per-channel weights carry one scale per output column; the -mm and static variants leave the embedding
    table (the Gather) in fp32; static int8 needs calibration queries and names its graph by them."""
    import onnx

    def graph(backend, **kw):
        return onnx.load(str(backends.build(teacher, backend, "tiny", work_dir=tmp_path, **kw).onnx_path))

    def ops(g):
        return {n.op_type for n in g.graph.node}

    def scale_sizes(g):
        init = {i.name: i for i in g.graph.initializer}
        return {int(np.prod(init[n].dims)) for n in init if n.endswith("_scale")}

    per_tensor, per_channel, mm = graph("onnx-int8"), graph("onnx-int8-pc"), graph("onnx-int8-mm")
    assert scale_sizes(per_tensor) == {1} and max(scale_sizes(per_channel)) > 1
    gathers = [n for n in mm.graph.node if n.op_type == "Gather" and "word_embeddings" in n.input[0]]
    float_tables = {i.name for i in mm.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 2}
    assert gathers and all(n.input[0] in float_tables for n in gathers)
    quantised = {i.name for i in per_channel.graph.initializer
                 if i.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)}
    assert [n.input[0] for n in per_channel.graph.node if n.op_type == "Gather" and "word_embeddings" in n.input[0]
            ][0] in quantised                                           # the default quantises the table
    static = graph("onnx-int8-static", calibration=CALIBRATION)
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops(static)
    other = graph("onnx-int8-static", calibration=CALIBRATION[:20])
    assert other is not static and len(list(tmp_path.glob("*-int8-static-*.onnx"))) == 2
    with pytest.raises(ConfigError, match="calibration"):
        backends.build(teacher, "onnx-int8-static", "tiny", work_dir=tmp_path / "none")


def test_bf16_backend_only_where_native(teacher, monkeypatch):
    monkeypatch.setattr(backends, "native_bf16", lambda device=None: False)
    with pytest.raises(ConfigError, match="natively"):
        backends.build(teacher, "torch-bf16", "tiny")
    monkeypatch.setattr(backends, "native_bf16", lambda device=None: True)
    got = backends.build(teacher, "torch-bf16", "tiny").encode(TEXTS)
    assert _cos(got, teacher.encode(TEXTS, convert_to_numpy=True)).min() > 0.99
