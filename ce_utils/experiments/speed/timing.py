"""The timed passes: every model of a block encodes the same batches, taking turns call by call
(:func:`~.plan.interleave`), over every round of :func:`~.plan.schedule`; one row per (round, model, setting)."""

from __future__ import annotations

import os
from typing import Callable

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ce_utils.core.config import ConfigError, show_progress
from ce_utils.core.runinfo import device_name
from ce_utils.experiments.speed.encoders import Encoder, to_device
from ce_utils.experiments.speed.flops import flop_ratio, flops_per_item
from ce_utils.experiments.speed.inputs import items_for, mean_tokens
from ce_utils.experiments.speed.plan import interleave, schedule, settings
from ce_utils.experiments.speed.summary import add_round_ratios


def batch_steps(enc: Encoder, batches: list, device: str, tokenize: bool, min_calls: int = 1) -> list[Callable]:
    """One no-argument callable per batch of the sample: encode that batch (tokenising it first when
    ``tokenize``; otherwise the features are prepared here, outside any timing), and on a GPU wait for
    the result. Every model gets the same batches, so short and long queries weigh alike for all. When
    the sample holds fewer than ``min_calls`` batches (a batch as large as the sample), the batches are
    cycled until there are ``min_calls`` calls, so that even then the models alternate several times."""
    if not batches:
        raise ConfigError("batch_steps: no batch to time (batch size larger than the sample?).")
    n = max(len(batches), int(min_calls))
    cuda = str(device).startswith("cuda")

    def sync():
        if cuda:
            torch.cuda.synchronize()

    if tokenize:
        return [lambda b=batches[i % len(batches)]: (enc.run(to_device(enc.prepare(b), device)), sync())
                for i in range(n)]
    feats = [to_device(enc.prepare(b), device) for b in batches]
    return [lambda f=feats[i % len(feats)]: (enc.run(f), sync()) for i in range(n)]


def move(enc: Encoder, device: str, dtype: str) -> None:
    """An eager model to ``device`` in ``dtype``; quantised / ONNX encoders run on the CPU as built."""
    if enc.backend != "torch":
        return
    enc.module.to(device)
    enc.module.to(torch.float16 if dtype == "fp16" else torch.float32)


def _check(sp: dict, n_queries: int) -> tuple[list[int], list[str], int]:
    """The section's batch sizes, tokenisation modes and rounds, validated."""
    batch_sizes = [int(b) for b in sp["batch_sizes"]]
    if any(b < 1 or b > n_queries for b in batch_sizes):
        raise ConfigError(f"speed.batch_sizes {batch_sizes} must lie in 1..n_queries ({n_queries}).")
    tok_modes = sp.get("tokenization") or ["included", "excluded"]
    bad = [t for t in tok_modes if t not in ("included", "excluded")]
    if bad:
        raise ConfigError(f"speed.tokenization: unknown {bad}; use 'included' and/or 'excluded'.")
    rounds = int(sp.get("rounds") or 1)
    if rounds < 1:
        raise ConfigError(f"speed.rounds must be >= 1, not {rounds}.")
    return batch_sizes, tok_modes, rounds


def _check_ce(sp: dict, batch_sizes: list[int], n_queries: int) -> None:
    ce_n, max_bs_ce = sp.get("ce_n_queries"), sp.get("ce_max_batch_size")
    if ce_n is not None:
        ce_bs = [b for b in batch_sizes if not (max_bs_ce and b > int(max_bs_ce))]
        if not isinstance(ce_n, int) or ce_n < max(ce_bs) or ce_n > n_queries:
            raise ConfigError(f"speed.ce_n_queries={ce_n!r} must be an integer from the largest CE batch size "
                              f"({max(ce_bs)}) to n_queries ({n_queries}); or null for every query.")


def run_speed(cfg: dict, sp: dict, encoders: list[Encoder], queries: list[str], docs: list[str],
              cuda_available: bool | None = None, progress: bool = True) -> pd.DataFrame:
    """Time every encoder in every setting over ``speed.rounds`` rounds (see :func:`~.plan.schedule` and
    :func:`~.plan.interleave`); one row per (round, model, setting, batch size, tokenisation) with
    ``ms_per_batch``, the mean over the pass (total time / batches: what throughput pays). The speed-ups
    over the full DE are ratios within one pass. Summarise with :func:`~.summary.summarize_rounds`."""
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    batch_sizes, tok_modes, rounds = _check(sp, len(queries))
    _check_ce(sp, batch_sizes, len(queries))
    max_length = int(sp["max_length"])
    ce_n, max_bs_ce = sp.get("ce_n_queries"), sp.get("ce_max_batch_size")
    de = next(e for e in encoders if e.role == "de")
    tokens = {e.name: mean_tokens(e, items_for(e, queries, docs, ce_n)) for e in encoders}
    de_flops = flops_per_item(de.hidden, de.intermediate, de.n_layers, tokens[de.name])
    plan = schedule(settings(sp, cuda_available), encoders, batch_sizes, tok_modes, rounds,
                    int(cfg.get("seed", 42)), int(max_bs_ce) if max_bs_ce else None)
    rows, current = [], None
    for r, s, bs, tok, block in tqdm(plan, desc="timing (blocks)", disable=not show_progress(progress)):
        if current != (s["device"], s["dtype"]):
            for e in encoders:
                move(e, s["device"], s["dtype"])
            current = (s["device"], s["dtype"])
        torch.set_num_threads(int(s["threads"]))
        steps, n_items = {}, {}
        for enc in block:
            items = items_for(enc, queries, docs, ce_n)
            n_items[enc.name] = len(items) // bs * bs
            steps[enc.name] = batch_steps(enc, [items[i:i + bs] for i in range(0, len(items) - bs + 1, bs)],
                                          s["device"], tok == "included", int(sp.get("min_calls") or 1))
        with torch.inference_mode():
            times = interleave(steps, [e.name for e in block], int(sp.get("warmup", 1)))
        for enc in block:
            t = np.asarray(times[enc.name])
            ms = 1e3 * float(t.mean())
            fl = flops_per_item(enc.hidden, enc.intermediate, enc.n_layers, tokens[enc.name], pooler=enc.pooler)
            rows.append({"round": r, "model": enc.name, "base_model": enc.base or enc.name, "backend": enc.backend,
                         "role": enc.role, "layers": enc.layers, "n_layers": enc.n_layers,
                         "n_params": enc.n_params, "batch_size": bs, "threads": s["threads"],
                         "device": device_name(s["device"]), "dtype": s["dtype"], "tokenization": tok,
                         "ms_per_batch": ms, "n_runs": len(t),
                         "call_ms": " ".join(f"{1e3 * x:.4f}" for x in t),
                         "queries_per_s": 1e3 * bs / ms, "flops_per_item": fl,
                         "flop_ratio": flop_ratio(de_flops, fl), "mean_tokens": tokens[enc.name],
                         "max_length": max_length, "n_queries": n_items[enc.name]})
        del steps
    for e in encoders:
        move(e, "cpu", "fp32")
    torch.set_num_threads(os.cpu_count() or 1)
    return add_round_ratios(pd.DataFrame(rows))
