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

import os
import shutil
import sys
from pathlib import Path

from ce_utils.core.config import load_profile
from ce_utils.core.download.sources import Part, Source, Target, load_reference, load_sources, plan
from ce_utils.core.download.fetch import _prune, download_part, is_complete, mirrored, staged_dir, staged_file
from ce_utils.core.download.formats import beir_query_file, convert_npl, convert_sick, convert_stsb, unpack_beir_zip
from ce_utils.core.download.sources import DOWNLOADS, MIRROR_ENV, DownloadError








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


