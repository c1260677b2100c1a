import os

import pytest

from ce_utils.core.config import ConfigError
from ce_utils import runner
from ce_utils.runner import notebook_paths, parse_value, select


def test_numbered_notebooks_have_a_parameters_cell():
    import nbformat

    books = notebook_paths()
    assert books, "no numbered notebooks"
    for book in books:
        nb = nbformat.read(book, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{book.name}: needs exactly one cell tagged 'parameters'"
        assert "profile" in tagged[0].source, book.name
        assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
            f"{book.name}: commit notebooks without outputs"


def test_select_and_parse():
    first = notebook_paths()[0]
    assert select([first.name[:2]]) == [first]
    with pytest.raises(ConfigError, match="No notebook matches"):
        select(["99"])
    assert parse_value("[1, 2]") == [1, 2]
    assert parse_value("None") is None
    assert parse_value("scifact") == "scifact"


def test_relative_env_paths_made_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CE_DATA_DIR", "data")
    monkeypatch.setenv("CE_REFERENCE_DIR", "/already/absolute")
    runner.absolutize_env()
    assert os.environ["CE_DATA_DIR"] == str((tmp_path / "data").resolve())
    assert os.environ["CE_REFERENCE_DIR"] == "/already/absolute"


def test_scrub_paths_leaves_no_machine_paths(monkeypatch, tmp_path):
    import json

    root = runner.repo_root()
    data = tmp_path / "shared" / "data"
    monkeypatch.setenv("CE_DATA_DIR", str(data))
    nb = tmp_path / "out.ipynb"
    nb.write_text(json.dumps({"metadata": {"papermill": {"input_path": f"{root}/notebooks/01.ipynb"}},
                              "cells": [{"outputs": [{"text": f"{root}/.venv/lib/x.py:1: Warning\\n",
                                                      "data": f"reading {data}/beir/scifact"}]}]}))
    runner.scrub_paths(nb)
    text = nb.read_text()
    assert str(root) not in text and str(tmp_path) not in text
    got = json.loads(text)
    assert got["metadata"]["papermill"]["input_path"] == "notebooks/01.ipynb"
    assert got["cells"][0]["outputs"][0]["data"] == "reading $CE_DATA_DIR/beir/scifact"


def test_missing_data_stops_before_any_kernel(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CE_DATA_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setattr(runner, "run_notebook", lambda *a, **k: pytest.fail("a kernel was started"))
    with pytest.raises(ConfigError, match="CE_DATA_DIR"):
        runner.main(["--only", "01"])
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("CE_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(ConfigError, match="dataset scifact"):
        runner.main(["--only", "01"])


def test_unknown_parameter_is_an_error(monkeypatch):
    monkeypatch.setattr(runner, "run_notebook", lambda *a, **k: pytest.fail("a kernel was started"))
    monkeypatch.setattr(runner, "preflight", lambda *a, **k: None)
    with pytest.raises(ConfigError, match=r"Unknown notebook parameter\(s\) \['max_stepz'\]"):
        runner.main(["--only", "03", "-p", "max_stepz", "5"])
    books = runner.select(["01", "03"])
    shares = runner.check_parameters(books, {"profile": "default", "max_steps": 5})
    assert shares[books[0]] == {"profile": "default"} and shares[books[1]]["max_steps"] == 5


def test_runs_with_other_parameters_go_to_a_run_folder(monkeypatch):
    calls = []
    monkeypatch.setattr(runner, "run_notebook", lambda book, out, params, **k: calls.append((out, params)))
    monkeypatch.setattr(runner, "preflight", lambda *a, **k: None)
    times = []
    monkeypatch.setattr(runner, "record_time", lambda d, name, sec, *a, **k: times.append((d, name)))
    runner.main(["--only", "03", "-p", "max_steps", "5"])
    out, params = calls[0]
    assert "runs" in out.parts and "results" not in out.parts[:-2]
    assert "/runs/default-" in params["results_dir"].replace(os.sep, "/")
    calls.clear()
    runner.main(["--only", "05"])  # the profile's own run: results/<profile>/
    assert calls[0][0].parts[-3:] == ("default", "notebooks", "05_figures.ipynb")
    assert [name for _, name in times] == ["03_query_distillation.ipynb"]  # figures only: no wall time recorded


def test_figures_with_other_parameters_draw_the_profile_csvs_into_the_run_folder(monkeypatch, tmp_path):
    """``--only 05 -p metric ...`` once read an empty run folder and failed; now the run folder gets the
    profile's CSVs the run did not write, and the figures go beside them, never over figures/<profile>/."""
    calls = []
    monkeypatch.setattr(runner, "run_notebook", lambda book, out, params, **k: calls.append((out, params)))
    monkeypatch.setattr(runner, "preflight", lambda *a, **k: None)
    monkeypatch.setattr(runner, "run_folder", lambda cfg, params: tmp_path / "run")
    own = tmp_path / "run" / "results"
    own.mkdir(parents=True)
    (own / "de2ce.csv").write_text("written by this run\n")
    runner.main(["--only", "05", "-p", "metric", "MRR@10"])
    _, params = calls[0]
    assert params["results_dir"] == str(own) and params["figures_dir"] == str(tmp_path / "run" / "figures")
    profile_csvs = {p.name for p in (runner.repo_root() / "results" / "default").glob("*.csv")}
    assert "de2ce.csv" in profile_csvs and profile_csvs <= {p.name for p in own.glob("*.csv")}
    assert (own / "de2ce.csv").read_text() == "written by this run\n"  # the run's own CSV is kept


def test_run_times_keep_one_row_per_notebook(tmp_path):
    import pandas as pd

    runner.record_time(tmp_path, "01_a.ipynb", 10)
    runner.record_time(tmp_path, "02_b.ipynb", 20)
    runner.record_time(tmp_path, "01_a.ipynb", 30)
    df = pd.read_csv(tmp_path / "run_times.csv")
    assert df["notebook"].tolist() == ["01_a.ipynb", "02_b.ipynb"] and df["seconds"].tolist() == [30, 20]


def test_failed_run_keeps_the_previous_executed_notebook(tmp_path, monkeypatch):
    import papermill as pm

    out = tmp_path / "01.ipynb"
    out.write_text("previous")

    def boom(src, dst, **kw):
        open(dst, "w").write("{}")
        raise RuntimeError("cell failed")

    monkeypatch.setattr(pm, "execute_notebook", boom)
    monkeypatch.setattr(runner, "scrub_paths", lambda p, r=None: None)
    with pytest.raises(RuntimeError):
        runner.run_notebook(runner.notebook_paths()[0], out, {})
    assert out.read_text() == "previous" and (tmp_path / "01.failed.ipynb").is_file()


def test_papermill_reads_every_parameter():
    """papermill silently drops a parameter line it cannot parse (an apostrophe in its comment), and
    the runner's unknown-parameter check would then refuse that parameter."""
    import re

    import nbformat

    for book in notebook_paths():
        nb = nbformat.read(book, as_version=4)
        cell = next(c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", []))
        names = {m.group(1) for m in re.finditer(r"^(\w+)\s*=", cell.source, flags=re.M)}
        assert runner.notebook_parameters(book) == names, book.name


def test_executed_notebooks_keep_no_timestamps(tmp_path):
    """A rerun with the same outputs leaves the committed executed notebook byte for byte the same."""
    import json

    def executed(t):
        injected = {"cell_type": "code", "id": t[-8:], "source": "a = 1", "outputs": [], "execution_count": 1,
                    "metadata": {"tags": ["injected-parameters"]}}   # papermill's random id
        return {"cells": [{"cell_type": "code", "source": "1", "outputs": [], "execution_count": 1,
                           "metadata": {"papermill": {"start_time": t, "end_time": t, "duration": 0.1 + len(t),
                                                      "status": "completed", "exception": False},
                                        "execution": {"iopub.status.busy": t}, "tags": ["x"]}}, injected],
                "metadata": {"papermill": {"start_time": t, "end_time": t, "duration": 1.5, "parameters": {"a": 1}}},
                "nbformat": 4, "nbformat_minor": 5}

    a, b = tmp_path / "a.ipynb", tmp_path / "b.ipynb"
    a.write_text(json.dumps(executed("2026-01-01T00:00:00")))
    b.write_text(json.dumps(executed("2026-12-31T23:59:59.5")))
    runner.strip_volatile(a)
    runner.strip_volatile(b)
    assert a.read_bytes() == b.read_bytes()
    nb = json.loads(a.read_text())
    assert nb["metadata"]["papermill"] == {"parameters": {"a": 1}}
    assert nb["cells"][0]["metadata"] == {"papermill": {"status": "completed", "exception": False}, "tags": ["x"]}


def test_progress_bars_ask_the_environment(monkeypatch):
    """tqdm honours TQDM_DISABLE only for bars made without an explicit ``disable``; every bar of the
    package passes one, so each goes through ``show_progress`` (quiet notebook kernels, no frames)."""
    import ast

    from ce_utils.core.config import show_progress

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert show_progress(True) and not show_progress(False)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert not show_progress(True)
    raw = []
    for path in (runner.repo_root() / "ce_utils").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg in ("disable", "show_progress_bar", "disable_tqdm"):
                src = ast.unparse(node.value)
                if "progress" in src and "show_progress(" not in src:
                    raw.append(f"{path.name}: {node.arg}={src}")
    assert not raw, raw
