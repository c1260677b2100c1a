"""Profiles (configs/*.yaml) as data: models, datasets, sizes and output locations.

A profile is loaded, then overridden by notebook parameters. Keys may be dotted
(``encode.max_length``) to reach into nested sections.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

DATA_ENV = "CE_DATA_DIR"
PATH_KEYS = ("results_dir", "models_dir", "cache_dir")


class ConfigError(ValueError):
    """A bad parameter or a missing input; the message says how to fix it."""


def show_progress(requested: bool) -> bool:
    """``requested``, unless the environment turns progress bars off (``TQDM_DISABLE=1``, which the
    runner sets for notebook kernels): tqdm reads that variable only for bars made without an explicit
    ``disable``, and every bar of this package passes one, so each asks here first."""
    return bool(requested) and os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("1", "true", "yes")


def repo_root() -> Path:
    """The repository root: $CE_REPO_ROOT, else the folder above this package."""
    env = os.environ.get("CE_REPO_ROOT")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parents[2]


def available_profiles() -> list[str]:
    """Profiles under configs/ (``data_sources.yaml`` is the downloader's source list, not a profile)."""
    return sorted(p.stem for p in (repo_root() / "configs").glob("*.yaml") if p.stem != "data_sources")


def _profile_path(profile: str | os.PathLike) -> Path:
    p = Path(profile)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise ConfigError(f"Profile file {p} does not exist.")
        return p
    candidate = repo_root() / "configs" / f"{profile}.yaml"
    if not candidate.is_file():
        raise ConfigError(
            f"Unknown profile {str(profile)!r}. Available: {', '.join(available_profiles())}; "
            "or pass the path of a YAML file."
        )
    return candidate


def set_dotted(cfg: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = cfg
    for part in parts[:-1]:
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def get_dotted(cfg: dict, key: str, default: Any = None) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def merge(base: dict, over: dict) -> dict:
    """``base`` updated by ``over``, sections (dicts) merged key by key, everything else replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_profile(path: Path, seen: tuple = ()) -> dict:
    """A profile file as a dict; ``extends: <profile>`` reads that profile first and merges this
    one over it (sections key by key), so a profile can state only what it changes."""
    if path in seen:
        raise ConfigError(f"Profile {path} extends itself (through {' -> '.join(p.stem for p in seen)}).")
    with open(path) as fh:
        cfg = yaml.safe_load(fh) or {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"Profile {path} is not a YAML mapping.")
    base = cfg.pop("extends", None)
    if base is None:
        return cfg
    sibling = path.parent / f"{base}.yaml"  # a profile beside this one, else a name in configs/ or a path
    return merge(_read_profile(sibling if sibling.is_file() else _profile_path(base), (*seen, path)), cfg)


def load_profile(profile: str | os.PathLike = "default", overrides: dict | None = None, **kw: Any) -> dict:
    """Load a profile and apply overrides (``None`` values are ignored, so notebook
    parameters left at ``None`` keep the profile's value).

    A profile may start from another (``extends: default``) and state only what it changes.
    Relative output directories are resolved against the repository root.
    """
    path = _profile_path(profile)
    cfg = _read_profile(path)
    cfg.setdefault("name", path.stem)
    cfg["profile_path"] = str(path)
    for key, value in {**(overrides or {}), **kw}.items():
        if value is not None:
            set_dotted(cfg, key, value)
    root = repo_root()
    for key in PATH_KEYS:
        if cfg.get(key):
            p = Path(cfg[key])
            cfg[key] = str(p if p.is_absolute() else root / p)
    return cfg


def data_dir(cfg: dict, must_exist: bool = True) -> Path:
    """The data directory: the profile's ``data_dir``, else $CE_DATA_DIR."""
    d = cfg.get("data_dir") or os.environ.get(DATA_ENV)
    if not d:
        raise ConfigError(
            f"No data directory given. Set the environment variable {DATA_ENV} to the folder that "
            "holds beir/, queries/ and sts/ (e.g. `export CE_DATA_DIR=/path/to/data`), "
            "or pass `-p data_dir /path/to/data` to papermill."
        )
    p = Path(d).expanduser().resolve()
    if must_exist and not p.is_dir():
        raise ConfigError(
            f"Data directory {p} does not exist. Point {DATA_ENV} (or the data_dir parameter) at the "
            "folder that holds beir/, queries/ and sts/; with internet access, the paper profile "
            "downloads BEIR sets into it."
        )
    return p


def output_dir(cfg: dict, key: str) -> Path:
    """One of results_dir / models_dir / cache_dir, created on demand."""
    if key not in PATH_KEYS:
        raise ConfigError(f"{key!r} is not an output directory; use one of {PATH_KEYS}.")
    p = Path(cfg[key])
    p.mkdir(parents=True, exist_ok=True)
    return p


def section(cfg: dict, name: str) -> dict:
    """A profile section (e.g. ``ce_training``); a clear error when the profile lacks it."""
    value = cfg.get(name)
    if not isinstance(value, dict):
        raise ConfigError(f"Profile {cfg.get('name')!r} has no {name!r} section ({cfg.get('profile_path')}).")
    return value
