"""DE-k CE (Ananthakrishnan et al., 2025): light dual encoders built from a cross encoder's early layers.

A "DE-k+1 CE" student is a copy of the full dual encoder (same tokenizer, mean pooling and
normalisation) whose embedding layer and first ``k`` encoder layers are copied from the cross
encoder, followed by one randomly initialised layer (``k + 1`` layers in all; the paper's
"DE-2 CE" is ``k = 1``). Controls with DE-2 CE's architecture: everything random, and the
DE's own embeddings + layers 0..1 (a layer-subset start, no random layer). Students are trained with sentence-transformers'
``SentenceTransformerTrainer``:

* ``mse``  -- embedding distillation toward the full DE's embeddings (``MSELoss``) on
  unlabelled text: query files and passages sampled from the corpora;
* ``mnrl`` -- contrastive ``MultipleNegativesRankingLoss`` on (query, positive passage)
  pairs of a training split (the ablation).

Evaluation: exact first-stage retrieval, then the pipeline "first stage retrieves, CE
re-ranks the top ``depth``", with CE scores cached on disk per (dataset, query id, doc id).
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from sentence_transformers import SentenceTransformer
from tqdm.auto import tqdm
from datasets import Dataset
from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from transformers import set_seed
from ce_utils.core.config import ConfigError, output_dir, section
from ce_utils.core.data import BeirDataset, doc_text, load_beir_dataset
from ce_utils.core.encode import autocast, check_dtype, dataset_embeddings, encode_settings, model_max_length
from ce_utils.core.io import LATENCY_METRICS, QUERIES_ONLY, atomic_write_text, fingerprint
from ce_utils.core.retrieval import evaluate, exact_search, rerank
from ce_utils.core.runinfo import run_metadata
from ce_utils.core.scoring import ce_scores, query_sample, top_pairs
from ce_utils.core.students import CE_INITS, backbone, build_de2ce, slug, student_name
from ce_utils.core.train import DE2CE_DEFAULTS, train_mse, trainer_kwargs


log = logging.getLogger(__name__)

INFO_FILE = "training_info.json"
DE2CE_COLUMNS = ["model", "init", "k_ce_layers", "n_layers", "loss", "dataset", "metric", "value", "n_queries",
                 "n_docs", "approximate", "train_texts", "train_steps", "seed"]
PIPELINE_COLUMNS = ["first_stage", "reranker", "depth", "dataset", "metric", "value", "n_queries", "n_docs",
                    "approximate", "seed"]
VARIANTS = ("random", "de", "ce-top")  # de2ce.controls: DE-2 CE's architecture, other starts
LOSSES = ("mse", "mnrl", "none")


# --------------------------------------------------------------------------- students


def student_plan(ks, controls, mnrl: bool, n_de_layers: int) -> list[dict]:
    """The students of the notebook, in display order: DE-k CE for every k, the controls
    (DE-2 architecture), the MNRL ablation of DE-2 CE, and the full DE."""
    ks = list(ks or [])
    if not ks or any(not isinstance(k, int) or k < 1 for k in ks):
        raise ConfigError(f"ks must be a non-empty list of integers >= 1 (copied CE layers), got {ks!r}.")
    if max(ks) >= n_de_layers:
        raise ConfigError(f"k={max(ks)} copies as many layers as the full DE has ({n_de_layers}); "
                          f"use k <= {n_de_layers - 1}.")
    bad = [c for c in controls or [] if c not in VARIANTS]
    if bad:
        raise ConfigError(f"Unknown control(s) {bad}; use any of {', '.join(VARIANTS)}.")
    plan = [dict(init="ce", k=k, loss="mse") for k in sorted(set(ks))]
    plan += [dict(init=c, k=1, loss="mse") for c in controls or []]
    if mnrl:
        plan.append(dict(init="ce", k=1, loss="mnrl"))
    plan.append(dict(init="full", k=n_de_layers, loss="none"))
    for p in plan:
        p["n_layers"] = n_de_layers if p["init"] == "full" else p["k"] + 1
        p["k_ce_layers"] = p["k"] if p["init"] in CE_INITS else 0
        p["name"] = student_name(p["init"], p["n_layers"], p["loss"])
    return plan


def count_parameters(model) -> dict:
    """Total parameters, and those of the embedding layer and the encoder layers."""
    bb = backbone(model)
    total = sum(p.numel() for p in model.parameters())
    emb = sum(p.numel() for p in bb.embeddings.parameters())
    layers = sum(p.numel() for p in bb.encoder.layer.parameters())
    return {"n_params": int(total), "n_params_embeddings": int(emb), "n_params_layers": int(layers),
            "n_layers": len(bb.encoder.layer)}


# --------------------------------------------------------------------------- training data
def contrastive_pairs(cfg: dict, dataset: str, split: str, seed: int, max_pairs: int | None = None):
    """(query, positive passage) pairs of a training split, for MultipleNegativesRankingLoss."""
    ds = load_beir_dataset(cfg, dataset, split=split)
    pairs = [(ds.queries[q], doc_text(ds.corpus[d])) for q in sorted(ds.qrels)
             for d, s in sorted(ds.qrels[q].items()) if s > 0 and d in ds.corpus]
    random.Random(seed).shuffle(pairs)
    if max_pairs:
        pairs = pairs[: int(max_pairs)]
    if not pairs:
        raise ConfigError(f"No positive (query, passage) pair in {dataset} split {split!r}.")
    return pairs


# --------------------------------------------------------------------------- training


def train_student(student, loss_name: str, tc: dict, seed: int, device: str, work_dir: Path,
                  texts: dict | None = None, labels: dict | None = None, pairs=None, callbacks=None) -> dict:
    """Train ``student`` in place. ``mse``: ``texts``/``labels`` map a kind ("queries", "passages",
    "sentences") to texts and teacher embeddings (:func:`ce_utils.core.train.train_mse`); ``mnrl``:
    ``pairs`` of (query, positive) with in-batch negatives (MultipleNegativesRankingLoss)."""
    if loss_name == "mse":
        info = train_mse(student, texts, labels, tc, seed, device, work_dir, callbacks, DE2CE_DEFAULTS)
    elif loss_name == "mnrl":
        info = train_mnrl(student, pairs, tc, seed, device, work_dir, callbacks)
    else:
        raise ConfigError(f"Unknown training loss {loss_name!r}; use 'mse' or 'mnrl'.")
    return {"loss": loss_name, "train_texts": int(info["train_texts"]), "train_steps": info["train_steps"],
            "training_loss": info["train_loss"], "train_seconds": round(info["train_seconds"], 1)}


def train_mnrl(student, pairs, tc: dict, seed: int, device: str, work_dir: Path, callbacks=None) -> dict:
    """The MNRL ablation: DE-2 CE trained contrastively on (query, positive) pairs."""
    set_seed(seed)
    train = Dataset.from_dict({"anchor": [p[0] for p in pairs], "positive": [p[1] for p in pairs]})
    args = SentenceTransformerTrainingArguments(**trainer_kwargs(tc, work_dir, seed, device, **DE2CE_DEFAULTS,
                                                                 batch_sampler="no_duplicates"))
    trainer = SentenceTransformerTrainer(model=student, args=args, train_dataset=train,
                                         loss=MultipleNegativesRankingLoss(student), callbacks=callbacks)
    t0 = time.perf_counter()
    result = trainer.train()
    shutil.rmtree(work_dir, ignore_errors=True)
    return {"train_texts": len(pairs), "train_steps": int(result.global_step), "train_loss": float(result.training_loss),
            "train_seconds": time.perf_counter() - t0}


MODEL_CARD = """# {name}

A {n_layers}-layer dual encoder (sentence-transformers, mean pooling, normalised embeddings) built
for the DE-k CE experiment of Ananthakrishnan et al. (2025), "Can Cross Encoders Produce Useful
Sentence Embeddings?", by notebooks/02_de2ce.ipynb of this repository.

* **Initialisation (`{init}`)**: {init_text}
* **Template**: tokenizer, pooling and normalisation of the full dual encoder `{de}`.
* **Training loss**: {loss_text}
* **Training data**: {data_text}
* **Steps**: {train_steps} (batch size {batch_size}, learning rate {learning_rate}, warm-up ratio {warmup_ratio});
  final mean training loss {training_loss:.6g}.
* **Seed**: {seed}. Profile: `{profile}`.
* **Parameters**: {n_params:,} ({n_params_embeddings:,} in the embedding layer, {n_params_layers:,} in the encoder layers).

Evaluation numbers are in `results/<profile>/de2ce.csv`. Built from models whose licences apply
(the dual encoder's and the cross encoder's); for research use.
"""


def init_text(init: str, k: int, ce_spec: str, de_spec: str) -> str:
    if init == "ce":
        return (f"embedding layer and encoder layers 0..{k - 1} copied from the cross encoder `{ce_spec}`, "
                "then one randomly initialised layer.")
    if init == "ce-top":
        return (f"embedding layer and encoder layers 0..{k - 1} copied from the cross encoder `{ce_spec}`, "
                f"then the top encoder layer of the dual encoder `{de_spec}`.")
    if init == "de":
        return f"embedding layer and encoder layers 0..{k} copied from the dual encoder `{de_spec}` (no random layer)."
    if init == "random":
        return f"every weight (embeddings and {k + 1} layers) randomly initialised."
    return "the full dual encoder, unchanged."


def save_student(model, path: Path, info: dict, cfg: dict) -> Path:
    """Save a trained student with ``training_info.json`` and a README.md model card."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save(str(tmp), create_model_card=False)
    atomic_write_text(tmp / INFO_FILE, json.dumps(info, indent=1, default=str))
    td = info.get("training_data", {})
    if info["loss"] == "mse":
        loss_text = ("embedding distillation: sentence-transformers `MSELoss` between the student's and the "
                     "full dual encoder's (normalised) embeddings of the same text.")
        data_text = (f"{info['train_texts']} unlabelled texts: {td.get('n_queries')} queries from the query "
                     f"files {td.get('query_files_used')} (excluded: {td.get('query_files_excluded')}), passages "
                     f"sampled from corpora {td.get('passage_sources')} (text only: unsupervised domain adaptation)"
                     + (f" and {td.get('n_sentences')} sentences of {td.get('sentence_sources')} (scores unused)"
                        if td.get("n_sentences") else "") + ". No evaluation query was used.")
    else:
        loss_text = "contrastive `MultipleNegativesRankingLoss` (in-batch negatives) on (query, positive) pairs."
        data_text = f"{info['train_texts']} (query, positive passage) pairs of {td.get('dataset')} split {td.get('split')!r}."
    text = MODEL_CARD.format(name=info["name"], n_layers=info["n_layers"], init=info["init"],
                             init_text=init_text(info["init"], info["k"], cfg["models"]["ce"], cfg["models"]["de"]),
                             de=cfg["models"]["de"], loss_text=loss_text, data_text=data_text,
                             train_steps=info["train_steps"], batch_size=info["hyperparameters"].get("batch_size"),
                             learning_rate=info["hyperparameters"].get("learning_rate"),
                             warmup_ratio=info["hyperparameters"].get("warmup_ratio"),
                             training_loss=info["training_loss"], seed=info["seed"], profile=cfg.get("name"),
                             **{k: info[k] for k in ("n_params", "n_params_embeddings", "n_params_layers")})
    atomic_write_text(tmp / "README.md", text)
    if path.exists():
        shutil.rmtree(path)
    tmp.replace(path)
    return path


def load_trained_student(path: Path, recipe: str, device: str):
    """A student saved by an earlier run with the same recipe fingerprint, else ``None``."""

    info_path = Path(path) / INFO_FILE
    if not info_path.is_file():
        return None, None
    info = json.loads(info_path.read_text())
    if info.get("recipe") != recipe:
        return None, None
    return SentenceTransformer(str(path), device=device), info


# --------------------------------------------------------------------------- evaluation


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


# --------------------------------------------------------------------------- notebook steps
def settings(cfg: dict) -> dict:
    """The profile's ``de2ce`` section, with its defaults filled in and checked."""
    dc = dict(section(cfg, "de2ce"))
    dc.setdefault("ks", [1, 2, 3])
    dc.setdefault("controls", ["random", "de"])
    dc.setdefault("datasets", list(cfg.get("datasets") or {}))
    dc.setdefault("pipeline_datasets", dc["datasets"])
    dc.setdefault("pipeline_students", ["DE-2 CE"])
    dc.setdefault("rerank_depths", [10, 20])
    dc.setdefault("pipeline_max_queries", None)
    dc.setdefault("latency_queries", 20)
    dc.setdefault("latency_threads", 1)
    dc.setdefault("sizes", {})
    dc.setdefault("rerank_max_length", None)
    dc["sizes"] = dict(dc.get("sizes") or {})
    dc["train"] = dict(dc.get("train") or {})
    dc["mnrl"] = dict(dc.get("mnrl") or {})
    unknown = [d for d in list(dc["datasets"]) + list(dc["pipeline_datasets"]) if d not in (cfg.get("datasets") or {})]
    if unknown:
        raise ConfigError(f"de2ce: unknown dataset(s) {unknown}; known: {', '.join(cfg.get('datasets') or {})}.")
    cap = int((cfg.get("eval") or {}).get("rerank_depth") or max(dc["rerank_depths"]))
    depths = sorted({int(d) for d in dc["rerank_depths"]})
    if not depths or depths[0] < 1:
        raise ConfigError(f"de2ce.rerank_depths must be positive integers, got {dc['rerank_depths']!r}.")
    dc["rerank_depths"] = [d for d in depths if d <= cap] or [cap]
    return dc


def recipe_fingerprint(item: dict, tc: dict, data_key: dict, cfg: dict, seed: int, ce_tag_: str) -> str:
    return fingerprint(item={k: item[k] for k in ("init", "k", "loss", "n_layers")}, train=tc, data=data_key,
                       de=cfg["models"]["de"], ce=ce_tag_, seed=seed)


def get_student(item: dict, de, ce, cfg: dict, dc: dict, seed: int, device: str, ce_tag_: str,
                mse_data: dict | None = None, retrain: bool = False):
    """Build, train and save one student of the plan (or load it when an earlier run trained
    the same recipe). Returns (model, info)."""
    tc = {**dc["train"], **(dc["mnrl"].get("train") or {})} if item["loss"] == "mnrl" else dict(dc["train"])
    if item["init"] == "full":
        model = de
        info = {"name": item["name"], "init": "full", "k": item["k"], "loss": "none", "train_texts": 0,
                "train_steps": 0, "training_loss": float("nan"), "train_seconds": 0.0, **count_parameters(de)}
        return model, info
    if item["loss"] == "mse":
        parts = {"q": mse_data["texts"].get("queries", []), "p": mse_data["texts"].get("passages", [])}
        if mse_data["texts"].get("sentences"):
            parts["s"] = mse_data["texts"]["sentences"]
        data_key = {"texts": fingerprint(**parts)}
    else:
        data_key = {k: dc["mnrl"].get(k) for k in ("dataset", "split", "max_pairs")}
    recipe = recipe_fingerprint(item, tc, data_key, cfg, seed, ce_tag_)
    path = output_dir(cfg, "models_dir") / slug(item["name"])
    if not retrain:
        model, info = load_trained_student(path, recipe, device)
        if model is not None:
            log.info("Loaded %s from %s", item["name"], path)
            return model, info
    model = build_de2ce(de, ce, item["init"], item["k"], seed=seed)
    work = output_dir(cfg, "models_dir") / f".{slug(item['name'])}-checkpoints"
    eval_length = model.max_seq_length
    if tc.get("max_length"):
        model.max_seq_length = int(tc["max_length"])
    if item["loss"] == "mse":
        result = train_student(model, "mse", tc, seed, device, work, texts=mse_data["texts"],
                               labels=mse_data["labels"])
        training_data = {k: v for k, v in mse_data.items() if k not in ("texts", "labels")}
    else:
        pairs = contrastive_pairs(cfg, dc["mnrl"].get("dataset", "scifact"), dc["mnrl"].get("split", "train"),
                                  seed, dc["mnrl"].get("max_pairs"))
        result = train_student(model, "mnrl", tc, seed, device, work, pairs=pairs)
        training_data = {"dataset": dc["mnrl"].get("dataset", "scifact"), "split": dc["mnrl"].get("split", "train")}
    model.max_seq_length = eval_length
    info = {"name": item["name"], "init": item["init"], "k": item["k"], "recipe": recipe, **result,
            **count_parameters(model), "hyperparameters": tc, "training_data": training_data,
            **run_metadata(cfg, seed=seed, device=device)}
    save_student(model, path, info, cfg)
    return model, info


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
        for i, (q, keep) in enumerate(tqdm(schedule, desc=f"latency {ds.name}", disable=not progress)):
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


