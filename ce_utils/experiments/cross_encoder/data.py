"""Data of :mod:`ce_utils.experiments.cross_encoder`."""

from __future__ import annotations


import random

from ce_utils.core.config import ConfigError
from ce_utils.core.data import BeirDataset, load_beir_dataset
from ce_utils.core.encode import dataset_embeddings
from ce_utils.core.models import (load_sentence_transformer)
from ce_utils.core.retrieval import exact_search


def split_train_dev(qids, n_dev: int, seed: int) -> tuple[list[str], list[str]]:
    """A seeded dev split carved from *training* queries: (train ids, dev ids), disjoint."""
    qids = sorted(qids)
    n_dev = int(n_dev or 0)
    if n_dev >= len(qids):
        raise ConfigError(f"dev_queries={n_dev} leaves no training query (there are {len(qids)}).")
    dev = sorted(random.Random(seed).sample(qids, n_dev)) if n_dev else []
    dev_set = set(dev)
    return [q for q in qids if q not in dev_set], dev


def positives(ds: BeirDataset, qid: str) -> list[str]:
    return sorted(d for d, s in ds.qrels.get(qid, {}).items() if s > 0 and d in ds.corpus)


def listwise_examples(ds: BeirDataset, qids, ranked: dict[str, dict[str, float]], n_neg: int,
                      seed: int) -> list[dict]:
    """One example per (query, judged positive): ``query``, ``positive`` and ``negative_1..n``,
    the first ``n_neg`` documents of the DE's ranking that are not judged relevant to the query."""
    rng = random.Random(seed)
    out = []
    for q in qids:
        pos = positives(ds, q)
        if not pos:
            continue
        order = [d for d, _ in sorted(ranked[q].items(), key=lambda x: -x[1])]
        negs = [d for d in order if d not in set(pos)][:n_neg]
        if len(negs) < n_neg:
            raise ConfigError(f"Query {q}: only {len(negs)} negatives in the DE's top {len(order)}; raise "
                              "ce_training.mine_depth or lower negatives_per_query.")
        for p in pos:
            ex = {"query": ds.queries[q], "positive": ds.doc_texts([p])[0]}
            ex.update({f"negative_{i + 1}": ds.doc_texts([d])[0] for i, d in enumerate(negs)})
            out.append(ex)
    rng.shuffle(out)
    return out


def mine(cfg: dict, ds: BeirDataset, de, depth: int, device: str | None = None) -> dict:
    """The DE's top ``depth`` over the whole corpus for every query of ``ds`` (the corpus
    embeddings come from the shared cache, so evaluation reuses them)."""
    q, d = dataset_embeddings(cfg, de, ds, device=device)
    return exact_search(q, d, ds.query_ids, ds.doc_ids, top_k=depth)


def training_data(cfg: dict, tc: dict, device: str | None = None) -> dict:
    """Everything the CE (and the same-data DE control) train on: the train / dev split of the
    training queries, the DE's ranking of each over the whole corpus, the listwise examples."""
    seed = int(cfg.get("seed", 42))
    ds = load_beir_dataset(cfg, tc["dataset"], split=tc.get("split", "train"))
    de = load_sentence_transformer(tc.get("miner") or cfg["models"]["de"], cfg, device=device)
    depth = max(int(tc.get("mine_depth", 30)), int(tc.get("dev_depth", 20)))
    ranked = mine(cfg, ds, de, depth, device)
    train_q, dev_q = split_train_dev(ds.query_ids, tc.get("dev_queries", 100), seed)
    n_neg = int(tc.get("negatives_per_query", 7))
    mined = {q: dict(sorted(ranked[q].items(), key=lambda x: -x[1])[: int(tc.get("mine_depth", 30))])
             for q in train_q}
    examples = listwise_examples(ds, train_q, mined, n_neg, seed)
    return {"dataset": ds, "train_queries": train_q, "dev_queries": dev_q, "ranked": ranked,
            "examples": examples, "n_negatives": n_neg}
