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

from sentence_transformers import SentenceTransformer
from datasets import Dataset
from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from transformers import set_seed
from ce_utils.core.config import ConfigError, output_dir, section
from ce_utils.core.data import doc_text, load_beir_dataset
from ce_utils.core.io import fingerprint
from ce_utils.core.runinfo import run_metadata
from ce_utils.core.students import CE_INITS, backbone, build_de2ce, slug, student_name
from ce_utils.core.train import DE2CE_DEFAULTS, train_mse, trainer_kwargs
from ce_utils.core.io import save_model
from ce_utils.core.models import TRAINED_INFO, training_record


log = logging.getLogger(__name__)

DE2CE_COLUMNS = ["model", "init", "k_ce_layers", "n_layers", "loss", "dataset", "metric", "value", "n_queries",
                 "n_docs", "approximate", "train_texts", "train_steps", "seed"]
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
    return save_model(model, path, {TRAINED_INFO: json.dumps(info, indent=1, default=str), "README.md": text},
                      create_model_card=False)


def load_trained_student(path: Path, recipe: str, device: str):
    """A student saved by an earlier run with the same recipe fingerprint, else ``None``."""

    info = training_record(path)
    if not info or info.get("recipe") != recipe:
        return None, None
    return SentenceTransformer(str(path), device=device), info


# --------------------------------------------------------------------------- evaluation


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
    dc.setdefault("headline", [])
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


