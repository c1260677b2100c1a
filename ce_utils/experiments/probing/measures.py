"""Measures of :mod:`ce_utils.experiments.probing`."""

from __future__ import annotations


from typing import Sequence

import numpy as np
from scipy.stats import spearmanr
from ce_utils.core.retrieval import DEFAULT_METRICS, evaluate, exact_search


# --------------------------------------------------------------------------- scoring
def retrieval_by_layer(q_layers: np.ndarray, d_layers: np.ndarray, ds, layers: Sequence[int],
                       metrics: Sequence[str] = DEFAULT_METRICS, top_k: int = 100) -> dict[int, dict[str, float]]:
    """Exact cosine retrieval with each chosen hidden state; metrics per layer."""
    qids, dids = ds.query_ids, ds.doc_ids
    out = {}
    for layer in layers:
        res = exact_search(q_layers[layer], d_layers[layer], qids, dids, top_k=top_k)
        out[layer] = evaluate(ds.qrels, res, metrics)
    return out


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.clip(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12, None)
    b = b / np.clip(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12, None)
    return (a * b).sum(-1)


def sts_by_layer(a_layers: np.ndarray, b_layers: np.ndarray, gold: Sequence[float],
                 layers: Sequence[int]) -> dict[int, float]:
    """Spearman correlation between the cosine of each pair and the gold score, per layer."""

    return {l: float(spearmanr(cosine_rows(a_layers[l], b_layers[l]), np.asarray(gold)).statistic) for l in layers}


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA (Kornblith et al., 2019) between two representations of the same n texts."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    x = x - x.mean(0, keepdims=True)
    y = y - y.mean(0, keepdims=True)
    num = np.linalg.norm(y.T @ x, "fro") ** 2
    den = np.linalg.norm(x.T @ x, "fro") * np.linalg.norm(y.T @ y, "fro")
    return float(num / den) if den > 0 else float("nan")


def similarity_by_layer(a_layers: np.ndarray, b_layers: np.ndarray, layers: Sequence[int]) -> dict[int, dict]:
    """Per layer: linear CKA, and the mean cosine of each text's two embeddings (when the widths match)."""
    out = {}
    for l in layers:
        row = {"CKA": linear_cka(a_layers[l], b_layers[l])}
        if a_layers.shape[-1] == b_layers.shape[-1]:
            row["cosine"] = float(cosine_rows(a_layers[l], b_layers[l]).mean())
        out[l] = row
    return out


def layer_rows(values: dict[int, dict[str, float]], **common) -> list[dict]:
    """Long-format rows ``{**common, layer, metric, value}``."""
    return [{**common, "layer": int(l), "metric": m, "value": float(v)}
            for l, ms in values.items() for m, v in ms.items()]


def sts_texts(pairs: Sequence[tuple[str, str, float]]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Unique sentences of STS pairs, and the index of each pair's two sentences in that list."""
    uniq: dict[str, int] = {}
    for a, b, _ in pairs:
        uniq.setdefault(a, len(uniq))
        uniq.setdefault(b, len(uniq))
    ia = np.array([uniq[a] for a, _, _ in pairs])
    ib = np.array([uniq[b] for _, b, _ in pairs])
    return list(uniq), ia, ib
