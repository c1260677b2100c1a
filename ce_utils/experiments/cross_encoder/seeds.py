"""A cross encoder's re-ranking gain with its spread over training seeds.

One training run of the listwise CE says little: the default CE's gain over the DE's first stage on full SciFact
test was +0.016 NDCG@10 on one CPU and -0.0001 on another. Here the profile's CE is trained with every seed of
``ce_training.seeds`` (the data split and mined negatives fixed by the profile's seed, so the seeds differ in
training only; the profile's own seed is the CE every notebook uses, another seed ``s`` lives in
``models_dir/<name>-s<s>``), and each re-ranks the DE's top ``eval.rerank_depth`` for every test query of each
collection of ``ce_training.gain_datasets`` (in domain and out of domain). Rows go to ``results/<profile>/
ce_seeds.csv``, one seed at a time (a killed run resumes); ``ce_utils.report.ce_seeds.gain_summary`` gives the
mean gain, its sd and range, and the verdict: the CE beats its first stage only where mean - sd > 0 over >= 3
seeds, a tie where the interval mean +- sd holds 0.

    python -m ce_utils ce-seeds --profile default          # every seed of ce_training.seeds
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ce_utils.core.config import ConfigError, section
from ce_utils.core.data import load_beir_dataset
from ce_utils.core.encode import dataset_embeddings
from ce_utils.core.io import merge_rows, write_csv_atomic
from ce_utils.core.models import load_sentence_transformer
from ce_utils.core.retrieval import evaluate, exact_search, rerank
from ce_utils.core.runinfo import run_metadata
from ce_utils.core.scoring import ce_scorer
from ce_utils.experiments.cross_encoder.train import cross_encoder_path, load_or_train_cross_encoder

CE_SEEDS_CSV = "ce_seeds.csv"
KEY = ["ce", "seed", "dataset", "metric"]
COLUMNS = ["ce", "seed", "dataset", "metric", "first_stage", "reranked", "gain", "depth", "n_queries", "n_docs",
           "selected_step", "train_minutes", "first_stage_model"]


def seed_settings(cfg: dict) -> dict:
    """``{seeds, datasets, metrics, depth}`` of the profile (``ce_training.seeds`` / ``gain_datasets``), checked."""
    tc = section(cfg, "ce_training")
    seeds = [int(s) for s in tc.get("seeds") or [cfg.get("seed", 42)]]
    datasets = list(tc.get("gain_datasets") or [tc.get("dataset")])
    unknown = [d for d in datasets if d not in (cfg.get("datasets") or {})]
    if unknown:
        raise ConfigError(f"ce_training.gain_datasets: {unknown[0]!r} is not a dataset of the profile "
                          f"(known: {sorted(cfg.get('datasets') or {})}).")
    ev = cfg.get("eval") or {}
    return {"seeds": seeds, "datasets": datasets, "metrics": list(tc.get("gain_metrics") or ["NDCG@10", "MRR@10"]),
            "depth": int(ev.get("rerank_depth", 20))}


def seed_rows(cfg: dict, seed: int, device: str | None = None, progress: bool = True) -> list[dict]:
    """The CE of ``seed`` (trained on first use) re-ranking the DE's top ``depth`` on every gain dataset's full
    test split: one row per dataset and metric with the first stage, the re-ranked score and the gain."""
    s = seed_settings(cfg)
    ce, info = load_or_train_cross_encoder(cfg, device=device, seed=seed)
    de = load_sentence_transformer(cfg["models"]["de"], cfg, device=device)
    rows = []
    for name in s["datasets"]:
        ds = load_beir_dataset(cfg, name, (cfg["datasets"][name] or {}).get("split", "test"))
        q, d = dataset_embeddings(cfg, de, ds, progress=progress)
        first = exact_search(q, d, ds.query_ids, ds.doc_ids, top_k=100)
        new = rerank(first, ce_scorer(ce, ds, cfg), s["depth"])
        a, b = evaluate(ds.qrels, first, s["metrics"]), evaluate(ds.qrels, new, s["metrics"])
        for m in s["metrics"]:
            rows.append({"ce": cfg["models"]["ce"], "seed": int(seed), "dataset": name, "metric": m,
                         "first_stage": a[m], "reranked": b[m], "gain": b[m] - a[m], "depth": s["depth"],
                         "n_queries": len(ds.query_ids), "n_docs": len(ds.doc_ids),
                         "selected_step": info.get("selected_step"), "train_minutes": info.get("train_minutes"),
                         "first_stage_model": cfg["models"]["de"]})
    meta = run_metadata(cfg, seed=seed, device=device)
    return [{**r, **{k: v for k, v in meta.items() if k not in r}} for r in rows]


def run_seeds(cfg: dict, out: Path, device: str | None = None, progress: bool = True) -> pd.DataFrame:
    """Every seed of ``ce_training.seeds`` not yet in ``out`` (``ce_seeds.csv``), each appended at once."""
    s = seed_settings(cfg)
    if cross_encoder_path(cfg) is None:
        raise ConfigError(f"models.ce {cfg['models'].get('ce')!r} is not trained here: a hub CE has one set of "
                          "weights and no training seeds.")
    for seed in s["seeds"]:
        done = pd.read_csv(out) if out.is_file() else pd.DataFrame(columns=COLUMNS)
        mine = done[(done["ce"] == cfg["models"]["ce"]) & (done["seed"] == seed)]
        if set(mine["dataset"]) >= set(s["datasets"]):
            continue
        rows = pd.DataFrame(seed_rows(cfg, seed, device, progress))
        out.parent.mkdir(parents=True, exist_ok=True)
        merged = merge_rows(out, rows, KEY)
        write_csv_atomic(merged[[c for c in COLUMNS if c in merged] + [c for c in merged if c not in COLUMNS]], out)
    return pd.read_csv(out)
