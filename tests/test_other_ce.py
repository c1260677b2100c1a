"""Paper 1's probe of a cross encoder nobody here trained (``python -m ce_utils probe-other-ce``): how a
relevance score is read from an NLI-style pair classifier, and the rows the probe writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ce_utils.core.config import load_profile


@pytest.fixture(scope="module")
def tiny_nli(tiny_bert_dir, tmp_path_factory) -> Path:
    """The tiny BERT as a 2-label pair classifier with NLI-style labels."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("nli") / "tiny-nli"
    model = BertForSequenceClassification.from_pretrained(
        str(tiny_bert_dir), num_labels=2, id2label={0: "not_entailment", 1: "entailment"},
        label2id={"not_entailment": 0, "entailment": 1})
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(tiny_bert_dir)).save_pretrained(out)
    return out


def test_relevance_is_the_log_odds_of_the_entailment_label():
    from ce_utils.core.scoring import relevance_from_logits

    logits = np.array([[0.0, 2.0], [1.0, -1.0]])
    np.testing.assert_allclose(relevance_from_logits(logits, 1), [2.0, -2.0], rtol=1e-6)
    three = np.array([[1.0, 0.0, 3.0]])  # log-odds of label 2 against labels 0 and 1 together
    np.testing.assert_allclose(relevance_from_logits(three, 2), [3.0 - np.log(np.e + 1.0)], rtol=1e-6)


def test_a_pair_classifier_scores_pairs_in_its_own_order(tiny_nli):
    import torch

    from ce_utils.core.config import ConfigError
    from ce_utils.core.scoring import ce_scores
    from ce_utils.core.scoring import ce_tag
    from ce_utils.core.models import load_cross_encoder

    ce = load_cross_encoder(str(tiny_nli), device="cpu", max_length=32)
    assert ce.relevance_label == 1 and ce.passage_first is False  # an unknown model: (query, passage)
    pairs = [("heart cell", "protein gene expression in the heart"), ("brain", "sleep and memory")]
    logits = ce.predict(pairs, activation_fn=torch.nn.Identity())
    np.testing.assert_allclose(ce_scores(ce, pairs), logits[:, 1] - logits[:, 0], rtol=1e-4, atol=1e-5)
    tag = ce_tag(ce)
    ce.passage_first = True  # NLI order: (premise = passage, hypothesis = query)
    swapped = ce.predict([(b, a) for a, b in pairs], activation_fn=torch.nn.Identity())
    np.testing.assert_allclose(ce_scores(ce, pairs), swapped[:, 1] - swapped[:, 0], rtol=1e-4, atol=1e-5)
    assert ce_tag(ce) != tag  # cached scores of one reading are never served for the other
    del ce.relevance_label
    with pytest.raises(ConfigError, match="relevance label"):
        ce_scores(ce, pairs)


def test_the_known_judge_is_read_passage_first():
    from ce_utils.convert.onnx_bert import JUDGE_SPEC, ONNX_BERT_MODELS

    key = JUDGE_SPEC.split(":", 1)[1]
    assert ONNX_BERT_MODELS[key].passage_first is True


def test_probe_of_another_ce_writes_its_rows_only(smoke_cfg, tiny_nli, tmp_path):
    from ce_utils.experiments.probing import EXTRA_PROBE_CSV, EXTRA_QUALITY_CSV
    from ce_utils.cli import cmd_probe_other_ce as main
    from ce_utils.core.io import quality_index

    out = tmp_path / "results"
    argv = ["--profile", smoke_cfg["profile_path"], "--label", "nli", "--ce", str(tiny_nli),
            "--results-dir", str(out), "--dtype", "fp32", "--first-stage-dtype", "fp32"]
    assert main(argv) == 0
    probe, quality = pd.read_csv(out / EXTRA_PROBE_CSV), pd.read_csv(out / EXTRA_QUALITY_CSV)
    cfg = load_profile(smoke_cfg["profile_path"])
    assert set(probe["model_kind"]) == {"nli", "nli-vs-de"}
    assert set(probe["section"]) == {"retrieval", "sts", "control"}
    assert set(probe[probe.section == "retrieval"]["dataset"]) == set(cfg["datasets"])
    assert sorted(probe[probe.section == "retrieval"]["layer"].unique()) == list(range(7))
    assert probe["model_id"].isna().all()  # a CE's self-pair layers are no retrieval system
    assert set(quality["stage"]) == {"first_stage", "ce_rerank"}
    works = quality["ce_works"].iloc[0]
    assert (probe["ce_works"] == works).all() and (quality["ce_works"] == works).all()
    assert quality[quality.stage == "ce_rerank"]["model_id"].str.endswith(">> " + tiny_nli.name + "@5").all()
    # a rerun replaces this CE's rows (and keeps one copy of the shared first stage)
    assert main(argv) == 0
    again, quality2 = pd.read_csv(out / EXTRA_PROBE_CSV), pd.read_csv(out / EXTRA_QUALITY_CSV)
    assert len(again) == len(probe) and len(quality2) == len(quality)
    assert quality_index(out)["source"].nunique() == 1


def test_probe_of_another_ce_needs_a_label_of_its_own(smoke_cfg, tiny_nli, tmp_path):
    from ce_utils.cli import cmd_probe_other_ce as main

    argv = ["--profile", smoke_cfg["profile_path"], "--label", "ce", "--ce", str(tiny_nli),
            "--results-dir", str(tmp_path)]
    assert main(argv) == 2
