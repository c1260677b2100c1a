"""Layer probing (notebook 01): self-pairing, pooling masks, per-layer embeddings, scoring, notebook."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ce_utils.core.config import ConfigError, load_profile
from ce_utils.experiments.probing import CE_QUALITY_COLUMNS, PROBE_COLUMNS, check_probe_layers, linear_cka, probe_dataset, probe_sample, probe_settings, similarity_by_layer, sts_by_layer, sts_texts
from ce_utils.core.layers import encode_layers, pooling_mask, self_pair_batch
from ce_utils.experiments.cross_encoder import load_probe_model
from ce_utils.core.io import META_COLUMNS
from ce_utils.core.students import backbone

ROOT = Path(__file__).resolve().parent.parent
TEXTS = ["cell protein gene expression", "heart", "brain neuron memory cortex signal learning sleep"]


@pytest.fixture(scope="module")
def tiny_ce(tiny_bert_dir):
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(tiny_bert_dir), num_labels=1, max_length=64, device="cpu")


@pytest.fixture(scope="module")
def tiny_de(tiny_bert_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(tiny_bert_dir), device="cpu")


def _word_ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_self_pair_input_is_the_text_twice(tiny_ce):
    tok = tiny_ce.tokenizer
    enc = self_pair_batch(tok, TEXTS, max_length=32)
    for row, text in enumerate(TEXTS):
        w = _word_ids(tok, text)
        n = len(w)
        ids = enc["input_ids"][row].tolist()
        assert ids[: 2 * n + 3] == [tok.cls_token_id, *w, tok.sep_token_id, *w, tok.sep_token_id]
        assert set(ids[2 * n + 3:]) <= {tok.pad_token_id}


def test_pooling_masks(tiny_ce):
    tok = tiny_ce.tokenizer
    enc = self_pair_batch(tok, TEXTS, max_length=32)
    first = pooling_mask(enc, "first_segment", tok.cls_token_id)
    both = pooling_mask(enc, "both_segments", tok.cls_token_id)
    with_cls = pooling_mask(enc, "with_cls", tok.cls_token_id)
    width = enc["input_ids"].shape[1]
    for row, text in enumerate(TEXTS):
        n = len(_word_ids(tok, text))
        pad = width - (2 * n + 3)
        exp_first = [0] + [1] * n + [0] * (n + 2) + [0] * pad
        exp_both = [0] + [1] * n + [0] + [1] * n + [0] + [0] * pad
        exp_cls = [1] + [1] * n + [0] * (n + 2) + [0] * pad
        assert first[row].int().tolist() == exp_first
        assert both[row].int().tolist() == exp_both
        assert with_cls[row].int().tolist() == exp_cls
    with pytest.raises(ConfigError, match="first_segment"):
        pooling_mask(enc, "cls_only")


def test_truncation_is_per_segment(tiny_ce):
    tok = tiny_ce.tokenizer
    long = " ".join(["cell protein gene"] * 20)
    enc = self_pair_batch(tok, [long], max_length=8)
    assert enc["input_ids"].shape[1] <= 16
    seg = enc["token_type_ids"][0]
    first = pooling_mask(enc, "first_segment")[0].sum().item()
    second = (pooling_mask(enc, "both_segments")[0] & (seg == 1)).sum().item()
    assert abs(first - second) <= 1 and first >= 6


def test_ce_layers_and_embedding_output(tiny_ce):
    emb = encode_layers(tiny_ce, TEXTS, "ce", max_length=32, batch_size=2, progress=False)
    bb = backbone(tiny_ce)
    assert emb.shape == (len(bb.encoder.layer) + 1, len(TEXTS), bb.config.hidden_size) == (7, 3, 32)
    tok = tiny_ce.tokenizer
    enc = self_pair_batch(tok, TEXTS, 32)
    mask = pooling_mask(enc, "first_segment").float()
    with torch.inference_mode():
        e0 = bb.embeddings(input_ids=enc["input_ids"], token_type_ids=enc["token_type_ids"])
        out = bb(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                 token_type_ids=enc["token_type_ids"], output_hidden_states=True)
    pooled0 = (e0 * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    pooled_last = (out.last_hidden_state * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    np.testing.assert_allclose(emb[0], pooled0.numpy(), atol=1e-5)
    np.testing.assert_allclose(emb[-1], pooled_last.numpy(), atol=1e-5)
    # batching (and the length sort inside) does not change a text's embedding
    alone = encode_layers(tiny_ce, TEXTS[1:2], "ce", max_length=32, progress=False)
    np.testing.assert_allclose(alone[:, 0], emb[:, 1], atol=1e-4)
    # different pooling spans give different embeddings
    both = encode_layers(tiny_ce, TEXTS, "ce", max_length=32, pooling="both_segments", progress=False)
    assert not np.allclose(both[3], emb[3])


def test_de_last_layer_is_the_sentence_embedding(tiny_de):
    emb = encode_layers(tiny_de, TEXTS, "de", max_length=64, progress=False)
    assert emb.shape == (7, 3, 32)
    np.testing.assert_allclose(emb[-1], tiny_de.encode(TEXTS, convert_to_numpy=True), atol=1e-4)


def test_scores_cka_and_sts():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8))
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 3 * x @ q) == pytest.approx(1.0)  # invariant to rotation and scale
    assert linear_cka(x, rng.normal(size=(64, 8))) < 0.5
    layers = np.stack([x, rng.normal(size=(64, 8))])
    sims = similarity_by_layer(layers, np.stack([x, x]), [0, 1])
    assert sims[0]["CKA"] == pytest.approx(1.0) and sims[0]["cosine"] == pytest.approx(1.0)
    assert sims[1]["cosine"] < 0.5
    pairs = [("a", "b", 5.0), ("a", "c", 1.0), ("b", "c", 3.0)]
    texts, ia, ib = sts_texts(pairs)
    assert texts == ["a", "b", "c"] and ia.tolist() == [0, 0, 1] and ib.tolist() == [1, 2, 2]
    e = np.array([[[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]]])
    assert sts_by_layer(e[:, ia], e[:, ib], [p[2] for p in pairs], [0])[0] == pytest.approx(1.0)


def test_settings_and_errors(smoke_cfg):
    s = probe_settings(smoke_cfg)
    assert s.models["ce"]["kind"] == "ce" and s.datasets == ["tiny-a", "tiny-b"] and s.pooling == "first_segment"
    s2 = probe_settings(smoke_cfg, de_model="/x/y", layers=[0, 2], pooling="with_cls", datasets=["tiny-b"])
    assert s2.models["de"]["spec"] == "/x/y" and s2.layers == [0, 2] and s2.datasets == ["tiny-b"]
    with pytest.raises(ConfigError, match="Unknown dataset"):
        probe_settings(smoke_cfg, datasets=["nope"])
    with pytest.raises(ConfigError, match="pooling"):
        probe_settings(smoke_cfg, pooling="max")
    with pytest.raises(ConfigError, match="kind"):
        probe_settings(smoke_cfg, models={"mine": "/some/model"})
    assert check_probe_layers(None, 6) == list(range(7))
    with pytest.raises(ConfigError, match=r"hidden states 0\.\.6"):
        check_probe_layers([0, 7], 6)


def test_retrieval_rows_share_the_embedding_cache(smoke_cfg, tmp_path):
    from ce_utils.core.encode import dataset_embeddings

    cfg = load_profile(smoke_cfg["profile_path"], {"cache_dir": str(tmp_path / "cache"),
                                                    "models_dir": str(tmp_path / "models")})
    s = probe_settings(cfg, layers=[0, 1, 6], models={"ce": cfg["models"]["ce"], "de": cfg["models"]["de"]})
    models = {}
    for label, m in s.models.items():
        obj, _ = load_probe_model(cfg, m["kind"], m["spec"], device="cpu")
        models[label] = {**m, "model": obj}
    ds = probe_sample(cfg, s, "tiny-a")
    rows, emb = probe_dataset(cfg, s, ds, models, device="cpu", progress=False)
    df = pd.DataFrame(rows)
    assert len(df) == 2 * 3 * len(s.metrics)
    assert set(df.layer) == {0, 1, 6} and set(df.model_kind) == {"ce", "de"}
    assert df.value.between(0, 1).all() and (df.n_docs == len(ds.corpus)).all()
    assert emb["ce"][1].shape == (7, len(ds.corpus), 32)
    cache = tmp_path / "cache" / "embeddings"
    cached = sorted(cache.glob("*.npy"))  # with the CE's training (it mines with the DE: train queries, docs)
    names = {p.name.rsplit("-", 1)[0] for p in cached}
    assert {"ce-tiny-a-docs", "ce-tiny-a-test-queries", "de-tiny-a-docs", "de-tiny-a-test-queries"} <= names
    assert all(np.load(p).dtype == np.float16 for p in cached)
    rows2, _ = probe_dataset(cfg, s, ds, models, device="cpu", progress=False)  # from the cache
    assert pd.DataFrame(rows2).value.tolist() == df.value.tolist()
    # the DE's sentence embeddings, as notebooks 02/03 ask for them, are the probe's last layer: no new file
    q, d = dataset_embeddings(cfg, models["de"]["model"], ds, s.max_length)
    np.testing.assert_array_equal(d, emb["de"][1][-1])
    np.testing.assert_array_equal(q, emb["de"][0][-1])
    assert sorted(cache.glob("*.npy")) == cached  # each model encoded each collection once


def test_guard_trips_on_a_cross_encoder_that_scores_at_random(smoke_cfg):
    import random

    from ce_utils.core.scoring import CrossEncoderNotWorkingError, check_reranks
    from ce_utils.core.data import load_beir_dataset
    from ce_utils.core.retrieval import evaluate, rerank

    ds = load_beir_dataset(smoke_cfg, "tiny-a")
    rng = random.Random(0)
    # a good first stage: every judged document first, then the rest
    first = {q: {d: (2.0 if ds.qrels[q].get(d) else rng.random()) for d in ds.doc_ids} for q in ds.query_ids}
    shuffled = rerank(first, lambda pairs: [rng.random() for _ in pairs], depth=10)
    before, after = evaluate(ds.qrels, first)["NDCG@10"], evaluate(ds.qrels, shuffled)["NDCG@10"]
    assert after < before
    with pytest.raises(CrossEncoderNotWorkingError, match="allow_broken_ce"):
        check_reranks(before, after, "tiny-a")
    assert check_reranks(before, after, "tiny-a", allow=True) is False
    assert check_reranks(after, before, "tiny-a") is True


def test_probe_summary_states_the_fall_off():
    from ce_utils.report.paper1 import probe_summary

    rows = []
    for kind, values in {"ce": [0.5, 0.6, 0.55, 0.2, 0.1], "de": [0.5, 0.55, 0.6, 0.65, 0.7]}.items():
        rows += [{"section": "retrieval", "metric": "NDCG@10", "dataset": "x", "model_kind": kind, "layer": i,
                  "value": v} for i, v in enumerate(values)]
    table, lines = probe_summary(pd.DataFrame(rows), ce_works=True)
    r = table.iloc[0]
    assert r["CE best layer"] == 1 and r["CE falls below half at layer"] == 3 and r["de at layer 1"] == 0.55
    assert "best layer is 1" in lines[0] and "below half of its best at layer 3" in lines[0]
    _, lines = probe_summary(pd.DataFrame(rows), ce_works=False)
    assert "NOT" in lines[0]


@pytest.mark.slow
def test_notebook_smoke_run(smoke_profile, tmp_path):
    from ce_utils.runner import run_notebook

    res = tmp_path / "results"
    run_notebook(ROOT / "notebooks" / "01_layer_probing.ipynb", tmp_path / "out.ipynb",
                 {"profile": str(smoke_profile), "results_dir": str(res), "cache_dir": str(tmp_path / "cache"),
                  "allow_broken_ce": True}, progress=False)
    df = pd.read_csv(res / "layer_probe.csv")
    assert set(PROBE_COLUMNS + META_COLUMNS + ["model_id", "ce_works"]) <= set(df.columns)
    assert set(df.section) == {"retrieval", "sts", "control"}
    ret = df[df.section == "retrieval"]
    assert set(ret.dataset) == {"tiny-a", "tiny-b"} and set(ret.model_kind) == {"ce", "de", "de-ft"}
    assert set(ret.layer) == set(range(7)) and set(ret.metric) >= {"NDCG@10", "MRR@10", "Hits@10", "Recall@100"}
    assert ret.value.between(0, 1).all()
    assert ret[ret.dataset == "tiny-b"].approximate.all() and not ret[ret.dataset == "tiny-a"].approximate.any()
    assert (ret[ret.dataset == "tiny-b"].n_queries == 6).all()
    # only a DE's last layer names a retrieval system
    named = ret[ret.model_id.notna()]
    assert set(named.model_kind) == {"de", "de-ft"} and (named.layer == 6).all()
    sts = df[df.section == "sts"]
    assert set(sts.metric) == {"Spearman"} and set(sts.dataset) == {"stsb-test"} and len(sts) == 21
    ctl = df[df.section == "control"]
    assert set(ctl.metric) == {"CKA", "cosine"} and set(ctl.dataset) == {"tiny-a-docs-16"}
    assert set(ctl.model_kind) == {"ce-vs-de", "de-ft-vs-de"}
    assert (df.pooling == "first_segment").all() and (df.max_length == 16).all() and (df.seed == 13).all()
    q = pd.read_csv(res / "ce_quality.csv")
    assert set(CE_QUALITY_COLUMNS + ["model_id", "ce_works"]) <= set(q.columns)
    assert set(q.stage) == {"first_stage", "ce_rerank"} and (q.depth == 5).all() and (q.n_queries == 6).all()
    curve = pd.read_csv(res / "ce_training.csv")
    assert set(curve.model_kind) == {"ce", "de-ft"} and (curve.groupby("model_kind").step.min() == 0).all()
    assert (curve.groupby("model_kind").selected.sum() == 1).all()
    checks = curve[curve.phase == "length check"]
    assert set(checks.model_kind) == {"ce"} and sorted(checks.max_length) == [32, 64]
    assert not (res / "peer_check.csv").exists()  # no published score for the tiny sets
