"""Notebook 03 (Wang & Lyu query-encoder distillation): strategies, students, asymmetric
evaluation, paper comparison, and a papermill smoke run."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from ce_utils.experiments import query_distill as qd
from ce_utils.core.config import ConfigError, load_profile
from ce_utils.core.students import backbone, num_layers, same_weights
from ce_utils.core.evaluate import AsymmetricEvaluator, eval_datasets
from ce_utils.core.students import parse_strategy
from ce_utils.core.texts import excluded_query_files, training_queries
from ce_utils.report import reference as ref

ROOT = qd.Path(__file__).resolve().parent.parent


def test_parse_strategies():
    s = parse_strategy("subset:0,5", 6)
    assert (s.kind, s.layers, s.layers_str, s.n_layers) == ("subset", (0, 5), "0,5", 2)
    f = parse_strategy("first:3", 6)
    assert f.layers == (0, 1, 2) and f.name == "first3"
    o = parse_strategy("onnx-l3", 6)
    assert o.kind == "onnx" and o.n_layers == 3


@pytest.mark.parametrize("spec,match", [
    ("subset:0,6", r"layers 0\.\.5"),
    ("subset:-7", r"out of range"),
    ("first:7", r"1\.\.6"),
    ("subset:5,0", "increasing"),
    ("subset:", "names no layer|Unknown"),
    ("bottom:2", "Unknown student strategy"),
])
def test_bad_strategy_says_the_fix(spec, match):
    with pytest.raises(ConfigError, match=match):
        parse_strategy(spec, 6)


def test_subset_student_has_exactly_the_chosen_teacher_layers(teacher):
    for spec in ("subset:0,5", "subset:0,2,5", "first:2"):
        st = parse_strategy(spec, num_layers(teacher))
        student = qd.build_student(st, teacher)
        s, t = backbone(student), backbone(teacher)
        assert num_layers(student) == len(st.layers)
        assert same_weights(s.embeddings, t.embeddings)
        for i, l in enumerate(st.layers):
            assert same_weights(s.encoder.layer[i], t.encoder.layer[l])
        others = [l for l in range(6) if l not in st.layers]
        assert not same_weights(s.encoder.layer[len(st.layers) - 1], t.encoder.layer[others[-1]])


def test_evaluator_uses_teacher_document_embeddings(teacher, smoke_cfg, monkeypatch):
    import ce_utils.core.encode

    ds = eval_datasets(smoke_cfg, ["tiny-a"])
    ev = AsymmetricEvaluator(teacher=teacher, datasets=ds, teacher_spec="tiny")
    docs = ds["tiny-a"].doc_texts()
    np.testing.assert_allclose(ev.doc_emb["tiny-a"], teacher.encode(docs, convert_to_numpy=True), atol=2e-3,
                               rtol=2e-3)  # stored as float16, like every cached embedding
    assert ev.score_function == "cos_sim"

    student = qd.build_student(parse_strategy("subset:0", 6), teacher)
    seen = {}
    real = ce_utils.core.encode.encode_layers

    def spy(model, texts, *a, **kw):
        seen.setdefault(id(model), []).extend(texts)
        return real(model, texts, *a, **kw)

    monkeypatch.setattr(ce_utils.core.encode, "encode_layers", spy)
    before = ev.doc_emb["tiny-a"].copy()
    scores = ev.evaluate(student)
    assert set(seen) == {id(student)}  # only the student encoded anything, and
    assert set(seen[id(student)]) == set(ds["tiny-a"].query_texts())  # only queries
    assert not set(seen[id(student)]) & set(docs)
    np.testing.assert_array_equal(ev.doc_emb["tiny-a"], before)
    assert 0.0 <= scores["tiny-a"]["NDCG@10"] <= 1.0
    # the student's queries differ from the teacher's, the document side does not
    t_scores = ev.evaluate(teacher)
    assert set(t_scores["tiny-a"]) == set(scores["tiny-a"])


def test_training_query_exclusion(smoke_cfg):
    assert excluded_query_files(smoke_cfg, ["tiny-a", "tiny-b"]) == ["unlabelled-2"]
    q = training_queries(smoke_cfg, ["tiny-a"])
    assert q and all(k.startswith("unlabelled-1:") for k in q)
    assert len(q) <= smoke_cfg["query_distill"]["max_train_queries"]
    q_all = training_queries(smoke_cfg, ["tiny-b"])
    assert any(k.startswith("unlabelled-2:") for k in q_all)


def test_retention_and_paper_mapping(monkeypatch, tmp_path):
    # the transcribed table, whatever $CE_REFERENCE_DIR says (the reference CSV is checked below)
    monkeypatch.delenv(ref.REFERENCE_ENV, raising=False)
    monkeypatch.setattr(ref, "fetched_reference_dir", lambda: tmp_path / "no-reference")
    rows = []
    for student, layers, vals in (("teacher", "0,1,2,3,4,5", (0.5, 0.4)), ("L0_5", "0,5", (0.45, 0.2))):
        for ds, v in zip(("a", "b"), vals):
            rows.append({"student": student, "strategy": "subset:" + layers, "layers": layers, "n_layers": 2,
                         "teacher": "t", "dataset": ds, "metric": "NDCG@10", "value": v, "approximate": False,
                         "n_queries": 1, "n_docs": 1, "train_queries": 1, "train_steps": 1, "seed": 0})
    ret = qd.retention_rows(pd.DataFrame(rows))
    got = ret.set_index("dataset")["value"]
    assert got["a"] == pytest.approx(0.9) and got["b"] == pytest.approx(0.5) and got["mean"] == pytest.approx(0.7)
    assert ref.map_to_paper_layers([0, 5], 6) == "0,11"
    assert ref.map_to_paper_layers([1, 4], 6) == "1,10"
    paper, source = ref.paper_retention_table({"query_distill": {"reference_dir": None}})
    assert source.startswith("transcribed")
    side = ref.side_by_side(ret, paper, 6, {"a": "scifact"})
    assert set(side["dataset"]) == {"a", "mean"}
    assert side.set_index("dataset").loc["mean", "paper"] == pytest.approx(0.9249, abs=5e-5)


def test_transcribed_numbers_match_reference_tables(monkeypatch, tmp_path):
    folder = os.environ.get(ref.REFERENCE_ENV)
    if not folder:
        folder = str(ROOT.parent / "shared" / "reference")
    try:
        table, source = ref.paper_retention_table({"query_distill": {"reference_dir": folder}})
    except ConfigError:
        pytest.skip("published tables not available (set CE_REFERENCE_DIR)")
    mean = table[table["dataset"] == "mean"].set_index("layers")["retention"]
    assert mean["0,11"] == pytest.approx(0.925, abs=5e-4)  # the paper's headline
    for layers, per in ref.PAPER_RETENTION.items():
        for ds, v in per.items():
            got = table[(table["layers"] == layers) & (table["dataset"] == ds)]["retention"].iloc[0]
            assert got == pytest.approx(v, abs=1e-4)
    with pytest.raises(ConfigError, match="reference_dir"):
        ref.reference_dir({"query_distill": {"reference_dir": str(tmp_path)}})


def test_tables_fetched_by_make_data_are_found_without_settings(monkeypatch, tmp_path):
    """`make data` puts the published tables in data/reference/; with neither the profile's
    reference_dir nor $CE_REFERENCE_DIR set, that is where the notebooks look, and nowhere else."""
    monkeypatch.delenv(ref.REFERENCE_ENV, raising=False)
    monkeypatch.setattr(ref, "fetched_reference_dir", lambda: tmp_path / "reference")
    assert ref.reference_dir({}) is None
    d = tmp_path / "reference" / ref.REFERENCE_SUBDIR
    d.mkdir(parents=True)
    (d / ref.REFERENCE_FILE).write_text("x\n")
    assert ref.reference_dir({}) == d
    monkeypatch.setenv(ref.REFERENCE_ENV, str(tmp_path / "elsewhere"))   # an explicit setting wins, and is checked
    with pytest.raises(ConfigError, match="reference_dir"):
        ref.reference_dir({})


def test_paper_profile_lists_the_papers_subsets():
    cfg = load_profile("paper")
    specs = cfg["query_distill"]["strategies"]
    layers = {parse_strategy(s, 12).layers_str for s in specs}
    assert layers == set(ref.PAPER_RETENTION)


def test_onnx_strategy_fails_clearly_without_a_model(teacher):
    with pytest.raises(ConfigError, match="onnx"):
        qd.build_student(parse_strategy("onnx-l3", 6), teacher, {"models": {}, "query_distill": {}})


@pytest.mark.slow
def test_notebook_smoke(smoke_profile, tmp_path):
    from ce_utils.runner import run_notebook

    run_notebook(ROOT / "notebooks" / "03_query_distillation.ipynb", tmp_path / "out.ipynb",
                 {"profile": str(smoke_profile), "reference_dir": None, "headline_runs": "all"}, progress=False)
    cfg = load_profile(smoke_profile)
    # the headline: the whole (tiny) sweep of {0,5}, then its seed runs at the chosen budget, scored on test
    sweep = pd.read_csv(qd.Path(cfg["results_dir"]) / "budgets.csv")
    test = sweep[(sweep["spec"] == "subset:0,5") & (sweep["phase"] == "test")]
    assert set(test["sweep"]) <= {"seed", "tuned"}          # tuned runs (the curve at the chosen rate) are tested too
    head = test[test["sweep"] == "seed"]
    assert set(head["seed"]) == {5, 6} and set(head["dataset"]) == {"tiny-a", "tiny-b"}
    assert "headline at" in (tmp_path / "out.ipynb").read_text()
    df = pd.read_csv(qd.Path(cfg["results_dir"]) / "query_distill.csv")
    for col in qd.RESULT_COLUMNS + ["profile", "git_commit", "timestamp"]:
        assert col in df.columns, col
    assert set(df["student"]) == {"teacher", "L0_5", "first2", "L5"}
    metrics = df[~df["metric"].str.startswith("retention")]
    assert metrics["value"].between(0, 1).all()
    assert set(metrics["dataset"]) == {"tiny-a", "tiny-b"}
    assert (df[df["student"] != "teacher"]["train_steps"] == 2).all()
    assert set(df[df["student"] != "teacher"]["train_precision"]) == {"fp32"}   # the smoke profile trains in fp32
    assert (df[df["student"] == "teacher"]["train_steps"] == 0).all()
    ret = df[df["metric"] == "retention_NDCG@10"]
    assert set(ret["dataset"]) == {"tiny-a", "tiny-b", "mean"} and (ret["value"] > 0).all()
    assert df[df["dataset"] == "tiny-b"]["approximate"].all()
    assert df.loc[df["student"] == "L0_5", "layers"].iloc[0] == "0,5"


def test_a_trained_query_student_is_saved_for_the_backends(teacher, tmp_path):
    from sentence_transformers import SentenceTransformer

    strategy = parse_strategy("subset:0,5", 6)
    student = qd.build_student(strategy, teacher)
    cfg = {"models_dir": str(tmp_path / "models"), "seed": 3}
    path = qd.save_query_student(student, strategy, cfg, {"train_steps": 2, "train_loss": 0.1})
    assert path == qd.query_student_dir(cfg, "L0_5") and (path / "query_student.json").is_file()
    again = SentenceTransformer(str(path), device="cpu")
    texts = ["a query about cells", "another one"]
    np.testing.assert_allclose(again.encode(texts), student.encode(texts), atol=1e-6)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no partial folder left
    assert qd.save_query_student(student, strategy, {}, {}) is None  # no models directory: nothing saved


def test_a_group_of_collections_scores_as_the_mean_of_its_members(teacher, smoke_cfg):
    """CQADupStack's way: one dataset of several collections, each searched in its own corpus, reported
    as the mean of the members' metrics (BEIR's and paper 2's cqadupstack column)."""
    import copy

    from ce_utils.core.data import load_beir_dataset

    cfg = copy.deepcopy(smoke_cfg)
    cfg["datasets"]["both"] = {"path": "beir", "split": "test", "members": ["tiny-a", "tiny-b"]}
    ds = eval_datasets(cfg, ["both", "tiny-a", "tiny-b"])
    ev = AsymmetricEvaluator(teacher=teacher, datasets=ds, teacher_spec="tiny", cfg=cfg)
    scores = ev.evaluate(teacher)
    for metric, value in scores["both"].items():
        assert value == pytest.approx((scores["tiny-a"][metric] + scores["tiny-b"][metric]) / 2, abs=1e-6), metric
    rows = {r["dataset"]: r for r in ev.rows(scores, {"student": "teacher"})}
    a, b = ds["tiny-a"], ds["tiny-b"]
    assert rows["both"]["n_queries"] == len(a.queries) + len(b.queries)
    assert rows["both"]["n_docs"] == len(a.corpus) + len(b.corpus)
    assert not rows["both"]["approximate"] and rows["tiny-b"]["approximate"]  # the group's own spec says
    with pytest.raises(ConfigError, match="group of 2 collections"):
        load_beir_dataset(cfg, "both")
    assert load_beir_dataset(cfg, "both", member="tiny-b").name == "both/tiny-b"
