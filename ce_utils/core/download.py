"""Download what a profile needs from the official sources into a data directory (``make data``).

    python -m ce_utils.core.download --profile default --dest data       # = make data
    python -m ce_utils.core.download --profile paper --only scifact msmarco-dev
    python -m ce_utils.core.download --profile paper --dry-run            # what would be fetched

URLs, checksums and what each download becomes come only from ``configs/data_sources.yaml``
(``--sources`` for another file); ``--mirror URL`` (or ``$CE_DATA_MIRROR``) replaces the scheme and
host of every URL. The layout built under ``--dest`` is the one ``CE_DATA_DIR`` points at.

Each file is downloaded to ``<dest>/.downloads/<source>/<file>.part`` with a progress bar; an existing
``.part`` is resumed with an HTTP Range request (and restarted when the server ignores it). The
checksum is verified before anything is unpacked; a mismatch deletes the file and stops. Unpacking and
conversion happen in a temporary folder next to the target, renamed into place only when complete, so
an interrupted or failed run leaves no half-written target. Targets already present are skipped.

Exit codes: 0 done (targets without an official download are listed, see ``--strict``); 1 a download,
checksum or format error; 2 the network is unreachable, or a bad profile / sources file / ``--only``.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import io
import json
import os
import re
import shutil
import socket
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterator
from urllib.parse import urlsplit

import yaml
from tqdm import tqdm
from ce_utils.core.config import ConfigError, DATA_ENV, load_profile, repo_root


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


def is_complete(path: Path, kind: str) -> bool:
    """A target is present when its folder holds a BEIR dataset (or sub-datasets, as CQADupStack's
    sub-forums), or its file is non-empty. Targets are renamed into place only when complete."""
    if kind != "unpack":
        return path.is_file() and path.stat().st_size > 0
    if not path.is_dir():
        return False
    if (path / "corpus.jsonl").is_file() and (path / "queries.jsonl").is_file():
        return True
    subs = [d for d in path.iterdir() if d.is_dir()]
    return bool(subs) and all((d / "corpus.jsonl").is_file() for d in subs)


# --------------------------------------------------------------------------- downloading
def mirrored(url: str, mirror: str | None) -> str:
    """``url`` with its scheme and host replaced by the mirror base URL (which may carry a path)."""
    if not mirror:
        return url
    p = urlsplit(url)
    return mirror.rstrip("/") + p.path + (f"?{p.query}" if p.query else "")


def offline_error(url: str, exc: BaseException) -> OfflineError:
    host = urlsplit(url).netloc or url
    reason = getattr(exc, "reason", exc)
    return OfflineError(f"cannot reach {host} ({reason}): download the data on a machine with internet, "
                        f"or point {DATA_ENV} at an existing data directory")


def file_digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _open(url: str, start: int) -> object:
    req = urllib.request.Request(url, headers={"User-Agent": "ce_utils.core.download"})
    if start:
        req.add_header("Range", f"bytes={start}-")
    try:
        return urllib.request.urlopen(req, timeout=TIMEOUT_S)
    except urllib.error.HTTPError:
        raise
    except (urllib.error.URLError, socket.timeout, ConnectionError, OSError) as exc:
        raise offline_error(url, exc) from exc


def fetch(url: str, part: Path, quiet: bool = False, desc: str = "") -> Path:
    """Download ``url`` into ``part`` (resuming it when it exists); returns ``part``, complete."""

    part.parent.mkdir(parents=True, exist_ok=True)
    for _attempt in range(2):
        have = part.stat().st_size if part.exists() else 0
        try:
            resp = _open(url, have)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:          # the .part is not a prefix of this file: start again
                part.unlink()
                continue
            raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
        with resp:
            mode = "wb"                            # a full body (200): the server ignored Range, restart
            if have and resp.status == 206:
                m = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
                if not (m and int(m.group(1)) == have):
                    part.unlink()                  # a range we did not ask for: start again without one
                    continue
                mode = "ab"
            else:
                have = 0
            length = resp.headers.get("Content-Length")
            total = have + int(length) if length and length.isdigit() else None
            if have and not quiet:
                print(f"  resuming at {have:,} bytes", flush=True)
            try:
                with open(part, mode) as fh, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                                  unit_divisor=1024, desc=desc or part.name, disable=quiet,
                                                  leave=False) as bar:
                    while chunk := resp.read(CHUNK):
                        fh.write(chunk)
                        bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as exc:
                raise DownloadError(f"{url}: download interrupted ({exc}); the partial file {part} is kept and "
                                    "the next run resumes it") from exc
        size = part.stat().st_size
        if total is not None and size != total:
            raise DownloadError(f"{url}: connection closed after {size:,} of {total:,} bytes; the partial file "
                                f"{part} is kept and the next run resumes it")
        return part
    raise DownloadError(f"{url}: the server refused to resume and to restart the download")


def download_part(src: Source, part: Part, dest: Path, mirror: str | None, quiet: bool) -> Path:
    """A verified download of one file of a source: ``<dest>/.downloads/<source>/<file>``."""
    url = mirrored(part.url, mirror)
    name = PurePosixPath(urlsplit(part.url).path).name or src.name
    final = dest / DOWNLOADS / src.name / name
    if final.is_file():                              # verified by an earlier, interrupted run
        return final
    partial = final.with_name(final.name + ".part")
    if not quiet:
        print(f"{src.name}: downloading {url}", flush=True)
    try:
        fetch(url, partial, quiet=quiet, desc=f"{src.name}/{name}")
    except BaseException:
        if partial.exists() and partial.stat().st_size == 0:
            partial.unlink()
        _prune(partial.parent, dest)               # no empty folders left behind (a .part stays)
        raise
    if part.algo:
        got = file_digest(partial, part.algo)
        if got != part.digest:
            partial.unlink(missing_ok=True)
            _prune(partial.parent, dest)
            raise DownloadError(f"{src.name}: {name} is corrupted ({part.algo} {got}, expected {part.digest}); "
                                "the file was deleted and nothing was unpacked; run again to download it afresh")
        if not quiet:
            print(f"{src.name}: {part.algo} verified", flush=True)
    elif not quiet:
        print(f"{src.name}: no checksum is published for {name}; not verified", flush=True)
    os.replace(partial, final)
    return final


# --------------------------------------------------------------------------- staging (all or nothing)
def _prune(folder: Path, stop: Path) -> None:
    """Remove ``folder`` and its parents up to ``stop`` (excluded) while they are empty."""
    folder, stop = folder.resolve(), stop.resolve()
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


@contextlib.contextmanager
def staged_file(final: Path, dest: Path) -> Iterator[Path]:
    """A temporary file next to ``final``, renamed onto it only when the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".partial")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        _prune(final.parent, dest)
        raise


class Stage:
    """A temporary folder next to a target: build the target at ``root`` (or point ``root`` at a folder
    inside ``tmp``); it is renamed onto the target only when the block succeeds."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.root = tmp / "root"


@contextlib.contextmanager
def staged_dir(final: Path, dest: Path) -> Iterator[Stage]:
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = Stage(Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".partial")))
    try:
        yield stage
        os.rename(stage.root, final)
    except BaseException:
        shutil.rmtree(stage.tmp, ignore_errors=True)
        _prune(final.parent, dest)
        raise
    shutil.rmtree(stage.tmp, ignore_errors=True)


def _safe_members(names: list[str], archive: Path) -> None:
    for n in names:
        p = PurePosixPath(n)
        if p.is_absolute() or ".." in p.parts:
            raise DownloadError(f"{archive.name}: refusing to unpack the unsafe path {n!r}")


# --------------------------------------------------------------------------- formats
def _clean(text: str) -> str:
    return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def _zip_member(zf: zipfile.ZipFile, suffix: str, archive: Path) -> str:
    """The shallowest member named ``suffix`` (``queries.jsonl``, ``qrels/test.tsv``)."""
    hits = [n for n in zf.namelist() if n == suffix or n.endswith("/" + suffix)]
    if not hits:
        raise DownloadError(f"{archive.name} holds no {suffix}; is it a BEIR dataset zip?")
    return min(hits, key=lambda n: n.count("/"))


def beir_query_file(archive: Path, split: str, out: Path) -> int:
    """``id<TAB>text`` of the queries judged in ``qrels/<split>.tsv``, in queries.jsonl order."""
    with zipfile.ZipFile(archive) as zf:
        with zf.open(_zip_member(zf, f"qrels/{split}.tsv", archive)) as fh:
            judged = set()
            for n, line in enumerate(io.TextIOWrapper(fh, encoding="utf-8")):
                cols = line.rstrip("\r\n").split("\t")
                if n == 0 and cols[0] == "query-id" or not cols[0]:
                    continue
                judged.add(cols[0])
        rows = 0
        with zf.open(_zip_member(zf, "queries.jsonl", archive)) as fh, open(out, "w", encoding="utf-8") as w:
            for line in io.TextIOWrapper(fh, encoding="utf-8"):
                if not line.strip():
                    continue
                q = json.loads(line)
                qid, text = str(q["_id"]), _clean(str(q.get("text", "")))
                if qid in judged and text.strip():
                    w.write(f"{qid}\t{text}\n")
                    rows += 1
    if not rows:
        raise DownloadError(f"{archive.name}: no query of queries.jsonl is judged in qrels/{split}.tsv")
    return rows


def unpack_beir_zip(archive: Path, tmp: Path) -> Path:
    """Unpack a BEIR zip into ``tmp``; returns the dataset folder (the zip's top folder, e.g. ``scifact/``)."""
    with zipfile.ZipFile(archive) as zf:
        names = [n for n in zf.namelist() if not n.startswith("__MACOSX/")]
        _safe_members(names, archive)
        zf.extractall(tmp, members=names)
    entries = list(tmp.iterdir())
    root = entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp
    if not is_complete(root, "unpack"):
        raise DownloadError(f"{archive.name} is not a BEIR dataset zip (no corpus.jsonl / queries.jsonl)")
    return root


def _npl_records(text: str) -> Iterator[list[str]]:
    """NPL records: lines up to a line holding only ``/``; the first non-empty line is the id."""
    record: list[str] = []
    for line in text.splitlines():
        if line.strip() == "/":
            if any(s.strip() for s in record):
                yield record
            record = []
        else:
            record.append(line)
    if any(s.strip() for s in record):
        yield record


def _npl_split(record: list[str]) -> tuple[str, str]:
    lines = [s for s in record if s.strip()]
    return lines[0].strip(), " ".join(" ".join(lines[1:]).split()).lower()


def convert_npl(archive: Path, out: Path) -> tuple[int, int, int]:
    """npl.tar.gz (doc-text, query-text, rlv-ass) -> BEIR layout in ``out``."""
    members: dict[str, str] = {}
    with tarfile.open(archive, "r:*") as tf:
        for m in tf.getmembers():
            base = PurePosixPath(m.name).name
            if m.isfile() and base in ("doc-text", "query-text", "rlv-ass"):
                members[base] = tf.extractfile(m).read().decode("utf-8", errors="replace")
    lacking = [b for b in ("doc-text", "query-text", "rlv-ass") if b not in members]
    if lacking:
        raise DownloadError(f"{archive.name} holds no {', '.join(lacking)}; is it the NPL (Vaswani) collection?")
    (out / "qrels").mkdir(parents=True)
    n_docs = n_queries = n_qrels = 0
    with open(out / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for rec in _npl_records(members["doc-text"]):
            doc_id, text = _npl_split(rec)
            fh.write(json.dumps({"_id": doc_id, "title": "", "text": text}) + "\n")
            n_docs += 1
    with open(out / "queries.jsonl", "w", encoding="utf-8") as fh:
        for rec in _npl_records(members["query-text"]):
            qid, text = _npl_split(rec)
            fh.write(json.dumps({"_id": qid, "text": text}) + "\n")
            n_queries += 1
    with open(out / "qrels" / "test.tsv", "w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for rec in _npl_records(members["rlv-ass"]):
            lines = [s for s in rec if s.strip()]
            qid = lines[0].strip()
            for doc_id in " ".join(lines[1:]).split():
                fh.write(f"{qid}\t{doc_id}\t1\n")
                n_qrels += 1
    if not (n_docs and n_queries and n_qrels):
        raise DownloadError(f"{archive.name}: no documents, queries or judgements parsed")
    return n_docs, n_queries, n_qrels


STSB_COLUMNS = ("genre", "dataset", "year", "sid", "score", "sentence1", "sentence2")


def convert_stsb(archive: Path, wanted: dict[str, Path]) -> dict[str, int]:
    """stsbenchmark.tsv.gz (split + the original columns) -> one tab-separated file per split, in the
    original STS benchmark layout (genre, dataset, year, sid, score, sentence1, sentence2; no header)."""
    rows: dict[str, list[str]] = {s: [] for s in wanted}
    with gzip.open(archive, "rt", encoding="utf-8", newline="") as fh:
        header = fh.readline().rstrip("\r\n").split("\t")
        need = ("split",) + STSB_COLUMNS
        if not set(need) <= set(header):
            raise DownloadError(f"{archive.name}: header {header} lacks {[c for c in need if c not in header]}")
        idx = [header.index(c) for c in STSB_COLUMNS]
        for n, line in enumerate(fh, 2):
            cols = line.rstrip("\r\n").split("\t")
            if len(cols) != len(header):
                raise DownloadError(f"{archive.name}:{n}: {len(cols)} columns, expected {len(header)}")
            split = cols[header.index("split")]
            if split in rows:
                rows[split].append("\t".join(cols[i] for i in idx))
    empty = [s for s, r in rows.items() if not r]
    if empty:
        raise DownloadError(f"{archive.name}: no rows for split(s) {', '.join(empty)}")
    for split, path in wanted.items():
        path.write_text("".join(r + "\n" for r in rows[split]), encoding="utf-8")
    return {s: len(r) for s, r in rows.items()}


SICK_COLUMNS = ("pair_ID", "sentence_A", "sentence_B", "relatedness_score", "entailment_judgment")


def convert_sick(archives: list[Path], out: Path) -> int:
    """SemEval-2014 Task 1 zips (train, trial, test annotated) -> one SICK.txt, one header."""
    header: list[str] | None = None
    rows: list[str] = []
    for archive in archives:
        with zipfile.ZipFile(archive) as zf:
            txt = [n for n in zf.namelist() if PurePosixPath(n).name.startswith("SICK") and n.endswith(".txt")]
            if len(txt) != 1:
                raise DownloadError(f"{archive.name}: expected one SICK_*.txt, found {txt or 'none'}")
            lines = zf.read(txt[0]).decode("utf-8").replace("\r\n", "\n").split("\n")
        head = lines[0].split("\t")
        if tuple(head) != SICK_COLUMNS:
            raise DownloadError(f"{archive.name}: header {head}, expected {list(SICK_COLUMNS)}")
        header = header or head
        rows.extend(s for s in lines[1:] if s.strip())
    out.write_text("\n".join(["\t".join(header or SICK_COLUMNS)] + rows), encoding="utf-8")
    return len(rows)


# --------------------------------------------------------------------------- one source
def build(src: Source, targets: list[Target], dest: Path, mirror: str | None = None, quiet: bool = False,
          keep_archives: bool = False) -> list[str]:
    """Download ``src`` once and build every target of it that is missing; returns what was built."""
    archives = [download_part(src, p, dest, mirror, quiet) for p in src.parts]
    built: list[str] = []
    try:
        for t in targets:
            final = dest / t.path
            if t.kind == "unpack" and src.format == "beir-zip":
                with staged_dir(final, dest) as stage:
                    stage.root = unpack_beir_zip(archives[0], stage.tmp / "zip")
                built.append(f"{t.path}/")
            elif t.kind == "unpack" and src.format == "npl-tar":
                with staged_dir(final, dest) as stage:
                    n = convert_npl(archives[0], stage.root)
                built.append(f"{t.path}/ ({n[0]:,} docs, {n[1]:,} queries, {n[2]:,} judgements)")
            elif t.kind == "queries" and src.format == "beir-zip":
                with staged_file(final, dest) as tmp:
                    n = beir_query_file(archives[0], t.arg, tmp)
                built.append(f"{t.path} ({n:,} queries)")
            elif t.kind == "file" and src.format == "stsb-tsv-gz":
                with staged_file(final, dest) as tmp:
                    n = convert_stsb(archives[0], {t.arg: tmp})
                built.append(f"{t.path} ({n[t.arg]:,} pairs)")
            elif t.kind == "file" and src.format == "sick-semeval":
                with staged_file(final, dest) as tmp:
                    n = convert_sick(archives, tmp)
                built.append(f"{t.path} ({n:,} pairs)")
            else:
                raise DownloadError(f"{src.name}: format {src.format!r} cannot build {t.path} ({t.kind})")
            if not quiet:
                print(f"{src.name}: wrote {built[-1]}", flush=True)
    finally:                                       # a failed build leaves no archive either
        if not keep_archives:
            for a in archives:
                a.unlink(missing_ok=True)
            _prune(dest / DOWNLOADS / src.name, dest)
    return built


# --------------------------------------------------------------------------- paper 2's published tables
def fetch_reference(name: str, ref: dict, dest: Path, mirror: str | None = None, quiet: bool = False) -> Path | None:
    """Paper 2's published tables into ``<dest>/<unpacks_to>`` (what CE_REFERENCE_DIR names; the notebooks
    find ``data/reference`` by themselves). Optional: every file sha256-checked against the copy this
    project was tested with; on any failure (offline, changed upstream, corrupted) nothing is kept, a
    warning says so, and the notebooks use the numbers transcribed in ce_utils.experiments.query_distill."""
    note = " ".join(str(ref.get("note") or "").split())
    base, files, target = ref.get("base_url"), dict(ref.get("files") or {}), ref.get("unpacks_to")
    if not (base and files and target):
        print(f"published tables {name} (CE_REFERENCE_DIR): {note}", flush=True)
        return None
    final = dest / target
    if all((final / f).is_file() for f in files):
        print(f"published tables {name}: {target} already present, skipped", flush=True)
        return final
    if final.exists():
        print(f"warning: published tables {name}: {final} exists but lacks some of {', '.join(files)}; move it "
              "away and run again", file=sys.stderr, flush=True)
        return None
    src = Source(name=f"reference-{name}", parts=[])
    try:
        with staged_dir(final, dest) as stage:
            stage.root.mkdir(parents=True, exist_ok=True)
            for fname, digest in files.items():
                part = Part(url=base.rstrip("/") + "/" + fname, algo="sha256" if digest else None,
                            digest=str(digest).lower() if digest else None)
                got = download_part(src, part, dest, mirror, quiet)
                shutil.copyfile(got, stage.root / fname)
    except DownloadError as exc:   # OfflineError included: optional, so a warning, not a failure
        print(f"warning: published tables {name} not fetched ({exc}); {note}", file=sys.stderr, flush=True)
        return None
    finally:
        shutil.rmtree(dest / DOWNLOADS / src.name, ignore_errors=True)
        _prune(dest / DOWNLOADS, dest)
    print(f"published tables {name}: {target} ({len(files)} files, sha256 verified)", flush=True)
    return final


# --------------------------------------------------------------------------- the whole run
def run(profile: str, dest: str | os.PathLike, sources_path: str | os.PathLike | None = None,
        only: list[str] | None = None, mirror: str | None = None, quiet: bool = False, dry_run: bool = False,
        keep_archives: bool = False, strict: bool = False) -> int:
    cfg = load_profile(profile)
    sources = load_sources(sources_path)
    dest = Path(dest).expanduser().resolve()
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    targets, notes = plan(cfg, sources, only)
    todo = [t for t in targets if not is_complete(dest / t.path, t.kind)]
    todo = [t for i, t in enumerate(todo) if t.path not in {u.path for u in todo[:i]}]  # two keys, one file (SICK)
    for t in targets:
        if t not in todo:
            print(f"{t.key}: {t.path} already present, skipped", flush=True)
        elif (dest / t.path).exists():
            raise DownloadError(f"{dest / t.path} exists but is incomplete (not a BEIR dataset folder / empty); "
                                "move it away and run again")
    by_source: dict[str, list[Target]] = {}
    for t in todo:
        by_source.setdefault(t.source, []).append(t)
    for name, ts in by_source.items():
        src = sources[name]
        urls = ", ".join(mirrored(p.url, mirror) for p in src.parts)
        if dry_run:
            print(f"{name}: would fetch {urls} -> {', '.join(t.path for t in ts)}", flush=True)
            continue
        build(src, ts, dest, mirror=mirror, quiet=quiet, keep_archives=keep_archives)
    if not keep_archives:
        _prune(dest / DOWNLOADS, dest)
    if cfg.get("query_distill") and not only and not dry_run:
        for name, ref in load_reference(sources_path).items():
            fetch_reference(name, ref, dest, mirror=mirror, quiet=quiet)
    for _key, why in notes:
        print(f"not downloadable: {why}", file=sys.stderr, flush=True)
    if not todo and not notes:
        print(f"{dest}: everything profile {cfg.get('name')!r} needs is present", flush=True)
    return 1 if (strict and notes) else 0



