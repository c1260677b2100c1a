"""Unlabelled training text: the queries a query student is aligned on (paper 2) and notebook 02's mix of
queries, corpus passages and STS/SICK sentences for DE-k CE students (paper 1). No test query and no
relevance judgement of an evaluated dataset is ever used."""

from __future__ import annotations

import hashlib
import random
from typing import Sequence

import numpy as np
from ce_utils.core.config import ConfigError, get_dotted, section
from ce_utils.core.data import doc_text, load_beir_dataset, load_query_files, load_sts


def excluded_query_files(cfg: dict, datasets: Sequence[str], extra: Sequence[str] = ()) -> list[str]:
    """Query files never to train on, sorted: every file holding an evaluated dataset's queries by its name
    (``beir-nfcorpus`` for ``nfcorpus-preprocessed``), those ``query_distill.exclude_queries[dataset]``
    names, and ``extra``."""
    out = set(extra or [])
    mapping = get_dotted(cfg, "query_distill.exclude_queries") or {}
    for d in datasets:
        out.update(mapping.get(d) or [])
    for f in cfg.get("query_files") or {}:
        base = f[5:] if f.startswith("beir-") else f
        if any(d == base or d.startswith(base + "-") for d in datasets):
            out.add(f)
    return sorted(out)


def training_queries(cfg: dict, datasets: Sequence[str], seed: int | None = None) -> dict[str, str]:
    """Unlabelled training queries: the profile's query files (``query_distill.query_files``,
    default all) minus the evaluated datasets' own queries, capped by a seeded sample of
    ``query_distill.max_train_queries``; exact duplicate texts are dropped."""

    qd = section(cfg, "query_distill")
    exclude = excluded_query_files(cfg, datasets)
    queries = load_query_files(cfg, names=qd.get("query_files"), exclude=exclude)
    seen: set[str] = set()
    uniq = {}
    for qid, text in queries.items():
        if text not in seen:
            seen.add(text)
            uniq[qid] = text
    cap = qd.get("max_train_queries")
    ids = sorted(uniq)
    if cap is not None and int(cap) < len(ids):
        rng = np.random.default_rng(int(seed if seed is not None else cfg.get("seed", 42)))
        ids = sorted(rng.choice(ids, size=int(cap), replace=False).tolist())
    if not ids:
        raise ConfigError("No training queries left: check query_distill.query_files / exclude_queries.")
    return {i: uniq[i] for i in ids}


def _hash_list(items: Sequence[str]) -> str:
    h = hashlib.sha1()
    for it in items:
        h.update(it.encode("utf-8", "ignore"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def _truncate_words(text: str, max_words: int | None) -> str:
    if not max_words:
        return text
    words = text.split()
    return " ".join(words[:max_words])


def sentence_texts(cfg: dict, sets: list[str], n: int, rng: random.Random) -> list[str]:
    """``n`` distinct sentences sampled from both sides of the pairs of the named ``sts`` sets (their
    similarity scores are never used)."""
    pool: set[str] = set()
    for name in sets:
        for a, b, _ in load_sts(cfg, name):
            pool.update(t.strip() for t in (a, b) if t.strip())
    if n > len(pool):
        raise ConfigError(f"de2ce.train.n_sentences = {n}, but the sentence sets {sets} hold {len(pool)} distinct "
                          f"sentences; lower n_sentences or name more sets.")
    return sorted(rng.sample(sorted(pool), n))


def distillation_texts(cfg: dict, dc: dict, eval_datasets: list[str], seed: int) -> dict:
    """Unlabelled training text: ``n_queries`` queries from the query files (files of evaluated
    datasets excluded), ``n_passages`` passages sampled from ``passage_datasets`` corpora
    (document text only: no query and no judgement of any dataset is used: unsupervised domain
    adaptation) and ``n_sentences`` sentences of the ``sentence_sets`` (STS / SICK training pairs,
    their scores unused)."""
    rng = random.Random(seed)
    exclude = excluded_query_files(cfg, eval_datasets, dc.get("exclude_query_files") or [])
    queries = load_query_files(cfg, names=dc.get("query_files"), exclude=exclude)
    qids = sorted(queries)
    n_q = dc.get("n_queries")
    if n_q is not None and int(n_q) < len(qids):
        qids = sorted(rng.sample(qids, int(n_q)))
    q_texts = [queries[q] for q in qids]
    p_texts, p_sources = [], []
    names = dc.get("passage_datasets")
    names = list(eval_datasets) if names is None else list(names)
    n_p = int(dc.get("n_passages") or 0)
    if n_p and names:
        per = [n_p // len(names) + (1 if i < n_p % len(names) else 0) for i in range(len(names))]
        for name, n in zip(names, per):
            ds = load_beir_dataset(cfg, name)
            ids = sorted(ds.corpus)
            chosen = sorted(rng.sample(ids, min(n, len(ids))))
            p_texts += [_truncate_words(doc_text(ds.corpus[d]), dc.get("passage_max_words")) for d in chosen]
            p_sources.append(f"{name}:{len(chosen)}")
    n_s = int(dc.get("n_sentences") or 0)
    if n_s and not dc.get("sentence_sets"):
        raise ConfigError("de2ce.train.n_sentences > 0 needs de2ce.train.sentence_sets (names of the `sts` section).")
    s_sets = list(dc.get("sentence_sets") or []) if n_s else []
    return {"queries": q_texts, "passages": [t for t in p_texts if t.strip()],
            "sentences": sentence_texts(cfg, s_sets, n_s, rng) if n_s else [], "sentence_sources": s_sets,
            "query_files_used": sorted(set(q.split(":", 1)[0] for q in qids)),
            "query_files_excluded": exclude, "passage_sources": p_sources}
