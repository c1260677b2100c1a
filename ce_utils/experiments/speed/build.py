"""The models of a profile's ``speed`` section, in display order.

Speed does not depend on the weights, so a student whose trained weights are not in the profile's
``models_dir`` is timed as a freshly composed architecture (:func:`ce_utils.core.students.compose_student` /
:func:`~ce_utils.core.students.layer_subset_student`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from sentence_transformers import CrossEncoder, SentenceTransformer

from ce_utils.core.config import ConfigError
from ce_utils.core.models import ModelNotFoundError, load_sentence_transformer, resolve_model
from ce_utils.core.students import (RANDOM, compose_student, layer_subset_student, num_layers, query_student_dir,
                                    student_dir, student_name)
from ce_utils.experiments.speed.backends import BACKENDS as BACKEND_LABELS, calibration_queries, check_backends, onnx_work_dir
from ce_utils.experiments.speed.encoders import (OVERHEAD_NAME, Encoder, arch, backend_encoder, ce_encoder,
                                                 overhead_encoder, st_encoder)

log = logging.getLogger(__name__)


def de_k_ce_name(k: int) -> str:
    """Notebook 02's name for the student with ``k`` copied CE layers + 1 random layer."""
    return student_name("ce", k + 1, "mse")


def full_de_name(n_layers: int) -> str:
    return student_name("full", n_layers, "none")


def query_student_name(layers: Sequence[int]) -> str:
    return "query-student L" + "_".join(str(l) for l in layers)


def _saved(path: Path | None, device: str):
    """The SentenceTransformer saved at ``path``, else ``None``."""
    if path is None or not (path / "modules.json").is_file():
        return None
    return SentenceTransformer(str(path), device=device)


def trained_student(cfg: dict, name: str, device: str):
    """A trained student saved by notebook 02 under models_dir/<slug>, else ``None``."""
    return _saved(student_dir(cfg, name), device)


def trained_query_student(cfg: dict, layers: Sequence[int], device: str):
    """Notebook 03's trained student with these teacher layers (``models_dir/query-students``), else ``None``."""
    return _saved(query_student_dir(cfg, "L" + "_".join(str(l) for l in layers)), device)


def build_cross_encoder(cfg: dict, de, de_path: str, device: str, max_length: int):
    """The profile's CE when it exists on disk (or is a hub/local model), else the CE *architecture*:
    the DE's transformer with a one-logit head (what notebook 01 trains). Returns (ce, source)."""
    spec = (cfg.get("models") or {}).get("ce")
    if spec:
        try:
            path = resolve_model(spec, cfg)
            return CrossEncoder(path, device=device, max_length=2 * max_length), spec
        except ModelNotFoundError as exc:
            log.info("CE %s not available (%s); timing its architecture instead.", spec, exc)
    ce = CrossEncoder(de_path, num_labels=1, device=device, max_length=2 * max_length)
    return ce, "architecture (DE transformer + 1-logit head, untrained)"


def _de_k_ce(cfg: dict, de, ce, k: int, n: int, seed: int, device: str) -> tuple[object, str]:
    if not isinstance(k, int) or not 1 <= k < n:
        raise ConfigError(f"speed.de_k_ce: k={k!r} must be an integer in 1..{n - 1} (copied CE layers).")
    trained = trained_student(cfg, de_k_ce_name(k), device)
    if trained is not None:
        return trained, "trained (models_dir)"
    student = compose_student(de, [(ce, i) for i in range(k)] + [RANDOM], embeddings=ce, seed=seed)
    return student, "architecture (CE embeddings + CE layers + 1 random layer, untrained)"


def _query_student(cfg: dict, de, layers: list[int], seed: int, device: str) -> tuple[object, str]:
    student = trained_query_student(cfg, layers, device)
    if student is not None:
        return student, "trained (models_dir/query-students, notebook 03)"
    return (layer_subset_student(de, layers, seed=seed),
            "architecture (teacher layers " + ",".join(map(str, layers)) + ")")


def build_encoders(cfg: dict, sp: dict, device: str = "cpu") -> tuple[list[Encoder], dict]:
    """Every model of the ``speed`` section, in display order, and a dict saying where each came from."""
    seed = int(cfg.get("seed", 42))
    max_length = int(sp["max_length"])
    de_spec = cfg["models"]["de"]
    de = load_sentence_transformer(de_spec, cfg, device=device, max_length=max_length)
    de.eval()
    n = num_layers(de)
    encoders = [st_encoder(full_de_name(n), "de", de, layers=",".join(map(str, range(n))))]
    sources = {encoders[0].name: de_spec}

    ce = None
    if sp.get("ce_modes") or sp.get("de_k_ce"):
        ce, ce_source = build_cross_encoder(cfg, de, resolve_model(de_spec, cfg), device, max_length)
        ce.eval()
        if arch(ce) != arch(de):
            raise ConfigError("The CE and the DE differ in hidden size; DE-k CE needs a CE with the DE's architecture.")

    for k in sp.get("de_k_ce") or []:
        student, source = _de_k_ce(cfg, de, ce, k, n, seed, device)
        student.max_seq_length = max_length
        student.eval()
        enc = st_encoder(de_k_ce_name(k), "de-k-ce", student, layers=",".join(str(i) for i in range(k)) + ",random")
        sources[enc.name] = source
        encoders.append(enc)

    for layers in sp.get("query_students") or []:
        layers = [layers] if isinstance(layers, int) else list(layers)
        student, source = _query_student(cfg, de, layers, seed, device)
        student.max_seq_length = max_length
        student.eval()
        enc = st_encoder(query_student_name(layers), "query-student", student, layers=",".join(map(str, layers)))
        sources[enc.name] = source
        encoders.append(enc)

    if sp.get("overhead", True):
        encoders.append(overhead_encoder(de))
        sources[OVERHEAD_NAME] = f"{de_spec} without its transformer layers"

    work = onnx_work_dir(cfg)
    names = check_backends(sp.get("backends"), available_only=True)
    calibration = calibration_queries(cfg) if any("static" in b for b in names) else None
    for backend in names:
        if backend == "torch":
            continue
        for enc in [e for e in encoders if e.role in ("de", "query-student") and e.backend == "torch"]:
            conv = backend_encoder(enc, backend, work, calibration)
            sources[conv.name] = f"{sources.get(enc.name, '')}; {BACKEND_LABELS[backend]}"
            encoders.append(conv)

    for mode in sp.get("ce_modes") or []:
        enc = ce_encoder(ce, mode)
        sources[enc.name] = ce_source
        encoders.append(enc)
    return encoders, sources
