"""The timing plan: which settings (:func:`settings`), in which order (:func:`schedule`), and models taking
turns call by call within one pass (:func:`interleave`)."""

from __future__ import annotations

import gc
import os
import random
import time
from typing import Callable, Sequence

from ce_utils.core.config import ConfigError

DTYPES = ("fp32", "fp16")


def settings(sp: dict, cuda_available: bool) -> list[dict]:
    """(device, dtype, threads) combinations: CPU fp32 with each thread count, and the GPU in
    each of ``speed.gpu_dtypes`` when present."""
    out = []
    all_threads = os.cpu_count() or 1
    threads = []
    for t in sp.get("threads") or ["all"]:
        t = all_threads if t in ("all", None) else int(t)
        if t < 1:
            raise ConfigError(f"speed.threads: {t} is not a thread count (use positive integers or 'all').")
        if t not in threads:
            threads.append(t)
    for t in threads:
        out.append({"device": "cpu", "dtype": "fp32", "threads": t})
    if cuda_available and sp.get("gpu", True):
        for dt in sp.get("gpu_dtypes") or ["fp32"]:
            if dt not in DTYPES:
                raise ConfigError(f"speed.gpu_dtypes: unknown dtype {dt!r}; use {', '.join(DTYPES)}.")
            out.append({"device": "cuda", "dtype": dt, "threads": all_threads})
    return out


def schedule(settings_: list[dict], encoders: list, batch_sizes: list[int], tok_modes: list[str], rounds: int,
             seed: int = 0, ce_max_batch_size: int | None = None) -> list[tuple]:
    """The interleaved timing plan: ``rounds`` rounds; in each, one block per (setting, batch size,
    tokenisation) in which every model is timed on every batch of the sample, the models taking turns
    call by call (:func:`interleave`), starting from an order shuffled per block (seeded). Returns
    (round, setting, batch size, tokenisation, encoders in order) blocks in execution order."""
    rng = random.Random(seed)
    plan = []
    for r in range(int(rounds)):
        for s in settings_:
            for bs in batch_sizes:
                for tok in tok_modes:
                    todo = [e for e in encoders if not (e.role == "ce" and ce_max_batch_size and bs > ce_max_batch_size)
                            and not (getattr(e, "backend", "torch") != "torch" and s["device"] != "cpu")]
                    rng.shuffle(todo)
                    plan.append((r, s, bs, tok, todo))
    return plan


def interleave(steps: dict[str, list[Callable]], order: Sequence[str], warmup: int = 1,
               clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Time every model on batch ``i`` before any model moves to batch ``i + 1``: the models of one
    setting take turns call by call, in ``order`` rotated by one place per batch (each model is first
    equally often). Returns the seconds of every call, per model.

    On a shared machine the CPU slows down in bursts (other tenants); a burst then hits every model
    within the same few batches, instead of whichever model happened to be timed at that moment, so the
    ratio of two models' times *within one pass* stays put while the absolute times move. Models with
    fewer batches (the CE's shorter sample) drop out after their last one. ``warmup`` untimed calls of
    each model's first batch come first; the garbage collector is off while timing (as in timeit)."""
    order = list(order)
    if sorted(order) != sorted(steps):
        raise ConfigError("interleave: `order` must name every timed model once.")
    for name in order:
        for _ in range(max(0, int(warmup))):
            steps[name][0]()
    times = {name: [] for name in order}
    n = max(len(s) for s in steps.values())
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(n):
            k = i % len(order)
            for name in order[k:] + order[:k]:
                if i < len(steps[name]):
                    t0 = clock()
                    steps[name][i]()
                    times[name].append(clock() - t0)
    finally:
        if was_enabled:
            gc.enable()
    return times
