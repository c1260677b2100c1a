"""The embedding cache's model identity: a copied or trained model never reuses its origin's cache."""

import copy

import numpy as np
import pytest
import torch

from ce_utils.core.encode import dataset_embeddings, weights_fingerprint


def test_fingerprint_is_stable_for_unchanged_weights(teacher):
    assert weights_fingerprint(teacher) == weights_fingerprint(teacher)
    assert weights_fingerprint(copy.deepcopy(teacher)) == weights_fingerprint(teacher)


def test_a_copy_that_changes_gets_its_own_fingerprint(teacher):
    base = weights_fingerprint(teacher)  # memoised on the object before it is copied
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        next(iter(student.parameters())).add_(0.01)
    assert weights_fingerprint(student) != base
    assert weights_fingerprint(teacher) == base


def test_an_optimizer_step_changes_the_fingerprint(teacher):
    model = copy.deepcopy(teacher)
    before = weights_fingerprint(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    out = model({k: v for k, v in model.tokenize(["a b c", "d e"]).items()})
    out["sentence_embedding"].sum().backward()
    opt.step()
    assert weights_fingerprint(model) != before


def test_a_layer_subset_student_does_not_reuse_the_teachers_embeddings(smoke_cfg, teacher, tmp_path):
    from ce_utils.core.config import load_profile
    from ce_utils.experiments.query_distill import build_student
    from ce_utils.core.evaluate import eval_datasets
    from ce_utils.core.students import parse_strategy

    cfg = load_profile(smoke_cfg["profile_path"], {"cache_dir": str(tmp_path / "cache")})
    ds = next(iter(eval_datasets(cfg, ["tiny-a"]).values()))
    q_teacher, _ = dataset_embeddings(cfg, teacher, ds, docs=False)
    student = build_student(parse_strategy("subset:0,5", 6), teacher, cfg)
    q_student, _ = dataset_embeddings(cfg, student, ds, docs=False)
    assert q_student.shape == q_teacher.shape
    assert not np.allclose(q_student, q_teacher)


def test_large_collections_are_encoded_on_disk_and_searched_in_chunks(smoke_cfg, teacher, tmp_path, monkeypatch):
    import ce_utils.core.encode as E
    from ce_utils.core.config import load_profile
    from ce_utils.core.evaluate import eval_datasets
    from ce_utils.core.retrieval import evaluate, exact_search

    cfg = load_profile(smoke_cfg["profile_path"], {"cache_dir": str(tmp_path / "cache")})
    ds = next(iter(eval_datasets(cfg, ["tiny-a"]).values()))
    q_mem, d_mem = dataset_embeddings(cfg, teacher, ds)
    monkeypatch.setattr(E, "ON_DISK_ABOVE", 5)
    q, d = dataset_embeddings(cfg, teacher, ds)
    assert isinstance(d, np.memmap) and d.dtype == np.float16 and d.shape == d_mem.shape
    np.testing.assert_allclose(np.asarray(d, dtype=np.float32), d_mem, atol=5e-3)
    on_disk = evaluate(ds.qrels, exact_search(q, d, ds.query_ids, ds.doc_ids))
    in_mem = evaluate(ds.qrels, exact_search(q_mem, d_mem, ds.query_ids, ds.doc_ids))
    assert on_disk["NDCG@10"] == pytest.approx(in_mem["NDCG@10"], abs=0.02)
    monkeypatch.setattr(teacher, "encode", lambda *a, **k: (_ for _ in ()).throw(AssertionError("re-encoded")))
    again = dataset_embeddings(cfg, teacher, ds, queries=False)[1]  # from the finished file on disk
    np.testing.assert_array_equal(np.asarray(again), np.asarray(d))


def test_probing_every_layer_of_a_huge_collection_is_refused(teacher, monkeypatch):
    import ce_utils.core.encode as E
    from ce_utils.core.config import ConfigError

    monkeypatch.setattr(E, "ON_DISK_ABOVE", 2)
    with pytest.raises(ConfigError, match="probing.datasets"):
        E.layer_embeddings({}, teacher, "de", ["a", "b", "c"], ["1", "2", "3"], "x")


def test_on_disk_encoding_with_a_multi_process_pool(smoke_cfg, teacher, tmp_path, monkeypatch):
    """encode.devices with several entries encodes through sentence-transformers' multi-process pool
    (here two CPU workers standing in for several GPUs): same embeddings."""
    import ce_utils.core.encode as E
    from ce_utils.core.config import load_profile
    from ce_utils.core.evaluate import eval_datasets

    cfg = load_profile(smoke_cfg["profile_path"], {"cache_dir": str(tmp_path / "cache"), "encode.dtype": "fp32"})
    ds = next(iter(eval_datasets(cfg, ["tiny-a"]).values()))
    ref = teacher.encode(ds.doc_texts(), convert_to_numpy=True)
    monkeypatch.setattr(E, "ON_DISK_ABOVE", 5)
    assert E.pool_devices({"devices": ["cpu", "cpu"]}) == ["cpu", "cpu"] and E.pool_devices({}) is None
    cfg2 = load_profile(smoke_cfg["profile_path"], {"cache_dir": str(tmp_path / "cache2"), "encode.dtype": "fp32",
                                                     "encode.devices": ["cpu", "cpu"]})
    d = dataset_embeddings(cfg2, teacher, ds, queries=False)[1]
    np.testing.assert_allclose(np.asarray(d, dtype=np.float32), ref, atol=5e-3)
