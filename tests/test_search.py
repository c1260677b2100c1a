"""The one exact search (chunked, over arrays or on-disk memory maps) equals a brute-force numpy top-k;
on-disk encoding resumes."""

import numpy as np
import pytest

from ce_utils.core.retrieval import exact_search
from ce_utils.core.encode import encode_to_memmap


def brute_force(q, d, qids, dids, top_k, score_function="cos_sim"):
    """The reference: every score at once in float64, sorted."""
    q, d = np.asarray(q, dtype=np.float64), np.asarray(d, dtype=np.float64)
    if score_function == "cos_sim":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        d = d / np.linalg.norm(d, axis=1, keepdims=True)
    s = q @ d.T
    order = np.argsort(-s, axis=1, kind="stable")[:, :top_k]
    return {qid: {dids[j]: float(s[r, j]) for j in order[r]} for r, qid in enumerate(qids)}


def _data(n_docs=1037, n_q=23, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n_q, dim)).astype(np.float32), rng.normal(size=(n_docs, dim)).astype(np.float32)


@pytest.mark.parametrize("score_function", ["cos_sim", "dot"])
def test_chunked_search_over_a_memmap_is_the_in_memory_top_k(tmp_path, score_function):
    q, d = _data()
    texts = [str(i) for i in range(len(d))]
    mm = encode_to_memmap(tmp_path / "corpus.npy", texts, lambda chunk: d[[int(t) for t in chunk]], dim=16,
                          chunk_size=100, progress=False)
    assert isinstance(mm, np.memmap) and mm.dtype == np.float16
    qids, dids = [f"q{i}" for i in range(len(q))], [f"d{i}" for i in range(len(d))]
    ref = brute_force(q, np.asarray(mm, dtype=np.float32), qids, dids, 10, score_function)
    got = exact_search(q, mm, qids, dids, top_k=10, score_function=score_function, doc_chunk=97, query_chunk=5)
    for qid in qids:
        assert list(got[qid]) == list(ref[qid])
        np.testing.assert_allclose(list(got[qid].values()), list(ref[qid].values()), rtol=1e-5, atol=1e-5)


def test_top_k_larger_than_a_chunk_and_than_the_corpus():
    q, d = _data(n_docs=30)
    qids, dids = [f"q{i}" for i in range(len(q))], [f"d{i}" for i in range(len(d))]
    got = exact_search(q, d, qids, dids, top_k=100, doc_chunk=7)
    ref = brute_force(q, d, qids, dids, 100)
    assert all(len(got[x]) == 30 and list(got[x]) == list(ref[x]) for x in qids)
    with pytest.raises(ValueError, match="score_function"):
        exact_search(q, d, qids, dids, score_function="l2")


def test_encoding_resumes_after_an_interruption(tmp_path):
    _, d = _data(n_docs=250)
    texts = [str(i) for i in range(len(d))]
    calls, fail = [], [True]

    def flaky(chunk):
        calls.append(chunk[0])
        if fail[0] and len(calls) == 3:
            raise KeyboardInterrupt
        return d[[int(t) for t in chunk]]

    with pytest.raises(KeyboardInterrupt):
        encode_to_memmap(tmp_path / "c.npy", texts, flaky, dim=16, chunk_size=50, key={"m": 1}, progress=False)
    assert not (tmp_path / "c.npy").exists()  # nothing half-written under the final name
    calls.clear()
    fail[0] = False
    mm = encode_to_memmap(tmp_path / "c.npy", texts, flaky, dim=16, chunk_size=50, key={"m": 1}, progress=False)
    assert calls[0] == "100"  # resumed after the two finished chunks
    np.testing.assert_allclose(mm, d.astype(np.float16))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npy"]


@pytest.mark.parametrize("doc_chunk", [1, 64, 50_000])
def test_every_chunk_size_gives_the_brute_force_top_k(doc_chunk):
    q, d = _data(n_docs=300)
    qids, dids = [f"q{i}" for i in range(len(q))], [f"d{i}" for i in range(300)]
    got = exact_search(q, d, qids, dids, top_k=5, doc_chunk=doc_chunk, query_chunk=4)
    ref = brute_force(q, d, qids, dids, 5)
    for qid in qids:
        assert list(got[qid]) == list(ref[qid])
        np.testing.assert_allclose(list(got[qid].values()), list(ref[qid].values()), rtol=1e-5, atol=1e-6)
