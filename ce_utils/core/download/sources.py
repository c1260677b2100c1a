"""Sources of :mod:`ce_utils.core.download`."""

from __future__ import annotations


import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from ce_utils.core.config import ConfigError, DATA_ENV, repo_root

MIRROR_ENV = "CE_DATA_MIRROR"
DOWNLOADS = ".downloads"
TIMEOUT_S = 60
CHUNK = 1 << 20
CHECKSUMS = ("md5", "sha256")
FORMATS = ("beir-zip", "npl-tar", "stsb-tsv-gz", "sick-semeval")
class DownloadError(RuntimeError):
    """A download, checksum or format problem; the message says what to do (exit code 1)."""


class OfflineError(DownloadError):
    """The host cannot be reached at all (exit code 2)."""


def default_sources() -> Path:
    return repo_root() / "configs" / "data_sources.yaml"


# --------------------------------------------------------------------------- the sources file
@dataclass
class Part:
    url: str
    algo: str | None = None      # "md5" / "sha256"; None = no published checksum
    digest: str | None = None


@dataclass
class Source:
    name: str
    parts: list[Part]            # empty: no official download
    format: str | None = None
    unpacks_to: str | None = None
    query_files: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    note: str = ""

    @property
    def downloadable(self) -> bool:
        return bool(self.parts)


def _part(name: str, entry: dict, where: str) -> Part:
    if not isinstance(entry, dict) or not entry.get("url"):
        raise ConfigError(f"{where}: source {name!r} has a part without a url.")
    given = [a for a in CHECKSUMS if a in entry]
    if not given:
        raise ConfigError(f"{where}: source {name!r} names no checksum; give md5 or sha256 (null when none is "
                          "published).")
    algo = given[0]
    digest = entry[algo]
    if digest is not None:
        digest = str(digest).strip().lower()
        if not re.fullmatch(r"[0-9a-f]+", digest) or len(digest) != hashlib.new(algo).digest_size * 2:
            raise ConfigError(f"{where}: source {name!r} has a malformed {algo} {digest!r}.")
    return Part(url=str(entry["url"]), algo=algo if digest else None, digest=digest)


def load_sources(path: str | os.PathLike | None = None) -> dict[str, Source]:
    """The ``sources:`` of a data-sources file, validated."""
    path = Path(path) if path else default_sources()
    if not path.is_file():
        raise ConfigError(f"Data-sources file {path} does not exist.")
    with open(path) as fh:
        raw = yaml.safe_load(fh) or {}
    entries = raw.get("sources")
    if not isinstance(entries, dict) or not entries:
        raise ConfigError(f"{path}: no `sources:` mapping.")
    out: dict[str, Source] = {}
    for name, e in entries.items():
        if not isinstance(e, dict):
            raise ConfigError(f"{path}: source {name!r} must be a mapping.")
        if e.get("parts"):
            parts = [_part(name, p, str(path)) for p in e["parts"]]
        elif e.get("url"):
            parts = [_part(name, e, str(path))]
        else:
            parts = []
        fmt = e.get("format")
        if parts and fmt not in FORMATS:
            raise ConfigError(f"{path}: source {name!r} has format {fmt!r}; known: {', '.join(FORMATS)}.")
        out[name] = Source(name=name, parts=parts, format=fmt, unpacks_to=e.get("unpacks_to"),
                           query_files=dict(e.get("query_files") or {}), files=dict(e.get("files") or {}),
                           note=" ".join(str(e.get("note") or "").split()))
    return out


def load_reference(path: str | os.PathLike | None = None) -> dict[str, dict]:
    path = Path(path) if path else default_sources()
    with open(path) as fh:
        return (yaml.safe_load(fh) or {}).get("reference") or {}


# --------------------------------------------------------------------------- what a profile needs
@dataclass
class Target:
    """One thing the data directory must hold, and the source that provides it."""
    key: str                     # the profile's name for it (dataset / query file / sts set)
    path: str                    # relative to the data directory
    source: str
    kind: str                    # "unpack" | "queries" | "file"
    arg: str = ""                # the split of a query file, the key of a converted file


def plan(cfg: dict, sources: dict[str, Source],
         only: list[str] | None = None) -> tuple[list[Target], list[tuple[str, str]]]:
    """The targets a profile needs (``only``: restricted to these profile keys, source names or
    paths), and notes for those that have no official download."""
    targets: list[Target] = []
    notes: list[tuple[str, str]] = []     # (profile key, why it cannot be downloaded)
    by_unpack = {s.unpacks_to: s for s in sources.values() if s.unpacks_to}
    by_query = {p: (s, split) for s in sources.values() for split, p in s.query_files.items()}
    by_file = {p: (s, k) for s in sources.values() for k, p in s.files.items()}

    def missing(key: str, path: str, src: Source | None) -> None:
        if src is not None and src.note:
            notes.append((key, f"{key} ({path}): {src.note}"))
        else:
            notes.append((key, f"{key} ({path}): no official download in the data-sources file; point {DATA_ENV} "
                               "at a data directory that holds it"))

    for key, spec in (cfg.get("datasets") or {}).items():
        spec = spec or {}
        path = spec.get("path") or f"beir/{key}"
        src = by_unpack.get(path)
        if src is None and spec.get("beir_name") in sources:
            src = sources[spec["beir_name"]]
        if src is None or not src.downloadable:
            missing(key, path, src)
        else:
            targets.append(Target(key, path, src.name, "unpack"))
    for key, path in (cfg.get("query_files") or {}).items():
        hit = by_query.get(path)
        if hit is None or not hit[0].downloadable:
            missing(key, path, hit[0] if hit else None)
        else:
            targets.append(Target(key, path, hit[0].name, "queries", hit[1]))
    for key, spec in (cfg.get("sts") or {}).items():
        path = (spec or {}).get("path", "")
        hit = by_file.get(path)
        if hit is None or not hit[0].downloadable:
            missing(key, path, hit[0] if hit else None)
        else:
            targets.append(Target(key, path, hit[0].name, "file", hit[1]))
    if only:
        known = {t.key for t in targets} | {t.source for t in targets} | {t.path for t in targets}
        known_missing = {k for k, _ in notes}
        unknown = [o for o in only if o not in known and o not in known_missing]
        if unknown:
            raise ConfigError(f"--only {' '.join(unknown)}: not needed by profile {cfg.get('name')!r}; it needs "
                              f"{', '.join(sorted({t.key for t in targets} | known_missing))}.")
        targets = [t for t in targets if {t.key, t.source, t.path} & set(only)]
        notes = [n for n in notes if n[0] in only]
    return targets, notes
