"""Exact dense retrieval, re-ranking bookkeeping and IR metrics (beir / pytrec_eval)."""

from __future__ import annotations

import logging
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from beir.retrieval.evaluation import EvaluateRetrieval


log = logging.getLogger(__name__)

# canonical metric names used in every result CSV
DEFAULT_METRICS = ("NDCG@10", "Recall@100", "MAP@10", "MRR@10", "Hits@10")
DOC_CHUNK = 50_000         # documents scored at a time: bounded memory for corpora of millions


def exact_search(query_emb, doc_emb, query_ids: Sequence[str], doc_ids: Sequence[str], top_k: int = 100,
                 score_function: str = "cos_sim", query_chunk: int = 1024, doc_chunk: int = DOC_CHUNK,
                 device: str | torch.device = "cpu") -> dict[str, dict[str, float]]:
    """Exact top-k by cosine (``cos_sim``) or inner product (``dot``) of every query over ``doc_emb`` (an
    array, or a memory map from :func:`ce_utils.core.encode.encode_to_memmap`), ``doc_chunk`` documents at
    a time: each chunk is read, cast to float32 and scored on ``device``, and its top-k merged into the
    running top-k, so memory stays bounded and the result is that of scoring the whole corpus at once."""
    if score_function not in ("cos_sim", "dot"):
        raise ValueError(f"score_function must be 'cos_sim' or 'dot', not {score_function!r}")
    if len(query_emb) != len(query_ids) or len(doc_emb) != len(doc_ids):
        raise ValueError("embedding rows and ids differ in number")
    if doc_chunk < 1 or query_chunk < 1:
        raise ValueError("doc_chunk and query_chunk must be positive")
    device = torch.device(device)
    q_all = torch.as_tensor(np.asarray(query_emb, dtype=np.float32), device=device)
    if score_function == "cos_sim":
        q_all = torch.nn.functional.normalize(q_all, dim=-1)
    k = min(top_k, len(doc_ids))
    n_q = len(query_ids)
    best_s = torch.full((n_q, k), float("-inf"), device=device)
    best_i = torch.full((n_q, k), -1, dtype=torch.long, device=device)
    for start in range(0, len(doc_ids), doc_chunk):
        d = torch.as_tensor(np.asarray(doc_emb[start:start + doc_chunk], dtype=np.float32), device=device)
        if score_function == "cos_sim":
            d = torch.nn.functional.normalize(d, dim=-1)
        for qs in range(0, n_q, query_chunk):
            vals, idx = torch.topk(q_all[qs:qs + query_chunk] @ d.T, min(k, d.shape[0]), dim=1)
            if start == 0 and d.shape[0] >= k:  # the first chunk fills the running top-k as it is
                best_s[qs:qs + query_chunk], best_i[qs:qs + query_chunk] = vals, idx
                continue
            cat_s = torch.cat([best_s[qs:qs + query_chunk], vals], dim=1)
            cat_i = torch.cat([best_i[qs:qs + query_chunk], idx + start], dim=1)
            top_s, pos = torch.topk(cat_s, k, dim=1)
            best_s[qs:qs + query_chunk] = top_s
            best_i[qs:qs + query_chunk] = torch.gather(cat_i, 1, pos)
    best_s, best_i = best_s.cpu(), best_i.cpu()
    return {qid: {doc_ids[j]: float(v) for v, j in zip(best_s[r].tolist(), best_i[r].tolist()) if j >= 0}
            for r, qid in enumerate(query_ids)}


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


