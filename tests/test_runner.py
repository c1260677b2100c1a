import os

import pytest

from ce_utils.config import ConfigError
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
