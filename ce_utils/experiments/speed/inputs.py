"""What the timed models encode: the profile's ``speed`` section, a seeded sample of queries, documents for
the CE's pairs, and each model's items."""

from __future__ import annotations

import random

import numpy as np

from ce_utils.core.config import ConfigError, section
from ce_utils.core.data import doc_text, load_beir_dataset, load_query_files
from ce_utils.experiments.speed.encoders import Encoder


def speed_section(cfg: dict) -> dict:
    """The profile's ``speed`` section with defaults filled in (max_length from ``encode``, else 128:
    a query rarely reaches it, and a CE pair gets twice that)."""
    sp = dict(section(cfg, "speed"))
    if sp.get("max_length") is None:
        sp["max_length"] = int((cfg.get("encode") or {}).get("max_length") or 128)
    for key in ("n_queries", "batch_sizes"):
        if sp.get(key) is None:
            raise ConfigError(f"speed.{key} is not set in profile {cfg.get('name')!r}.")
    return sp


def query_sample(cfg: dict, sp: dict) -> list[str]:
    """A seeded sample of ``speed.n_queries`` unlabelled queries (``speed.query_files``)."""
    queries = load_query_files(cfg, sp.get("query_files"))
    ids = sorted(queries)
    n = int(sp["n_queries"])
    if len(ids) < n:
        raise ConfigError(f"speed.n_queries={n} but the query files hold only {len(ids)} queries; lower it.")
    rng = random.Random(int(cfg.get("seed", 42)))
    return [queries[i] for i in rng.sample(ids, n)]


def document_sample(cfg: dict, sp: dict, n: int) -> list[str]:
    """``n`` seeded documents of ``speed.doc_dataset`` (the CE's pair partner)."""
    name = sp.get("doc_dataset")
    if not name:
        raise ConfigError("speed.doc_dataset must name a dataset of the profile (the CE's documents).")
    ds = load_beir_dataset(cfg, name)
    ids = sorted(ds.corpus)
    rng = random.Random(int(cfg.get("seed", 42)) + 1)
    chosen = rng.sample(ids, n) if len(ids) >= n else rng.choices(ids, k=n)
    return [doc_text(ds.corpus[d]) for d in chosen]


def items_for(enc: Encoder, queries: list[str], docs: list[str], ce_n_queries: int | None = None) -> list:
    """What ``enc`` encodes: the queries, (query, document) pairs, or (query, query) self-pairs.
    A CE's items are cut to the first ``ce_n_queries`` (its passes over ~240-token pairs are slow)."""
    if not enc.pair:
        return list(queries)
    n = int(ce_n_queries) if ce_n_queries else len(queries)
    if enc.extra.get("ce_mode") == "pair":
        return list(zip(queries, docs))[:n]
    return [(q, q) for q in queries][:n]


def mean_tokens(enc: Encoder, items: list) -> float:
    """Mean number of tokens per item (what the FLOP count is taken at)."""
    feats = enc.prepare(items)
    return float(np.asarray(feats["attention_mask"]).sum(1).mean())   # torch tensors or the lean path's numpy arrays
