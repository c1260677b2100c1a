"""Exact dense retrieval, re-ranking bookkeeping and IR metrics (beir / pytrec_eval)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from ce_utils.core.io import atomic_write_text

log = logging.getLogger(__name__)

# canonical metric names used in every result CSV
DEFAULT_METRICS = ("NDCG@10", "Recall@100", "MAP@10", "MRR@10", "Hits@10")
CHUNKED_ABOVE = 200_000    # documents; larger corpora are searched chunk by chunk (ce_utils.core.search)


def exact_search(query_emb, doc_emb, query_ids: list[str], doc_ids: list[str], top_k: int = 100,
                 score_function: str = "cos_sim", chunk_size: int = 1024) -> dict[str, dict[str, float]]:
    """Brute-force top-k by cosine (``cos_sim``) or inner product (``dot``).

    A corpus on disk (a memory map from :func:`ce_utils.core.search.encode_to_memmap`) or larger than
    ``CHUNKED_ABOVE`` documents is searched chunk by chunk with bounded memory
    (:func:`ce_utils.core.search.chunked_search`, same top-k)."""
    if score_function not in ("cos_sim", "dot"):
        raise ValueError(f"score_function must be 'cos_sim' or 'dot', not {score_function!r}")
    if isinstance(doc_emb, np.memmap) or len(doc_ids) > CHUNKED_ABOVE:
        from ce_utils.core.search import chunked_search

        return chunked_search(query_emb, doc_emb, query_ids, doc_ids, top_k=top_k, score_function=score_function,
                              query_chunk=chunk_size)
    q = torch.as_tensor(np.asarray(query_emb), dtype=torch.float32)
    d = torch.as_tensor(np.asarray(doc_emb), dtype=torch.float32)
    if q.shape[0] != len(query_ids) or d.shape[0] != len(doc_ids):
        raise ValueError("embedding rows and ids differ in number")
    if score_function == "cos_sim":
        q = torch.nn.functional.normalize(q, dim=-1)
        d = torch.nn.functional.normalize(d, dim=-1)
    k = min(top_k, len(doc_ids))
    results: dict[str, dict[str, float]] = {}
    for start in range(0, len(query_ids), chunk_size):
        scores = q[start:start + chunk_size] @ d.T
        vals, idx = torch.topk(scores, k, dim=1)
        for row, qid in enumerate(query_ids[start:start + chunk_size]):
            results[qid] = {doc_ids[j]: float(v) for v, j in zip(vals[row].tolist(), idx[row].tolist())}
    return results


def evaluate(qrels: dict[str, dict[str, int]], results: dict[str, dict[str, float]],
             metrics: Iterable[str] = DEFAULT_METRICS) -> dict[str, float]:
    """Metrics over the queries of ``qrels`` (a query with no results counts as zero).

    NDCG/MAP/Recall/P come from pytrec_eval through beir's EvaluateRetrieval; MRR and
    Hits (beir's top-k accuracy) from beir's custom metrics. Identical query and doc ids
    are *not* dropped (Vaswani reuses ids across queries and documents)."""
    from beir.retrieval.evaluation import EvaluateRetrieval

    metrics = list(metrics)
    qrels = {q: d for q, d in qrels.items() if any(s > 0 for s in d.values())}
    results = {q: results.get(q, {}) for q in qrels}
    ks = sorted({int(m.split("@")[1]) for m in metrics})
    ndcg, _map, recall, precision = EvaluateRetrieval.evaluate(qrels, results, ks, ignore_identical_ids=False)
    pool = {**ndcg, **_map, **recall, **precision}
    if any(m.startswith("MRR") for m in metrics):
        pool.update(EvaluateRetrieval.evaluate_custom(qrels, results, ks, metric="mrr"))
    if any(m.startswith("Hits") for m in metrics):
        acc = EvaluateRetrieval.evaluate_custom(qrels, results, ks, metric="top_k_accuracy")
        pool.update({k.replace("Accuracy", "Hits"): v for k, v in acc.items()})
    missing = [m for m in metrics if m not in pool]
    if missing:
        raise ValueError(f"Unknown metric(s) {missing}; available: {sorted(pool)}")
    return {m: float(pool[m]) for m in metrics}


def rerank(results: dict[str, dict[str, float]], score_pairs: Callable[[list[tuple[str, str]]], list[float]],
           depth: int) -> dict[str, dict[str, float]]:
    """Re-score the top ``depth`` documents of each query with ``score_pairs((qid, did) list)``.

    Documents below ``depth`` are dropped, so metrics reflect the re-ranked list only."""
    pairs = [(q, d) for q, docs in results.items()
             for d, _ in sorted(docs.items(), key=lambda x: -x[1])[:depth]]
    scores = score_pairs(pairs) if pairs else []
    out: dict[str, dict[str, float]] = {q: {} for q in results}
    for (q, d), s in zip(pairs, scores):
        out[q][d] = float(s)
    return out


def fingerprint(**parts) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def cached_array(cache_dir: str | Path | None, name: str, compute: Callable[[], np.ndarray],
                 **key) -> np.ndarray:
    """Load ``name`` from the cache if its key matches, else compute and store it (atomically).

    The key (model, layer, dataset, max length, ...) is stored beside the array."""
    if cache_dir is None:
        return compute()
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tag = fingerprint(**key)
    arr_path = cache_dir / f"{name}-{tag}.npy"
    if arr_path.is_file():
        return np.load(arr_path)
    arr = np.asarray(compute())
    tmp = arr_path.with_suffix(".npy.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, arr)
    tmp.replace(arr_path)
    atomic_write_text(cache_dir / f"{name}-{tag}.json", json.dumps(key, sort_keys=True, default=str, indent=1))
    return arr
