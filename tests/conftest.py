"""Fixtures the tests build themselves: a tiny BEIR-style data directory, a tiny randomly
initialised 6-layer BERT (as a SentenceTransformer folder), and a smoke-size profile.

The smoke profile is the base written here, merged with every ``tests/smoke/*.yaml``
(one file per notebook section), so each notebook keeps its smoke sizes beside its tests.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

TOPICS = {
    "cell": "cell protein gene expression mutation tumour growth signal",
    "heart": "heart blood pressure artery cardiac risk stroke vessel",
    "brain": "brain neuron memory cortex signal learning sleep",
    "wave": "wave microwave antenna frequency radio signal guide",
    "diet": "diet food sugar fat weight obesity vitamin",
}
FILLER = "the of a in study results show effect patients data method analysis".split()


def _words() -> list[str]:
    words = set(FILLER)
    for t in TOPICS.values():
        words.update(t.split())
    return sorted(words)


def _sentence(rng: random.Random, topic: str, n: int) -> str:
    vocab = TOPICS[topic].split()
    return " ".join(rng.choice(vocab) if rng.random() < 0.6 else rng.choice(FILLER) for _ in range(n))


def write_beir(folder: Path, rng: random.Random, n_docs: int = 40, n_queries: int = 10,
               splits=("test", "train")) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "qrels").mkdir(exist_ok=True)
    topics = list(TOPICS)
    docs = []
    for i in range(n_docs):
        t = topics[i % len(topics)]
        docs.append({"_id": f"d{i}", "title": _sentence(rng, t, 3), "text": _sentence(rng, t, 20), "topic": t})
    with open(folder / "corpus.jsonl", "w") as fh:
        for d in docs:
            fh.write(json.dumps({k: d[k] for k in ("_id", "title", "text")}) + "\n")
    queries = []
    for split in splits:
        for j in range(n_queries):
            t = topics[j % len(topics)]
            queries.append({"_id": f"{split}-q{j}", "text": _sentence(rng, t, 5), "topic": t, "split": split})
    with open(folder / "queries.jsonl", "w") as fh:
        for q in queries:
            fh.write(json.dumps({"_id": q["_id"], "text": q["text"]}) + "\n")
    for split in splits:
        with open(folder / "qrels" / f"{split}.tsv", "w") as fh:
            fh.write("query-id\tcorpus-id\tscore\n")
            for q in queries:
                if q["split"] != split:
                    continue
                rel = [d for d in docs if d["topic"] == q["topic"]]
                for d in rng.sample(rel, 2):
                    fh.write(f"{q['_id']}\t{d['_id']}\t1\n")


def write_data_dir(root: Path, seed: int = 0) -> Path:
    rng = random.Random(seed)
    write_beir(root / "beir" / "tiny-a", rng)
    write_beir(root / "beir" / "tiny-b", rng, n_docs=30, n_queries=8, splits=("test",))
    (root / "queries").mkdir(parents=True, exist_ok=True)
    topics = list(TOPICS)
    for name, n in (("unlabelled-1", 40), ("unlabelled-2", 24)):
        with open(root / "queries" / f"{name}.tsv", "w") as fh:
            for i in range(n):
                fh.write(f"{i}\t{_sentence(rng, topics[i % len(topics)], 6)}\n")
    (root / "sts").mkdir(exist_ok=True)
    for split in ("test", "train"):
        with open(root / "sts" / f"sts-{split}.csv", "w") as fh:
            for i in range(20):
                t1, t2 = topics[i % 5], topics[(i * 3) % 5]
                score = 5.0 if t1 == t2 else 1.0 + (i % 3)
                fh.write(f"main\tMSRvid\t2012{split}\t{i:04d}\t{score:.3f}\t{_sentence(rng, t1, 6)}\t"
                         f"{_sentence(rng, t2, 6)}\n")
    write_sick(root / "sts" / "sick" / "SICK.txt", rng)
    return root


def write_sick(path: Path, rng: random.Random) -> Path:
    """A SICK file laid out as SemEval-2014 released it: train (4,500), trial (500) and test (4,927) pairs
    concatenated, each part by increasing pair_ID; sentence_A holds the split's name, for the tests."""
    from ce_utils.core.data import SICK_SPLITS

    ids = rng.sample(range(1, 10001), sum(SICK_SPLITS.values()))
    rows, start = [], 0
    topics = list(TOPICS)
    for split, n in SICK_SPLITS.items():
        for j, pid in enumerate(sorted(ids[start:start + n])):
            t = topics[j % len(topics)]
            rows.append(f"{pid}\t{split} {_sentence(rng, t, 5)}\t{_sentence(rng, t, 5)}\t{1 + (j % 5)}\tNEUTRAL")
        start += n
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(["pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment"] + rows))
    return path


def build_tiny_bert(folder: Path, num_layers: int = 6, hidden: int = 32, seed: int = 0) -> Path:
    """A randomly initialised BERT with a word-level vocabulary, saved as a SentenceTransformer
    (mean pooling) in ``folder``."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(seed)
    raw = folder.parent / f".{folder.name}-hf"
    raw.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + _words()
    (raw / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # transformers 5 takes the vocabulary itself (``vocab_file=`` is silently ignored there)
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    tok.save_pretrained(raw)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=num_layers,
                        num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=128)
    BertModel(config).save_pretrained(raw)
    st = SentenceTransformer(str(raw), device="cpu")
    st.max_seq_length = 64
    st.save(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    return write_data_dir(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("models") / "tiny-bert")


@pytest.fixture(scope="session")
def teacher(tiny_bert_dir):
    """The tiny 6-layer BERT as a SentenceTransformer: teacher / full DE of the student tests.
    Shared by every test, so tests must deep-copy it before changing it."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(tiny_bert_dir), device="cpu")


def smoke_profile_dict(data: Path, model: Path, out: Path) -> dict:
    base = {
        "name": "smoke",
        "seed": 13,
        "data_dir": str(data),
        "allow_download": False,
        "results_dir": str(out / "results"),
        "models_dir": str(out / "models"),
        "cache_dir": str(out / "cache"),
        "models": {"de": str(model), "ce": "trained:ce-tiny", "de_control": "trained:de-tiny"},
        "datasets": {"tiny-a": {"path": "beir/tiny-a", "split": "test"},
                     "tiny-b": {"path": "beir/tiny-b", "split": "test", "approximate": True}},
        "sts": {"stsb-test": {"path": "sts/sts-test.csv", "format": "stsb"},
                "stsb-train": {"path": "sts/sts-train.csv", "format": "stsb"},
                "sick-train": {"path": "sts/sick/SICK.txt", "format": "sick", "split": "train"}},
        "query_files": {"unlabelled-1": "queries/unlabelled-1.tsv", "unlabelled-2": "queries/unlabelled-2.tsv"},
        "eval": {"max_queries": None, "max_docs": 25, "rerank_depth": 5,
                 "metrics": ["NDCG@10", "Recall@100", "MAP@10", "MRR@10", "Hits@10"]},
        "encode": {"max_length": 32, "batch_size": 8},
        "ce_training": {"base": str(model), "dataset": "tiny-a", "split": "train", "negatives_per_query": 2,
                        "mine_depth": 8, "dev_queries": 3, "dev_depth": 5, "eval_steps": 1, "epochs": 1,
                        "max_steps": 2, "learning_rate": 1e-4, "batch_size": 2, "warmup_ratio": 0.0,
                        "max_length": 64, "dev_lengths": [32, 64], "dtype": "fp32"},
    }
    for extra in sorted((ROOT / "tests" / "smoke").glob("*.yaml")):
        base.update(yaml.safe_load(extra.read_text()) or {})
    for m in ((base.get("probing") or {}).get("models") or {}).values():
        if m.get("spec") is None:  # the tiny DE, whose path only exists at test time
            m["spec"] = str(model)
    return base


@pytest.fixture(scope="session")
def smoke_profile(tmp_path_factory, tiny_data_dir, tiny_bert_dir) -> Path:
    """Path of a smoke-size profile YAML (tiny data, tiny model, outputs in a temp dir)."""
    out = tmp_path_factory.mktemp("smoke")
    path = out / "smoke.yaml"
    path.write_text(yaml.safe_dump(smoke_profile_dict(tiny_data_dir, tiny_bert_dir, out)))
    return path


@pytest.fixture(scope="session")
def smoke_cfg(smoke_profile):
    from ce_utils.core.config import load_profile

    return load_profile(smoke_profile)
