"""Notebook 02 (DE-k CE): student construction, training data, CE score cache, and a smoke run."""

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ce_utils.experiments import de2ce
from ce_utils.core.config import ConfigError
from ce_utils.core.data import load_beir_dataset
from ce_utils.core.students import backbone, num_layers, same_weights
from ce_utils.core.scoring import CachedCEScorer
from ce_utils.core.students import build_de2ce, slug
from ce_utils.core.texts import distillation_texts, excluded_query_files

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def de(teacher):
    """The full DE of these tests: the shared tiny SentenceTransformer."""
    return teacher


@pytest.fixture(scope="module")
def ce(de):
    """A CE-shaped model (sequence classification head) with weights of its own."""
    from transformers import BertForSequenceClassification

    torch.manual_seed(1)
    config = copy.deepcopy(backbone(de).config)
    config.num_labels = 1
    return BertForSequenceClassification(config)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_de_k_ce_copies_ce_embeddings_and_first_k_layers(de, ce, k):
    student = build_de2ce(de, ce, "ce", k, seed=3)
    s, c, d = backbone(student), backbone(ce), backbone(de)
    assert num_layers(student) == k + 1 and s.config.num_hidden_layers == k + 1
    assert same_weights(s.embeddings, c.embeddings) and not same_weights(s.embeddings, d.embeddings)
    for i in range(k):
        assert same_weights(s.encoder.layer[i], c.encoder.layer[i])
    extra = s.encoder.layer[k]
    assert not same_weights(extra, c.encoder.layer[k]) and not same_weights(extra, d.encoder.layer[k])
    assert student.encode(["cell protein gene"]).shape == (1, d.config.hidden_size)
    assert num_layers(de) == 6 and num_layers(ce) == 6  # sources untouched


def test_controls(de, ce):
    dec = build_de2ce(de, ce, "de", 1, seed=3)
    s, d, c = backbone(dec), backbone(de), backbone(ce)
    assert num_layers(dec) == 2
    assert same_weights(s.embeddings, d.embeddings)
    assert same_weights(s.encoder.layer[0], d.encoder.layer[0]) and same_weights(s.encoder.layer[1], d.encoder.layer[1])
    rnd = build_de2ce(de, ce, "random", 1, seed=3)
    r = backbone(rnd)
    assert num_layers(rnd) == 2
    assert not same_weights(r.embeddings, d.embeddings) and not same_weights(r.embeddings, c.embeddings)
    assert not same_weights(r.encoder.layer[0], c.encoder.layer[0]) and not same_weights(r.encoder.layer[0], d.encoder.layer[0])
    full = build_de2ce(de, ce, "full", 6)
    assert same_weights(backbone(full), d)


def test_de2_ce_top_takes_the_full_des_top_layer(de, ce):
    student = build_de2ce(de, ce, "ce-top", 1, seed=3)
    s, c, d = backbone(student), backbone(ce), backbone(de)
    assert num_layers(student) == 2
    assert same_weights(s.embeddings, c.embeddings)                  # the CE's embeddings
    assert same_weights(s.encoder.layer[0], c.encoder.layer[0])      # the CE's first layer
    assert same_weights(s.encoder.layer[1], d.encoder.layer[5])      # the full DE's top layer, not a random one
    assert not same_weights(s.encoder.layer[1], c.encoder.layer[1])
    assert "top encoder layer of the dual encoder" in de2ce.init_text("ce-top", 1, "ce", "de")


def test_plan_names_and_errors():
    plan = de2ce.student_plan([1, 2, 3], ["random", "de"], True, 6)
    names = [p["name"] for p in plan]
    assert names == ["DE-2 CE", "DE-3 CE", "DE-4 CE", "DE-2 random", "DE-2 DE", "DE-2 CE (MNRL)", "DE-6 full"]
    assert [p["n_layers"] for p in plan] == [2, 3, 4, 2, 2, 2, 6]
    assert [p["k_ce_layers"] for p in plan] == [1, 2, 3, 0, 0, 1, 0]
    assert slug("DE-2 CE (MNRL)") == "de-2-ce-mnrl"
    with pytest.raises(ConfigError, match="k <= 5"):
        de2ce.student_plan([6], [], False, 6)
    with pytest.raises(ConfigError, match="control"):
        de2ce.student_plan([1], ["bert"], False, 6)
    top = de2ce.student_plan([1], ["ce-top"], False, 6)[1]
    assert (top["name"], top["n_layers"], top["k_ce_layers"]) == ("DE-2 CE+top", 2, 1)
    with pytest.raises(ConfigError, match="init"):
        build_de2ce(None, None, "bogus")


def test_bad_ce_layer_says_the_range(de, ce):
    small = copy.deepcopy(ce)
    backbone(small).encoder.layer = backbone(small).encoder.layer[:2]
    with pytest.raises(ConfigError, match=r"layers 0\.\.1"):
        build_de2ce(de, small, "ce", 3)


def test_evaluation_queries_are_excluded(smoke_cfg):
    cfg = {**smoke_cfg, "query_files": {"beir-nfcorpus": "x", "beir-fiqa": "y", "msmarco-dev": "z"}}
    assert excluded_query_files(cfg, ["nfcorpus-preprocessed", "scifact"]) == ["beir-nfcorpus"]
    assert excluded_query_files(cfg, ["fiqa"], ["msmarco-dev"]) == ["beir-fiqa", "msmarco-dev"]
    dc = {"n_queries": 10, "n_passages": 6, "exclude_query_files": ["unlabelled-2"]}
    data = distillation_texts(smoke_cfg, dc, ["tiny-a", "tiny-b"], seed=1)
    assert len(data["queries"]) == 10 and len(data["passages"]) == 6
    assert data["query_files_used"] == ["unlabelled-1"]
    test_queries = set(load_beir_dataset(smoke_cfg, "tiny-a").queries.values())
    assert not test_queries & set(data["queries"])
    assert data == distillation_texts(smoke_cfg, dc, ["tiny-a", "tiny-b"], seed=1)  # seeded


def test_sentence_text_comes_from_training_splits_only(smoke_cfg, tmp_path):
    from ce_utils.core.data import load_sts, read_sts_file

    train = load_sts(smoke_cfg, "sick-train")
    assert len(train) == 4500 and all(a.startswith("train ") for a, _, _ in train)
    sick = Path(smoke_cfg["data_dir"]) / "sts" / "sick" / "SICK.txt"
    assert all(a.startswith("test ") for a, _, _ in read_sts_file(sick, "sick", split="test"))
    with pytest.raises(ConfigError, match="Unknown SICK split"):
        read_sts_file(sick, "sick", split="dev")
    lines = sick.read_text().splitlines()
    shuffled = tmp_path / "SICK.txt"  # one file sorted by pair_ID is not the SemEval layout
    shuffled.write_text("\n".join([lines[0]] + sorted(lines[1:], key=lambda r: int(r.split("\t")[0]))))
    with pytest.raises(ConfigError, match="not SemEval-2014"):
        read_sts_file(shuffled, "sick", split="train")

    dc = {"n_queries": 4, "n_passages": 2, "n_sentences": 30, "sentence_sets": ["stsb-train", "sick-train"]}
    data = distillation_texts(smoke_cfg, dc, ["tiny-a"], seed=3)
    assert len(data["sentences"]) == len(set(data["sentences"])) == 30
    pool = {t for name in dc["sentence_sets"] for a, b, _ in load_sts(smoke_cfg, name) for t in (a, b)}
    assert set(data["sentences"]) <= pool and data["sentence_sources"] == ["stsb-train", "sick-train"]
    assert not any(t.startswith(("test ", "trial ")) for t in data["sentences"])
    assert data == distillation_texts(smoke_cfg, dc, ["tiny-a"], seed=3)
    with pytest.raises(ConfigError, match="sentence_sets"):
        distillation_texts(smoke_cfg, {**dc, "sentence_sets": []}, ["tiny-a"], seed=3)
    with pytest.raises(ConfigError, match="distinct sentences"):
        distillation_texts(smoke_cfg, {**dc, "n_sentences": 10**6}, ["tiny-a"], seed=3)


class CountingCE:
    def __init__(self):
        self.calls = 0

    def predict(self, texts, batch_size=32, show_progress_bar=False):
        self.calls += len(texts)
        return np.array([len(q) - len(d) for q, d in texts], dtype=float)


def test_ce_scores_are_cached_on_disk(smoke_cfg, tmp_path):
    ds = load_beir_dataset(smoke_cfg, "tiny-a")
    fake = CountingCE()
    q = ds.query_ids[0]
    pairs = [(q, d) for d in ds.doc_ids[:4]]
    scorer = CachedCEScorer(fake, ds, tmp_path, "tag")
    first = scorer(pairs)
    assert fake.calls == 4 and scorer(pairs[:2]) == first[:2] and fake.calls == 4
    again = CachedCEScorer(fake, ds, tmp_path, "tag")  # a rerun reads the file
    assert again(pairs) == first and fake.calls == 4
    again(pairs + [(q, ds.doc_ids[5])])
    assert fake.calls == 5


class RecordingEncoder:
    """A query encoder that remembers which query it embedded, for the latency schedule."""

    def __init__(self, name, log, dim=4):
        self.name, self.log, self.dim, self.device = name, log, dim, "cpu"

    def encode(self, texts, **kw):
        import torch

        assert kw.get("batch_size") == 1 and len(texts) == 1
        self.log.append((self.name, texts[0], torch.get_num_threads()))
        v = np.ones((1, self.dim), dtype=np.float32)
        return v / np.linalg.norm(v)


def test_pipeline_latency_interleaves_every_first_stage_over_every_query(smoke_cfg):
    ds = load_beir_dataset(smoke_cfg, "tiny-a")
    rng = np.random.default_rng(0)
    log, stages = [], {}
    for name in ("A", "B", "C"):
        d = rng.normal(size=(len(ds.doc_ids), 4)).astype(np.float32)
        stages[name] = (RecordingEncoder(name, log), d / np.linalg.norm(d, axis=1, keepdims=True))
    qids = de2ce.latency_queries(sorted(ds.queries), 4, seed=1)
    assert len(qids) == 4 and qids == de2ce.latency_queries(sorted(ds.queries), 4, seed=1)
    fake = CountingCE()
    threads = torch.get_num_threads()
    rows = de2ce.pipeline_latency(stages, ds, fake, [3, 5], qids, threads=1, dtype="fp32", warmup=1, seed=7,
                                  progress=False)
    assert torch.get_num_threads() == threads                   # restored
    assert {t for _, _, t in log} == {1}                        # timed on the asked thread count
    kept = log[3:]                                              # after one warm-up query through A, B, C
    for i, q in enumerate(qids):                                # each query through every first stage ...
        block = kept[3 * i: 3 * i + 3]
        assert {t for _, t, _ in block} == {ds.queries[q]} and sorted(n for n, _, _ in block) == ["A", "B", "C"]
    assert len({kept[3 * i][0] for i in range(3)}) == 3         # ... starting with a different one each time
    assert fake.calls == (1 + len(qids)) * 3 * (3 + 5)          # the CE scores each top-k once per depth
    df = pd.DataFrame(rows)
    assert len(df) == 3 * 3 * len(de2ce.LATENCY_METRICS) and (df["n_queries"] == 4).all() and (df["seed"] == 7).all()
    assert set(df["depth"]) == {0, 3, 5} and set(df.loc[df["depth"] == 0, "reranker"]) == {"none"}
    assert (df.loc[(df["depth"] == 0) & (df["metric"] == "latency_rerank_ms"), "value"] == 0).all()
    total = df[df["metric"] == "latency_ms"]
    assert (total["value"] > 0).all() and (total["latency_iqr_ms"] >= 0).all()
    with pytest.raises(ConfigError, match="document embeddings"):
        de2ce.pipeline_latency({"A": (stages["A"][0], stages["A"][1][:3])}, ds, fake, [3], qids, progress=False)


def test_a_queries_only_first_stage_searches_the_full_des_documents():
    models = {"DE-2 CE": object(), "DE-6 full": object()}
    assert de2ce.stage_models("DE-2 CE", models, "DE-6 full") == (models["DE-2 CE"], models["DE-2 CE"])
    q, d = de2ce.stage_models("DE-2 CE" + de2ce.QUERIES_ONLY, models, "DE-6 full")
    assert q is models["DE-2 CE"] and d is models["DE-6 full"]
    with pytest.raises(ConfigError, match="no student 'DE-9 CE'"):
        de2ce.stage_models("DE-9 CE (queries only)", models, "DE-6 full")


def test_settings_cap_depths_and_check_datasets(smoke_cfg):
    dc = de2ce.settings(smoke_cfg)
    assert dc["rerank_depths"] == [3, 5]  # 50 > eval.rerank_depth (5) is dropped
    bad = copy.deepcopy(smoke_cfg)
    bad["de2ce"]["pipeline_datasets"] = ["nope"]
    with pytest.raises(ConfigError, match="unknown dataset"):
        de2ce.settings(bad)


@pytest.mark.slow
def test_notebook_smoke(smoke_profile, tmp_path):
    from ce_utils.core.config import load_profile
    from ce_utils.runner import run_notebook

    run_notebook(ROOT / "notebooks" / "02_de2ce.ipynb", tmp_path / "out.ipynb",
                 {"profile": str(smoke_profile), "allow_broken_ce": True, "headline_runs": "all"}, progress=False)
    cfg = load_profile(smoke_profile)
    res = __import__("pathlib").Path(cfg["results_dir"])
    sweep = pd.read_csv(res / "budgets.csv")       # the headline: DE-2 DE's seed runs at its chosen budget, on test
    head = sweep[(sweep["spec"] == "de2ce:de:1") & (sweep["phase"] == "test")]
    assert set(head["seed"]) == {5, 6} and set(head["dataset"]) == {"tiny-a", "tiny-b"}
    assert "headline at" in (tmp_path / "out.ipynb").read_text()
    q = pd.read_csv(res / "de2ce.csv")
    for col in de2ce.DE2CE_COLUMNS + ["git_commit", "torch", "n_params"]:
        assert col in q.columns, col
    students = {"DE-2 CE", "DE-3 CE", "DE-2 random", "DE-2 DE", "DE-2 CE+top", "DE-2 CE (MNRL)"}
    assert set(q["model"]) == students | {"DE-6 full"} | {s + " (queries only)" for s in students}
    assert set(q["init"]) == {"ce", "ce-top", "random", "de", "full"} and set(q["loss"]) == {"mse", "mnrl", "none"}
    # queries only: the student's queries against the full DE's documents, a system of its own
    asym = q[q["documents"] == "full DE"]
    assert set(asym["model"]) == {s + " (queries only)" for s in students}
    assert set(q[q["documents"] == "own"]["model"]) == students | {"DE-6 full"}
    assert set(asym["model_id"]).isdisjoint(q[q["documents"] == "own"]["model_id"])
    table = de2ce.symmetric_vs_queries_only(de2ce.relative_to(q, "DE-6 full"))
    assert list(table.columns) == ["queries only", "symmetric", "queries only - symmetric (pts)"]
    assert set(table.index) == students
    full = q[(q["model"] == "DE-6 full") & (q["metric"] == "NDCG@10")].set_index("dataset")["value"]
    one = asym[(asym["model"] == "DE-2 CE (queries only)") & (asym["metric"] == "NDCG@10")].set_index("dataset")["value"]
    assert table.loc["DE-2 CE", "queries only"] == pytest.approx(float((100 * one / full).mean()))
    assert set(q["dataset"]) == {"tiny-a", "tiny-b"}
    assert set(q["metric"]) == {"NDCG@10", "Recall@100", "MAP@10", "MRR@10", "Hits@10"}
    assert q["value"].between(0, 1).all()
    assert (q.groupby(["model", "dataset", "metric"]).size() == 1).all()
    assert set(q[q["model"] == "DE-6 full"]["model_id"]) == {cfg["models"]["de"].rsplit("/", 1)[-1]}
    assert q["ce_works"].notna().all()
    assert q[q["dataset"] == "tiny-b"]["approximate"].all() and not q[q["dataset"] == "tiny-a"]["approximate"].any()
    trained = q[q["loss"] != "none"]
    assert (q[q["dataset"] == "tiny-a"]["n_docs"] == 20).all()  # de2ce.sizes cut
    assert (trained["train_steps"] > 0).all() and (q[q["loss"] == "none"]["train_steps"] == 0).all()
    assert (q[q["model"] == "DE-2 CE"]["n_layers"] == 2).all() and (q[q["model"] == "DE-6 full"]["n_layers"] == 6).all()
    p = pd.read_csv(res / "pipeline.csv")
    for col in de2ce.PIPELINE_COLUMNS + ["git_commit"]:
        assert col in p.columns, col
    assert set(p["first_stage"]) == {"DE-2 CE", "DE-2 CE (queries only)", "DE-6 full"} and set(p["dataset"]) == {"tiny-a"}
    # the queries-only first stage is the same system as its de2ce.csv row (one model id, one first-stage score)
    qo = p[(p["first_stage"] == "DE-2 CE (queries only)") & (p["depth"] == 0) & (p["metric"] == "NDCG@10")]
    assert set(qo["model_id"]) == set(q[q["model"] == "DE-2 CE (queries only)"]["model_id"])
    assert set(p["depth"]) == {0, 3, 5} and set(p["reranker"]) == {"none", "CE"}
    timed = p["metric"].str.startswith("latency")
    lat, p = p[timed], p[~timed]
    assert (p["n_queries"] == 6).all() and p["value"].between(0, 1).all()
    # end-to-end latency per query: every pipeline (first stage alone = depth 0) on the latency sample, 1 thread
    assert set(lat["metric"]) == set(de2ce.LATENCY_METRICS.values()) and (lat["n_queries"] == 3).all()
    assert len(lat) == 3 * 3 * len(de2ce.LATENCY_METRICS) and (lat["value"] > 0).sum() == len(lat) - 3
    assert set(lat["model_id"]) == set(p["model_id"]) and (lat["latency_threads"] == 1).all()
    assert set(p[p["reranker"] == "CE"]["model_id"].str.split(" >> ").str[1]) == {"trained:ce-tiny@3", "trained:ce-tiny@5"}
    card = __import__("pathlib").Path(cfg["models_dir"]) / "de-2-ce" / "README.md"
    assert card.is_file() and "MSELoss" in card.read_text() and "Seed" in card.read_text()
    assert (card.parent / "training_info.json").is_file()
