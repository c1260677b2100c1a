"""Formats of :mod:`ce_utils.core.download`."""

from __future__ import annotations


import gzip
import io
import json
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Iterator
from ce_utils.core.download.sources import DownloadError
from ce_utils.core.download.fetch import is_complete



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
