"""Exact dense retrieval, re-ranking bookkeeping and IR metrics (beir / pytrec_eval)."""

from __future__ import annotations

import logging
from typing import Callable, Iterable

import numpy as np
import torch
from beir.retrieval.evaluation import EvaluateRetrieval
from ce_utils.core.search import chunked_search


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


