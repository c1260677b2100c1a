"""Reading the result CSVs (schemas), writing tables (Markdown, LaTeX) and figures, and the manifest.

Every figure and table is drawn from ``results/<profile>/*.csv`` alone and written with

* ``figures/<profile>/<name>.png`` and ``.pdf`` (deterministic: fixed rcParams, ``svg.hashsalt``,
  no PDF creation date, so a rerun on unchanged CSVs does not change the files' content),
* ``results/<profile>/tables/<name>.md`` and ``.tex``,
* ``results/<profile>/figures_manifest.json``: for every figure and table, the CSVs it came
  from and their sha256 (a test checks that committed figures are not older than their CSVs).

A CSV that is absent skips its figures with a printed note; a CSV that exists with a wrong
schema raises :class:`SchemaError`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ce_utils.core.config import repo_root
from ce_utils.core.io import atomic_write_text


SCHEMAS = {
    "layer_probe.csv": ["model", "model_kind", "layer", "dataset", "metric", "value"],
    "ce_quality.csv": ["model", "stage", "dataset", "metric", "value"],
    "layer_probe_extra.csv": ["model", "model_kind", "layer", "dataset", "metric", "value", "ce_works"],
    "ce_quality_extra.csv": ["model", "stage", "dataset", "metric", "value", "encode_dtype", "ce_works"],
    "de2ce.csv": ["model", "init", "n_layers", "dataset", "metric", "value"],
    "pipeline.csv": ["first_stage", "reranker", "depth", "dataset", "metric", "value"],
    "query_distill.csv": ["student", "strategy", "layers", "n_layers", "dataset", "metric", "value"],
    "ce_training.csv": ["model", "model_kind", "step", "minutes", "dev_NDCG@10", "first_stage_NDCG@10", "selected"],
    "peer_check.csv": ["model", "dataset", "metric", "value", "published", "delta", "tolerance", "source"],
    "peer_check_models.csv": ["model", "dataset", "metric", "value", "published", "delta", "tolerance", "source"],
    "speed.csv": ["model", "role", "n_layers", "batch_size", "threads", "device", "dtype", "tokenization",
                  "median_ms", "queries_per_s", "speedup_vs_de", "flop_ratio"],
    "query_distill_curve.csv": ["student", "phase", "step", "minutes", "dataset", "split", "value", "retention"],
    "backend_quality.csv": ["model", "backend", "dataset", "metric", "value", "delta_vs_torch_fp32"],
    "ce_seeds.csv": ["ce", "seed", "dataset", "metric", "first_stage", "reranked", "gain"],
    "budgets.csv": ["student", "spec", "kind", "sweep", "budget_steps", "seed", "learning_rate", "dataset",
                    "retention"],
    "matmul.csv": ["tokens", "shape", "op", "dtype", "threads", "round", "ms_per_call", "gflop_per_s"],
    "call_profile.csv": ["model", "backend", "batch_size", "threads", "part", "ms", "share"],
    "run_times.csv": ["notebook", "seconds", "cpu", "cores", "finished"],
}
NUMERIC = {"value", "layer", "n_layers", "depth", "batch_size", "threads", "median_ms", "queries_per_s",
           "speedup_vs_de", "flop_ratio", "step", "minutes", "retention", "budget_steps", "seed", "learning_rate"}
PCT, SCORE = ".1f", ".3f"   # the one rounding rule: retention in % with 1 decimal, scores with 3
DEFAULTS = {"metric": "NDCG@10", "sts_metric": "Spearman", "pareto_batch_size": 1, "pareto_threads": 1,
            "pareto_tokenization": "included", "pareto_datasets": None, "dpi": 150, "paper2_geometry": None}


class SchemaError(ValueError):
    """A result CSV exists but lacks columns (or holds unusable values)."""


# --------------------------------------------------------------------------- reading
def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_result(results_dir: str | Path, name: str, log: Callable = print) -> pd.DataFrame | None:
    """``results_dir/name`` checked against :data:`SCHEMAS`; ``None`` (and a note) when absent."""
    path = Path(results_dir) / name
    if not path.is_file():
        log(f"note: {path.name} not found in {Path(results_dir).name}/ -- its figures are skipped.")
        return None
    df = pd.read_csv(path)
    need = SCHEMAS.get(name, [])
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise SchemaError(f"{path} lacks column(s) {missing}; expected at least {need}. Rerun the notebook "
                          "that writes it, or update ce_utils.report.tables.SCHEMAS if its schema changed.")
    if df.empty:
        raise SchemaError(f"{path} holds no rows.")
    for col in need:
        if col in NUMERIC:
            conv = pd.to_numeric(df[col], errors="coerce")
            bad = conv.isna() & df[col].notna()
            if bad.any():
                raise SchemaError(f"{path}: column {col!r} holds non-numeric values, e.g. {df[col][bad].iloc[0]!r}.")
            df[col] = conv
    return df


def read_results(results_dir: str | Path, log: Callable = print) -> dict[str, pd.DataFrame]:
    out = {}
    for name in SCHEMAS:
        df = read_result(results_dir, name, log=log)
        if df is not None:
            out[name] = df
    return out


@dataclass
class Output:
    """Figures and tables written by one :func:`make_all` run, with their sources."""

    figures_dir: Path
    tables_dir: Path
    results_dir: Path
    dpi: int = 150
    manifest: dict = field(default_factory=dict)

    def _rel(self, p: Path) -> str:
        try:
            return str(Path(p).resolve().relative_to(repo_root()))
        except ValueError:  # outside the repository (tests): an absolute path, never committed
            return str(Path(p).resolve())

    def _sources(self, sources: list[str]) -> dict:
        return {s: sha256(self.results_dir / s) for s in sources}

    def figure(self, fig, name: str, sources: list[str]) -> Path:
        self.figures_dir.mkdir(parents=True, exist_ok=True)
        png = self.figures_dir / f"{name}.png"
        pdf = self.figures_dir / f"{name}.pdf"
        fig.savefig(png, dpi=self.dpi, metadata={"Software": None})
        fig.savefig(pdf, metadata={"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None})
        plt.close(fig)
        self.manifest[f"figures/{name}"] = {"kind": "figure", "files": [self._rel(png), self._rel(pdf)],
                                           "sources": self._sources(sources)}
        return png

    def table(self, df: pd.DataFrame, name: str, sources: list[str], caption: str = "", floatfmt: str = ".3f",
              formats: dict | None = None) -> Path:
        """``name``.md and .tex: floats by ``formats[column]``, else ``floatfmt`` (retention in % with 1 decimal,
        scores with 3: :data:`PCT`, :data:`SCORE`)."""
        self.tables_dir.mkdir(parents=True, exist_ok=True)
        md = self.tables_dir / f"{name}.md"
        tex = self.tables_dir / f"{name}.tex"
        atomic_write_text(md, to_markdown(df, floatfmt, formats, caption) + "\n")
        atomic_write_text(tex, to_latex(df, caption or name, name, floatfmt, formats))
        self.manifest[f"tables/{name}"] = {"kind": "table", "files": [self._rel(md), self._rel(tex)],
                                          "sources": self._sources(sources)}
        return md

    def write_manifest(self) -> Path:
        path = self.results_dir / "figures_manifest.json"
        atomic_write_text(path, json.dumps(dict(sorted(self.manifest.items())), indent=1, sort_keys=True) + "\n")
        return path


def _fmt(v, floatfmt: str) -> str:
    if isinstance(v, (float, np.floating)):
        return "" if math.isnan(v) else format(float(v), floatfmt)
    return "" if v is None or v is pd.NA else str(v)


def formatted(df: pd.DataFrame, floatfmt: str = ".3f", formats: dict | None = None) -> list[list[str]]:
    """Every cell as text: floats by ``formats[column]`` (e.g. ``".1f"`` for a retention in %), else ``floatfmt``."""
    fmts = [(formats or {}).get(c, floatfmt) for c in df.columns]
    return [[_fmt(v, f) for v, f in zip(row, fmts)] for row in df.itertuples(index=False)]


NUMBER = re.compile(r"^[+-]?(\d{1,3}(,\d{3})+|\d+)?(\.\d+)?(e[+-]?\d+)?\s?(%|x| pts)?$")


def numeric_columns(cells: list[list[str]], n: int) -> list[bool]:
    """Columns whose every filled cell is a number (``0.647``, ``+1.2``, ``4,800``, ``49.6%``, ``2.41x``; not
    ``0,11``): right-aligned."""
    return [bool(col) and all(NUMBER.match(c) and any(ch.isdigit() for ch in c) for c in col)
            for col in ([r[i] for r in cells if r[i] != ""] for i in range(n))]


def to_markdown(df: pd.DataFrame, floatfmt: str = ".3f", formats: dict | None = None, caption: str = "") -> str:
    """A Markdown table, numeric columns right-aligned, and its caption below (``Table: ...``) when given."""
    cols = [str(c) for c in df.columns]
    cells = formatted(df, floatfmt, formats)
    align = ["---:" if num else "---" for num in numeric_columns(cells, len(cols))]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in cells]
    return "\n".join(lines) + (f"\n\nTable: {caption}" if caption else "")


TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
               "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}"}
_TEX = re.compile("|".join(re.escape(k) for k in TEX_SPECIAL))
LONG_TEXT = 28   # a text column with a longer cell wraps in a p{} column


def tex_escape(s) -> str:
    """Text for LaTeX's text mode: every special character escaped in one pass."""
    return _TEX.sub(lambda m: TEX_SPECIAL[m.group()], str(s))


def tex_label(name: str) -> str:
    """``tab:<name>`` with anything but lower-case letters and digits as a hyphen (a valid, unescaped label)."""
    return "tab:" + re.sub(r"[^a-z0-9]+", "-", str(name).lower()).strip("-")


def column_spec(cells: list[list[str]], header: list[str]) -> list[str]:
    """``r`` for numeric columns, ``p{...}`` (a share of the line width) for long text, ``l`` otherwise."""
    numeric = numeric_columns(cells, len(header))
    width = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]
    long = [not num and w > LONG_TEXT for num, w in zip(numeric, width)]
    share = (0.8 if not all(long) else 0.95) / max(1, sum(min(w, 80) for w, lg in zip(width, long) if lg))
    return ["r" if num else (f"p{{{share * min(w, 80):.2f}\\linewidth}}" if lg else "l")
            for num, lg, w in zip(numeric, long, width)]


def to_latex(df: pd.DataFrame, caption: str, label: str, floatfmt: str = ".3f", formats: dict | None = None) -> str:
    """A booktabs table (``\\toprule`` / ``\\midrule`` / ``\\bottomrule``): numeric columns right-aligned,
    long text in ``p{}`` columns, every cell escaped, the label ``tab:<label>`` with hyphens."""
    header = [str(c) for c in df.columns]
    cells = formatted(df, floatfmt, formats)
    spec = column_spec(cells, header)
    body = [" & ".join(tex_escape(c) for c in row) + r" \\" for row in cells]
    return "\n".join([r"\begin{table}[t]", r"\centering", r"\small", r"\caption{" + tex_escape(caption) + "}",
                      r"\label{" + tex_label(label) + "}", r"\begin{tabular}{" + " ".join(spec) + "}", r"\toprule",
                      " & ".join(tex_escape(h) for h in header) + r" \\", r"\midrule", *body, r"\bottomrule",
                      r"\end{tabular}", r"\end{table}"]) + "\n"


# --------------------------------------------------------------------------- captions
def distinct(df: pd.DataFrame | None, col: str) -> list:
    """The distinct non-empty values of ``df[col]`` in order of appearance (empty when absent)."""
    if df is None or col not in df.columns:
        return []
    return list(dict.fromkeys(v for v in df[col].tolist() if not (isinstance(v, float) and math.isnan(v)) and v != ""))


def span(df: pd.DataFrame | None, col: str, fmt: str = "{:,.0f}") -> str:
    """``150`` or ``30-150``: the range of a numeric column as text ('' when absent)."""
    vals = [float(v) for v in distinct(df, col)]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    return fmt.format(lo) if lo == hi else f"{fmt.format(lo)}-{fmt.format(hi)}"


def values_text(df: pd.DataFrame | None, col: str, fmt: str = "{:g}") -> str:
    """``10 and 20``: the distinct values of a numeric column, in order ('' when absent)."""
    vals = sorted({float(v) for v in distinct(df, col)})
    words = [fmt.format(v) for v in vals]
    return " and ".join([", ".join(words[:-1]), words[-1]]) if len(words) > 1 else "".join(words)


def seeds_text(df: pd.DataFrame | None) -> str:
    seeds = sorted(int(s) for s in distinct(df, "seed"))
    return "" if not seeds else (f"seed {seeds[0]}" if len(seeds) == 1 else "seeds " + ", ".join(map(str, seeds)))


def datasets_text(df: pd.DataFrame | None) -> str:
    return ", ".join(str(d) for d in distinct(df, "dataset") if d != "mean")


def saved(out: Output, fig, name: str, csv: str, why: str) -> bool:
    """Write a figure drawn by a ``draw_*`` function; ``None`` (nothing to draw) skips it with a note."""
    csvs = [csv] if isinstance(csv, str) else list(csv)
    if fig is None:
        print(f"note: {csvs[-1]} {why} -- {name} figure skipped.")
        return False
    out.figure(fig, name, csvs)
    return True


def check_manifest(results_dir: str | Path, root: str | Path | None = None) -> list[str]:
    """Problems with the committed figures: a listed file missing, or a source CSV whose sha256
    differs from the one recorded when the figure was made. Empty list = consistent."""
    results_dir = Path(results_dir)
    root = Path(root) if root else repo_root()
    path = results_dir / "figures_manifest.json"
    if not path.is_file():
        return [f"{path} is missing"]
    manifest = json.loads(path.read_text())
    problems = []
    for key, item in manifest.items():
        for f in item["files"]:
            if not (root / f).is_file():
                problems.append(f"{key}: {f} is missing")
        for src, digest in item["sources"].items():
            p = results_dir / src
            if not p.is_file():
                problems.append(f"{key}: source {src} is missing")
            elif sha256(p) != digest:
                problems.append(f"{key}: {src} changed after the figure was made (run `make figures`)")
    return problems
