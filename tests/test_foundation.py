"""Loaders, profiles, model resolution, metrics and result files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ce_utils.core.config import ConfigError, data_dir, load_profile
from ce_utils.core.data import load_beir_dataset, load_beir_folder, load_query_file, load_query_files, load_sts, subsample
from ce_utils.core.models import ModelNotFoundError, resolve_model
from ce_utils.core.runinfo import run_metadata
from ce_utils.core.io import save_results, write_csv_atomic
from ce_utils.core.io import cached_array
from ce_utils.core.retrieval import evaluate, exact_search, rerank


def test_profile_overrides_and_paths(smoke_profile):
    cfg = load_profile(smoke_profile, {"encode.max_length": 16, "seed": None})
    assert cfg["encode"]["max_length"] == 16
    assert cfg["seed"] == 13  # None keeps the profile's value
    assert Path(cfg["results_dir"]).is_absolute()


def test_unknown_profile_names_the_choices():
    with pytest.raises(ConfigError, match="Available: .*default"):
        load_profile("no-such-profile")


def test_missing_data_dir_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.delenv("CE_DATA_DIR", raising=False)
    with pytest.raises(ConfigError, match="CE_DATA_DIR"):
        data_dir({"data_dir": None})
    with pytest.raises(ConfigError, match="does not exist"):
        data_dir({"data_dir": str(tmp_path / "nope")})
    monkeypatch.setenv("CE_DATA_DIR", str(tmp_path))
    assert data_dir({"data_dir": None}) == tmp_path.resolve()


def test_load_beir_dataset(smoke_cfg):
    ds = load_beir_dataset(smoke_cfg, "tiny-a")
    assert len(ds.corpus) == 40 and len(ds.queries) == 10
    assert all(q.startswith("test-") for q in ds.queries)
    train = load_beir_dataset(smoke_cfg, "tiny-a", split="train")
    assert all(q.startswith("train-") for q in train.queries)
    assert load_beir_dataset(smoke_cfg, "tiny-b").approximate is True
    with pytest.raises(ConfigError, match="Unknown dataset 'nope'.*Known: tiny-a"):
        load_beir_dataset(smoke_cfg, "nope")


def test_beir_folder_errors(tmp_path):
    with pytest.raises(ConfigError, match="missing corpus.jsonl"):
        load_beir_folder(tmp_path)
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text("{not json\n")
    (tmp_path / "queries.jsonl").write_text('{"_id": "1", "text": "q"}\n')
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\td\t1\n")
    with pytest.raises(ConfigError, match="Could not read"):
        load_beir_folder(tmp_path)


def test_subsample_keeps_judged_docs(smoke_cfg):
    ds = load_beir_dataset(smoke_cfg, "tiny-a")
    small = subsample(ds, max_queries=3, max_docs=12, seed=1)
    assert len(small.queries) == 3 and len(small.corpus) == 12
    for q in small.queries:
        assert all(d in small.corpus for d in small.qrels[q])
    assert subsample(ds, max_queries=3, max_docs=12, seed=1).doc_ids == small.doc_ids


def test_eval_dataset_uses_the_profile_sample(smoke_cfg):
    from ce_utils.core.data import load_eval_dataset

    ds = load_eval_dataset(smoke_cfg, "tiny-a")
    assert len(ds.corpus) == 25 and len(ds.queries) == 10
    assert load_eval_dataset(smoke_cfg, "tiny-a").doc_ids == ds.doc_ids


def test_query_files(tmp_path, smoke_cfg):
    good = tmp_path / "q.tsv"
    good.write_text("1\thello world\n\n2\tsecond query\n")
    assert load_query_file(good) == {"1": "hello world", "2": "second query"}
    bad = tmp_path / "bad.tsv"
    bad.write_text("1\tok\nno tab here\n")
    with pytest.raises(ConfigError, match=r"bad.tsv:2: expected 'id<TAB>text'"):
        load_query_file(bad)
    both = load_query_files(smoke_cfg)
    assert len(both) == 64 and "unlabelled-1:0" in both
    assert len(load_query_files(smoke_cfg, exclude=["unlabelled-2"])) == 40


def test_sts(smoke_cfg):
    pairs = load_sts(smoke_cfg)
    assert len(pairs) == 20 and isinstance(pairs[0][2], float)


def test_resolve_model(tmp_path, tiny_bert_dir, smoke_cfg):
    assert resolve_model(str(tiny_bert_dir)) == str(tiny_bert_dir.resolve())
    with pytest.raises(ModelNotFoundError, match="Unknown packaged model"):
        resolve_model("package:not-a-package")
    with pytest.raises(ModelNotFoundError, match="does not exist yet"):
        resolve_model("trained:nothing-here", smoke_cfg)
    with pytest.raises(ModelNotFoundError, match="huggingface-cli download"):
        resolve_model("no-such-org/no-such-model-xyz")


def test_exact_search_and_metrics():
    q = np.array([[1.0, 0.0], [0.0, 1.0]])
    d = np.array([[0.9, 0.1], [0.1, 0.9], [0.7, 0.7]])
    res = exact_search(q, d, ["1", "2"], ["1", "b", "c"], top_k=2)
    assert list(res["1"]) == ["1", "c"] and list(res["2"]) == ["b", "c"]
    # query id "1" equals doc id "1": must still count (Vaswani reuses ids)
    m = evaluate({"1": {"1": 1}, "2": {"c": 1}}, res)
    assert m["Hits@10"] == 1.0
    assert m["MRR@10"] == pytest.approx((1.0 + 0.5) / 2)
    assert 0 < m["NDCG@10"] < 1
    with pytest.raises(ValueError, match="Unknown metric"):
        evaluate({"1": {"1": 1}}, res, metrics=["Foo@10"])


def test_rerank_reorders_and_cuts():
    res = {"q": {"a": 3.0, "b": 2.0, "c": 1.0}}
    out = rerank(res, lambda pairs: [{"a": 0.1, "b": 0.9}[d] for _, d in pairs], depth=2)
    assert out == {"q": {"a": 0.1, "b": 0.9}}


def test_cached_array(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return np.arange(3)

    a = cached_array(tmp_path, "x", compute, model="m", layer=1)
    b = cached_array(tmp_path, "x", compute, model="m", layer=1)
    c = cached_array(tmp_path, "x", compute, model="m", layer=2)
    assert len(calls) == 2 and (a == b).all() and (a == c).all()
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_results_are_written_atomically_with_metadata(tmp_path, monkeypatch):
    meta = run_metadata({"name": "t", "seed": 3})
    assert meta["torch"] and meta["device"] and meta["seed"] == 3
    path = tmp_path / "r.csv"
    save_results([{"model": "m", "value": 1.0}], path, meta, required=["model", "value"])
    df = pd.read_csv(path)
    assert {"torch", "device", "seed", "timestamp"} <= set(df.columns)
    with pytest.raises(ValueError, match="lack columns"):
        save_results([{"model": "m"}], path, meta, required=["value"])

    class Boom(pd.DataFrame):
        def to_csv(self, *a, **k):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_csv_atomic(Boom({"a": [1]}), path)
    assert pd.read_csv(path)["value"].tolist() == [1.0]  # old file intact
    assert not list(tmp_path.glob("*.tmp"))


def test_cross_encoder_trains_and_reloads(smoke_cfg):
    from ce_utils.experiments.cross_encoder import cross_encoder_path, learning_curve, load_or_train_cross_encoder

    ce, info = load_or_train_cross_encoder(smoke_cfg)
    assert info["global_steps"] == 2 and info["n_examples"] > 0 and info["n_dev_queries"] == 3
    assert info["n_train_queries"] + info["n_dev_queries"] == 10  # the dev split is carved from train queries
    assert (cross_encoder_path(smoke_cfg) / "training_info.json").is_file()
    curve = learning_curve(smoke_cfg)
    assert [r["step"] for r in curve] == [0, 1, 2] and sum(r["selected"] for r in curve) == 1
    assert info["selected_step"] in (0, 1, 2)
    scores = ce.predict([("cell protein", "cell gene"), ("heart", "wave")])
    assert np.isfinite(scores).all()
    ce2, info2 = load_or_train_cross_encoder(smoke_cfg)  # cached: no retraining
    assert info2["timestamp"] == info["timestamp"]


def test_listwise_loss_decreases_on_a_tiny_model(tiny_bert_dir):
    import torch
    from sentence_transformers import CrossEncoder

    from ce_utils.experiments.cross_encoder import listwise_loss

    torch.manual_seed(0)
    ce = CrossEncoder(str(tiny_bert_dir), num_labels=1, max_length=32, device="cpu")
    loss = listwise_loss(ce)
    batch = [["cell protein gene", "heart blood pressure"],      # queries
             ["cell gene tumour growth", "heart artery cardiac"],  # positives
             ["wave antenna radio", "diet sugar fat"],            # negative 1
             ["brain neuron sleep", "wave microwave guide"]]      # negative 2
    opt = torch.optim.AdamW(ce.parameters(), lr=3e-3)
    values = []
    for _ in range(15):
        value = loss(batch, None)
        values.append(float(value))
        value.backward()
        opt.step()
        opt.zero_grad()
    assert abs(values[0] - np.log(3)) < 0.3  # about uniform over the 3 candidates at the start
    assert values[-1] < 0.5 * values[0]


def test_listwise_examples_exclude_every_positive(smoke_cfg):
    from ce_utils.experiments.cross_encoder import listwise_examples, split_train_dev
    from ce_utils.core.data import load_beir_dataset

    ds = load_beir_dataset(smoke_cfg, "tiny-a", split="train")
    train, dev = split_train_dev(ds.query_ids, 3, seed=1)
    assert len(dev) == 3 and not set(train) & set(dev) and sorted(train + dev) == sorted(ds.query_ids)
    ranked = {q: {d: float(-i) for i, d in enumerate(ds.doc_ids)} for q in train}
    ex = listwise_examples(ds, train, ranked, n_neg=3, seed=0)
    assert len(ex) == sum(len(ds.qrels[q]) for q in train)  # one example per (query, positive)
    text_to_id = {t: d for d, t in zip(ds.doc_ids, ds.doc_texts())}
    for e in ex:
        q = next(q for q in train if ds.queries[q] == e["query"])
        negs = {text_to_id[e[f"negative_{i}"]] for i in (1, 2, 3)}
        assert not negs & set(ds.qrels[q]) and text_to_id[e["positive"]] in ds.qrels[q]
    with pytest.raises(ConfigError, match="dev_queries"):
        split_train_dev(ds.query_ids, 10, seed=1)


def test_default_profile_resolves_offline():
    """Every model and dataset of the default profile is reachable without a network."""
    if not os.environ.get("CE_DATA_DIR"):
        if os.environ.get("CI"):
            pytest.fail("CI must set CE_DATA_DIR")
        pytest.skip("CE_DATA_DIR not set")
    cfg = load_profile("default")
    for role, spec in cfg["models"].items():
        if spec.startswith("trained:"):
            assert cfg.get("ce_training"), role
            assert Path(resolve_model(cfg["ce_training"]["base"], cfg)).is_dir()
        else:
            assert Path(resolve_model(spec, cfg)).exists(), role
    for name in cfg["datasets"]:
        ds = load_beir_dataset(cfg, name)
        assert ds.corpus and ds.queries and ds.qrels
    assert load_query_files(cfg)
    for name in cfg["sts"]:
        assert load_sts(cfg, name)
