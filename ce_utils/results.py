"""Result files: atomic CSV writes with the run's environment recorded next to every row."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Iterable

import pandas as pd

from ce_utils.config import repo_root

META_COLUMNS = ["profile", "seed", "device", "cpu", "threads", "python", "torch", "transformers",
                "sentence_transformers", "beir", "git_commit", "timestamp"]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str | None = None) -> str:
    import torch

    if (device or "").startswith("cuda") or (device is None and torch.cuda.is_available()):
        return f"cuda:{torch.cuda.get_device_name(0)}"
    return "cpu"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo_root(), capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except Exception:
        return "unknown"


def run_metadata(cfg: dict | None = None, seed: int | None = None, device: str | None = None) -> dict:
    """Device, CPU, thread count, library versions, commit and time of this run."""
    import beir  # noqa: F401
    import sentence_transformers
    import torch
    import transformers
    from importlib.metadata import version

    return {
        "profile": (cfg or {}).get("name", ""),
        "seed": seed if seed is not None else (cfg or {}).get("seed"),
        "device": device_name(device),
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "beir": version("beir"),
        "git_commit": git_commit(),
        "timestamp": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write to a temporary file beside ``path``, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_csv_atomic(df: pd.DataFrame, path: str | Path) -> Path:
    return atomic_write_text(path, df.to_csv(index=False))


def save_results(rows: pd.DataFrame | Iterable[dict], path: str | Path, meta: dict,
                 required: Iterable[str] = ()) -> pd.DataFrame:
    """Append the run metadata as columns and write the CSV atomically.

    ``required`` columns must be present (a guard for the documented schema)."""
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"Result rows lack columns {missing}")
    for key, value in meta.items():
        if key not in df.columns:
            df[key] = value
    write_csv_atomic(df, path)
    return df
