"""Training, one way for every student: sentence-transformers' ``SentenceTransformerTrainer`` with
``MSELoss`` toward a teacher's embeddings (the layer-reduction distillation recipe of sentence-transformers'
``model_distillation_layer_reduction.py`` example), the teacher's targets computed once per text set and
cached, and the trainer's settings read from a profile section.

* paper 2's query students: ``train_mse(student, queries, teacher_targets(teacher, queries, ...), qd, ...)``;
* paper 1's DE-k CE students: the same, on notebook 02's mix of queries, passages and sentences, each kind in
  its own batches (``texts`` a dict).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from datasets import Dataset, DatasetDict
from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.losses import MSELoss
from transformers import PrinterCallback, TrainerCallback, set_seed
import os
from ce_utils.core.config import ConfigError, section, show_progress
from ce_utils.core.encode import encode, native_bf16
from ce_utils.core.io import cached_array, fingerprint
from ce_utils.core.texts import distillation_texts


def trainer_kwargs(tc: dict, output_dir: str | os.PathLike, seed: int, device: str, *, batch_size: int,
                   learning_rate: float, max_steps: int = -1, logging_steps: int = 50, progress: bool = True,
                   **extra) -> dict:
    """Keyword arguments for sentence-transformers' ``*TrainingArguments`` (SentenceTransformer and
    CrossEncoder alike) from a profile's training section: ``epochs``, ``max_steps`` (-1 = by
    epochs), ``batch_size``, ``learning_rate``, ``warmup_ratio``, ``weight_decay``,
    ``logging_steps``, ``lr_scheduler_type`` (transformers' name, default ``linear``: decays to zero at
    the last step; ``constant_with_warmup`` for a checkpointed budget sweep), ``warmup_steps`` (a number
    of steps; wins over ``warmup_ratio``) and
    ``mixed_precision`` (``fp16`` / ``bf16``, applied on a GPU only) and ``cpu_mixed_precision``
    (``bf16`` only, applied on a CPU that computes bf16 natively; otherwise CPU training stays fp32); the
    keyword arguments are the section's defaults. Seeded, no checkpoints, no reporting; ``extra`` is
    passed through."""
    mp = tc.get("mixed_precision")
    if mp not in (None, "fp16", "bf16"):
        raise ConfigError(f"mixed_precision must be fp16, bf16 or null, not {mp!r}.")
    if tc.get("warmup_steps") is not None:
        warmup = int(tc["warmup_steps"])
        if warmup < 1:
            raise ConfigError(f"warmup_steps must be a whole number >= 1, not {tc['warmup_steps']!r}.")
    else:
        warmup = float(tc.get("warmup_ratio", 0.1))  # transformers 5: a float < 1 is a ratio of the steps
    cpu_mp = tc.get("cpu_mixed_precision")
    if cpu_mp not in (None, "bf16"):
        raise ConfigError(f"cpu_mixed_precision must be bf16 or null, not {cpu_mp!r} (fp16 autocast is GPU-only).")
    cuda = str(device).startswith("cuda")
    if not any(k in extra for k in ("fp16", "bf16")):
        if cuda and mp:
            extra = {**extra, mp: True}
        elif not cuda and cpu_mp and native_bf16("cpu"):
            extra = {**extra, "bf16": True}
    return dict(
        output_dir=str(output_dir),
        num_train_epochs=float(tc.get("epochs", 1)),
        max_steps=int(tc.get("max_steps") or max_steps),
        per_device_train_batch_size=int(tc.get("batch_size", batch_size)),
        learning_rate=float(tc.get("learning_rate", learning_rate)),
        lr_scheduler_type=str(tc.get("lr_scheduler_type") or "linear"),
        warmup_steps=warmup,
        weight_decay=float(tc.get("weight_decay", 0.0)),
        seed=seed,
        data_seed=seed,
        save_strategy="no",
        logging_steps=max(1, int(tc.get("logging_steps") or logging_steps)),
        report_to="none",
        use_cpu=not cuda,
        disable_tqdm=not show_progress(progress),
        **extra,
    )


PRECISIONS = ("fp32", "bf16")


def overrides(learning_rate: float | None = None, schedule: str | None = None, precision: str | None = None) -> dict:
    """A training section's learning rate, scheduler and precision (``fp32``, or ``bf16`` autocast: applied where
    the device computes bf16 natively, a GPU or a CPU with AVX512-BF16 / AMX, else fp32), where given."""
    out = {}
    if precision is not None:
        if precision not in PRECISIONS:
            raise ConfigError(f"training precision must be one of {', '.join(PRECISIONS)}, not {precision!r}.")
        bf16 = "bf16" if precision == "bf16" else None
        out.update(mixed_precision=bf16, cpu_mixed_precision=bf16)
    if learning_rate is not None:
        out["learning_rate"] = float(learning_rate)
    if schedule is not None:
        out["lr_scheduler_type"] = str(schedule)
    return out


def teacher_targets(teacher, texts: Sequence[str], cache_dir, teacher_spec: str, max_length: int,
                    batch_size: int = 32, name: str = "targets", normalize: bool = False) -> np.ndarray:
    """The teacher's embeddings of ``texts`` (the MSE targets), computed once and cached under the
    teacher, its max length and the texts."""
    return cached_array(cache_dir, f"teacher-{name}",
                        lambda: encode(teacher, texts, batch_size, progress=True, normalize=normalize),
                        model=teacher_spec, max_length=int(max_length), texts=fingerprint(texts=list(texts)),
                        n=len(texts))


def prepare_distillation(cfg: dict, tc: dict, de, eval_datasets: list[str], seed: int) -> dict:
    """Notebook 02's training text (``tc``: the ``de2ce.train`` section) and the full DE's embeddings of it."""
    enc = cfg.get("encode") or {}
    ml = int(tc.get("max_length") or enc.get("max_length", 128))
    bs = int(enc.get("batch_size", 32))
    data = distillation_texts(cfg, tc, eval_datasets, seed)
    texts = {"queries": data.pop("queries"), "passages": data.pop("passages"), "sentences": data.pop("sentences")}
    old = de.max_seq_length
    de.max_seq_length = ml
    try:
        labels = {k: teacher_targets(de, v, cfg.get("cache_dir"), cfg["models"]["de"], ml, bs, f"de2ce-{k}", True)
                  for k, v in texts.items() if v}
    finally:
        de.max_seq_length = old
    return {"texts": {k: v for k, v in texts.items() if v}, "labels": labels, "max_length": ml,
            "n_queries": len(texts["queries"]), "n_passages": len(texts["passages"]),
            "n_sentences": len(texts["sentences"]), **data}


def train_mse(student, texts, targets, tc: dict, seed: int, device: str | None, work_dir: str | Path,
              callbacks: list | None = None, defaults: dict | None = None, keep_work_dir: bool = False) -> dict:
    """Align ``student``'s embeddings of ``texts`` with ``targets`` by ``MSELoss`` (in place).

    ``texts`` / ``targets``: one list and array, or dicts of them by kind (each kind in its own batches,
    sampled in proportion). ``tc``: the profile's training section; ``defaults``: its fallbacks
    (``batch_size``, ``learning_rate``, ``max_steps``, ``logging_steps``, ``progress``)."""
    parts = texts if isinstance(texts, dict) else {"texts": texts}
    labels = targets if isinstance(targets, dict) else {"texts": targets}
    if any(len(parts[k]) != len(labels[k]) for k in parts):
        raise ValueError("texts and targets differ in number")
    set_seed(seed)
    data = {k: Dataset.from_dict({"text": list(v), "label": np.asarray(labels[k], dtype=np.float32).tolist()})
            for k, v in parts.items() if len(v)}
    if not data:
        raise ConfigError("No training text: every part is empty.")
    train = DatasetDict(data) if len(data) > 1 else next(iter(data.values()))
    extra = {"multi_dataset_batch_sampler": "proportional"} if len(data) > 1 else {}
    d = {"batch_size": 32, "learning_rate": 1e-4, "max_steps": -1, "logging_steps": 50, "progress": True,
         **(defaults or {})}
    args = SentenceTransformerTrainingArguments(**trainer_kwargs(tc, work_dir, seed, device or "cpu", **d, **extra))
    trainer = SentenceTransformerTrainer(model=student, args=args, train_dataset=train, loss=MSELoss(student),
                                         callbacks=callbacks)
    if args.disable_tqdm:
        trainer.remove_callback(PrinterCallback)  # no loss dict printed every logging step
    t0 = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - t0
    student.eval()
    if not keep_work_dir:
        shutil.rmtree(work_dir, ignore_errors=True)
    n = sum(len(v) for v in parts.values())
    return {"train_texts": n, "train_steps": int(result.global_step), "train_loss": float(result.training_loss),
            "train_seconds": seconds, "train_precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"}


def curve_callback(record, eval_every: int = 1, eval_at=None):
    """A transformers ``TrainerCallback`` calling ``record(step)`` every ``eval_every``-th step, or at the
    steps of ``eval_at`` when given, and at the last step."""
    at = set(int(s) for s in eval_at) if eval_at else None

    class _Curve(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            step = state.global_step
            if (step in at if at is not None else step % eval_every == 0) or step == state.max_steps:
                record(step)
            return control

    return _Curve()


QUERY_STUDENT_DEFAULTS = {"batch_size": 128, "learning_rate": 1e-4, "progress": False}


def train_query_student(student, texts: Sequence[str], targets: np.ndarray, cfg: dict, seed: int,
                        device: str | None = None, callbacks: list | None = None) -> dict:
    """Paper 2's recipe: MSE between the student's and the teacher's embeddings of unlabelled queries,
    with the ``query_distill`` section's batch, learning rate and schedule."""
    work = Path(cfg.get("cache_dir") or ".") / "qd-checkpoints"
    return train_mse(student, texts, targets, section(cfg, "query_distill"), seed, device, work, callbacks,
                     QUERY_STUDENT_DEFAULTS)


DE2CE_DEFAULTS = {"batch_size": 32, "learning_rate": 1e-4, "max_steps": 100, "logging_steps": 25}
