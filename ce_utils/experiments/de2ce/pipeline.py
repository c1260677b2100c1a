"""Pipeline of :mod:`ce_utils.experiments.de2ce`."""

from __future__ import annotations


import time
from typing import Callable

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm
from ce_utils.core.config import ConfigError, show_progress
from ce_utils.core.data import BeirDataset, doc_text
from ce_utils.core.encode import autocast, check_dtype, dataset_embeddings, encode_settings, model_max_length
from ce_utils.core.io import LATENCY_METRICS, QUERIES_ONLY
from ce_utils.core.retrieval import evaluate, exact_search, rerank
from ce_utils.core.scoring import ce_scores, query_sample, top_pairs


PIPELINE_COLUMNS = ["first_stage", "reranker", "depth", "dataset", "metric", "value", "n_queries", "n_docs",
                    "approximate", "seed"]


def retrieve(q_emb, d_emb, ds: BeirDataset, top_k: int = 100) -> dict:
    return exact_search(q_emb, d_emb, ds.query_ids, ds.doc_ids, top_k=top_k, score_function="cos_sim")


def metric_rows(scores: dict, base: dict) -> list[dict]:
    return [{**base, "metric": m, "value": v} for m, v in scores.items()]


def relative_to(df, reference: str, by=("dataset", "metric"), name_col: str = "model"):
    """``value`` as a percentage of the ``reference`` model's value on the same dataset and metric."""
    ref = df[df[name_col] == reference].set_index(list(by))["value"]
    out = df.copy()
    out["pct_of_reference"] = [100.0 * v / ref.get(tuple(k), np.nan) if ref.get(tuple(k), 0) else np.nan
                               for v, k in zip(out["value"], out[list(by)].itertuples(index=False))]
    return out


def symmetric_vs_queries_only(quality: pd.DataFrame, metric: str = "NDCG@10") -> pd.DataFrame:
    """Per student: its ``metric`` as % of the full DE, mean over datasets, when it encodes queries and
    documents (``symmetric``) and queries only against the full DE's documents (``queries only``), and the
    difference in points. ``quality``: de2ce.csv rows with ``pct_of_reference`` (:func:`relative_to`)."""
    d = quality[(quality["metric"] == metric) & (quality["init"] != "full")].copy()
    if "documents" not in d:
        d["documents"] = "own"
    d["student"] = d["model"].astype(str).str.replace(QUERIES_ONLY, "", regex=False)
    d["setting"] = np.where(d["documents"].fillna("own") == "own", "symmetric", "queries only")
    t = d.pivot_table(index="student", columns="setting", values="pct_of_reference", aggfunc="mean")
    t = t.reindex(list(dict.fromkeys(d["student"])))
    if {"symmetric", "queries only"} <= set(t.columns):
        t["queries only - symmetric (pts)"] = t["queries only"] - t["symmetric"]
    return t


def first_stage_depth(cfg: dict) -> int:
    """How many documents a first stage returns: 100, or ``eval.rerank_depth`` when that is deeper."""
    return max(100, int((cfg.get("eval") or {}).get("rerank_depth") or 100))


def evaluate_first_stage(model, info: dict, item: dict, datasets: dict, cfg: dict, seed: int,
                         de_spec: str | None = None, doc_model=None) -> tuple[list[dict], dict]:
    """First-stage metrics of one model on every dataset; returns (rows, run files by dataset).

    Symmetric by default (the model encodes queries and documents). With ``doc_model`` (the full DE) the
    model encodes the queries only and ``doc_model``'s document embeddings are searched: paper 2's
    asymmetric setting; the rows are then named ``<student> (queries only)`` with ``documents`` = ``full DE``."""
    metrics = list((cfg.get("eval") or {}).get("metrics") or ["NDCG@10", "Recall@100", "MRR@10", "Hits@10"])
    rows, runs = [], {}
    top_k = first_stage_depth(cfg)
    for name, ds in datasets.items():
        if doc_model is None:
            q, d = dataset_embeddings(cfg, model, ds)
        else:
            q = dataset_embeddings(cfg, model, ds, docs=False)[0]
            d = dataset_embeddings(cfg, doc_model, ds, queries=False)[1]
        res = retrieve(q, d, ds, top_k=top_k)
        runs[name] = res
        base = {"model": item["name"] + ("" if doc_model is None else QUERIES_ONLY),
                "documents": "own" if doc_model is None else "full DE", "init": item["init"],
                "k_ce_layers": item["k_ce_layers"],
                "n_layers": item["n_layers"], "loss": item["loss"], "dataset": name,
                "n_queries": len(ds.queries), "n_docs": len(ds.corpus), "approximate": bool(ds.approximate),
                "max_length": model_max_length(model, (cfg.get("encode") or {}).get("max_length")),
                "train_texts": info.get("train_texts", 0), "train_steps": info.get("train_steps", 0), "seed": seed,
                "n_params": info.get("n_params"), "training_loss": info.get("training_loss"),
                "train_seconds": info.get("train_seconds")}
        rows += metric_rows(evaluate(ds.qrels, res, metrics), base)
    return rows, runs


def run_pipeline(first_stages: dict[str, dict], ds: BeirDataset, scorer: Callable, depths: list[int],
                 qids: list[str], metrics: list[str], seed: int) -> list[dict]:
    """For each first stage (name -> run) and depth: the first stage's own metrics on the
    chosen queries, and after the CE re-ranks its top ``depth``."""
    qrels = {q: ds.qrels[q] for q in qids}
    runs = {name: {q: run.get(q, {}) for q in qids} for name, run in first_stages.items()}
    # score the union of every first stage's deepest list once (one progress bar, shared cache)
    union = sorted({p for run in runs.values() for p in top_pairs(run, max(depths))})
    scorer(union)
    rows = []
    base = {"dataset": ds.name, "n_queries": len(qids), "n_docs": len(ds.corpus), "approximate": bool(ds.approximate),
            "seed": seed}
    for name, run in runs.items():
        for m, v in evaluate(qrels, run, metrics).items():
            rows.append({**base, "first_stage": name, "reranker": "none", "depth": 0, "metric": m, "value": v})
        for depth in depths:

            rr = rerank(run, scorer, depth)
            for m, v in evaluate(qrels, rr, metrics).items():
                rows.append({**base, "first_stage": name, "reranker": "CE", "depth": depth, "metric": m, "value": v})
    return rows


def latency_queries(qids: list[str], n: int | None, seed: int) -> list[str]:
    """The seeded sample of test queries a pipeline's latency is measured on (``None``: every one)."""
    return query_sample(qids, n, seed + 1)


def pipeline_latency(stages: dict[str, tuple], ds: BeirDataset, ce, depths: list[int], qids: list[str],
                     threads: int = 1, dtype: str | None = None, top_k: int = 100, warmup: int = 2, seed: int = 0,
                     progress: bool = True) -> list[dict]:
    """End-to-end latency per query of each pipeline, as a search service answers one query at a time.

    ``stages`` maps a first stage's name to (query encoder, its document embeddings, L2-normalised, in
    ``ds.doc_ids`` order). For one query: the encoder embeds the query text (batch 1, tokenisation included),
    exact inner-product search takes the top ``top_k`` documents, then for each depth ``k`` the CE scores the
    top-k (query, passage) pairs in one batch and the list is re-sorted. The pipelines are interleaved: each
    query passes through every first stage in turn, in an order rotated from query to query, after ``warmup``
    queries that are not recorded, all on ``threads`` CPU threads. Returns rows (median and IQR over the
    queries, and the median of each component) in pipeline.csv's layout; depth 0 is the first stage alone."""

    if not qids:
        raise ConfigError("pipeline_latency needs at least one query.")
    names = list(stages)
    doc_ids = list(ds.doc_ids)
    mats = {n: np.ascontiguousarray(np.asarray(d, dtype=np.float32)) for n, (_, d) in stages.items()}
    for n, m in mats.items():
        if m.shape[0] != len(doc_ids):
            raise ConfigError(f"{n}: {m.shape[0]} document embeddings for {len(doc_ids)} documents of {ds.name}.")
    depths = sorted({int(k) for k in depths})
    k_search = min(int(top_k), len(doc_ids))
    times = {(n, k): {c: [] for c in LATENCY_METRICS} for n in names for k in [0] + depths}
    warm = [qids[i % len(qids)] for i in range(warmup)]
    old_threads = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        schedule = [(q, False) for q in warm] + [(q, True) for q in qids]
        for i, (q, keep) in enumerate(tqdm(schedule, desc=f"latency {ds.name}", disable=not show_progress(progress))):
            text = ds.queries[q]
            for name in names[i % len(names):] + names[: i % len(names)]:
                model, mat = stages[name][0], mats[name]
                t0 = time.perf_counter()
                with autocast(dtype, getattr(model, "device", "cpu")):
                    e = model.encode([text], batch_size=1, convert_to_numpy=True, normalize_embeddings=True,
                                     show_progress_bar=False)
                t1 = time.perf_counter()
                sc = mat @ np.asarray(e[0], dtype=np.float32)
                top = np.argpartition(-sc, k_search - 1)[:k_search]
                top = top[np.argsort(-sc[top], kind="stable")]
                t2 = time.perf_counter()
                parts = {0: (t1 - t0, t2 - t1, 0.0)}
                for k in depths:
                    t3 = time.perf_counter()
                    pairs = [(text, doc_text(ds.corpus[doc_ids[j]])) for j in top[:k]]
                    ce_sc = ce_scores(ce, pairs, batch_size=max(1, len(pairs)), dtype=dtype)
                    _ = np.argsort(-np.asarray(ce_sc), kind="stable")
                    parts[k] = (t1 - t0, t2 - t1, time.perf_counter() - t3)
                if keep:
                    for k, (enc_s, search_s, rr_s) in parts.items():
                        rec = times[(name, k)]
                        rec["encode"].append(enc_s)
                        rec["search"].append(search_s)
                        rec["rerank"].append(rr_s)
                        rec["total"].append(enc_s + search_s + rr_s)
    finally:
        torch.set_num_threads(old_threads)
    rows = []
    base = {"dataset": ds.name, "n_queries": len(qids), "n_docs": len(ds.corpus), "approximate": bool(ds.approximate),
            "seed": seed, "latency_threads": int(threads), "latency_dtype": check_dtype(dtype), "search_depth": k_search}
    for (name, k), rec in times.items():
        for comp, metric in LATENCY_METRICS.items():
            ms = 1000.0 * np.asarray(rec[comp])
            row = {**base, "first_stage": name, "reranker": "CE" if k else "none", "depth": k, "metric": metric,
                   "value": float(np.median(ms))}
            if comp == "total":
                q1, q3 = np.percentile(ms, [25, 75])
                row["latency_iqr_ms"] = float(q3 - q1)
            rows.append(row)
    return rows


def stage_student(name: str) -> str:
    """The student a pipeline's first stage is: ``name`` itself, or ``<student>`` of ``<student> (queries only)``."""
    return name[: -len(QUERIES_ONLY)] if name.endswith(QUERIES_ONLY) else name


def stage_models(name: str, models: dict, full_name: str) -> tuple:
    """(query encoder, document encoder) of a pipeline's first stage: a student by its name (symmetric), or
    ``<student> (queries only)``: the student's queries against the full DE's documents (paper 2's setting)."""
    base = stage_student(name)
    if base not in models:
        raise ConfigError(f"pipeline first stage {name!r}: no student {base!r} among {list(models)}; name a student, "
                          f"optionally with the suffix {QUERIES_ONLY!r}.")
    return models[base], (models[full_name] if base != name else models[base])


def measure_pipeline_latency(cfg: dict, dc: dict, stages: dict[str, tuple], ds: BeirDataset, ce, seed: int,
                             progress: bool = True) -> list[dict]:
    """:func:`pipeline_latency` of the first stages ``stages`` (name -> (query encoder, document encoder), as
    :func:`stage_models` gives them; the document embeddings from the shared cache) on ``de2ce.latency_queries``
    seeded test queries of ``ds``, at the profile's encoding dtype."""

    stages = {n: (q, dataset_embeddings(cfg, d, ds, queries=False, progress=False)[1]) for n, (q, d) in stages.items()}
    qids = latency_queries(ds.query_ids, dc.get("latency_queries"), seed)
    return pipeline_latency(stages, ds, ce, dc["rerank_depths"], qids, threads=int(dc.get("latency_threads") or 1),
                            dtype=encode_settings(cfg)["dtype"], top_k=first_stage_depth(cfg), seed=seed,
                            progress=progress)
