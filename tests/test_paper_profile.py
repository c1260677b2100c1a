"""The paper profile (configs/paper.yaml) on every test run, offline.

Tiny, randomly initialised stand-ins of the papers' models are saved into a temporary Hugging Face
hub cache under the papers' hub ids, and tiny BEIR zips are served by a local HTTP mirror at BEIR's
own URL paths ($CE_DATA_MIRROR). Every notebook then runs with configs/paper.yaml itself, loaded and
cut to smoke sizes only (fewer steps, datasets, layer subsets): its hub ids, dataset specs,
``allow_download`` and training settings are the ones exercised.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import subprocess
import sys
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
import pytest
import yaml

from conftest import TOPICS, _sentence, _words, build_tiny_bert, write_beir, write_sick

ROOT = Path(__file__).resolve().parent.parent
PAPER = ROOT / "configs" / "paper.yaml"

# Paper 2's published table (eval_results_extract.csv, dataset_name): 15 sets
PAPER2_TABLE = {"msmarco", "trec-covid", "nfcorpus", "nq", "hotpotqa", "fiqa", "arguana", "webis-touche2020",
                "cqadupstack", "quora", "dbpedia-entity", "scidocs", "fever", "climate-fever", "scifact"}
PAPER_MODELS = {"de": "sentence-transformers/msmarco-MiniLM-L6-cos-v5",
                "ce": "cross-encoder/ms-marco-MiniLM-L-6-v2",
                "teacher": "sentence-transformers/msmarco-bert-base-dot-v5"}
MSMARCO_TRAIN_QUERIES = 502_939

# Smoke sizes: each entry replaces one key of configs/paper.yaml (dotted). Lists of datasets,
# strategies and layer subsets are cut to members of the profile's own lists (checked below).
SMOKE = {
    "eval.rerank_depth": 5,
    "encode.max_length": 32,
    "encode.batch_size": 16,
    "probing.datasets": ["scifact", "nfcorpus"],
    "probing.max_length": 16,
    "probing.sts_max_pairs": 12,
    "probing.control_texts": 16,
    "probing.rerank_max_queries": 6,
    "de2ce.ks": [1],
    "de2ce.controls": ["random"],
    "de2ce.datasets": ["scifact"],
    "de2ce.pipeline_datasets": ["scifact"],
    "de2ce.pipeline_students": ["DE-2 CE"],
    "de2ce.pipeline_max_queries": 6,
    "de2ce.train.n_queries": 24,
    "de2ce.train.n_passages": 8,
    "de2ce.train.n_sentences": 6,
    "de2ce.train.max_length": 32,
    "de2ce.train.max_steps": 2,
    "de2ce.train.batch_size": 8,
    "de2ce.train.logging_steps": 1,
    "de2ce.mnrl.max_pairs": 8,
    "de2ce.mnrl.train": {"max_steps": 1},
    "query_distill.strategies": ["subset:0,11", "subset:1,4,7,10"],
    "query_distill.datasets": ["scifact", "msmarco"],     # msmarco: BEIR's dev split
    "query_distill.max_train_queries": 32,
    "query_distill.batch_size": 8,
    "query_distill.max_steps": 2,
    "query_distill.logging_steps": 1,
    "speed.n_queries": 8,
    "speed.batch_sizes": [1, 4],
    "speed.threads": [1],
    "speed.tokenization": ["included"],
    "speed.rounds": 1,
    "speed.warmup": 1,
    "speed.de_k_ce": [1],
    "speed.query_students": [[0, 5]],
    "speed.ce_modes": ["pair"],
    "speed.gpu": False,
    "speed.gpu_dtypes": ["fp32"],
    "speed.backends": ["torch"],
}
SUBSET_OF = {  # smoke key -> the profile key whose list it must be cut from
    "probing.datasets": "probing.datasets", "de2ce.ks": "de2ce.ks", "de2ce.controls": "de2ce.controls",
    "de2ce.datasets": "de2ce.datasets", "de2ce.pipeline_datasets": "de2ce.pipeline_datasets",
    "de2ce.pipeline_students": "de2ce.pipeline_students", "query_distill.strategies": "query_distill.strategies",
    "query_distill.datasets": "query_distill.datasets", "speed.batch_sizes": "speed.batch_sizes",
    "speed.de_k_ce": "speed.de_k_ce", "speed.query_students": "speed.query_students",
    "speed.ce_modes": "speed.ce_modes", "speed.tokenization": "speed.tokenization",
    "speed.backends": "speed.backends", "speed.gpu_dtypes": "speed.gpu_dtypes",
}


def paper_yaml() -> dict:
    return yaml.safe_load(PAPER.read_text())


# --------------------------------------------------------------------------- the profile follows the papers
CQADUPSTACK_FORUMS = ["android", "english", "gaming", "gis", "mathematica", "physics", "programmers", "stats", "tex",
                      "unix", "webmasters", "wordpress"]


def test_paper_profile_follows_both_papers(monkeypatch):
    from ce_utils.core.config import get_dotted, load_profile
    from ce_utils.report.reference import PAPER_RETENTION
    from ce_utils.core.students import parse_strategies

    monkeypatch.delenv("CE_REFERENCE_DIR", raising=False)
    cfg = load_profile("paper")
    assert cfg["name"] == "paper" and cfg["allow_download"] is True
    assert cfg["models"]["de"] == PAPER_MODELS["de"] and cfg["models"]["ce"] == PAPER_MODELS["ce"]
    assert cfg["query_distill"]["teacher"] == PAPER_MODELS["teacher"] == cfg["models"]["teacher"]

    # paper 2's evaluation sets: every set of its table; cqadupstack as the group of its 12 sub-forums
    qd = cfg["query_distill"]
    assert set(qd["datasets"]) == PAPER2_TABLE
    assert qd["paper_datasets"] == {d: d for d in qd["datasets"]}
    for name in qd["datasets"]:
        spec = cfg["datasets"][name]
        split = "dev" if name == "msmarco" else "test"
        members = {"members": CQADUPSTACK_FORUMS} if name == "cqadupstack" else {}
        assert spec == {"path": f"beir/{name}", "split": split, "beir_name": name, **members}, name
    # the 13 published layer subsets of the 12-layer teacher
    layers = {s.layers_str for s in parse_strategies(qd["strategies"], 12)}
    assert layers == set(PAPER_RETENTION) and len(qd["strategies"]) == 13
    # trained on every MS MARCO training query: batch 128, one epoch, lr 1e-4, 1,000 warm-up steps
    assert qd["query_files"] == ["msmarco-train"] and qd["max_train_queries"] is None
    assert cfg["query_files"]["msmarco-train"] == "queries/msmarco-passage.train.tsv"
    assert (qd["batch_size"], qd["epochs"], qd["max_steps"], qd["learning_rate"]) == (128, 1, None, 1e-4)
    assert qd["warmup_steps"] == 1000 and qd["mixed_precision"] == "fp16"
    from ce_utils.core.train import trainer_kwargs

    gpu = trainer_kwargs(qd, "out", 0, "cuda:0", batch_size=1, learning_rate=1.0)
    cpu = trainer_kwargs(qd, "out", 0, "cpu", batch_size=1, learning_rate=1.0)
    assert gpu["warmup_steps"] == 1000 and gpu.get("fp16") is True and not gpu["use_cpu"]
    assert "fp16" not in cpu and cpu["use_cpu"]            # mixed precision on a GPU only
    assert math.ceil(MSMARCO_TRAIN_QUERIES / qd["batch_size"]) == 3930   # one epoch, as the profile says
    assert not set(qd["exclude_queries"] or {}) - set(qd["datasets"])

    # every key of the default profile's sections (what the code reads), but those the paper has no use for
    default = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    not_needed = {"models.de_control", "models.onnx_l3"}   # no same-data DE control, no onnx-l3 strategy
    for key, value in _leaves(default):
        if key in not_needed or key.startswith(("ce_training.", "probing.models.", "budgets.students.", "budgets.dev.")):
            continue                      # paper: the hub CE unchanged; models = {ce, de}; its own students and dev sets
        assert _has(cfg, key), f"configs/paper.yaml lacks {key} (configs/default.yaml has it)"
    assert cfg["ce_training"] is None and get_dotted(cfg, "probing.models") is None

    # the smoke sizes below only cut the profile's own lists
    for smoke_key, key in SUBSET_OF.items():
        have = get_dotted(cfg, key)
        assert all(x in have for x in SMOKE[smoke_key]), f"{smoke_key}: {SMOKE[smoke_key]} not in the profile's {have}"


def test_paper_datasets_match_the_published_table():
    """Against the released CSV itself, where CE_REFERENCE_DIR (or ../shared/reference) provides it."""
    import os

    candidates = [os.environ.get("CE_REFERENCE_DIR"), str(ROOT.parent / "shared" / "reference")]
    table = next((Path(c) / "query-encoder-distillation" / "eval_results_extract.csv" for c in candidates
                  if c and (Path(c) / "query-encoder-distillation" / "eval_results_extract.csv").is_file()), None)
    if table is None:
        pytest.skip("no published table (CE_REFERENCE_DIR)")
    published = set(pd.read_csv(table)["dataset_name"])
    assert published == PAPER2_TABLE
    qd = paper_yaml()["query_distill"]
    assert set(qd["paper_datasets"].values()) == published


def _leaves(d: dict, prefix: str = ""):
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k not in ("datasets", "sts", "query_files", "paper_datasets", "exclude_queries",
                                             "sizes") and v:
            yield from _leaves(v, key + ".")
        else:
            yield key, v


def _has(cfg: dict, key: str) -> bool:
    node = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


# --------------------------------------------------------------------------- stand-ins and data
def hub_cache_put(cache: Path, repo_id: str, folder: Path) -> Path:
    """``folder`` as the hub cache's copy of ``repo_id``: models--org--name/refs/main holds a commit hash,
    snapshots/<hash>/ the files."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return repo / "snapshots" / commit


def build_tiny_cross_encoder(folder: Path, num_layers: int = 6, hidden: int = 32, seed: int = 1) -> Path:
    """A randomly initialised BERT with a one-logit sequence-classification head and the tiny word-level
    vocabulary of ``build_tiny_bert`` (the same architecture as the DE stand-in, as the papers' CE and DE)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    torch.manual_seed(seed)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + _words()
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True, model_max_length=128)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=num_layers,
                        num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=128,
                        num_labels=1)
    BertForSequenceClassification(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def beir_zip(path: Path, name: str, split: str, rng: random.Random, members: tuple = ()) -> None:
    """A tiny BEIR dataset zipped as BEIR ships it: ``<name>/corpus.jsonl``, ``queries.jsonl``,
    ``qrels/<split>.tsv`` (and ``qrels/train.tsv``); a group (CQADupStack) as ``<name>/<member>/...``."""
    src = path.parent / f".{name}-src" / name
    for m in members or [""]:
        write_beir(src / m if m else src, rng, n_docs=30, n_queries=8, splits=tuple(dict.fromkeys((split, "train"))))
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for f in sorted(src.rglob("*")):
            if f.is_file():
                zf.write(f, f"{name}/{f.relative_to(src).as_posix()}")
    shutil.rmtree(src.parent)


def write_query_file(path: Path, rng: random.Random, n: int = 40) -> None:
    topics = list(TOPICS)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\t{_sentence(rng, topics[i % len(topics)], 6)}\n" for i in range(n)))


def write_stsb(path: Path, rng: random.Random, n: int = 20) -> None:
    topics = list(TOPICS)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        t1, t2 = topics[i % 5], topics[(i * 3) % 5]
        score = 5.0 if t1 == t2 else 1.0 + (i % 3)
        lines.append(f"main\tMSRvid\t2012test\t{i:04d}\t{score:.3f}\t{_sentence(rng, t1, 6)}\t{_sentence(rng, t2, 6)}\n")
    path.write_text("".join(lines))


class _Mirror(SimpleHTTPRequestHandler):
    requested: list = []

    def log_message(self, fmt, *args):  # quiet; remember what was fetched
        self.requested.append(self.path)


@pytest.fixture(scope="module")
def paper_assets(tmp_path_factory):
    """Hub cache with the stand-ins, a data directory holding the profile's query files and STS set (no
    BEIR set: those are downloaded), and a mirror folder with a tiny zip per BEIR set of the profile."""
    from ce_utils.core.data import BEIR_URL

    cfg = paper_yaml()
    base = tmp_path_factory.mktemp("paper")
    build = base / "build"
    hub = base / "hub"
    models = cfg["models"]
    teacher = (cfg.get("query_distill") or {}).get("teacher") or models["de"]
    build_tiny_bert(build / "de", num_layers=6, seed=0)              # sentence-transformers folder, mean pooling
    build_tiny_bert(build / "teacher", num_layers=12, seed=2)        # 12 layers: the 13 subsets are valid
    build_tiny_cross_encoder(build / "ce", num_layers=6, seed=1)
    snapshots = {spec: hub_cache_put(hub, spec, build / key)
                 for key, spec in (("de", models["de"]), ("ce", models["ce"]), ("teacher", teacher))}

    rng = random.Random(7)
    data = base / "data"
    for rel in (cfg.get("query_files") or {}).values():
        write_query_file(data / rel, rng)
    for spec in (cfg.get("sts") or {}).values():
        if spec.get("format") == "sick":
            write_sick(data / spec["path"], rng)
        else:
            write_stsb(data / spec["path"], rng)
    mirror = base / "mirror"
    for spec in cfg["datasets"].values():
        if spec.get("beir_name"):
            url_path = urlsplit(BEIR_URL.format(name=spec["beir_name"])).path.lstrip("/")
            beir_zip(mirror / url_path, spec["beir_name"], spec.get("split", "test"), rng, tuple(spec.get("members") or ()))
    return {"base": base, "hub": hub, "data": data, "mirror": mirror, "snapshots": snapshots}


@pytest.fixture(scope="module")
def mirror_url(paper_assets):
    handler = partial(_Mirror, directory=str(paper_assets["mirror"]))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def paper_env(monkeypatch, paper_assets, mirror_url, tmp_path):
    """The environment the test and the notebook kernels (which inherit it) run in: the temporary hub cache,
    offline; the data directory; BEIR downloads from the local mirror."""
    data = tmp_path / "data"
    shutil.copytree(paper_assets["data"], data)
    env = {"HF_HUB_CACHE": str(paper_assets["hub"]), "HF_HOME": str(paper_assets["base"] / "hf-home"),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "CE_DATA_DIR": str(data),
           "CE_DATA_MIRROR": mirror_url, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("CE_REFERENCE_DIR", raising=False)
    _Mirror.requested.clear()
    return {**paper_assets, "data": data}


def test_hub_ids_resolve_to_the_stand_ins(paper_env):
    """As a notebook kernel would: a fresh interpreter with the environment above."""
    import os

    code = ("import json, sys; from ce_utils.core.models import resolve_model; "
            "print(json.dumps({s: resolve_model(s) for s in sys.argv[1:]}))")
    specs = list(paper_env["snapshots"])
    out = subprocess.run([sys.executable, "-c", code, *specs], capture_output=True, text=True, env=dict(os.environ),
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert {s: Path(p).resolve() for s, p in got.items()} == {s: p.resolve() for s, p in paper_env["snapshots"].items()}


def test_every_paper_dataset_downloads_from_the_mirror(paper_env):
    """Each BEIR set of the profile is fetched on first use (allow_download) from $CE_DATA_MIRROR, at
    BEIR's URL path, and loads with its split (msmarco: dev)."""
    from ce_utils.core.config import load_profile
    from ce_utils.core.data import load_beir_dataset

    cfg = load_profile("paper")
    for name, spec in cfg["datasets"].items():
        for member in spec.get("members") or [None]:   # cqadupstack: each of its forums, from one zip
            ds = load_beir_dataset(cfg, name, member=member)
            assert ds.split == spec["split"] and len(ds.queries) == 8 and len(ds.corpus) == 30, name
            assert (paper_env["data"] / spec["path"] / (member or "") / "corpus.jsonl").is_file()
    assert len(cfg["datasets"]["cqadupstack"]["members"]) == 12
    fetched = {Path(p).name for p in _Mirror.requested}
    assert fetched == {f"{spec['beir_name']}.zip" for spec in cfg["datasets"].values()}


# --------------------------------------------------------------------------- every notebook
def paper_smoke_profile(out: Path) -> Path:
    """configs/paper.yaml with smoke sizes and temporary output folders; everything else as the profile has it."""
    from ce_utils.core.config import set_dotted

    cfg = paper_yaml()
    cfg.update(results_dir=str(out / "results"), models_dir=str(out / "models"), cache_dir=str(out / "cache"))
    for key, value in SMOKE.items():
        set_dotted(cfg, key, value)
    path = out / "paper-smoke.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.mark.slow
def test_paper_profile_runs_every_notebook(paper_env, tmp_path):
    from ce_utils import report as F
    from ce_utils.runner import notebook_paths, run_notebook

    profile = paper_smoke_profile(tmp_path)
    cfg = yaml.safe_load(profile.read_text())
    de, ce, teacher = cfg["models"]["de"], cfg["models"]["ce"], cfg["query_distill"]["teacher"]
    res = Path(cfg["results_dir"])
    params = {"01": {"allow_broken_ce": True}, "02": {"allow_broken_ce": True},  # random stand-ins: no working CE
              "05": {"figures_dir": str(tmp_path / "figures")}}
    books = notebook_paths()
    assert [b.name[:2] for b in books] == ["01", "02", "03", "04", "05"]
    for book in books:
        run_notebook(book, tmp_path / "executed" / book.name, {"profile": str(profile), **params.get(book.name[:2], {})},
                     progress=False)
    from ce_utils.runner import noise

    frames = {b.name: noise(tmp_path / "executed" / b.name) for b in books}
    assert not any(frames.values()), frames  # no traceback, no progress-bar frames in an executed notebook

    # 01: per-layer probing of the hub CE and DE; the CE's own check
    probe = pd.read_csv(res / "layer_probe.csv")
    ret = probe[probe["section"] == "retrieval"]
    assert set(ret["model"]) == {de, ce} and set(ret["dataset"]) == {"scifact", "nfcorpus"}
    assert set(ret["layer"]) == set(range(7))
    assert set(pd.read_csv(res / "ce_quality.csv")["model"]) == {de, ce}
    # 02: DE-k CE students of the hub pair, and the hub CE re-ranking
    q = pd.read_csv(res / "de2ce.csv")
    students = {"DE-2 CE", "DE-2 random", "DE-2 CE (MNRL)"}
    assert students | {"DE-6 full"} | {f"{s} (queries only)" for s in students} == set(q["model"])
    assert set(q.loc[q["model"] == "DE-6 full", "model_id"]) == {de}
    p = pd.read_csv(res / "pipeline.csv")
    assert set(p["reranker_model"]) == {ce} and set(p["depth"]) == {0, 5}
    assert any(str(m).startswith(f"{de} >> {ce}@") for m in p["model_id"])
    # 03: the 12-layer hub teacher's layer-subset students, on BEIR test sets and MS MARCO dev
    d = pd.read_csv(res / "query_distill.csv")
    assert set(d["teacher"]) == {teacher} and set(d.loc[d["student"] == "teacher", "model_id"]) == {teacher}
    assert set(d["student"]) == {"teacher", "L0_11", "L1_4_7_10"}
    assert set(d.loc[d["student"] == "teacher", "n_layers"]) == {12}
    assert {"scifact", "msmarco"} <= set(d["dataset"])
    assert (d.loc[d["student"] != "teacher", "train_steps"] == 2).all()
    # 04: the hub DE, its DE-2 CE and query student, the hub CE on pairs
    s = pd.read_csv(res / "speed.csv")
    assert {de, f"{ce} (pair)"} <= set(s["model_id"])
    assert set(s["role"]) == {"de", "de-k-ce", "query-student", "ce", "overhead"}
    # 05: figures and tables from those CSVs
    assert {p.stem for p in (tmp_path / "figures").glob("*.png")} >= {"layer_probe", "de2ce", "query_distill"}
    assert F.check_manifest(res) == []
    # the BEIR sets came from the mirror (allow_download), into the data directory
    fetched = {Path(p).name for p in _Mirror.requested}
    assert {"scifact.zip", "nfcorpus.zip", "msmarco.zip"} <= fetched
    assert (paper_env["data"] / "beir" / "msmarco" / "qrels" / "dev.tsv").is_file()
