"""Result files: atomic CSV writes with the run's environment recorded next to every row."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd


META_COLUMNS = ["profile", "seed", "device", "cpu", "threads", "python", "torch", "transformers",
                "sentence_transformers", "beir", "git_commit", "timestamp"]


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


def merge_rows(path: str | Path, new: pd.DataFrame, column: str | list[str] = "model",
               prepare: Callable[[pd.DataFrame], pd.DataFrame] | None = None) -> pd.DataFrame:
    """``path``'s rows whose key (one ``column``, or a list of them) is not in ``new``, then ``new``: a
    model's (student's, run's, ...) rows replace its earlier ones, every other model's stay. ``prepare``
    brings the rows read from ``path`` to today's schema first (e.g. fills a column added since)."""
    path = Path(path)
    if not path.is_file():
        return new.reset_index(drop=True)
    old = pd.read_csv(path)
    if prepare is not None:
        old = prepare(old)
    if isinstance(column, str):
        return pd.concat([old[~old[column].isin(set(new[column]))], new], ignore_index=True)
    keys = set(new[column].astype(str).itertuples(index=False, name=None))
    stale = [k in keys for k in old[column].astype(str).itertuples(index=False, name=None)]
    return pd.concat([old[[not s for s in stale]], new], ignore_index=True)


def write_rows(path: str | Path, new: pd.DataFrame, column: str | list[str] = "model") -> pd.DataFrame:
    """:func:`merge_rows`, then written atomically: the one way a result CSV is updated."""
    out = merge_rows(path, new, column)
    write_csv_atomic(out, path)
    return out


def with_metadata(df: pd.DataFrame, meta: dict) -> pd.DataFrame:
    """``df`` with the run metadata ``meta`` as columns, where a column of that name is not there already."""
    return df.assign(**{k: v for k, v in meta.items() if k not in df.columns})


def save_results(rows: pd.DataFrame | Iterable[dict], path: str | Path, meta: dict,
                 required: Iterable[str] = ()) -> pd.DataFrame:
    """Append the run metadata as columns and write the CSV atomically.

    ``required`` columns must be present (a guard for the documented schema)."""
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"Result rows lack columns {missing}")
    df = with_metadata(df, meta)
    write_csv_atomic(df, path)
    return df


# --------------------------------------------------------------------------- one system, one number
def seed_spread(rows: pd.DataFrame, by: list[str], value: str = "retention") -> pd.DataFrame:
    """Per group of ``by``: each seed's run scored by the mean of ``value`` over its rows (its collections), then
    the mean, sd, min and max of those over seeds and their number (``mean, sd, lo, hi, seeds``)."""
    per_run = rows.groupby(by + ["seed"], as_index=False, sort=False)[value].mean()
    return per_run.groupby(by, as_index=False, sort=False).agg(
        mean=(value, "mean"), sd=(value, "std"), lo=(value, "min"), hi=(value, "max"), seeds=("seed", "nunique"))


def add_model_ids(df: pd.DataFrame, csv_name: str, aliases: dict | None = None) -> pd.DataFrame:
    """Add ``model_id``: the retrieval system a row measures, named alike in every CSV, so that a
    (system, dataset, metric, query sample) can be checked to have one value everywhere and speed
    rows can be joined by it. ``aliases`` maps names used inside one CSV (``DE-6 full``,
    ``teacher``) to the profile's model label. Rows that measure no retrieval system (STS, control,
    a CE's self-pair layers, a DE's inner layers) get an empty id."""
    aliases = aliases or {}
    df = df.copy()
    if df.empty:
        df["model_id"] = pd.Series(dtype=str)
        return df

    def alias(name) -> str:
        return str(aliases.get(name, name))

    def reranked(first, ce, depth) -> str:
        return f"{alias(first)} >> {ce}@{int(depth)}"

    if csv_name in ("layer_probe.csv", "layer_probe_extra.csv"):
        # layer_probe_extra.csv holds other cross encoders only: their self-pair layers are no retrieval system
        is_system = ((df["section"] == "retrieval") & ~df["model_kind"].astype(str).str.startswith("ce")
                     & (csv_name == "layer_probe.csv")
                     & (df["layer"].astype(int) == df["n_layers"].astype(int)))
        df["model_id"] = [alias(m) if ok else "" for m, ok in zip(df["model"], is_system)]
    elif csv_name in ("ce_quality.csv", "ce_quality_extra.csv"):
        df["model_id"] = [alias(m) if st == "first_stage" else reranked(f, m, d)
                          for m, st, f, d in zip(df["model"], df["stage"], df["first_stage_model"], df["depth"])]
    elif csv_name == "pipeline.csv":
        df["model_id"] = [alias(f) if r == "none" else reranked(f, rm, d)
                          for f, r, rm, d in zip(df["first_stage"], df["reranker"], df["reranker_model"], df["depth"])]
    elif csv_name == "query_distill.csv":
        df["model_id"] = [alias(s) if s in aliases else f"qd:{s}" for s in df["student"]]
    elif csv_name in ("de2ce.csv", "peer_check.csv", "speed.csv"):
        df["model_id"] = [alias(m) for m in df["model"]]
    else:
        raise ValueError(f"add_model_ids: no rule for {csv_name}")
    return df


# the encoding dtype is part of the measurement (bf16 autocast vs fp32 moves NDCG@10 in the 4th decimal)
# de2ce.csv: the model name of a student evaluated on queries only, against the full DE's document embeddings
# (notebook 02 writes it, the figures group each student with it)
QUERIES_ONLY = " (queries only)"
# pipeline.csv: a pipeline's measured time per query (notebook 02), end to end and by part, read by the figures
LATENCY_MS = "latency_ms"
LATENCY_METRICS = {"total": LATENCY_MS, "encode": "latency_encode_ms", "search": "latency_search_ms",
                   "rerank": "latency_rerank_ms"}


def eager(df: pd.DataFrame) -> pd.DataFrame:
    """Speed rows of eager PyTorch (rows without a backend column are eager)."""
    return df[df["backend"] == "torch"] if "backend" in df.columns else df


CONSISTENCY_KEY = ["model_id", "dataset", "metric", "n_queries", "n_docs", "encode_dtype"]


def quality_index(results_dir: str | Path) -> pd.DataFrame:
    """Every row of every result CSV that names a retrieval system (``model_id``), with its file."""
    frames = []
    for path in sorted(Path(results_dir).glob("*.csv")):
        df = pd.read_csv(path)
        if "encode_dtype" not in df.columns:
            df = df.assign(encode_dtype="")
        if "model_id" not in df.columns or not set(CONSISTENCY_KEY + ["value"]) <= set(df.columns):
            continue
        df = df[df["model_id"].fillna("").astype(str) != ""]
        df = df.assign(encode_dtype=df["encode_dtype"].fillna("").astype(str))
        frames.append(df[CONSISTENCY_KEY + ["value"]].assign(source=path.name))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CONSISTENCY_KEY + ["value", "source"])


def inconsistencies(results_dir: str | Path, tol: float = 1e-6) -> pd.DataFrame:
    """(system, dataset, metric, query sample, corpus) keys that carry different values in
    different rows or files: each should have exactly one number."""
    idx = quality_index(results_dir)
    if idx.empty:
        return idx
    spread = idx.groupby(CONSISTENCY_KEY)["value"].agg(lambda v: float(v.max() - v.min()))
    bad = spread[spread > tol].index
    return idx.set_index(CONSISTENCY_KEY).loc[bad].reset_index() if len(bad) else idx.iloc[0:0]


def model_label(spec: str) -> str:
    """A short, machine-independent name for a model spec (a local folder -> its name)."""
    if spec.startswith(("package:", "trained:")):
        return spec
    p = Path(spec)
    if p.is_absolute() or spec.startswith((".", "~")):
        return p.name
    return spec


def fingerprint(**parts) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def save_array_atomic(arr, path: str | Path) -> np.ndarray:
    """``np.save`` to a temporary file beside ``path``, then rename: readers never see half an array."""
    arr, path = np.asarray(arr), Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, arr)
    tmp.replace(path)
    return arr


def cached_array(cache_dir: str | Path | None, name: str, compute: Callable[[], np.ndarray],
                 **key) -> np.ndarray:
    """Load ``name`` from the cache if its key matches, else compute and store it (atomically).

    The key (model, layer, dataset, max length, ...) is stored beside the array."""
    if cache_dir is None:
        return compute()
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tag = fingerprint(**key)
    arr_path = cache_dir / f"{name}-{tag}.npy"
    if arr_path.is_file():
        return np.load(arr_path)
    arr = save_array_atomic(compute(), arr_path)
    atomic_write_text(cache_dir / f"{name}-{tag}.json", json.dumps(key, sort_keys=True, default=str, indent=1))
    return arr


def save_model(model, path: str | Path, files: dict[str, str] | None = None, **save_kwargs) -> Path:
    """``model.save`` (sentence-transformers) into a temporary folder beside ``path`` with the text
    ``files`` (name -> content) added, then one rename over ``path``: a reader never sees half a model."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.partial-"))
    try:
        model.save(str(tmp), **save_kwargs)
        for name, text in (files or {}).items():
            atomic_write_text(tmp / name, text)
        if path.exists():
            shutil.rmtree(path)
        tmp.replace(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
