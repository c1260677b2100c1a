"""The package's layers, read from the imports of its source (``ast``), never by running it:

* ``ce_utils/core/`` imports no other layer of ce_utils;
* ``ce_utils/experiments/`` imports core only, never another experiment (an experiment package's own
  modules may import each other); so does ``ce_utils/convert/``, the optional model converters;
* ``ce_utils/convert/`` (the model converters) imports core and itself only, never experiments or report;
* ``ce_utils/report/`` imports only core's ``config`` and ``io`` (and itself), and no torch;
* an import inside a function is allowed for an optional third-party package only.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "ce_utils"
# third-party packages a user may not have installed: only these may be imported inside a function
OPTIONAL = {"onnx", "onnxruntime", "onnxscript", "IPython", "pytest", "threadpoolctl", "tokenizers"}
REPORT_MAY_IMPORT = {"ce_utils.core.config", "ce_utils.core.io"}


def modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def layer(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0] if len(rel.parts) > 1 else "top"


def dotted(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(module, line, inside a function) for every import of ``path``; ``from ce_utils.x import y`` counts as
    ``ce_utils.x.y`` when y is a module there, else ``ce_utils.x``."""
    tree = ast.parse(path.read_text(), str(path))
    out = []

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                out.extend((a.name, child.lineno, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                for a in child.names:
                    sub = f"{child.module}.{a.name}"
                    is_module = (PKG.parent / Path(*sub.split("."))).with_suffix(".py").is_file() or \
                        (PKG.parent / Path(*sub.split(".")) / "__init__.py").is_file()
                    out.append((sub if is_module else child.module, child.lineno, in_function))
            visit(child, inner)

    visit(tree, False)
    return out


def same_package(me: str, mod: str) -> bool:
    """Both inside one experiment package (``ce_utils.experiments.curves.run`` and ``...curves.budgets``)."""
    a, b = me.split("."), mod.split(".")
    if a[:2] == b[:2] == ["ce_utils", "convert"]:
        return True  # the converters are one package
    return len(a) >= 3 and len(b) > 3 and a[:3] == b[:3]


def violations() -> list[str]:
    bad = []
    for path in modules():
        here, me = layer(path), dotted(path)
        for mod, line, lazy in imports(path):
            where = f"{path.relative_to(PKG.parent)}:{line} imports {mod}"
            top = mod.split(".")[0]
            if lazy and top not in OPTIONAL:
                bad.append(f"{where} inside a function (only an optional third-party package may be)")
            if top != "ce_utils" or mod == me:
                if here == "report" and top == "torch":
                    bad.append(f"{where}: the report layer reads CSVs and imports no torch")
                continue
            parts = mod.split(".")
            target = parts[1] if len(parts) > 1 else "top"
            if target in ("__init__",):
                target = "top"
            if here == "core" and target != "core":
                bad.append(f"{where}: core imports no other layer")
            elif here in ("experiments", "convert") and target != "core" and not same_package(me, mod):
                bad.append(f"{where}: {here} imports core only, never a sibling")
            elif here == "convert" and target not in ("core", "convert"):
                bad.append(f"{where}: convert imports core only")
            elif here == "report" and target != "report" and mod not in REPORT_MAY_IMPORT:
                bad.append(f"{where}: report imports only {sorted(REPORT_MAY_IMPORT)}")
    return bad


def test_every_module_keeps_to_its_layer():
    bad = violations()
    assert not bad, "\n".join(bad)


def test_the_rule_sees_a_violation(tmp_path, monkeypatch):
    """The checker itself: an upward import, a sibling import and a lazy import are each caught."""
    pkg = tmp_path / "ce_utils"
    for d in ("core", "experiments", "report", "convert"):
        (pkg / d).mkdir(parents=True)
        (pkg / d / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "core" / "io.py").write_text("from ce_utils.experiments import a\n")
    (pkg / "experiments" / "a.py").write_text("import numpy\n")
    (pkg / "experiments" / "b.py").write_text("from ce_utils.experiments.a import x\n"
                                              "def f():\n    import pandas\n")
    (pkg / "report" / "r.py").write_text("import torch\nfrom ce_utils.core import io\n")
    (pkg / "convert" / "c.py").write_text("from ce_utils.core import io\nfrom ce_utils.convert import d\n"
                                          "from ce_utils.experiments import a\n")
    monkeypatch.setattr(sys.modules[__name__], "PKG", pkg)
    bad = "\n".join(violations())
    assert "core/io.py:1 imports ce_utils.experiments.a: core imports no other layer" in bad
    assert "experiments/b.py:1 imports ce_utils.experiments.a: experiments imports core only" in bad
    assert "experiments/b.py:3 imports pandas inside a function" in bad
    assert "report/r.py:1 imports torch: the report layer" in bad
    assert "convert/c.py:3 imports ce_utils.experiments.a: convert imports core only" in bad
    assert "report/r.py:2" not in bad and "experiments/a.py" not in bad and "convert/c.py:1" not in bad
    assert "convert/c.py:2" not in bad


@pytest.mark.parametrize("module", ["ce_utils.report"] + [f"ce_utils.report.{p.stem}" for p in
                                                            sorted((PKG / "report").glob("*.py")) if p.stem != "__init__"])
def test_report_runs_without_torch(module):
    """What notebook 05 imports loads neither torch nor an experiment module."""
    code = (f"import sys, importlib; importlib.import_module({module!r}); "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith('ce_utils.experiments')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
