"""Run the numbered notebooks headlessly with papermill.

    python -m ce_utils.runner --profile default            # every notebook, then the figures
    python -m ce_utils.runner --only 05                    # the figures alone (reads results/*.csv)
    python -m ce_utils.runner --only 03 -p max_steps 10    # one notebook, other parameters

Executed copies are written to ``<results_dir>/notebooks/`` (override with --output-dir).
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
from pathlib import Path

from ce_utils.config import ConfigError, load_profile, repo_root


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
    from ce_utils.results import atomic_write_text

    notebook = Path(notebook)
    text = notebook.read_text(encoding="utf-8")
    for old, new in sorted((replacements or path_replacements()).items(), key=lambda kv: -len(kv[0])):
        text = text.replace(old, new)
    atomic_write_text(notebook, text)


def run_notebook(path: str | Path, output: str | Path, parameters: dict, cwd: str | Path | None = None,
                 progress: bool = True):
    import papermill as pm

    absolutize_env()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        return pm.execute_notebook(str(path), str(output), parameters=parameters, kernel_name="python3",
                                   cwd=str(cwd or Path(path).parent), progress_bar=progress, log_output=False)
    finally:
        if output.is_file():  # also the copy papermill leaves behind when a cell fails
            scrub_paths(output)


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
    out_dir = Path(args.output_dir) if args.output_dir else Path(cfg["results_dir"]) / "notebooks"
    for book in select(args.only):
        print(f"== {book.name} (profile {args.profile})", flush=True)
        run_notebook(book, out_dir / book.name, params)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
