"""What every result row records beside its numbers: device, CPU, threads, library versions, commit, time."""

from __future__ import annotations

import datetime as _dt
import platform
import subprocess
from importlib.metadata import version

import sentence_transformers
import torch
import transformers
from ce_utils.core.config import repo_root
from ce_utils.core.encode import encode_settings


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


def _encode_dtype(cfg: dict | None) -> str:
    """The dtype corpora and queries are encoded in (``encode.dtype``, ``auto`` resolved)."""

    try:
        return encode_settings(cfg or {})["dtype"]
    except Exception:  # pragma: no cover - a bad dtype fails where it is used, with its own message
        return ""


def run_metadata(cfg: dict | None = None, seed: int | None = None, device: str | None = None) -> dict:
    """Device, CPU, thread count, library versions, commit and time of this run."""

    return {
        "profile": (cfg or {}).get("name", ""),
        "seed": seed if seed is not None else (cfg or {}).get("seed"),
        "device": device_name(device),
        "encode_dtype": _encode_dtype(cfg),
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
