"""One embedding cache shared by every notebook.

Every text collection a notebook encodes (a corpus, a query set, STS sentences) goes through
:func:`layer_embeddings`: one forward pass with ``output_hidden_states=True`` gives every hidden
state (0 = embedding output), mean-pooled, stored as ``[n_layers + 1, n_texts, dim]`` float16 under
``<cache_dir>/embeddings/``. The key is (model weights fingerprint, kind, pooling, collection,
ids, max length, dtype), so the full DE encodes SciFact's corpus once per profile, whichever
notebook asks first, and a model's last hidden state is the same array in the layer probe
(notebook 01), the DE-k CE table (02), the query-distillation table (03) and the peer check.

A mean-pooling SentenceTransformer's sentence embedding *is* its last hidden state mean-pooled
(normalisation does not change cosine scores), so :func:`sentence_embeddings` reads that layer;
other models fall back to ``model.encode`` under the same cache.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Sequence

import numpy as np
import torch
import tempfile
from pathlib import Path
from sentence_transformers import SentenceTransformer
from ce_utils.core.config import ConfigError, show_progress
from ce_utils.core.io import cached_array, fingerprint
from ce_utils.core.layers import encode_layers
import json
import os
from typing import Callable
from tqdm.auto import tqdm
from ce_utils.core.io import atomic_write_text


DTYPES = ("fp32", "bf16", "fp16")
SUBDIR = "embeddings"
# Collections above this many texts (BEIR's MS MARCO, FEVER, ... : millions of documents) are encoded in
# chunks into an on-disk float16 array (resumable) and searched chunk by chunk (ce_utils.core.encode.encode_to_memmap, ce_utils.core.retrieval.exact_search).
ON_DISK_ABOVE = 200_000


def _weights_stamp(model) -> tuple:
    """Cheap identity of the current weights: storage address, version counter and shape of every
    tensor. A copy (``copy.deepcopy``) has new storages and any in-place update (an optimizer step,
    ``load_state_dict``) bumps the version counter, so a stale memo is never reused."""
    stamp = []
    for key, tensor in model.state_dict().items():
        try:
            version = tensor._version
        except RuntimeError:  # inference tensors carry no version counter
            return ()
        stamp.append((key, tensor.data_ptr(), version, tuple(tensor.shape)))
    return tuple(stamp)


def weights_fingerprint(model) -> str:
    """A short hash of every weight (and its name): the model's identity in every cache key.

    Memoised on the model object together with :func:`_weights_stamp`, so a deep copy or a
    trained model never inherits the fingerprint of the weights it started from."""
    stamp = _weights_stamp(model)
    memo = getattr(model, "_ce_utils_fingerprint", None)
    if stamp and isinstance(memo, tuple) and memo[0] == stamp:
        return memo[1]
    h = hashlib.sha1()
    for key, tensor in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().cpu().float().contiguous().numpy().tobytes())
    tag = h.hexdigest()[:16]
    try:
        model._ce_utils_fingerprint = (stamp, tag)
    except AttributeError:  # pragma: no cover - objects without attribute storage
        pass
    return tag


def forget_fingerprint(model) -> None:
    if hasattr(model, "_ce_utils_fingerprint"):
        del model._ce_utils_fingerprint


def encode(model, texts: Sequence[str], batch_size: int = 32, progress: bool = False,
           normalize: bool = False) -> np.ndarray:
    """``model.encode`` of ``texts`` as a float32 array: a model in training, or any text outside the cache."""
    return np.asarray(model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                                   normalize_embeddings=normalize, show_progress_bar=show_progress(progress)), dtype=np.float32)


def native_bf16(device: str | torch.device | None = None) -> bool:
    """True when ``device`` computes bf16 natively: a CUDA GPU that supports it, or a CPU with
    AVX512-BF16 / AMX-BF16. Elsewhere bf16 autocast is emulated and several times *slower* than fp32
    (measured: 7x for all-MiniLM-L6-v2 on an AVX2-only CPU)."""
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def check_dtype(dtype: str | None, device: str | torch.device | None = None) -> str:
    """The dtype to compute in: ``fp32``, ``bf16``, ``fp16``, or ``auto`` (bf16 where the device computes
    it natively, else fp32), resolved."""
    dtype = dtype or "fp32"
    if dtype == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if dtype not in DTYPES:
        raise ConfigError(f"Unknown encoding dtype {dtype!r}; use one of {', '.join(DTYPES)} or auto "
                          "(e.g. `encode.dtype: fp32` in the profile).")
    return dtype


def autocast(dtype: str | None, device: str | torch.device = "cpu"):
    """``torch.autocast`` for bf16 / fp16 inference on ``device``; a no-op for fp32."""
    dtype = check_dtype(dtype)
    if dtype == "fp32":
        return contextlib.nullcontext()
    dev = torch.device(device).type
    return torch.autocast(dev, dtype=torch.bfloat16 if dtype == "bf16" else torch.float16)


def encode_settings(cfg: dict) -> dict:
    """The profile's ``encode`` section: batch size, dtype and max length (None = the model's own)."""
    enc = dict(cfg.get("encode") or {})
    return {"batch_size": int(enc.get("batch_size") or 32), "dtype": check_dtype(enc.get("dtype")),
            "max_length": enc.get("max_length"), "devices": enc.get("devices")}


def pool_devices(es: dict) -> list[str] | None:
    """Devices of the multi-process encoding pool for on-disk collections: ``encode.devices`` when
    set, else every GPU when there are several; ``None`` = encode in this process."""
    devices = es.get("devices")
    if devices is None and torch.cuda.is_available() and torch.cuda.device_count() > 1:
        devices = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return list(devices) if devices and len(devices) > 1 else None


def model_max_length(model, override: int | None = None) -> int:
    """Tokens per text: ``override``, else the model's own (``max_seq_length`` / ``max_length``)."""
    if override:
        return int(override)
    for attr in ("max_seq_length", "max_length"):
        value = getattr(model, attr, None)
        if value:
            return int(value)
    return 512


def ids_fingerprint(ids: Sequence[str]) -> str:
    return hashlib.sha1("\n".join(map(str, ids)).encode()).hexdigest()[:16]


def layer_embeddings(cfg: dict, model, kind: str, texts: Sequence[str], ids: Sequence[str], what: str,
                     max_length: int | None = None, pooling: str = "first_segment", device: str | None = None,
                     progress: bool = True) -> np.ndarray:
    """Every hidden state of ``model`` over ``texts``, mean-pooled, ``[L + 1, n, dim]`` float32.

    ``kind="de"``: a SentenceTransformer, each text alone. ``kind="ce"``: a CrossEncoder, each text
    paired with itself and pooled over ``pooling`` (see :mod:`ce_utils.experiments.probing`). ``what`` names the
    collection (e.g. ``scifact-test-docs``); ``ids`` identify its texts in order."""

    if len(texts) > ON_DISK_ABOVE:
        raise ConfigError(f"Probing every layer of {what} ({len(texts):,} texts) would hold (layers + 1) x "
                          f"{len(texts):,} embeddings in memory; probe smaller collections (probing.datasets) "
                          "or cut them for a smoke run (probing.max_docs).")
    es = encode_settings(cfg)
    ml = model_max_length(model, max_length or es["max_length"])
    pool_key = pooling if kind == "ce" else "mean"
    dev = device or str(next(model.parameters()).device)

    def compute():
        with autocast(es["dtype"], dev):
            arr = encode_layers(model, texts, kind, ml, es["batch_size"], pooling, device, progress,
                                desc=f"{kind} {what}")
        return arr.astype(np.float16)

    cache = cfg.get("cache_dir")
    cache = None if cache is None else f"{cache}/{SUBDIR}"
    arr = cached_array(cache, f"{kind}-{what}".replace("/", "_"), compute, model=weights_fingerprint(model),
                       kind=kind, layers="all", what=what, ids=ids_fingerprint(ids), n=len(ids), pooling=pool_key,
                       max_length=ml, dtype=es["dtype"])
    return arr.astype(np.float32)


def is_mean_pooling(model) -> bool:
    """True when a SentenceTransformer's embedding is the mean of its last hidden state (up to
    normalisation): then its sentence embedding is the last entry of :func:`layer_embeddings`."""
    mods = list(getattr(model, "_modules", {}).values())
    if len(mods) < 2:
        return False
    pool = mods[1]
    mode = getattr(pool, "pooling_mode", None)
    if mode is None:
        conf = getattr(pool, "get_config_dict", lambda: {})()
        mode = conf.get("pooling_mode") or ("mean" if conf.get("pooling_mode_mean_tokens") else None)
    rest = [type(m).__name__ for m in mods[2:]]
    return mode in ("mean", "mean_tokens") and all(r == "Normalize" for r in rest)


def sentence_embeddings(cfg: dict, model, texts: Sequence[str], ids: Sequence[str], what: str,
                        max_length: int | None = None, device: str | None = None,
                        progress: bool = True) -> np.ndarray:
    """A SentenceTransformer's embeddings of ``texts`` ``[n, dim]``, through the shared cache.

    Collections larger than ``ON_DISK_ABOVE`` texts come back as a read-only float16 memory map,
    written chunk by chunk (and resumed after an interruption) by
    :func:`encode_to_memmap`; :func:`ce_utils.core.retrieval.exact_search` streams it."""
    cache = cfg.get("cache_dir")
    if len(texts) > ON_DISK_ABOVE and cache is not None:
        return _on_disk_embeddings(cfg, model, texts, ids, what, max_length, device, progress)
    if is_mean_pooling(model):
        return layer_embeddings(cfg, model, "de", texts, ids, what, max_length, device=device,
                                progress=progress)[-1]
    es = encode_settings(cfg)
    ml = model_max_length(model, max_length or es["max_length"])
    dev = device or str(model.device)

    def compute():
        old = model.max_seq_length
        model.max_seq_length = ml
        try:
            with autocast(es["dtype"], dev):
                return np.asarray(model.encode(list(texts), batch_size=es["batch_size"], convert_to_numpy=True,
                                               show_progress_bar=show_progress(progress)), dtype=np.float32)
        finally:
            model.max_seq_length = old

    cache = cfg.get("cache_dir")
    cache = None if cache is None else f"{cache}/{SUBDIR}"
    return cached_array(cache, f"st-{what}".replace("/", "_"), compute, model=weights_fingerprint(model), kind="st",
                        what=what, ids=ids_fingerprint(ids), n=len(ids), max_length=ml, dtype=es["dtype"])


def _start_pool(model, devices: list[str], work: "Path"):
    """sentence-transformers' multi-process pool over ``devices``, started from a fresh copy of the
    model loaded from disk (a model that ran with hidden-state hooks cannot be sent to workers)."""


    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work, prefix=".pool-model-") as tmp:
        model.save(tmp, create_model_card=False)
        fresh = SentenceTransformer(tmp, device="cpu")
        pool = fresh.start_multi_process_pool(devices)
    return pool


def _on_disk_embeddings(cfg: dict, model, texts, ids, what, max_length, device, progress):


    es = encode_settings(cfg)
    ml = model_max_length(model, max_length or es["max_length"])
    dev = device or str(model.device)
    key = dict(model=weights_fingerprint(model), kind="st", what=what, ids=ids_fingerprint(ids), n=len(ids),
               max_length=ml, dtype=es["dtype"])

    devices = pool_devices(es)
    pool = _start_pool(model, devices, Path(cfg["cache_dir"])) if devices else None

    def encode(chunk):
        old = model.max_seq_length
        model.max_seq_length = ml
        try:
            with autocast(es["dtype"], dev):
                return np.asarray(model.encode(list(chunk), batch_size=es["batch_size"], convert_to_numpy=True,
                                               show_progress_bar=False, pool=pool), dtype=np.float32)
        finally:
            model.max_seq_length = old

    path = Path(cfg["cache_dir"]) / SUBDIR / f"st-{what}-{fingerprint(**key)}.npy".replace("/", "_")
    try:
        return encode_to_memmap(path, texts, encode, dim=int(model.get_embedding_dimension()),
                                chunk_size=int(es.get("chunk_size") or 50_000), key=key, progress=progress)
    finally:
        if pool is not None:
            model.stop_multi_process_pool(pool)


def dataset_embeddings(cfg: dict, model, ds, max_length: int | None = None, device: str | None = None,
                       progress: bool = True, queries: bool = True, docs: bool = True):
    """(query embeddings, document embeddings) of a whole :class:`~ce_utils.core.data.BeirDataset`
    (``None`` for a part not asked for)."""
    tag = f"{ds.name}-{ds.split}"
    q = sentence_embeddings(cfg, model, ds.query_texts(), ds.query_ids, f"{tag}-queries", max_length, device,
                            progress=False) if queries else None
    d = sentence_embeddings(cfg, model, ds.doc_texts(), ds.doc_ids, f"{ds.name}-docs", max_length, device,
                            progress=progress) if docs else None
    return q, d


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
    if show_progress(progress):
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
