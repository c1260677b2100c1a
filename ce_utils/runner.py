"""Run the numbered notebooks headlessly with papermill.

    python -m ce_utils run --profile default            # every notebook, then the figures
    python -m ce_utils run --only 05                    # the figures alone (reads results/*.csv)
    python -m ce_utils run --only 03 -p max_steps 10    # one notebook, other parameters

Executed copies are written to ``<results_dir>/notebooks/`` (override with --output-dir).

Before any kernel starts, the runner checks the profile, the data directory and every dataset,
query file and STS file the profile names, and every ``-p`` parameter against the notebooks'
``parameters`` cells; then it converts (once) every packaged model the profile names in a form that
needs it (``ce_utils.convert``: ``package-parts:``, ``onnx-bert:``). A problem stops it with one line
and exit code 2. A run with parameters other than the profile's writes its CSVs and notebooks to
``runs/<profile>-<time>/`` (gitignored), never over ``results/<profile>/``; there notebook 05 draws from
the run's own CSVs and, for every CSV the run did not write, a copy of the profile's, and writes its
figures to ``runs/<profile>-<time>/figures/``. An executed notebook replaces the previous copy only when
it succeeded.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import json
import os
import shutil
import sys
import time
from pathlib import Path

import pandas as pd
import papermill as pm
import torch
from ce_utils.convert import convert_profile
from ce_utils.core.config import ConfigError, data_dir, load_profile, repo_root
from ce_utils.core.data import dataset_folder, dataset_members, missing_files
from ce_utils.core.encode import encode_settings, native_bf16
from ce_utils.core.io import atomic_write_text, write_csv_atomic
from ce_utils.core.runinfo import cpu_model


def notebook_paths() -> list[Path]:
    """The numbered notebooks, in order."""
    return sorted(p for p in (repo_root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def select(only: list[str] | None) -> list[Path]:
    books = notebook_paths()
    if not only:
        return books
    chosen = [b for b in books if any(b.name.startswith(o) or b.stem == o for o in only)]
    unknown = [o for o in only if not any(b.name.startswith(o) or b.stem == o for b in books)]
    if unknown:
        raise ConfigError(f"No notebook matches {unknown}; have {', '.join(b.name for b in books)}.")
    return chosen


def parse_value(text: str):
    """papermill-style: Python literals where they parse, else the raw string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


# Folder settings read from the environment; the kernel runs in notebooks/, so relative values
# given from the repository root are made absolute before it starts.
PATH_ENV_VARS = ("CE_DATA_DIR", "CE_REFERENCE_DIR")


def absolutize_env(names=PATH_ENV_VARS) -> None:
    for name in names:
        value = os.environ.get(name)
        if value and not Path(value).expanduser().is_absolute():
            os.environ[name] = str(Path(value).expanduser().resolve())


def path_replacements() -> dict[str, str]:
    """Machine-specific folders and what an executed notebook shows instead: the repository root
    becomes relative, the data / reference folders their variable's name, the home folder ``~``."""
    root = str(repo_root())
    out = {root + os.sep: "", root: "."}
    for name in PATH_ENV_VARS:
        value = os.environ.get(name)
        if value:
            out[str(Path(value).expanduser().resolve())] = "$" + name
    home = str(Path.home())
    if home not in ("/", ""):
        out[home] = "~"
    return out


def scrub_paths(notebook: str | Path, replacements: dict[str, str] | None = None) -> None:
    """Rewrite an executed notebook without this machine's absolute paths (papermill's
    input/output paths, warnings that name site-packages, printed data folders), so that the
    committed copy reads the same on every machine. Longest paths are replaced first."""

    notebook = Path(notebook)
    text = notebook.read_text(encoding="utf-8")
    for old, new in sorted((replacements or path_replacements()).items(), key=lambda kv: -len(kv[0])):
        text = text.replace(old, new)
    atomic_write_text(notebook, text)


# what the kernel inherits: no progress-bar frames or hub / transformers chatter in an executed notebook
QUIET_KERNEL = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error",
                "TOKENIZERS_PARALLELISM": "false"}


def noise(notebook: str | Path) -> list[str]:
    """What a reader should never see in an executed notebook: tracebacks, and stderr progress-bar frames."""
    nb = json.loads(Path(notebook).read_text(encoding="utf-8"))
    out = []
    for i, cell in enumerate(nb.get("cells", [])):
        for o in cell.get("outputs", []):
            text = "".join(o.get("text", "")) if isinstance(o.get("text"), list) else str(o.get("text", ""))
            if o.get("output_type") == "error":
                out.append(f"cell {i}: {o.get('ename')}: {o.get('evalue')}")
            elif o.get("name") == "stderr" and ("\r" in text or "it/s]" in text or "%|" in text):
                out.append(f"cell {i}: progress frames on stderr: {text.strip()[:80]!r}")
    return out


def run_notebook(path: str | Path, output: str | Path, parameters: dict, cwd: str | Path | None = None,
                 progress: bool = True):
    """Execute ``path`` with papermill into ``output``. The executed copy is written beside it
    first and renamed over ``output`` only when every cell ran; a failed run leaves the previous
    ``output`` untouched and its own copy as ``<name>.failed.ipynb`` (both without machine paths)."""

    absolutize_env()
    os.environ.update(QUIET_KERNEL)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.stem}.partial.ipynb")
    try:
        nb = pm.execute_notebook(str(path), str(partial), parameters=parameters, kernel_name="python3",
                                 cwd=str(cwd or Path(path).parent), progress_bar=progress, log_output=False)
    except BaseException:
        if partial.is_file():
            scrub_paths(partial)
            partial.replace(output.with_name(f"{output.stem}.failed.ipynb"))
        raise
    scrub_paths(partial)
    strip_volatile(partial)
    partial.replace(output)
    return nb


VOLATILE = ("start_time", "end_time", "duration")


def strip_volatile(notebook: str | Path) -> None:
    """Drop what changes on every execution without changing a result (papermill's start / end times and
    durations, the kernel's execution timestamps, the random id of its injected-parameters cell): rerunning a notebook whose outputs are the same leaves
    its committed copy byte for byte the same."""
    notebook = Path(notebook)
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    for meta in [nb.get("metadata", {})] + [c.get("metadata", {}) for c in nb.get("cells", [])]:
        pm_meta = meta.get("papermill")
        if isinstance(pm_meta, dict):
            for k in VOLATILE:
                pm_meta.pop(k, None)
        meta.pop("execution", None)
    for cell in nb.get("cells", []):   # papermill gives the cell it injects a random id on every run
        if "injected-parameters" in (cell.get("metadata", {}).get("tags") or []):
            cell["id"] = "injected-parameters"
    atomic_write_text(notebook, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def notebook_parameters(book: str | Path) -> set[str]:
    """The names a notebook's ``parameters`` cell defines (papermill's own inspection)."""

    return set(pm.inspect_notebook(str(book)))


def check_parameters(books: list[Path], params: dict) -> dict[Path, dict]:
    """Each notebook's share of ``params``: a parameter no selected notebook takes is an error
    (papermill would only warn), one that some take is passed to those only."""
    accepted = {b: notebook_parameters(b) for b in books}
    unknown = [k for k in params if not any(k in names for names in accepted.values())]
    if unknown:
        known = sorted(set().union(*accepted.values()))
        raise ConfigError(f"Unknown notebook parameter(s) {unknown} for {', '.join(b.name for b in books)}; "
                          f"they take: {', '.join(known)}.")
    return {b: {k: v for k, v in params.items() if k in names} for b, names in accepted.items()}


def preflight(cfg: dict, books: list[Path]) -> None:
    """Everything the selected notebooks read, checked before any kernel starts: the data
    directory and every dataset folder, query file and STS file the profile names (BEIR sets may
    be missing when the profile downloads them); then the profile's packaged models are converted
    where they need it (``ce_utils.convert.convert_profile``). Notebook 05 reads CSVs only and needs
    none of them."""

    if all(b.name.startswith("05") for b in books):
        return
    root = data_dir(cfg, must_exist=not cfg.get("allow_download"))
    missing = []
    for name, spec in (cfg.get("datasets") or {}).items():
        folder = dataset_folder(cfg, name)
        if (missing_files(folder, spec.get("split", "test"), dataset_members(cfg, name))   # a group: every member
                and not (cfg.get("allow_download") and spec.get("beir_name"))):
            missing.append(f"dataset {name} ({folder})")
    for name, rel in (cfg.get("query_files") or {}).items():
        if not (root / rel).is_file():
            missing.append(f"query file {name} ({root / rel})")
    for name, spec in (cfg.get("sts") or {}).items():
        if not (root / spec["path"]).is_file():
            missing.append(f"STS set {name} ({root / spec['path']})")
    if missing:
        raise ConfigError(f"Missing in the data directory {root}: {'; '.join(missing)}. Point CE_DATA_DIR (or "
                          "-p data_dir) at the folder that holds beir/, queries/ and sts/.")
    convert_profile(cfg)


def run_folder(cfg: dict, params: dict) -> Path | None:
    """Where a run with parameters other than the profile's writes (``runs/<profile>-<time>/``);
    ``None`` for a plain profile run, or when ``results_dir`` is given explicitly."""

    extra = {k for k in params if k not in ("profile", "results_dir")}
    if not extra or params.get("results_dir"):
        return None
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return repo_root() / "runs" / f"{cfg['name']}-{stamp}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="default", help="configs/<name>.yaml or a YAML path")
    ap.add_argument("--only", nargs="*", help="notebook prefixes, e.g. 01 03 05")
    ap.add_argument("--output-dir", help="where executed notebooks go")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="papermill parameter passed to every selected notebook")
    args = ap.parse_args(argv)
    cfg = load_profile(args.profile)
    params = {"profile": args.profile, **{k: parse_value(v) for k, v in args.parameter}}
    books = select(args.only)
    per_book = check_parameters(books, params)
    preflight(load_profile(args.profile, {k: v for k, v in params.items() if k in ("data_dir", "cache_dir")}), books)
    run_dir = run_folder(cfg, params)
    if run_dir is not None:
        params["results_dir"] = str(run_dir / "results")
        per_book = {b: {**p, "results_dir": params["results_dir"]} if "results_dir" in notebook_parameters(b) else p
                    for b, p in per_book.items()}
        print(f"parameters differ from the profile's: writing to {os.path.relpath(run_dir, repo_root())}/", flush=True)
    out_dir = (Path(args.output_dir) if args.output_dir else
               run_dir / "notebooks" if run_dir is not None else Path(cfg["results_dir"]) / "notebooks")
    for book in books:
        print(f"== {book.name} (profile {args.profile})", flush=True)
        t0 = time.time()
        if run_dir is not None and book.name.startswith(FIGURES_ONLY):
            seed_results(Path(cfg["results_dir"]), run_dir / "results")
            per_book[book] = {"figures_dir": str(run_dir / "figures"), **per_book[book]}
        run_notebook(book, out_dir / book.name, per_book[book])
        if not book.name.startswith(FIGURES_ONLY):  # the figures read CSVs: their wall time is no reproduction cost
            record_time(Path(params.get("results_dir") or cfg["results_dir"]), book.name, time.time() - t0, cfg)
    return 0


FIGURES_ONLY = "05"


def seed_results(profile_results: Path, run_results: Path) -> list[str]:
    """Copy into a run's results folder every result CSV of the profile the run has not written
    itself, so that the figures of a run with other parameters draw from a complete set (the run's
    own CSVs first) without writing over the profile's tables, manifest or figures. Returns the
    names copied."""
    run_results.mkdir(parents=True, exist_ok=True)
    copied = []
    for src in sorted(profile_results.glob("*.csv")):
        dst = run_results / src.name
        if not dst.exists():
            shutil.copy2(src, dst)
            copied.append(src.name)
    return copied


def record_time(results_dir: Path, notebook: str, seconds: float, cfg: dict | None = None) -> Path:
    """Wall time of a successful notebook run, in ``<results_dir>/run_times.csv`` (one row per
    notebook, replaced by its latest run), with the machine it ran on."""


    path = results_dir / "run_times.csv"
    rows = pd.read_csv(path).to_dict("records") if path.is_file() else []
    rows = [r for r in rows if r["notebook"] != notebook]
    rows.append({"notebook": notebook, "seconds": round(seconds, 1), "cpu": cpu_model(), "cores": os.cpu_count(),
                 "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
                 "native_bf16": native_bf16("cpu"), "encode_dtype": encode_settings(cfg or {})["dtype"],
                 "finished": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})
    return write_csv_atomic(pd.DataFrame(rows).sort_values("notebook"), path)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
