"""The cross encoder: loaded from the hub (paper profile) or trained here (default profile).

No cross encoder can be downloaded offline, so the default profile fine-tunes one from
the offline MiniLM weights with sentence-transformers' CrossEncoderTrainer on SciFact's
*train* qrels, with hard negatives mined by the dual encoder. Training is seed-fixed
and the result is saved under the profile's models_dir, so later notebooks reuse it.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np

from ce_utils.config import ConfigError, section
from ce_utils.data import load_beir_dataset, subsample
from ce_utils.models import (default_device, load_cross_encoder, load_sentence_transformer, resolve_model,
                             trainer_kwargs)
from ce_utils.results import atomic_write_text, run_metadata
from ce_utils.retrieval import exact_search

log = logging.getLogger(__name__)
INFO_FILE = "training_info.json"


def cross_encoder_path(cfg: dict) -> Path | None:
    """Where a ``trained:`` CE lives (``None`` for a hub / local CE)."""
    spec = cfg["models"]["ce"]
    if spec.startswith("trained:"):
        return Path(cfg["models_dir"]) / spec.split(":", 1)[1]
    return None


def mine_training_pairs(cfg: dict, tc: dict, device: str | None = None) -> list[tuple[str, str, float]]:
    """(query, passage, label) pairs: every judged positive, plus ``negatives_per_query`` hard
    negatives per query, drawn from the DE's top ``mine_depth`` after removing positives."""
    ds = load_beir_dataset(cfg, tc["dataset"], split=tc.get("split", "train"))
    if tc.get("max_queries") is not None or tc.get("mine_max_docs") is not None:
        # optional budget: a seeded sample of training queries, mined within all their judged
        # docs plus random distractors (null = every query / the whole corpus)
        ds = subsample(ds, max_queries=tc.get("max_queries"), max_docs=tc.get("mine_max_docs"),
                       seed=int(cfg.get("seed", 42)))
    de = load_sentence_transformer(tc.get("miner", cfg["models"]["de"]), cfg, device=device,
                                   max_length=tc.get("mine_max_length") or cfg.get("encode", {}).get("max_length"))
    bs = cfg.get("encode", {}).get("batch_size", 32)
    doc_ids = ds.doc_ids
    doc_emb = de.encode(ds.doc_texts(doc_ids), batch_size=bs, show_progress_bar=True, convert_to_numpy=True)
    qids = ds.query_ids
    q_emb = de.encode(ds.query_texts(qids), batch_size=bs, convert_to_numpy=True)
    depth = int(tc.get("mine_depth", 30))
    ranked = exact_search(q_emb, doc_emb, qids, doc_ids, top_k=depth)
    n_neg = int(tc.get("negatives_per_query", 3))
    rng = random.Random(cfg.get("seed", 42))
    pairs: list[tuple[str, str, float]] = []
    for q in qids:
        positives = {d for d, s in ds.qrels[q].items() if s > 0 and d in ds.corpus}
        for d in sorted(positives):
            pairs.append((ds.queries[q], ds.doc_texts([d])[0], 1.0))
        negatives = [d for d in ranked[q] if d not in positives]
        for d in negatives[:n_neg]:
            pairs.append((ds.queries[q], ds.doc_texts([d])[0], 0.0))
    rng.shuffle(pairs)
    return pairs


def train_cross_encoder(cfg: dict, output: str | Path, device: str | None = None):
    """Fine-tune a CE from ``ce_training.base`` and save it (with a JSON record) to ``output``."""
    from datasets import Dataset
    from sentence_transformers import CrossEncoder
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss
    from transformers import set_seed

    tc = section(cfg, "ce_training")
    seed = int(cfg.get("seed", 42))
    set_seed(seed)
    device = device or default_device()
    pairs = mine_training_pairs(cfg, tc, device=device)
    if tc.get("max_pairs"):
        pairs = pairs[: int(tc["max_pairs"])]
    train = Dataset.from_dict({"query": [p[0] for p in pairs], "passage": [p[1] for p in pairs],
                               "label": [p[2] for p in pairs]})
    model = CrossEncoder(resolve_model(tc["base"], cfg), num_labels=1, max_length=int(tc.get("max_length", 256)),
                         device=device)
    output = Path(output)
    args = CrossEncoderTrainingArguments(**trainer_kwargs(
        tc, output.parent / f".{output.name}-checkpoints", seed, device, batch_size=16, learning_rate=2e-5))
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=train, loss=BinaryCrossEntropyLoss(model))
    result = trainer.train()
    import tempfile

    tmp = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.partial-"))
    model.save(str(tmp))
    info = {"base": tc["base"], "dataset": tc["dataset"], "split": tc.get("split", "train"),
            "n_pairs": len(pairs), "n_positive": int(sum(p[2] for p in pairs)),
            "training_loss": float(result.training_loss), "global_steps": int(result.global_step),
            "hyperparameters": tc, **run_metadata(cfg, seed=seed, device=device)}
    atomic_write_text(tmp / INFO_FILE, json.dumps(info, indent=1, default=str))
    if output.exists():
        import shutil

        shutil.rmtree(output)
    tmp.replace(output)
    return model, info


def load_or_train_cross_encoder(cfg: dict, device: str | None = None, retrain: bool = False):
    """The profile's CE and a dict describing it. A ``trained:`` CE is trained on first use."""
    spec = cfg["models"].get("ce")
    if not spec:
        raise ConfigError(f"Profile {cfg.get('name')!r} names no cross encoder (models.ce).")
    path = cross_encoder_path(cfg)
    max_length = 2 * int(cfg.get("encode", {}).get("max_length", 128))
    if path is None:
        return load_cross_encoder(spec, cfg, device=device, max_length=max_length), {"source": spec}
    if retrain or not (path / INFO_FILE).is_file():
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.parent / f".{path.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one training at a time; others wait, then load it
            if retrain or not (path / INFO_FILE).is_file():
                log.info("Training the cross encoder into %s", path)
                train_cross_encoder(cfg, path, device=device)
    info = json.loads((path / INFO_FILE).read_text())
    return load_cross_encoder(str(path), cfg, device=device, max_length=max_length), {"source": str(path), **info}


def score_pairs_fn(ce, queries: dict[str, str], docs: dict[str, str], batch_size: int = 32,
                   show_progress_bar: bool = True):
    """A ``score_pairs`` callable for :func:`ce_utils.retrieval.rerank`."""

    def score(pairs: list[tuple[str, str]]) -> list[float]:
        texts = [(queries[q], docs[d]) for q, d in pairs]
        return np.asarray(ce.predict(texts, batch_size=batch_size, show_progress_bar=show_progress_bar)).tolist()

    return score
