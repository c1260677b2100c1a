"""What the converters share: finding files of installed distributions, checksums, and publishing a
finished model folder (written in a temporary folder beside it, then renamed) with its
``ce_utils_source.json``."""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import json
import os
import re
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Sequence

from ce_utils.core.models import CONVERTED_INFO, ModelNotFoundError, converted_info

SearchPath = Sequence[str | os.PathLike] | None


class ChecksumError(ModelNotFoundError):
    """A source is not the one its table entry describes."""


def distribution(name: str, search_path: SearchPath = None):
    """The installed distribution ``name`` (on ``search_path`` instead of sys.path when given)."""
    if search_path is None:
        return metadata.distribution(name)
    for dist in metadata.distributions(name=name, path=[str(p) for p in search_path]):
        return dist
    raise metadata.PackageNotFoundError(name)


def record_path(f) -> str:
    return PurePosixPath(str(f)).as_posix()


def distribution_file(name: str, pattern: str | Callable[[str], bool], search_path: SearchPath = None,
                      what: str | None = None) -> Path:
    """The one file of installed distribution ``name`` whose RECORD path matches ``pattern``
    (a regular expression searched in the posix path, or a predicate). Raises
    ``PackageNotFoundError`` when the distribution is absent, ``ModelNotFoundError`` when no
    file or several files match or the file is missing on disk."""
    dist = distribution(name, search_path)
    files = [f for f in (dist.files or []) if ".dist-info/" not in str(f) and "__pycache__" not in str(f)]
    test = pattern if callable(pattern) else (lambda p: re.search(pattern, p) is not None)
    hits = [f for f in files if test(record_path(f))]
    if len(hits) != 1:
        raise ModelNotFoundError(
            f"Distribution {name} ({dist.version}) has {len(hits)} files matching {what or repr(pattern)} "
            f"({[str(h) for h in hits[:4]]}); expected exactly one."
            + ("" if dist.files else " Its RECORD lists no files: reinstall it with pip."))
    path = Path(dist.locate_file(hits[0]))
    if not path.is_file():
        raise ModelNotFoundError(f"{path} (listed by distribution {name}) is missing: reinstall {name}.")
    return path


def pip_command(names: Iterable[str], version: str | None, no_deps: bool = True) -> str:
    pins = " ".join(f"{n}=={version}" if version else n for n in names)
    return f"pip install {'--no-deps ' if no_deps else ''}{pins}"


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def is_current(dest: Path, **expected) -> bool:
    """Whether ``dest`` holds a finished conversion whose recorded values equal ``expected``."""
    info = converted_info(dest)
    return bool(info) and all(info.get(k) == v for k, v in expected.items())


def staging(dest: Path) -> Path:
    """A fresh temporary folder beside ``dest`` (same file system, so the final rename is atomic)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))


def publish(folder: Path, dest: Path, info: dict) -> Path:
    """Write ``info`` as ``ce_utils_source.json`` into the finished ``folder`` and rename it to ``dest``.
    A stale ``dest`` (another source, an older converter) is replaced; one that another process
    has just published for the same source is kept."""
    (folder / CONVERTED_INFO).write_text(json.dumps(info, indent=1, default=str))
    old = None
    if dest.exists():
        if is_current(dest, **{k: info[k] for k in ("sha256", "converter_version") if k in info}):
            shutil.rmtree(folder, ignore_errors=True)
            return dest
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.rename(dest, old)
    try:
        os.rename(folder, dest)
    except OSError:
        if not dest.is_dir():
            raise
        shutil.rmtree(folder, ignore_errors=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return dest
