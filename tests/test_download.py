"""`make data` (ce_utils.core.download) against a tiny fixture mirror served from a local HTTP server:
download + checksum + unpack, corrupted files, resumed downloads, an unreachable host, skipping
what is present. Also the real data-sources file against the repository's profiles (no network)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from ce_utils.core import download
from ce_utils.core.config import load_profile
from ce_utils.core.data import load_beir_folder, load_query_file, read_sts_file
from ce_utils.cli import cmd_data

ROOT = Path(__file__).resolve().parent.parent
BEIR = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets"
NPL = "http://ir.dcs.gla.ac.uk/resources/test_collections/npl/npl.tar.gz"
STSB = "https://sbert.net/datasets/stsbenchmark.tsv.gz"
SICK = "http://alt.qcri.org/semeval2014/task1/data/uploads"


# --------------------------------------------------------------------------- fixture files
def beir_zip(name: str = "scifact") -> bytes:
    corpus = [{"_id": f"d{i}", "title": f"title {i}", "text": f"text of document {i} " * 20} for i in range(40)]
    queries = [{"_id": "q1", "text": "first test query", "metadata": {}},
               {"_id": "q2", "text": "train query", "metadata": {}},
               {"_id": "q3", "text": "second\ttest query", "metadata": {}},
               {"_id": "q4", "text": "unjudged query", "metadata": {}}]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{name}/corpus.jsonl", "".join(json.dumps(d) + "\n" for d in corpus))
        zf.writestr(f"{name}/queries.jsonl", "".join(json.dumps(q) + "\n" for q in queries))
        zf.writestr(f"{name}/qrels/test.tsv", "query-id\tcorpus-id\tscore\nq3\td2\t1\nq1\td0\t1\nq1\td1\t2\n")
        zf.writestr(f"{name}/qrels/train.tsv", "query-id\tcorpus-id\tscore\nq2\td3\t1\n")
    return buf.getvalue()


DOC_TEXT = """1
compact memories have flexible capacities  a digital data storage
system with capacity up to bits and random and or sequential access
is described
   /
2
an electronic analogue computer for solving systems of linear equations
   /
3
highspeed microwave switching of semiconductors part
   /
"""
QUERY_TEXT = """1
MEASUREMENT OF DIELECTRIC CONSTANT OF LIQUIDS BY THE USE OF MICROWAVE
TECHNIQUES
/
2
MATHEMATICAL ANALYSIS AND DESIGN DETAILS OF WAVEGUIDE FED MICROWAVE RADIATIONS
/
"""
RLV_ASS = """1
 1 3
   /
2
 2
   /
"""


def npl_tar(members: dict[str, str] | None = None) -> bytes:
    members = members if members is not None else {"doc-text": DOC_TEXT, "query-text": QUERY_TEXT,
                                                   "rlv-ass": RLV_ASS}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


STSB_ROWS = [
    ("train", "main-captions", "MSRvid", "2012test", "0001", "5.000",
     "A plane is taking off.", "An air plane is taking off."),
    ("dev", "main-captions", "MSRvid", "2012test", "0000", "5.000",
     "A man with a hard hat is dancing.", "A man wearing a hard hat is dancing."),
    ("test", "main-captions", "MSRvid", "2012test", "0024", "2.500",
     "A girl is styling her hair.", "A girl is brushing her hair."),
    ("test", "main-news", "headlines", "2013", "0045", "0.800", "It's \"quoted\".", "Another one."),
]


def stsb_gz() -> bytes:
    lines = ["split\tgenre\tdataset\tyear\tsid\tscore\tsentence1\tsentence2"] + ["\t".join(r) for r in STSB_ROWS]
    return gzip.compress(("\n".join(lines) + "\n").encode())


SICK_HEAD = "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment"


def sick_zip(member: str, rows: list[str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(member, "\r\n".join([SICK_HEAD] + rows) + "\r\n")
        zf.writestr("readme.txt", "SICK\n")
    return buf.getvalue()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# --------------------------------------------------------------------------- the mirror
class Mirror:
    """Serves ``files`` (URL path -> bytes); honours Range unless ``range_ok`` is False; logs requests."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.range_ok = True
        self.log: list[tuple[str, str | None, int]] = []
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                data = mirror.files.get(self.path)
                rng = self.headers.get("Range")
                if data is None:
                    mirror.log.append((self.path, rng, 404))
                    self.send_error(404)
                    return
                start = 0
                m = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if m and mirror.range_ok:
                    start = int(m.group(1))
                    if start >= len(data):
                        mirror.log.append((self.path, rng, 416))
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                mirror.log.append((self.path, rng, 206 if start else 200))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mirror():
    m = Mirror()
    m.files = {
        "/thakur/BEIR/datasets/scifact.zip": beir_zip("scifact"),
        "/resources/test_collections/npl/npl.tar.gz": npl_tar(),
        "/datasets/stsbenchmark.tsv.gz": stsb_gz(),
        "/semeval2014/task1/data/uploads/sick_train.zip": sick_zip("SICK_train.txt", ["1\tA b\tC d\t4.5\tNEUTRAL",
                                                                                      "2\tE f\tG h\t3.2\tNEUTRAL"]),
        "/semeval2014/task1/data/uploads/sick_trial.zip": sick_zip("SICK_trial.txt", ["4\tI j\tK l\t3.6\tNEUTRAL"]),
        "/semeval2014/task1/data/uploads/sick_test_annotated.zip": sick_zip("SICK_test_annotated.txt",
                                                                           ["6\tM n\tO p\t1\tCONTRADICTION"]),
    }
    yield m
    m.close()


def write_sources(path: Path, files: dict[str, bytes], scifact_md5: str | None = None) -> Path:
    sources = {
        "sources": {
            "scifact": {"url": f"{BEIR}/scifact.zip",
                        "md5": scifact_md5 or md5(files["/thakur/BEIR/datasets/scifact.zip"]),
                        "format": "beir-zip", "unpacks_to": "beir/scifact",
                        "query_files": {"test": "queries/beir-scifact.test.tsv"}},
            "vaswani": {"url": NPL, "md5": md5(files["/resources/test_collections/npl/npl.tar.gz"]),
                        "format": "npl-tar", "unpacks_to": "beir/vaswani"},
            "stsbenchmark": {"url": STSB, "sha256": None, "format": "stsb-tsv-gz",
                             "files": {"train": "sts/sts-train.csv", "dev": "sts/sts-dev.csv",
                                       "test": "sts/sts-test.csv"}},
            "sick": {"parts": [{"url": f"{SICK}/sick_train.zip", "sha256": None},
                               {"url": f"{SICK}/sick_trial.zip", "sha256": None},
                               {"url": f"{SICK}/sick_test_annotated.zip", "sha256": None}],
                     "format": "sick-semeval", "files": {"all": "sts/sick/SICK.txt"}},
            "preprocessed": {"url": None, "unpacks_to": "beir/preprocessed", "note": "copy it by hand"},
        },
    }
    path.write_text(yaml.safe_dump(sources))
    return path


def write_profile(path: Path, datasets=("scifact", "vaswani"), preprocessed: bool = False) -> Path:
    cfg = {"name": "tiny",
           "datasets": {d: {"path": f"beir/{d}", "split": "test"} for d in datasets},
           "query_files": {"beir-scifact": "queries/beir-scifact.test.tsv"},
           "sts": {"stsb-test": {"path": "sts/sts-test.csv", "format": "stsb"},
                   "stsb-train": {"path": "sts/sts-train.csv", "format": "stsb"},
                   "sick": {"path": "sts/sick/SICK.txt", "format": "sick"}}}
    if preprocessed:
        cfg["datasets"]["preprocessed"] = {"path": "beir/preprocessed"}
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def setup(tmp_path, mirror):
    sources = write_sources(tmp_path / "sources.yaml", mirror.files)
    profile = write_profile(tmp_path / "tiny.yaml")
    dest = tmp_path / "data"

    def cli(*extra: str, profile_path: Path = profile, sources_path: Path = sources, base: str | None = None) -> int:
        return cmd_data(["--profile", str(profile_path), "--sources", str(sources_path), "--dest", str(dest),
                              "--mirror", base or mirror.url, *extra])

    return dest, cli


def leftovers(dest: Path) -> list[str]:
    """Anything half-written: temporary folders/files, .part files, the downloads folder."""
    if not dest.exists():
        return []
    return sorted(str(p.relative_to(dest)) for p in dest.rglob("*")
                  if p.name.endswith((".partial", ".part")) or p.name == download.DOWNLOADS)


# --------------------------------------------------------------------------- (a) layout
def test_download_verifies_and_unpacks_into_the_data_layout(setup, mirror, capsys):
    dest, cli = setup
    assert cli() == 0
    out = capsys.readouterr().out
    assert "md5 verified" in out and "no checksum is published" in out

    ds = load_beir_folder(dest / "beir" / "scifact", split="test")
    assert len(ds.corpus) == 40 and set(ds.queries) == {"q1", "q3"}
    assert (dest / "beir" / "scifact" / "qrels" / "train.tsv").is_file()
    assert (dest / "queries" / "beir-scifact.test.tsv").read_text() == "q1\tfirst test query\nq3\tsecond test query\n"
    assert load_query_file(dest / "queries" / "beir-scifact.test.tsv") == {"q1": "first test query",
                                                                           "q3": "second test query"}

    vas = dest / "beir" / "vaswani"
    assert [json.loads(line) for line in (vas / "corpus.jsonl").read_text().splitlines()] == [
        {"_id": "1", "title": "", "text": "compact memories have flexible capacities a digital data storage system "
                                          "with capacity up to bits and random and or sequential access is described"},
        {"_id": "2", "title": "", "text": "an electronic analogue computer for solving systems of linear equations"},
        {"_id": "3", "title": "", "text": "highspeed microwave switching of semiconductors part"}]
    assert [json.loads(line) for line in (vas / "queries.jsonl").read_text().splitlines()] == [
        {"_id": "1", "text": "measurement of dielectric constant of liquids by the use of microwave techniques"},
        {"_id": "2", "text": "mathematical analysis and design details of waveguide fed microwave radiations"}]
    assert (vas / "qrels" / "test.tsv").read_text() == "query-id\tcorpus-id\tscore\n1\t1\t1\n1\t3\t1\n2\t2\t1\n"
    assert load_beir_folder(vas).qrels == {"1": {"1": 1, "3": 1}, "2": {"2": 1}}

    # STS-B: the original 7 columns (no split column, no header), one file per split the profile names
    test_lines = (dest / "sts" / "sts-test.csv").read_text().splitlines()
    assert test_lines == ["\t".join(r[1:]) for r in STSB_ROWS if r[0] == "test"]
    assert read_sts_file(dest / "sts" / "sts-test.csv") == [
        ("A girl is styling her hair.", "A girl is brushing her hair.", 2.5), ("It's \"quoted\".", "Another one.", 0.8)]
    assert read_sts_file(dest / "sts" / "sts-train.csv") == [
        ("A plane is taking off.", "An air plane is taking off.", 5.0)]
    assert not (dest / "sts" / "sts-dev.csv").exists()          # not named by the profile

    sick = (dest / "sts" / "sick" / "SICK.txt").read_text()
    assert sick.splitlines()[0] == SICK_HEAD and "\r" not in sick
    assert [p[2] for p in read_sts_file(dest / "sts" / "sick" / "SICK.txt", "sick")] == [4.5, 3.2, 3.6, 1.0]

    assert leftovers(dest) == []                                  # archives removed once unpacked
    assert sorted(p.name for p in dest.iterdir()) == ["beir", "queries", "sts"]


def test_no_official_download_is_reported_with_ce_data_dir(tmp_path, mirror, capsys):
    sources = write_sources(tmp_path / "sources.yaml", mirror.files)
    profile = write_profile(tmp_path / "tiny.yaml", datasets=(), preprocessed=True)
    args = ["--profile", str(profile), "--sources", str(sources), "--dest", str(tmp_path / "data"),
            "--mirror", mirror.url, "--only", "preprocessed"]
    assert cmd_data(args) == 0
    assert "preprocessed (beir/preprocessed): copy it by hand" in capsys.readouterr().err
    assert cmd_data(args + ["--strict"]) == 1
    assert mirror.log == []
    assert cmd_data(args[:-1] + ["no-such-thing"]) == 2     # --only must name something the profile needs


# --------------------------------------------------------------------------- (b) corrupted
def test_corrupted_download_is_rejected_and_nothing_half_written_remains(setup, mirror, capsys):
    dest, cli = setup
    good = mirror.files["/thakur/BEIR/datasets/scifact.zip"]
    mirror.files["/thakur/BEIR/datasets/scifact.zip"] = good[:-100] + bytes(100)   # corrupted in transit
    assert cli("--only", "scifact") == 1
    err = capsys.readouterr().err
    assert "scifact.zip is corrupted" in err and md5(good) in err
    assert not dest.exists() or list(dest.rglob("*")) == []        # no target folder, no .part, no temp


def test_bad_archive_without_checksum_leaves_no_target(setup, mirror, capsys):
    dest, cli = setup
    (dest / "beir").mkdir(parents=True)
    (dest / "beir" / "other").mkdir()                               # something of the user's, kept
    mirror.files["/resources/test_collections/npl/npl.tar.gz"] = npl_tar({"doc-text": DOC_TEXT})
    sources = write_sources(dest.parent / "nochecksum.yaml", mirror.files)
    raw = yaml.safe_load(sources.read_text())
    raw["sources"]["vaswani"]["md5"] = None
    sources.write_text(yaml.safe_dump(raw))
    assert cli("--only", "vaswani", sources_path=sources) == 1
    assert "holds no query-text, rlv-ass" in capsys.readouterr().err
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*")) == ["beir", "beir/other"]


# --------------------------------------------------------------------------- (c) resume
@pytest.mark.parametrize("range_ok", [True, False])
def test_partial_download_is_resumed(setup, mirror, capsys, range_ok):
    dest, cli = setup
    mirror.range_ok = range_ok
    data = mirror.files["/thakur/BEIR/datasets/scifact.zip"]
    part = dest / download.DOWNLOADS / "scifact" / "scifact.zip.part"
    part.parent.mkdir(parents=True)
    half = len(data) // 2
    part.write_bytes(data[:half])
    assert cli("--only", "scifact", "--keep-archives") == 0
    assert mirror.log == [("/thakur/BEIR/datasets/scifact.zip", f"bytes={half}-", 206 if range_ok else 200)]
    kept = dest / download.DOWNLOADS / "scifact" / "scifact.zip"
    assert kept.read_bytes() == data and not part.exists()
    assert ("resuming at" in capsys.readouterr().out) == range_ok
    assert load_beir_folder(dest / "beir" / "scifact").queries.keys() == {"q1", "q3"}


# --------------------------------------------------------------------------- (d) offline
def closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


def test_unreachable_host_names_ce_data_dir_and_exits_2(setup, capsys):
    dest, cli = setup
    base = closed_port_url()
    assert cli("--only", "scifact", base=base) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"cannot reach {base[len('http://'):]}") and "CE_DATA_DIR" in err
    assert not dest.exists() or list(dest.rglob("*")) == []


def test_cli_exit_code_when_offline(tmp_path, mirror):
    sources = write_sources(tmp_path / "sources.yaml", mirror.files)
    profile = write_profile(tmp_path / "tiny.yaml")
    proc = subprocess.run([sys.executable, "-m", "ce_utils", "data", "--profile", str(profile), "--sources",
                           str(sources), "--dest", str(tmp_path / "data"), "--only", "vaswani"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CE_DATA_MIRROR": closed_port_url()})
    assert proc.returncode == 2, proc.stderr
    assert "cannot reach" in proc.stderr and "CE_DATA_DIR" in proc.stderr


# --------------------------------------------------------------------------- (e) present
def test_present_targets_are_skipped(setup, mirror, capsys):
    dest, cli = setup
    assert cli() == 0
    mirror.log.clear()
    assert cli() == 0
    out = capsys.readouterr().out
    assert mirror.log == []
    assert "scifact: beir/scifact already present, skipped" in out and "everything profile 'tiny' needs" in out


def test_existing_dataset_folder_is_not_downloaded_again(setup, mirror, capsys):
    dest, cli = setup
    folder = dest / "beir" / "scifact"
    (folder / "qrels").mkdir(parents=True)
    for f in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        (folder / f).write_text("x\n")
    assert cli("--only", "scifact") == 0                  # the query file still comes from the zip
    assert [p for p, _, _ in mirror.log] == ["/thakur/BEIR/datasets/scifact.zip"]
    assert (folder / "corpus.jsonl").read_text() == "x\n"
    assert (dest / "queries" / "beir-scifact.test.tsv").is_file()
    (dest / "beir" / "vaswani").mkdir()                    # incomplete: refused, not overwritten
    assert cli("--only", "vaswani") == 1
    assert "exists but is incomplete" in capsys.readouterr().err


# --------------------------------------------------------------------------- the real sources file
def test_sources_file_covers_the_profiles():
    sources = download.load_sources(ROOT / "configs" / "data_sources.yaml")
    for name in ("trec-covid", "nfcorpus", "nq", "hotpotqa", "fiqa", "arguana", "webis-touche2020", "cqadupstack",
                 "quora", "dbpedia-entity", "scidocs", "fever", "climate-fever", "scifact", "msmarco"):
        (part,) = sources[name].parts
        assert part.url == f"{BEIR}/{name}.zip" and part.algo == "md5" and len(part.digest) == 32, name
        assert sources[name].unpacks_to == f"beir/{name}"
    assert sources["scifact"].parts[0].digest == "5f7d1de60b170fc8027bb7898e2efca1"
    assert sources["vaswani"].parts[0].url == NPL
    assert sources["stsbenchmark"].parts[0].url == STSB
    assert not re.search(r"(/home/|/work/|/tmp/|/Users/)", (ROOT / "configs" / "data_sources.yaml").read_text())

    targets, notes = download.plan(load_profile("default"), sources)
    assert [k for k, _ in notes] == ["nfcorpus-preprocessed"] and "CE_DATA_DIR" in notes[0][1]
    cfg = load_profile("default")
    assert len(targets) == len(cfg["datasets"]) - 1 + len(cfg["query_files"]) + len(cfg["sts"])
    by_path = {t.path: t for t in targets}
    assert by_path["queries/msmarco-passage.dev-subset.tsv"].source == "msmarco"
    assert by_path["queries/msmarco-passage.dev-subset.tsv"].arg == "dev"
    assert by_path["queries/dl19-passage.tsv"].arg == "test"
    assert by_path["sts/sick/SICK.txt"].source == "sick"

    targets, notes = download.plan(load_profile("paper"), sources)
    assert notes == [] and {t.source for t in targets} >= {"scifact", "nfcorpus", "fiqa", "msmarco", "stsbenchmark"}


def test_mirror_replaces_scheme_and_host():
    assert download.mirrored(f"{BEIR}/scifact.zip", "http://127.0.0.1:8000/m/") == \
        "http://127.0.0.1:8000/m/thakur/BEIR/datasets/scifact.zip"
    assert download.mirrored(NPL, None) == NPL


# --------------------------------------------------------------------------- paper 2's published tables
REF = "https://raw.githubusercontent.com/owner/repo/main/data/evaluations"


def test_published_tables_are_fetched_verified_and_optional(tmp_path, mirror, capsys):
    """A profile with query_distill also gets paper 2's tables (data/reference/...), sha256-checked;
    a changed or corrupted table is not kept and only warned about: the transcribed numbers suffice."""
    tables = {"eval_results_extract.csv": b"query_encoder,dataset_name,NDCG@10\nt,scifact,0.5\n",
              "inference_speed.csv": b"encoder,batch_size,speed\nt,4,430.0\n"}
    for name, data in tables.items():
        mirror.files[f"/owner/repo/main/data/evaluations/{name}"] = data
    sources = write_sources(tmp_path / "sources.yaml", mirror.files)
    raw = yaml.safe_load(sources.read_text())
    raw["reference"] = {"query-encoder-distillation": {
        "base_url": REF, "unpacks_to": "reference/query-encoder-distillation",
        "files": {n: hashlib.sha256(d).hexdigest() for n, d in tables.items()}, "note": "transcribed numbers"}}
    sources.write_text(yaml.safe_dump(raw))
    profile = write_profile(tmp_path / "tiny.yaml", datasets=("scifact",))
    cfg = yaml.safe_load(profile.read_text())
    cfg["query_distill"] = {"datasets": ["scifact"]}
    profile.write_text(yaml.safe_dump(cfg))
    dest = tmp_path / "data"
    args = ["--profile", str(profile), "--sources", str(sources), "--dest", str(dest), "--mirror", mirror.url]

    assert cmd_data(args) == 0
    got = dest / "reference" / "query-encoder-distillation"
    assert {p.name: p.read_bytes() for p in got.iterdir()} == tables
    assert "sha256 verified" in capsys.readouterr().out and leftovers(dest) == []

    shutil.rmtree(got)
    mirror.files["/owner/repo/main/data/evaluations/inference_speed.csv"] = b"changed upstream\n"
    assert cmd_data(args) == 0                       # optional: a warning, not a failure
    err = capsys.readouterr().err
    assert "published tables query-encoder-distillation not fetched" in err and "corrupted" in err
    assert not got.exists() and leftovers(dest) == [] and not (dest / "reference").exists()
