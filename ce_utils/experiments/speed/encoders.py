"""What is timed: one :class:`Encoder` per model, a tokenising ``prepare`` and a forward ``run``.

The full DE and its students (:func:`st_encoder`), the CE on pairs or self-pairs (:func:`ce_encoder`), the
full DE without its layers (:func:`overhead_encoder`), and any of these in an inference backend
(:func:`backend_encoder`, :mod:`.backends`)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from torch import nn

from ce_utils.core.config import ConfigError
from ce_utils.core.students import backbone, num_layers
from ce_utils.experiments.speed.backends import build as build_backend

ROLES = ("de", "de-k-ce", "query-student", "ce", "overhead")
CE_MODES = ("pair", "self-pair")
OVERHEAD_NAME = "DE-0 (no layers)"


@dataclass
class Encoder:
    """One timed model: ``prepare(texts)`` tokenises a batch, ``run(features)`` is the forward pass."""

    name: str
    role: str
    module: object
    prepare: Callable
    run: Callable
    n_layers: int
    n_params: int
    hidden: int
    intermediate: int
    layers: str = ""
    pair: bool = False          # items are (query, text) pairs
    pooler: bool = False
    extra: dict = field(default_factory=dict)
    backend: str = "torch"      # ce_utils.experiments.speed.backends: torch | torch-int8 | onnx | onnx-int8
    base: str = ""              # the model's name without the backend suffix


def arch(model) -> tuple[int, int]:
    """(hidden size, intermediate size) of a model's transformer."""
    cfg = backbone(model).config
    return int(cfg.hidden_size), int(cfg.intermediate_size)


def n_params(module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def to_device(features: dict, device: str) -> dict:
    return {k: (v.to(device, non_blocking=True) if hasattr(v, "to") else v) for k, v in features.items()}


def st_encoder(name: str, role: str, model, layers: str = "") -> Encoder:
    """A SentenceTransformer (DE or student): ``preprocess`` then ``forward`` -> sentence_embedding."""
    h, i = arch(model)

    def prepare(texts):
        return model.preprocess(list(texts))

    def run(features):
        return model(features)["sentence_embedding"]

    return Encoder(name, role, model, prepare, run, num_layers(model), n_params(model), h, i, layers=layers)


def ce_encoder(ce, mode: str, name: str | None = None) -> Encoder:
    """The CE scoring (query, document) pairs (``pair``), or embedding the query paired with
    itself (``self-pair``: every CE layer, mean pooled over the pair's tokens)."""
    if mode not in CE_MODES:
        raise ConfigError(f"Unknown CE mode {mode!r}; use one of {', '.join(CE_MODES)}.")
    h, i = arch(ce)
    bb = backbone(ce)

    def prepare(pairs):
        return ce.preprocess([tuple(p) for p in pairs])

    if mode == "pair":
        def run(features):
            return ce(features)["scores"]
        module = ce
    else:
        keys = ("input_ids", "attention_mask", "token_type_ids")

        def run(features):
            out = bb(**{k: features[k] for k in keys if k in features}).last_hidden_state
            mask = features["attention_mask"].unsqueeze(-1).to(out.dtype)
            return (out * mask).sum(1) / mask.sum(1).clamp(min=1)
        module = bb
    return Encoder(name or f"CE ({mode})", "ce", ce, prepare, run, num_layers(ce), n_params(module), h, i,
                   layers=",".join(str(l) for l in range(num_layers(ce))), pair=True, pooler=mode == "pair",
                   extra={"ce_mode": mode})


def overhead_encoder(de, name: str = OVERHEAD_NAME) -> Encoder:
    """The full DE with every transformer layer removed: tokeniser, embeddings, attention-mask set-up,
    BERT pooler, mean pooling, normalisation and the SentenceTransformer plumbing -- the per-call cost
    that fewer layers do not remove. Timed beside the others, it splits each eager model's time into
    that fixed part and a per-layer part (``fixed_share``, ``expected_speedup``)."""
    z = copy.deepcopy(de)
    bb = backbone(z)
    bb.encoder.layer = nn.ModuleList()
    bb.config.num_hidden_layers = 0
    h, i = arch(de)
    return Encoder(name, "overhead", z, lambda texts: z.preprocess(list(texts)),
                   lambda features: z(features)["sentence_embedding"], 0, n_params(z), h, i, layers="")


def backend_name(name: str, backend: str) -> str:
    return name if backend == "torch" else f"{name} [{backend}]"


def backend_encoder(enc: Encoder, backend: str, work_dir: str | Path | None, calibration=None) -> Encoder:
    """``enc`` (a DE or query student, eager PyTorch) converted to an inference backend
    (:mod:`.backends`); same tokenizer, same architecture columns, CPU only. ``calibration``: the training
    queries static int8 calibrates on."""
    bm = build_backend(enc.module, backend, enc.name, work_dir=work_dir, calibration=calibration)
    return Encoder(backend_name(enc.name, backend), enc.role, bm.model, bm.features, bm.run, enc.n_layers,
                   enc.n_params, enc.hidden, enc.intermediate, layers=enc.layers, backend=backend, base=enc.name,
                   extra={"backend_model": bm})
