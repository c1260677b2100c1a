"""Fetch of :mod:`ce_utils.core.download`."""

from __future__ import annotations


import contextlib
import hashlib
import http.client
import os
import re
import shutil
import socket
import tempfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Iterator
from urllib.parse import urlsplit

from tqdm import tqdm
from ce_utils.core.config import DATA_ENV
from ce_utils.core.download.sources import CHUNK, DOWNLOADS, DownloadError, OfflineError, TIMEOUT_S
from ce_utils.core.download.sources import Part, Source


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
