"""The recipes as a user runs them on their own retriever: the README's example (on a tiny model), the
distill-queries command line, and negative layer indices."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from ce_utils.cli import cmd_distill_queries
from ce_utils.core.students import layer_subset_student, parse_strategy
from ce_utils.core.config import ConfigError

README = Path(__file__).resolve().parents[1] / "README.md"
QUERIES = [f"what is query number {i} about" for i in range(24)]


def readme_example() -> str:
    text = README.read_text()
    m = re.search(r"<!-- example:start -->\s*```python\n(.*?)```\s*<!-- example:end -->", text, re.S)
    assert m, "README.md lost its example (between <!-- example:start --> and <!-- example:end -->)"
    return m.group(1)


def test_the_readme_example_runs(tiny_bert_dir, tmp_path, monkeypatch):
    code = readme_example()
    assert len(code.strip().splitlines()) <= 10
    (tmp_path / "my_queries.txt").write_text("\n".join(QUERIES) + "\n")
    monkeypatch.chdir(tmp_path)
    code = code.replace('"sentence-transformers/all-MiniLM-L6-v2"', repr(str(tiny_bert_dir))).replace("steps=640",
                                                                                                      "steps=2")
    scope: dict = {}
    exec(compile(code, "README.md example", "exec"), scope)
    student = SentenceTransformer(str(tmp_path / "my_student"))
    assert len(student[0].auto_model.encoder.layer) == 2
    assert np.allclose(scope["q"], student.encode(["what do cross encoders learn?"]), atol=1e-5)


def test_distill_queries_command_line(tiny_bert_dir, tmp_path, capsys):
    queries = tmp_path / "q.tsv"
    queries.write_text("".join(f"q{i}\t{t}\n" for i, t in enumerate(QUERIES)))
    out = tmp_path / "student"
    assert cmd_distill_queries(["--teacher", str(tiny_bert_dir), "--queries", str(queries), "--layers", "0,-1",
                                "--steps", "2", "--batch-size", "8", "--out", str(out)]) == 0
    teacher = SentenceTransformer(str(tiny_bert_dir))
    student = SentenceTransformer(str(out))
    top = len(teacher[0].auto_model.encoder.layer) - 1
    assert len(student[0].auto_model.encoder.layer) == 2
    # the student's embedding table is the teacher's before training moved it a little, not a random one
    e_s = student[0].auto_model.embeddings.word_embeddings.weight.detach().numpy()
    e_t = teacher[0].auto_model.embeddings.word_embeddings.weight.detach().numpy()
    assert np.abs(e_s - e_t).max() < 0.05
    assert "wrote" in capsys.readouterr().out and top >= 1
    assert cmd_distill_queries(["--teacher", str(tiny_bert_dir), "--queries", str(queries), "--steps", "0",
                                "--out", str(tmp_path / "x")]) == 2


def test_negative_layer_indices_count_from_the_top(tiny_bert_dir):
    teacher = SentenceTransformer(str(tiny_bert_dir))
    n = len(teacher[0].auto_model.encoder.layer)
    assert parse_strategy("subset:0,-1", n).layers == (0, n - 1)
    a = layer_subset_student(teacher, [0, -1])
    b = layer_subset_student(teacher, [0, n - 1])
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and np.array_equal(va.numpy(), vb.numpy())
    with pytest.raises(ConfigError):
        parse_strategy(f"subset:0,{-n - 1}", n)
