"""Where one query-encoding call's time goes: the profile behind a missed speed goal.

A call of a backend (:mod:`.backends`) is split into the parts a deployment could remove or shrink:

* ``tokenise``: text to the model's inputs (sentence-transformers' ``preprocess``, or ``tokenizers`` directly
  for the lean backends);
* eager PyTorch (``torch``, ``torch-int8``, ``torch-bf16``): ``embeddings`` and each ``layer N`` of the
  transformer (forward hooks), and ``rest of forward`` (mask set-up, pooling, normalisation, module glue);
* ONNX Runtime: the graph's nodes by operator type (ONNX Runtime's own profiler: ``MatMul``, ``Gather``,
  ``LayerNormalization``, ...), and ``runtime outside nodes`` (the session call minus its nodes);
* ``outside the model``: the rest of the call (Python, tensor to array conversion).

Each part is the median over ``repeats`` calls of one fixed batch, after warm-up calls, on ``threads`` threads;
rows give milliseconds and the share of the call's median. One process, one model at a time: run it on quiet
cores (timings are for the CSV, never for a test's assertions).

    python -m ce_utils profile-call --profile default --batch-size 1 --threads 1
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ce_utils.core.config import ConfigError
from ce_utils.core.students import backbone
from ce_utils.experiments.speed.backends import build, calibration_queries, onnx_work_dir

COLUMNS = ["model", "backend", "batch_size", "threads", "part", "ms", "share", "repeats"]


def _torch_parts(bm, feats: dict, repeats: int) -> tuple[list[dict[str, float]], list[float]]:
    """Per call, the seconds of the embeddings and of each layer (forward hooks), and the seconds of the run."""
    bb = backbone(bm.model)
    mods = [("embeddings", bb.embeddings)] + [(f"layer {i}", m) for i, m in enumerate(bb.encoder.layer)]
    starts, spent = {}, {}
    handles = []
    for name, mod in mods:
        handles.append(mod.register_forward_pre_hook(lambda m, a, n=name: starts.__setitem__(n, time.perf_counter())))
        handles.append(mod.register_forward_hook(
            lambda m, a, o, n=name: spent.__setitem__(n, spent.get(n, 0.0) + time.perf_counter() - starts[n])))
    per_call, runs = [], []
    try:
        with torch.inference_mode():
            for _ in range(repeats):
                spent.clear()
                t0 = time.perf_counter()
                emb = bm.run(feats)
                runs.append(time.perf_counter() - t0)
                per_call.append(dict(spent))
                del emb
    finally:
        for h in handles:
            h.remove()
    return per_call, runs


def _onnx_parts(bm, feats: dict, repeats: int, threads: int) -> tuple[dict[str, float], list[float]]:
    """ONNX Runtime's profiler over ``repeats`` runs of a fresh session: per operator type, the median per run of its
    nodes' summed time (seconds), and the seconds of each session call."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    with tempfile.TemporaryDirectory() as tmp:
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tmp, "ort")
        sess = ort.InferenceSession(str(bm.onnx_path), so, providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        inputs = {n: np.asarray(feats[n]) for n in names}
        for _ in range(3):
            sess.run(None, inputs)  # warm-up: its events are dropped below (the first runs after the session starts)
        calls = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            sess.run(None, inputs)
            calls.append(time.perf_counter() - t0)
        events = json.loads(Path(sess.end_profiling()).read_text())
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"][-repeats:]
    first = runs[0]["ts"] if runs else 0
    by_run: dict[int, dict[str, float]] = {}
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time") or e["ts"] < first:
            continue
        run = sum(1 for r in runs if r["ts"] <= e["ts"]) - 1
        op = (e.get("args") or {}).get("op_name", "?")
        by_run.setdefault(run, {}).setdefault(op, 0.0)
        by_run[run][op] += e["dur"] / 1e6
    ops = sorted({op for r in by_run.values() for op in r})
    med = {op: float(np.median([r.get(op, 0.0) for r in by_run.values()])) for op in ops}
    return med, calls


def profile_call(bm, texts: Sequence[str], repeats: int = 50, threads: int = 1, warmup: int = 5) -> pd.DataFrame:
    """The parts of one ``bm.encode`` call on the batch ``texts`` (see the module): one row per part with its
    median milliseconds and its share of the call's median; ``part == "call"`` is the whole call."""
    if repeats < 3:
        raise ConfigError("profile_call needs repeats >= 3 (medians of at least three calls).")
    texts = list(texts)
    old = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        for _ in range(warmup):
            bm.encode(texts, batch_size=len(texts))
        tok, calls = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            bm.features(texts)
            tok.append(time.perf_counter() - t0)
        for _ in range(repeats):
            t0 = time.perf_counter()
            bm.encode(texts, batch_size=len(texts))
            calls.append(time.perf_counter() - t0)
        feats = bm.features(texts)
        parts: dict[str, float] = {"tokenise": float(np.median(tok))}
        if bm.onnx_path is None:
            per_call, runs = _torch_parts(bm, feats, repeats)
            for name in per_call[0]:
                parts[name] = float(np.median([c[name] for c in per_call]))
            inside = sum(v for k, v in parts.items() if k != "tokenise")
            parts["rest of forward"] = max(float(np.median(runs)) - inside, 0.0)
        else:
            ops, runs = _onnx_parts(bm, feats, repeats, threads)
            parts.update(ops)
            parts["runtime outside nodes"] = max(float(np.median(runs)) - sum(ops.values()), 0.0)
        call = float(np.median(calls))
        parts["outside the model"] = max(call - sum(parts.values()), 0.0)
    finally:
        torch.set_num_threads(old)
    rows = [{"part": "call", "ms": 1e3 * call}] + [{"part": k, "ms": 1e3 * v} for k, v in parts.items()]
    df = pd.DataFrame(rows)
    df["share"] = df["ms"] / (1e3 * call)
    return df.assign(model=bm.name, backend=bm.backend, batch_size=len(texts), threads=int(threads),
                     repeats=int(repeats))[COLUMNS]


def profile_models(cfg: dict, models: Sequence[tuple[str, object]], backends: Sequence[str], queries: Sequence[str],
                   batch_sizes: Sequence[int] = (1,), repeats: int = 50, threads: int = 1) -> pd.DataFrame:
    """:func:`profile_call` of each (name, SentenceTransformer) of ``models`` in each backend, on the first
    ``batch_size`` of ``queries`` for each batch size; graphs cached as the timing's (:func:`.backends.onnx_work_dir`)."""
    calibration = calibration_queries(cfg) if "onnx-int8-static" in backends else None
    frames = [profile_call(build(model, backend, name, work_dir=onnx_work_dir(cfg), calibration=calibration),
                           list(queries)[:b], repeats, threads)
              for name, model in models for backend in backends for b in batch_sizes]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
