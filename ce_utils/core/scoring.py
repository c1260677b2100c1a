"""Pair scoring: a cross encoder's (or a dual encoder's cosine) relevance of (query, passage) pairs,
the on-disk cache of CE scores that every notebook shares, and the guard that stops a notebook whose
CE does not beat the first stage it re-ranks."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import torch
from ce_utils.core.config import ConfigError, show_progress
from ce_utils.core.data import BeirDataset, doc_text
from ce_utils.core.encode import autocast, encode_settings, weights_fingerprint
from ce_utils.core.io import atomic_write_text, fingerprint


log = logging.getLogger(__name__)


class CrossEncoderNotWorkingError(RuntimeError):
    """The cross encoder does not beat the first stage it re-ranks: no CE-derived claim may be
    written from it."""


def relevance_from_logits(logits: np.ndarray, label: int) -> np.ndarray:
    """Log-odds of ``label`` against every other label, row by row (for two labels: the difference
    of the two logits)."""
    logits = np.asarray(logits, dtype=np.float64)
    others = np.delete(logits, label, axis=1)
    m = others.max(axis=1, keepdims=True)
    return (logits[:, label] - (m[:, 0] + np.log(np.exp(others - m).sum(axis=1)))).astype(np.float32)


def ce_scores(ce, pairs: list[tuple[str, str]], batch_size: int = 32, dtype: str | None = None,
              progress: bool = False) -> list[float]:
    """One relevance score per (query, passage) pair. A one-logit CE gives its logit; a pair
    classifier with several labels (``ce.relevance_label`` set by ``ce_utils.core.models.load_cross_encoder``)
    the log-odds of that label, its pairs turned to (passage, query) when ``ce.passage_first``."""
    label = getattr(ce, "relevance_label", None)
    n_labels = int(getattr(getattr(ce, "model", None), "config", None) and ce.model.config.num_labels or 1)
    if n_labels > 1 and label is None:
        raise ConfigError(f"This cross encoder has {n_labels} labels and no relevance label: load it with "
                          "ce_utils.core.models.load_cross_encoder (NLI-style: its entailment label is read).")
    if getattr(ce, "passage_first", False):
        pairs = [(b, a) for a, b in pairs]
    kw = {}
    if n_labels > 1:
        kw["activation_fn"] = torch.nn.Identity()
    with autocast(dtype, getattr(ce, "device", "cpu")):
        out = np.asarray(ce.predict(pairs, batch_size=batch_size, show_progress_bar=show_progress(progress), **kw), dtype=np.float32)
    if n_labels > 1:
        out = relevance_from_logits(out.reshape(len(pairs), n_labels), int(label))
    return out.reshape(-1).tolist()


def de_scores(de, pairs: list[tuple[str, str]], batch_size: int = 32, dtype: str | None = None) -> list[float]:
    """Cosine between a DE's embeddings of each (query, passage) pair's two texts."""
    texts = sorted({t for p in pairs for t in p})
    with autocast(dtype, de.device):
        emb = np.asarray(de.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True),
                         dtype=np.float32)
    pos = {t: i for i, t in enumerate(texts)}
    return [float(emb[pos[a]] @ emb[pos[b]]) for a, b in pairs]


def score_pairs_fn(ce, queries: dict[str, str], docs: dict[str, str], batch_size: int = 32,
                   show_progress_bar: bool = True, dtype: str | None = None, kind: str = "ce"):
    """A ``score_pairs`` callable for :func:`ce_utils.core.retrieval.rerank`: (query id, doc id) pairs
    scored by a cross encoder (``kind="ce"``) or by a DE's cosine (``kind="de"``)."""

    def score(pairs: list[tuple[str, str]]) -> list[float]:
        texts = [(queries[q], docs[d]) for q, d in pairs]
        if kind == "de":
            return de_scores(ce, texts, batch_size, dtype)
        return ce_scores(ce, texts, batch_size, dtype, show_progress_bar)

    return score


def check_reranks(first_stage: float, reranked: float, what: str, allow: bool = False,
                  min_gain: float = 0.0) -> bool:
    """The guard: a CE that does not beat the first stage it re-ranks by more than ``min_gain``
    stops the notebook (``allow=True``: warn, return False, and let the caller mark its rows)."""
    gain = reranked - first_stage
    if gain > min_gain:
        return True
    msg = (f"The cross encoder does not beat its first stage on {what}: NDCG@10 {first_stage:.4f} -> "
           f"{reranked:.4f} ({gain:+.4f}). Its layers are not those of a working CE, so no paper-1 claim can "
           "be drawn from them. Train it longer (ce_training in the profile), use a real CE (models.ce), or "
           "pass `-p allow_broken_ce True` to go on with every CE-derived row marked ce_works=False.")
    if not allow:
        raise CrossEncoderNotWorkingError(msg)
    log.warning(msg)
    return False


class CachedCEScorer:
    """CE scores of (query id, doc id) pairs of one dataset, kept in a JSON file so that every
    first stage, depth, notebook and rerun shares them; only unseen pairs reach the cross encoder.
    ``tag`` names the CE (:func:`ce_tag`: its weights and max length)."""

    def __init__(self, ce, ds: BeirDataset, cache_dir, tag: str, batch_size: int = 32, dtype: str | None = None):
        self.ds = ds
        self.fn = score_pairs_fn(ce, ds.queries, {d: doc_text(ds.corpus[d]) for d in ds.corpus}, batch_size=batch_size,
                                 dtype=dtype)
        self.path = None
        self.scores: dict[str, float] = {}
        if cache_dir is not None:
            self.path = Path(cache_dir) / "ce-scores" / tag / f"{ds.name}-{ds.split}.json"
            if self.path.is_file():
                self.scores = json.loads(self.path.read_text())
        self.n_scored = 0

    @staticmethod
    def key(q: str, d: str) -> str:
        return f"{q}\t{d}"

    def __call__(self, pairs: list[tuple[str, str]]) -> list[float]:
        todo = sorted({p for p in pairs if self.key(*p) not in self.scores})
        if todo:
            for p, s in zip(todo, self.fn(todo)):
                self.scores[self.key(*p)] = float(s)
            self.n_scored += len(todo)
            if self.path is not None:
                atomic_write_text(self.path, json.dumps(self.scores))
        return [self.scores[self.key(*p)] for p in pairs]


def ce_tag(ce, dtype: str | None = None) -> str:
    """The identity of a CE's scores: its weights, its max length and the encoding dtype."""
    reading = {}
    if getattr(ce, "relevance_label", None) is not None:  # a pair classifier: how its relevance is read
        reading = {"relevance_label": int(ce.relevance_label), "passage_first": bool(getattr(ce, "passage_first", False))}
    return fingerprint(weights=weights_fingerprint(ce), max_length=ce.max_length, dtype=dtype or "fp32", **reading)


def ce_scorer(ce, ds: BeirDataset, cfg: dict) -> CachedCEScorer:
    """The profile's cached CE scorer for ``ds`` (shared by notebooks 01 and 02)."""
    es = encode_settings(cfg)
    return CachedCEScorer(ce, ds, cfg.get("cache_dir"), ce_tag(ce, es["dtype"]), es["batch_size"], es["dtype"])


def top_pairs(results: dict, depth: int) -> list[tuple[str, str]]:
    return [(q, d) for q, docs in results.items() for d, _ in sorted(docs.items(), key=lambda x: -x[1])[:depth]]


def query_sample(qids, n: int | None, seed: int) -> list[str]:
    """A seeded sample of ``n`` query ids, sorted (``None`` or ``n`` >= all: every one)."""
    qids = sorted(qids)
    if n is not None and int(n) < len(qids):
        qids = sorted(random.Random(seed).sample(qids, int(n)))
    return qids


def pipeline_queries(ds: BeirDataset, max_queries: int | None, seed: int) -> list[str]:
    """The test queries the CE re-ranks for (``de2ce.pipeline_max_queries``)."""
    return query_sample(ds.queries, max_queries, seed)
