"""Paper 1 on a cross encoder trained apart from the DE (the judge profile): a pair classifier with several labels
becomes a one-logit relevance CE whose head starts as the classifier's log-odds, is fine-tuned with the default
CE's listwise recipe, and its layers are copied exactly into its DE-2 students."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from ce_utils.core.students import backbone, build_de2ce, same_weights


@pytest.fixture(scope="module")
def classifier_dir(tiny_bert_dir, tmp_path_factory) -> Path:
    """A stand-in for the judge: a 2-label pair classifier (labels as NLI names them) with weights of its own."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("judge") / "tiny-judge"
    config = BertConfig.from_pretrained(str(tiny_bert_dir))
    config.num_labels = 2
    config.id2label, config.label2id = {0: "not_entailment", 1: "entailment"}, {"not_entailment": 0, "entailment": 1}
    config.architectures = ["BertForSequenceClassification"]
    torch.manual_seed(7)
    BertForSequenceClassification(config).save_pretrained(str(folder))
    AutoTokenizer.from_pretrained(str(tiny_bert_dir)).save_pretrained(str(folder))
    return folder


def test_relevance_head_is_the_classifiers_log_odds(classifier_dir, tmp_path, tiny_bert_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from ce_utils.experiments.cross_encoder.train import relevance_head

    one = relevance_head(classifier_dir, tmp_path / "one")
    assert relevance_head(str(tiny_bert_dir), tmp_path / "plain") == str(tiny_bert_dir)   # no head: as it is
    tok = AutoTokenizer.from_pretrained(str(classifier_dir))
    batch = tok(["cell protein", "gene cell"], ["protein gene cell", "star planet"], return_tensors="pt", padding=True)
    with torch.no_grad():
        two = AutoModelForSequenceClassification.from_pretrained(str(classifier_dir)).eval()(**batch).logits
        got = AutoModelForSequenceClassification.from_pretrained(one).eval()(**batch).logits
    assert got.shape == (2, 1)
    torch.testing.assert_close(got[:, 0], two[:, 1] - two[:, 0], rtol=1e-5, atol=1e-5)


def test_a_classifier_base_trains_as_a_relevance_ce_whose_layers_go_into_de2(smoke_cfg, classifier_dir, tmp_path, teacher):
    from ce_utils.experiments.cross_encoder import load_or_train_cross_encoder

    cfg = copy.deepcopy(smoke_cfg)
    cfg["models"] = {**cfg["models"], "ce": "trained:ce-judge-tiny"}
    cfg["models_dir"] = str(tmp_path / "models")
    cfg["ce_training"] = {**cfg["ce_training"], "base": str(classifier_dir)}
    ce, info = load_or_train_cross_encoder(cfg)
    assert ce.model.config.num_labels == 1 and info["base"] == str(classifier_dir)
    assert not (tmp_path / "models" / ".ce-judge-tiny-base").exists()      # the folded copy is cleaned up
    curve = json.loads((tmp_path / "models" / "ce-judge-tiny" / "learning_curve.json").read_text())
    assert [r["step"] for r in curve][0] == 0 and len(curve) >= 2
    student = build_de2ce(teacher, ce, "ce", 1, seed=3)
    s, c = backbone(student), backbone(ce)
    for name, tensor in s.embeddings.state_dict().items():
        assert torch.equal(tensor, c.embeddings.state_dict()[name])
    for name, tensor in s.encoder.layer[0].state_dict().items():
        assert torch.equal(tensor, c.encoder.layer[0].state_dict()[name])
    assert not same_weights(s.encoder.layer[0], backbone(teacher).encoder.layer[0])


def judge_smoke_profile(smoke_profile: Path, classifier_dir: Path, folder: Path) -> Path:
    """The judge profile's shape at smoke size: the smoke profile with the 2-label stand-in as the CE's base."""
    import yaml

    judge = yaml.safe_load((Path(__file__).resolve().parent.parent / "configs" / "judge.yaml").read_text())
    prof = {"extends": str(smoke_profile), "name": "judge-smoke", "results_dir": str(folder / "results"),
            "models_dir": str(folder / "models"),
            "models": {"ce": "trained:ce-judge-tiny"}, "ce_training": {"base": str(classifier_dir)},
            "probing": {"models": {"ce": {"kind": "ce", "spec": "trained:ce-judge-tiny"}, "de-ft": None}}}
    assert judge["extends"] == "default" and judge["probing"]["models"]["de-ft"] is None
    assert judge["models"]["ce"].startswith("trained:") and judge["ce_training"]["base"].startswith("onnx-bert:")
    path = folder / "judge-smoke.yaml"
    path.write_text(yaml.safe_dump(prof))
    return path


@pytest.mark.slow
def test_judge_profile_smoke_run(smoke_profile, classifier_dir, tmp_path):
    """Notebooks 01 and 02 of the judge profile's shape: the independent CE is trained from the classifier, probed
    layer by layer beside the DE with CKA to the DE, and DE-2 CE is built from it."""
    import pandas as pd
    from ce_utils.core.config import load_profile
    from ce_utils.runner import run_notebook

    path = judge_smoke_profile(smoke_profile, classifier_dir, tmp_path)
    cfg = load_profile(path)
    root = Path(__file__).resolve().parent.parent
    for nb in ("01_layer_probing.ipynb", "02_de2ce.ipynb"):
        run_notebook(root / "notebooks" / nb, tmp_path / nb, {"profile": str(path), "allow_broken_ce": True},
                     progress=False)
    res = Path(cfg["results_dir"])
    probe = pd.read_csv(res / "layer_probe.csv")
    assert set(probe[probe.section == "retrieval"].model_kind) == {"ce", "de"}
    assert set(probe[probe.section == "control"].model_kind) == {"ce-vs-de"}
    info = json.loads((Path(cfg["models_dir"]) / "ce-judge-tiny" / "training_info.json").read_text())
    assert info["base"] == str(classifier_dir)
    q = pd.read_csv(res / "de2ce.csv")
    assert {"DE-2 CE", "DE-2 DE", "DE-2 random", "DE-2 CE+top"} <= set(q["model"])


def test_ce_seeds_train_apart_resume_and_report_their_spread(smoke_cfg, tmp_path):
    """Each seed of ce_training.seeds trains its own CE (the profile's seed is the notebooks' CE), re-ranks every
    gain dataset's full test split, and is appended at once; a second call trains nothing."""
    import pandas as pd
    from ce_utils.cli import cmd_ce_seeds
    from ce_utils.experiments.cross_encoder import seeds as S
    import yaml

    prof = {k: v for k, v in copy.deepcopy(smoke_cfg).items() if k != "profile_path"}
    prof["models_dir"], prof["cache_dir"] = str(tmp_path / "models"), str(tmp_path / "cache")
    prof["ce_training"] = {**prof["ce_training"], "seeds": [13, 14], "gain_datasets": ["tiny-a", "tiny-b"]}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(prof))
    out = tmp_path / "res"
    assert cmd_ce_seeds(["--profile", str(path), "--results-dir", str(out)]) == 0
    df = pd.read_csv(out / S.CE_SEEDS_CSV)
    assert set(df["seed"]) == {13, 14} and set(df["dataset"]) == {"tiny-a", "tiny-b"}
    assert (df["gain"] - (df["reranked"] - df["first_stage"])).abs().max() < 1e-12
    assert (tmp_path / "models" / "ce-tiny").is_dir() and (tmp_path / "models" / "ce-tiny-s14").is_dir()
    first = df[df["seed"] == 13].set_index(["dataset", "metric"])["first_stage"]
    assert (first == df[df["seed"] == 14].set_index(["dataset", "metric"])["first_stage"]).all()  # one first stage
    stamp = (out / S.CE_SEEDS_CSV).stat().st_mtime_ns
    assert cmd_ce_seeds(["--profile", str(path), "--results-dir", str(out)]) == 0
    assert (out / S.CE_SEEDS_CSV).stat().st_mtime_ns == stamp
    assert cmd_ce_seeds(["--profile", str(path), "--results-dir", str(out), "--seeds", "13"]) == 0
    prof["ce_training"]["gain_datasets"] = ["nope"]
    path.write_text(yaml.safe_dump(prof))
    assert cmd_ce_seeds(["--profile", str(path), "--results-dir", str(out)]) == 2


def test_gain_summary_calls_a_gain_within_its_spread_a_tie():
    import pandas as pd
    from ce_utils.report.ce_seeds import ce_works, gain_summary

    rows = [{"ce": c, "seed": s, "dataset": "d", "metric": "NDCG@10", "gain": g, "first_stage": 0.6}
            for c, gains in {"clear": [0.02, 0.03, 0.025], "tied": [0.02, -0.01, 0.001], "one": [0.05]}.items()
            for s, g in zip((1, 2, 3), gains)]
    df = pd.DataFrame(rows)
    t = gain_summary(df).set_index("ce")
    assert t.loc["clear", "verdict"] == "beats" and t.loc["tied", "verdict"] == "tie" and t.loc["one", "verdict"] == "1 seed"
    assert t.loc["clear", "seeds"] == 3 and t.loc["clear", "mean"] == pytest.approx(0.025)
    assert ce_works(df, "clear", "d") is True and ce_works(df, "tied", "d") is False and ce_works(df, "one", "d") is None


def test_the_notebooks_guard_follows_the_seeds_where_there_are_three(tmp_path):
    """ce_works as notebooks 01/02 record it: the seeds' verdict (a tie is no working CE) where ce_seeds.csv
    has >= 3 seeds of the CE on the check set, the one-run guard's otherwise, with the reason."""
    import pandas as pd
    from ce_utils.report.ce_seeds import seeded_guard

    path = tmp_path / "ce_seeds.csv"
    assert seeded_guard(path, "trained:ce", "d", True)[0] is True            # no CSV: the one run decides
    rows = [{"ce": c, "seed": s, "dataset": "d", "metric": "NDCG@10", "gain": g, "first_stage": 0.6}
            for c, gains in {"tied": [0.02, -0.01, 0.001], "clear": [0.02, 0.03, 0.025], "two": [0.02, 0.03]}.items()
            for s, g in zip((1, 2, 3), gains)]
    pd.DataFrame(rows).to_csv(path, index=False)
    works, why = seeded_guard(path, "tied", "d", True)
    assert works is False and "3 training seeds" in why and "(tie)" in why and "+0.0037" in why
    assert seeded_guard(path, "clear", "d", False)[0] is True
    assert seeded_guard(path, "two", "d", False) == (False, seeded_guard(path, "two", "d", False)[1])
    assert "one run" in seeded_guard(path, "two", "d", False)[1]
    assert "one run" in seeded_guard(path, "clear", "other", True)[1]


def test_de2_from_the_untuned_ce_copies_ce_training_base_exactly(smoke_cfg, classifier_dir):
    """DE-2 untuned CE (init ce-base): the embeddings and layer 0 of ``ce_training.base`` (the judge before its
    relevance training), bit for bit, then one random layer; a profile without a base is told what to set."""
    from transformers import AutoModelForSequenceClassification
    from ce_utils.core.config import ConfigError
    from ce_utils.core.models import load_cross_encoder, load_sentence_transformer
    from ce_utils.core.students import student_name
    from ce_utils.experiments.curves.run import de2ce_ce_spec, run_de2ce_curve

    cfg = copy.deepcopy(smoke_cfg)
    cfg["ce_training"] = {**cfg["ce_training"], "base": str(classifier_dir)}
    assert de2ce_ce_spec(cfg, "ce-base") == str(classifier_dir) and de2ce_ce_spec(cfg, "ce") == cfg["models"]["ce"]
    with pytest.raises(ConfigError, match="ce_training.base"):
        de2ce_ce_spec({"models": {"ce": "x"}, "ce_training": {}}, "ce-base")
    base = AutoModelForSequenceClassification.from_pretrained(str(classifier_dir)).bert
    before = {k: v.clone() for k, v in base.embeddings.state_dict().items()}
    de = load_sentence_transformer(cfg["models"]["de"], cfg)
    student = build_de2ce(de, load_cross_encoder(de2ce_ce_spec(cfg, "ce-base"), cfg), "ce-base", 1, seed=3)
    s = backbone(student)
    assert student_name("ce-base", 2) == "DE-2 untuned CE"
    assert not same_weights(s.encoder.layer[1], backbone(de).encoder.layer[1])   # the second layer is random
    for name, tensor in s.embeddings.state_dict().items():
        assert torch.equal(tensor, before[name])
    for name, tensor in s.encoder.layer[0].state_dict().items():
        assert torch.equal(tensor, base.encoder.layer[0].state_dict()[name])
    rows, trained, _ = run_de2ce_curve(cfg, "ce-base", 1, 2, 2, dev={"tiny-a": "train"}, progress=False)
    assert {r["student"] for r in rows} == {"DE-2 untuned CE"} and {r["step"] for r in rows} == {0, 2}
