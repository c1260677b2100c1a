"""Corpus embeddings on disk and exact top-k search with bounded memory.

BEIR's large corpora (MS MARCO 8.8M passages, FEVER / Climate-FEVER 5.4M) do not fit in memory as
float32 embeddings on a small machine. :func:`encode_to_memmap` writes a corpus's embeddings in
chunks to an on-disk float16 ``.npy`` array (memory-mapped, resumable: an interrupted run continues
from the last finished chunk), and :func:`chunked_search` runs exact top-k chunk by chunk over such
an array (or any array) on CPU or GPU, merging each chunk's top-k into a running top-k. Memory is
bounded by ``doc_chunk x n_queries`` scores, and the result is the same top-k as an in-memory search.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from ce_utils.core.io import atomic_write_text


def _progress_path(path: Path) -> Path:
    return path.with_name(path.name + ".progress.json")


def encode_to_memmap(path: str | os.PathLike, texts: Sequence[str], encode: Callable[[Sequence[str]], np.ndarray],
                     dim: int, chunk_size: int = 10_000, dtype=np.float16, key: dict | None = None,
                     progress: bool = True) -> np.memmap:
    """Embeddings of ``texts`` in an on-disk ``.npy`` array ``[len(texts), dim]`` of ``dtype``.

    ``encode(chunk_of_texts) -> [n, dim]`` is called chunk by chunk. While writing, the array lives at
    ``<path>.partial`` with a progress file recording the rows done and ``key`` (what is encoded: a
    model fingerprint, max length...); a rerun with the same key resumes after the last finished
    chunk, another key starts over. The finished array is renamed to ``path`` and returned read-only.
    """
    path = Path(path)
    key = dict(key or {}, n=len(texts), dim=int(dim), dtype=np.dtype(dtype).name)
    if path.is_file():
        arr = np.load(path, mmap_mode="r")
        if arr.shape == (len(texts), dim):
            return arr
        path.unlink()  # another collection or model under the same name: rebuild
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    prog_path = _progress_path(path)
    done = 0
    if partial.is_file() and prog_path.is_file():
        prog = json.loads(prog_path.read_text())
        if prog.get("key") == json.loads(json.dumps(key, default=str)):
            done = int(prog["done"])
    if done == 0 or not partial.is_file():
        arr = np.lib.format.open_memmap(partial, mode="w+", dtype=dtype, shape=(len(texts), dim))
        done = 0
    else:
        arr = np.load(partial, mmap_mode="r+")
    starts = range(done, len(texts), chunk_size)
    if progress:

        starts = tqdm(starts, desc=f"encoding {path.stem}", unit="chunk", initial=done // chunk_size,
                      total=-(-len(texts) // chunk_size))
    for start in starts:
        stop = min(start + chunk_size, len(texts))
        emb = np.asarray(encode(list(texts[start:stop])))
        if emb.shape != (stop - start, dim):
            raise ValueError(f"encode returned shape {emb.shape}, expected {(stop - start, dim)}")
        arr[start:stop] = emb.astype(dtype, copy=False)
        arr.flush()
        atomic_write_text(prog_path, json.dumps({"key": key, "done": stop}, default=str))
    del arr
    os.replace(partial, path)
    prog_path.unlink(missing_ok=True)
    return np.load(path, mmap_mode="r")


def chunked_search(query_emb, doc_emb, query_ids: Sequence[str], doc_ids: Sequence[str], top_k: int = 100,
                   score_function: str = "cos_sim", doc_chunk: int = 50_000, query_chunk: int = 1024,
                   device: str | torch.device = "cpu") -> dict[str, dict[str, float]]:
    """Exact top-k of every query over ``doc_emb`` (an array or a memory map), ``doc_chunk`` documents
    at a time: each chunk is read, cast to float32 and scored on ``device``, and its top-k merged
    into the running top-k. Same result as scoring the whole corpus at once."""
    if score_function not in ("cos_sim", "dot"):
        raise ValueError(f"score_function must be 'cos_sim' or 'dot', not {score_function!r}")
    if len(query_emb) != len(query_ids) or len(doc_emb) != len(doc_ids):
        raise ValueError("embedding rows and ids differ in number")
    if doc_chunk < 1 or query_chunk < 1:
        raise ValueError("doc_chunk and query_chunk must be positive")
    device = torch.device(device)
    q_all = torch.as_tensor(np.asarray(query_emb, dtype=np.float32), device=device)
    if score_function == "cos_sim":
        q_all = torch.nn.functional.normalize(q_all, dim=-1)
    k = min(top_k, len(doc_ids))
    n_q = len(query_ids)
    best_s = torch.full((n_q, k), float("-inf"), device=device)
    best_i = torch.full((n_q, k), -1, dtype=torch.long, device=device)
    for start in range(0, len(doc_ids), doc_chunk):
        d = torch.as_tensor(np.asarray(doc_emb[start:start + doc_chunk], dtype=np.float32), device=device)
        if score_function == "cos_sim":
            d = torch.nn.functional.normalize(d, dim=-1)
        for qs in range(0, n_q, query_chunk):
            s = q_all[qs:qs + query_chunk] @ d.T
            kk = min(k, s.shape[1])
            vals, idx = torch.topk(s, kk, dim=1)
            cat_s = torch.cat([best_s[qs:qs + query_chunk], vals], dim=1)
            cat_i = torch.cat([best_i[qs:qs + query_chunk], idx + start], dim=1)
            top_s, pos = torch.topk(cat_s, k, dim=1)
            best_s[qs:qs + query_chunk] = top_s
            best_i[qs:qs + query_chunk] = torch.gather(cat_i, 1, pos)
    best_s, best_i = best_s.cpu(), best_i.cpu()
    return {qid: {doc_ids[j]: float(v) for v, j in zip(best_s[r].tolist(), best_i[r].tolist()) if j >= 0}
            for r, qid in enumerate(query_ids)}
