"""This CPU's limit: the matrix multiplies of a query encoder at the model's own shapes, alone.

A transformer layer of all-MiniLM-L6-v2 multiplies the (tokens x 384) activations by four 384 x 384
weights (query, key, value, output), one 384 x 1536 and one 1536 x 384 (the feed-forward). With a
9-token query at batch 1 these are thin matrices, far from the sizes at which a CPU's matrix unit
reaches its peak. :func:`matmul_rows` times exactly those products (``tokens = batch x seq_len``) in
fp32 (``torch.nn.functional.linear``), bf16 where the CPU computes it natively (AVX512-BF16 / AMX) and
int8 (PyTorch's dynamically quantised ``Linear``: activations quantised per call, like the
``torch-int8`` backend), interleaved call by call and repeated, and gives each its GFLOP/s: the most
a backend can reach on these shapes, to which each path's measured time is compared.

    python -m ce_utils matmul --threads 1 --rounds 9          # results/<profile>/matmul.csv
"""

from __future__ import annotations

import gc
import time
import warnings
from typing import Sequence

import torch

from ce_utils.core.encode import native_bf16

DTYPES = ("fp32", "bf16", "int8")


def layer_shapes(hidden: int = 384, intermediate: int = 1536) -> list[tuple[str, int, int]]:
    """(name, in, out) of one BERT layer's weight multiplies, each with its count per layer."""
    return [("qkv+out", hidden, hidden), ("ffn-in", hidden, intermediate), ("ffn-out", intermediate, hidden)]


def _op(dtype: str, x: torch.Tensor, w: torch.Tensor):
    if dtype == "fp32":
        return lambda: torch.nn.functional.linear(x, w)
    if dtype == "bf16":
        xb, wb = x.to(torch.bfloat16), w.to(torch.bfloat16)
        return lambda: torch.nn.functional.linear(xb, wb)
    lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
    lin.weight.data.copy_(w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(lin), {torch.nn.Linear}, dtype=torch.qint8)
    return lambda: q(x)


def matmul_rows(token_counts: Sequence[int] = (9, 16 * 12, 128 * 12), dtypes: Sequence[str] = DTYPES,
                threads: int = 1, rounds: int = 9, calls: int = 20, hidden: int = 384, intermediate: int = 1536,
                seed: int = 0) -> list[dict]:
    """For each token count (batch x query length) and weight shape, the time of one multiply in each dtype
    (bf16 only where native), ``calls`` calls per round with the dtypes taking turns call by call, over
    ``rounds`` rounds: one row per (tokens, shape, dtype, round) with ms per call and GFLOP/s."""
    torch.set_num_threads(int(threads))
    dtypes = [d for d in dtypes if d != "bf16" or native_bf16("cpu")]
    g = torch.Generator().manual_seed(seed)
    rows = []
    with torch.inference_mode():
        for tokens in token_counts:
            for name, n_in, n_out in layer_shapes(hidden, intermediate):
                x = torch.randn(int(tokens), n_in, generator=g)
                w = torch.randn(n_out, n_in, generator=g) / n_in ** 0.5
                ops = {d: _op(d, x, w) for d in dtypes}
                for op in ops.values():   # warm-up
                    op()
                flops = 2.0 * tokens * n_in * n_out
                for r in range(int(rounds)):
                    spent = {d: 0.0 for d in dtypes}
                    gc.disable()
                    try:
                        for _ in range(int(calls)):
                            for d, op in ops.items():
                                t0 = time.perf_counter()
                                op()
                                spent[d] += time.perf_counter() - t0
                    finally:
                        gc.enable()
                    for d in dtypes:
                        ms = 1e3 * spent[d] / calls
                        rows.append({"tokens": int(tokens), "shape": f"{n_in}x{n_out}", "op": name, "dtype": d,
                                     "threads": int(threads), "round": r, "calls": int(calls), "ms_per_call": ms,
                                     "gflop_per_s": flops / (ms * 1e6), "flops": flops})
    return rows
