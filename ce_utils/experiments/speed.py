"""Query-encoding speed: latency and throughput of the full DE, its light students and the CE.

Both papers sell their small encoders by online speed: only the *query* is encoded at search
time, so the cost that matters is encoding one query (or a batch of queries). This module times

* ``de``            -- the full dual encoder (the documents' encoder; also the teacher),
* ``de-k-ce``       -- notebook 02's DE-k CE students (k copied CE layers + one random layer),
* ``query-student`` -- notebook 03's layer-subset query students (1, 2, 3 teacher layers),
* ``ce``            -- the cross encoder, scoring one (query, document) pair (``CE (pair)``), and
  embedding the query paired with itself (``CE (self-pair)``, all CE layers, mean pooled),

* ``overhead``      -- the full DE without its layers (:func:`overhead_encoder`): the fixed per-call cost,

tokenisation included and excluded, for several batch sizes, on CPU with one thread and with every
thread, and on a GPU when there is one (fp32 and fp16).

How: in each round, for each setting, the models take turns *call by call* over the same batches
(:func:`interleave`), so a burst of load on a shared machine slows every model in the same few
batches and the speed-up over the full DE -- a ratio within one pass -- survives it; the rounds are
repeated and summarised by their median and IQR (:func:`summarize_rounds`). Each call is timed with
``time.perf_counter`` (timeit's clock, garbage collector off): ``torch.utils.benchmark``'s timers run
their own warm-up calls around every measurement and cannot alternate models call by call.

Speed does not depend on the weights, so a student whose trained weights are not in the
profile's ``models_dir`` is timed as a freshly composed architecture
(:func:`ce_utils.core.students.compose_student` / :func:`~ce_utils.core.students.layer_subset_student`).

Next to every measured speed-up over the full DE (same device, threads, dtype, batch size and
tokenisation setting, same run) the analytic FLOP ratio is recorded: FLOPs per item of the full
DE divided by FLOPs per item of the model (:func:`flops_per_item`), so both read "x times faster".
"""

from __future__ import annotations

import gc
import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import copy
import torch
from sentence_transformers import CrossEncoder, SentenceTransformer
from torch import nn
from tqdm.auto import tqdm
from ce_utils.core.config import ConfigError, section
from ce_utils.core.data import doc_text, load_beir_dataset, load_query_files
from ce_utils.core.io import add_model_ids as add, eager, model_label
from ce_utils.core.models import ModelNotFoundError, load_sentence_transformer, resolve_model
from ce_utils.core.runinfo import device_name
from ce_utils.core.students import RANDOM, backbone, compose_student, layer_subset_student, num_layers
from ce_utils.experiments import backends
from ce_utils.experiments.backends import BACKENDS as BACKEND_LABELS, check_backends


log = logging.getLogger(__name__)

ROLES = ("de", "de-k-ce", "query-student", "ce", "overhead")
SPEED_COLUMNS = ["model", "base_model", "backend", "role", "layers", "n_layers", "n_params", "batch_size", "threads",
                 "device", "dtype", "tokenization", "median_ms", "iqr_ms", "n_runs", "queries_per_s", "speedup_vs_de",
                 "speedup_vs_eager_de", "flop_ratio", "flop_efficiency", "flops_per_item", "mean_tokens", "max_length",
                 "n_queries"]
CE_MODES = ("pair", "self-pair")
DTYPES = ("fp32", "fp16")


# --------------------------------------------------------------------------- analytic FLOPs
def flops_per_token(hidden: int, intermediate: int, n_layers: int, seq_len: float, pooler: bool = False) -> float:
    """Forward FLOPs per token of a BERT encoder (multiply-add = 2 FLOPs), at sequence length ``seq_len``.

    Embeddings: the sum of word, position and token-type vectors (2h) and a LayerNorm (~5h);
    the lookup itself is free. Each transformer layer: Q, K, V and output projections
    (4 x 2h^2), attention scores and the weighted sum of values (2 x 2 x seq_len x h), the
    feed-forward block (2 x 2 h I) and two LayerNorms (2 x 5h); softmax, GELU, biases and
    residual additions are lower-order and ignored. Mean pooling adds h per token;
    ``pooler`` adds BERT's pooler and a one-logit head (2h^2 + 2h), spread over the tokens."""
    h, i, L = float(hidden), float(intermediate), float(seq_len)
    if min(h, i, L) <= 0 or n_layers < 0:
        raise ConfigError(f"flops_per_token needs positive sizes, got hidden={hidden}, intermediate={intermediate}, "
                          f"n_layers={n_layers}, seq_len={seq_len}.")
    embeddings = 2 * h + 5 * h
    layer = 4 * 2 * h * h + 2 * 2 * L * h + 2 * 2 * h * i + 2 * 5 * h
    pool = h + ((2 * h * h + 2 * h) / L if pooler else 0.0)
    return embeddings + n_layers * layer + pool


def flops_per_item(hidden: int, intermediate: int, n_layers: int, tokens: float, pooler: bool = False) -> float:
    """FLOPs to encode one item (a query, or a query-document pair) of ``tokens`` tokens."""
    return float(tokens) * flops_per_token(hidden, intermediate, n_layers, tokens, pooler=pooler)


def flop_ratio(reference_flops: float, model_flops: float) -> float:
    """Theoretical speed-up: reference FLOPs / model FLOPs (> 1: the model needs fewer FLOPs)."""
    if model_flops <= 0:
        raise ConfigError("model FLOPs must be positive.")
    return float(reference_flops) / float(model_flops)


# --------------------------------------------------------------------------- what is timed
@dataclass
class Encoder:
    """One timed model: ``prepare(texts)`` tokenises a batch, ``run(features)`` is the forward pass."""

    name: str
    role: str
    module: object
    prepare: Callable
    run: Callable
    n_layers: int
    n_params: int
    hidden: int
    intermediate: int
    layers: str = ""
    pair: bool = False          # items are (query, text) pairs
    pooler: bool = False
    extra: dict = field(default_factory=dict)
    backend: str = "torch"      # ce_utils.experiments.backends: torch | torch-int8 | onnx | onnx-int8
    base: str = ""              # the model's name without the backend suffix


def _arch(model) -> tuple[int, int]:
    cfg = backbone(model).config
    return int(cfg.hidden_size), int(cfg.intermediate_size)


def _n_params(module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def _to(features: dict, device: str) -> dict:
    return {k: (v.to(device, non_blocking=True) if hasattr(v, "to") else v) for k, v in features.items()}


def st_encoder(name: str, role: str, model, layers: str = "") -> Encoder:
    """A SentenceTransformer (DE or student): ``preprocess`` then ``forward`` -> sentence_embedding."""
    h, i = _arch(model)

    def prepare(texts):
        return model.preprocess(list(texts))

    def run(features):
        return model(features)["sentence_embedding"]

    return Encoder(name, role, model, prepare, run, num_layers(model), _n_params(model), h, i, layers=layers)


def ce_encoder(ce, mode: str, name: str | None = None) -> Encoder:
    """The CE scoring (query, document) pairs (``pair``), or embedding the query paired with
    itself (``self-pair``: every CE layer, mean pooled over the pair's tokens)."""
    if mode not in CE_MODES:
        raise ConfigError(f"Unknown CE mode {mode!r}; use one of {', '.join(CE_MODES)}.")
    h, i = _arch(ce)
    bb = backbone(ce)

    def prepare(pairs):
        return ce.preprocess([tuple(p) for p in pairs])

    if mode == "pair":
        def run(features):
            return ce(features)["scores"]
        module = ce
    else:
        keys = ("input_ids", "attention_mask", "token_type_ids")

        def run(features):
            out = bb(**{k: features[k] for k in keys if k in features}).last_hidden_state
            mask = features["attention_mask"].unsqueeze(-1).to(out.dtype)
            return (out * mask).sum(1) / mask.sum(1).clamp(min=1)
        module = bb
    return Encoder(name or f"CE ({mode})", "ce", ce, prepare, run, num_layers(ce), _n_params(module), h, i,
                   layers=",".join(str(l) for l in range(num_layers(ce))), pair=True, pooler=mode == "pair",
                   extra={"ce_mode": mode})


OVERHEAD_NAME = "DE-0 (no layers)"


def overhead_encoder(de, name: str = OVERHEAD_NAME) -> Encoder:
    """The full DE with every transformer layer removed: tokeniser, embeddings, attention-mask set-up,
    BERT pooler, mean pooling, normalisation and the SentenceTransformer plumbing -- the per-call cost
    that fewer layers do not remove. Timed beside the others, it splits each eager model's time into
    that fixed part and a per-layer part (``fixed_share``, ``expected_speedup``)."""


    z = copy.deepcopy(de)
    bb = backbone(z)
    bb.encoder.layer = nn.ModuleList()
    bb.config.num_hidden_layers = 0
    h, i = _arch(de)
    return Encoder(name, "overhead", z, lambda texts: z.preprocess(list(texts)),
                   lambda features: z(features)["sentence_embedding"], 0, _n_params(z), h, i, layers="")


def backend_name(name: str, backend: str) -> str:
    return name if backend == "torch" else f"{name} [{backend}]"


def backend_encoder(enc: Encoder, backend: str, work_dir: str | Path | None) -> Encoder:
    """``enc`` (a DE or query student, eager PyTorch) converted to an inference backend
    (:mod:`ce_utils.experiments.backends`); same tokenizer, same architecture columns, CPU only."""

    bm = backends.build(enc.module, backend, enc.name, work_dir=work_dir)
    return Encoder(backend_name(enc.name, backend), enc.role, bm.model, bm.features, bm.run, enc.n_layers,
                   enc.n_params, enc.hidden, enc.intermediate, layers=enc.layers, backend=backend, base=enc.name,
                   extra={"backend_model": bm})


# --------------------------------------------------------------------------- building the models
def de_k_ce_name(k: int) -> str:
    """Notebook 02's name for the student with ``k`` copied CE layers + 1 random layer."""
    try:
        from ce_utils.experiments.de2ce import student_name
        return student_name("ce", k + 1, "mse")
    except Exception:  # notebook 02's module absent: same convention
        return f"DE-{k + 1} CE"


def full_de_name(n_layers: int) -> str:
    try:
        from ce_utils.experiments.de2ce import student_name
        return student_name("full", n_layers, "none")
    except Exception:
        return f"DE-{n_layers} full"


def query_student_name(layers: Sequence[int]) -> str:
    return "query-student L" + "_".join(str(l) for l in layers)


def _trained_student(cfg: dict, name: str, device: str):
    """A trained student saved by notebook 02 under models_dir/<slug>, else ``None``."""
    models_dir = cfg.get("models_dir")
    if not models_dir:
        return None
    try:
        from ce_utils.experiments.de2ce import slug
    except Exception:
        return None
    path = Path(models_dir) / slug(name)
    if not (path / "modules.json").is_file():
        return None

    return SentenceTransformer(str(path), device=device)


def _trained_query_student(cfg: dict, layers: Sequence[int], device: str):
    """Notebook 03's trained student with these teacher layers (``models_dir/query-students``), else ``None``."""
    try:
        from ce_utils.experiments.query_distill import query_student_dir
    except Exception:  # pragma: no cover
        return None
    path = query_student_dir(cfg, "L" + "_".join(str(l) for l in layers))
    if path is None or not (path / "modules.json").is_file():
        return None

    return SentenceTransformer(str(path), device=device)


def build_cross_encoder(cfg: dict, de, de_path: str, device: str, max_length: int):
    """The profile's CE when it exists on disk (or is a hub/local model), else the CE *architecture*:
    the DE's transformer with a one-logit head (what notebook 01 trains). Returns (ce, source)."""


    spec = (cfg.get("models") or {}).get("ce")
    if spec:
        try:
            path = resolve_model(spec, cfg)
            return CrossEncoder(path, device=device, max_length=2 * max_length), spec
        except ModelNotFoundError as exc:
            log.info("CE %s not available (%s); timing its architecture instead.", spec, exc)
    ce = CrossEncoder(de_path, num_labels=1, device=device, max_length=2 * max_length)
    return ce, "architecture (DE transformer + 1-logit head, untrained)"


def build_encoders(cfg: dict, sp: dict, device: str = "cpu") -> tuple[list[Encoder], dict]:
    """Every model of the ``speed`` section, in display order, and a dict saying where each came from."""

    seed = int(cfg.get("seed", 42))
    max_length = int(sp["max_length"])
    de_spec = cfg["models"]["de"]
    de = load_sentence_transformer(de_spec, cfg, device=device, max_length=max_length)
    de.eval()
    n = num_layers(de)
    sources = {}
    encoders = [st_encoder(full_de_name(n), "de", de, layers=",".join(map(str, range(n))))]
    sources[encoders[0].name] = de_spec

    ce = None
    need_ce = bool(sp.get("ce_modes")) or any(True for _ in sp.get("de_k_ce") or [])
    if need_ce:
        ce, ce_source = build_cross_encoder(cfg, de, resolve_model(de_spec, cfg), device, max_length)
        ce.eval()
        if _arch(ce) != _arch(de):
            raise ConfigError("The CE and the DE differ in hidden size; DE-k CE needs a CE with the DE's architecture.")

    for k in sp.get("de_k_ce") or []:
        if not isinstance(k, int) or not 1 <= k < n:
            raise ConfigError(f"speed.de_k_ce: k={k!r} must be an integer in 1..{n - 1} (copied CE layers).")
        name = de_k_ce_name(k)
        trained = _trained_student(cfg, name, device)
        if trained is not None:
            student, sources[name] = trained, "trained (models_dir)"
        else:
            student = compose_student(de, [(ce, i) for i in range(k)] + [RANDOM], embeddings=ce, seed=seed)
            sources[name] = "architecture (CE embeddings + CE layers + 1 random layer, untrained)"
        student.max_seq_length = max_length
        student.eval()
        encoders.append(st_encoder(name, "de-k-ce", student, layers=",".join(str(i) for i in range(k)) + ",random"))

    for layers in sp.get("query_students") or []:
        if isinstance(layers, int):
            layers = [layers]
        layers = list(layers)
        name = query_student_name(layers)
        student = _trained_query_student(cfg, layers, device)
        if student is not None:
            sources[name] = "trained (models_dir/query-students, notebook 03)"
        else:
            student = layer_subset_student(de, layers, seed=seed)
            sources[name] = "architecture (teacher layers " + ",".join(map(str, layers)) + ")"
        student.max_seq_length = max_length
        student.eval()
        encoders.append(st_encoder(name, "query-student", student, layers=",".join(map(str, layers))))

    if sp.get("overhead", True):
        encoders.append(overhead_encoder(de))
        sources[OVERHEAD_NAME] = f"{de_spec} without its transformer layers"


    for backend in check_backends(sp.get("backends")):
        if backend == "torch":
            continue
        work = Path(cfg.get("cache_dir") or ".") / "onnx"
        for enc in [e for e in encoders if e.role in ("de", "query-student") and e.backend == "torch"]:
            conv = backend_encoder(enc, backend, work)
            sources[conv.name] = f"{sources.get(enc.name, '')}; {BACKEND_LABELS[backend]}"
            encoders.append(conv)

    for mode in sp.get("ce_modes") or []:
        enc = ce_encoder(ce, mode)
        sources[enc.name] = ce_source
        encoders.append(enc)
    return encoders, sources


# --------------------------------------------------------------------------- inputs
def query_sample(cfg: dict, sp: dict) -> list[str]:
    """A seeded sample of ``speed.n_queries`` unlabelled queries (``speed.query_files``)."""

    queries = load_query_files(cfg, sp.get("query_files"))
    ids = sorted(queries)
    n = int(sp["n_queries"])
    if len(ids) < n:
        raise ConfigError(f"speed.n_queries={n} but the query files hold only {len(ids)} queries; lower it.")
    rng = random.Random(int(cfg.get("seed", 42)))
    return [queries[i] for i in rng.sample(ids, n)]


def document_sample(cfg: dict, sp: dict, n: int) -> list[str]:
    """``n`` seeded documents of ``speed.doc_dataset`` (the CE's pair partner)."""

    name = sp.get("doc_dataset")
    if not name:
        raise ConfigError("speed.doc_dataset must name a dataset of the profile (the CE's documents).")
    ds = load_beir_dataset(cfg, name)
    ids = sorted(ds.corpus)
    rng = random.Random(int(cfg.get("seed", 42)) + 1)
    chosen = rng.sample(ids, n) if len(ids) >= n else rng.choices(ids, k=n)
    return [doc_text(ds.corpus[d]) for d in chosen]


def items_for(enc: Encoder, queries: list[str], docs: list[str], ce_n_queries: int | None = None) -> list:
    """What ``enc`` encodes: the queries, (query, document) pairs, or (query, query) self-pairs.
    A CE's items are cut to the first ``ce_n_queries`` (its passes over ~240-token pairs are slow)."""
    if not enc.pair:
        return list(queries)
    n = int(ce_n_queries) if ce_n_queries else len(queries)
    if enc.extra.get("ce_mode") == "pair":
        return list(zip(queries, docs))[:n]
    return [(q, q) for q in queries][:n]


def mean_tokens(enc: Encoder, items: list) -> float:
    feats = enc.prepare(items)
    return float(feats["attention_mask"].sum(1).float().mean())


# --------------------------------------------------------------------------- timing
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
        return [lambda b=batches[i % len(batches)]: (enc.run(_to(enc.prepare(b), device)), sync()) for i in range(n)]
    feats = [_to(enc.prepare(b), device) for b in batches]
    return [lambda f=feats[i % len(feats)]: (enc.run(f), sync()) for i in range(n)]


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


def _move(enc: Encoder, device: str, dtype: str) -> None:

    if enc.backend != "torch":  # quantised / ONNX encoders run on the CPU as built
        return
    enc.module.to(device)
    enc.module.to(torch.float16 if dtype == "fp16" else torch.float32)


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


def run_speed(cfg: dict, sp: dict, encoders: list[Encoder], queries: list[str], docs: list[str],
              cuda_available: bool | None = None, progress: bool = True) -> pd.DataFrame:
    """Time every encoder in every setting over ``speed.rounds`` rounds (see :func:`schedule` and
    :func:`interleave`); one row per (round, model, setting, batch size, tokenisation) with
    ``ms_per_batch``, the mean over the pass (total time / batches: what throughput pays). The speed-ups
    over the full DE are ratios within one pass. Summarise with :func:`summarize_rounds`."""


    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    batch_sizes = [int(b) for b in sp["batch_sizes"]]
    if any(b < 1 or b > len(queries) for b in batch_sizes):
        raise ConfigError(f"speed.batch_sizes {batch_sizes} must lie in 1..n_queries ({len(queries)}).")
    tok_modes = sp.get("tokenization") or ["included", "excluded"]
    bad = [t for t in tok_modes if t not in ("included", "excluded")]
    if bad:
        raise ConfigError(f"speed.tokenization: unknown {bad}; use 'included' and/or 'excluded'.")
    rounds = int(sp.get("rounds") or 1)
    if rounds < 1:
        raise ConfigError(f"speed.rounds must be >= 1, not {rounds}.")
    max_length = int(sp["max_length"])
    de = next(e for e in encoders if e.role == "de")
    rows = []
    ce_n = sp.get("ce_n_queries")
    max_bs_ce = sp.get("ce_max_batch_size")
    if ce_n is not None:
        ce_bs = [b for b in batch_sizes if not (max_bs_ce and b > int(max_bs_ce))]
        if not isinstance(ce_n, int) or ce_n < max(ce_bs) or ce_n > len(queries):
            raise ConfigError(f"speed.ce_n_queries={ce_n!r} must be an integer from the largest CE batch size "
                              f"({max(ce_bs)}) to n_queries ({len(queries)}); or null for every query.")
    tokens = {e.name: mean_tokens(e, items_for(e, queries, docs, ce_n)) for e in encoders}
    de_flops = flops_per_item(de.hidden, de.intermediate, de.n_layers, tokens[de.name])
    plan = schedule(settings(sp, cuda_available), encoders, batch_sizes, tok_modes, rounds,
                    int(cfg.get("seed", 42)), int(max_bs_ce) if max_bs_ce else None)
    current = None
    for r, s, bs, tok, block in tqdm(plan, desc="timing (blocks)", disable=not progress):
        if current != (s["device"], s["dtype"]):
            for e in encoders:
                _move(e, s["device"], s["dtype"])
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
        _move(e, "cpu", "fp32")
    torch.set_num_threads(os.cpu_count() or 1)
    return add_round_ratios(pd.DataFrame(rows))


ROUND_KEYS = ["round", "batch_size", "threads", "device", "dtype", "tokenization"]


def add_round_ratios(df: pd.DataFrame) -> pd.DataFrame:
    """Per round (one interleaved pass): ``speedup_vs_de`` (the full DE of the same backend / the model),
    ``speedup_vs_eager_de`` (the eager fp32 full DE / the model), and for eager models, when the
    0-layer ``overhead`` model was timed: ``fixed_share`` (its time / the model's: the share of the
    model's time that does not shrink with fewer layers) and ``expected_speedup``, the speed-up that
    FLOPs plus that fixed cost predict: DE / (fixed + n_layers x (DE - fixed) / DE layers)."""
    df = df.copy()
    keys = ROUND_KEYS + ["backend"]
    de_ms = df[df["role"] == "de"].set_index(keys)["ms_per_batch"]
    df["speedup_vs_de"] = [de_ms.get(k, np.nan) / v for k, v in zip(df[keys].itertuples(index=False),
                                                                     df["ms_per_batch"])]
    eager_de = df[(df["role"] == "de") & (df["backend"] == "torch")].set_index(ROUND_KEYS)
    df["speedup_vs_eager_de"] = [eager_de["ms_per_batch"].get(k, np.nan) / v
                                 for k, v in zip(df[ROUND_KEYS].itertuples(index=False), df["ms_per_batch"])]
    fixed = df[df["role"] == "overhead"].set_index(ROUND_KEYS)["ms_per_batch"]
    share, expected = [], []
    for k, ms, n, backend, role in zip(df[ROUND_KEYS].itertuples(index=False), df["ms_per_batch"], df["n_layers"],
                                       df["backend"], df["role"]):
        f = fixed.get(k, np.nan)
        if backend != "torch" or role == "ce" or np.isnan(f) or k not in eager_de.index:
            share.append(np.nan)
            expected.append(np.nan)
            continue
        de = eager_de.loc[k]
        per_layer = (de["ms_per_batch"] - f) / float(de["n_layers"])
        share.append(f / ms)
        expected.append(de["ms_per_batch"] / (f + float(n) * per_layer))
    df["fixed_share"], df["expected_speedup"] = share, expected
    return df


SETTING_KEYS = ["model", "batch_size", "threads", "device", "dtype", "tokenization"]


def call_matrix(call_ms: pd.Series) -> np.ndarray:
    """The ``call_ms`` strings of one model in one setting (one per round) as a rounds x calls array."""
    calls = [np.asarray(str(x).split(), dtype=float) for x in call_ms]
    if len({len(c) for c in calls}) != 1:
        raise ValueError("call_ms: every round of one model and setting must hold the same number of calls.")
    return np.vstack(calls)


def robust_ms(calls: np.ndarray) -> float:
    """Time per batch from a rounds x calls array (:func:`call_matrix`), robust to bursts of load: for every
    call of the pass (the same batch in every round) the median over rounds, then the mean over the pass. A
    burst that slowed a few calls of one round leaves it unchanged; the mean keeps the pass's mix of short
    and long batches."""
    return float(np.median(calls, axis=0).mean())


def robust_log_se(calls: np.ndarray, n_boot: int = 400, seed: int = 0) -> float:
    """Bootstrap standard error of log(:func:`robust_ms`) of a rounds x calls array: the rounds resampled
    with replacement (seeded), the estimator recomputed each time. The precision of the time actually
    reported, rather than of a single pass (which ``iqr_ms`` describes)."""
    if len(calls) < 2:
        return np.nan
    rng = np.random.default_rng(seed)
    boot = [np.log(robust_ms(calls[rng.integers(0, len(calls), len(calls))])) for _ in range(int(n_boot))]
    return float(np.std(boot, ddof=1))


def summarize_rounds(rounds_df: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, setting). ``median_ms``: with per-call times (``call_ms``, from :func:`run_speed`)
    :func:`robust_ms`, else the median over rounds of ``ms_per_batch``; ``iqr_ms``: the IQR over rounds of
    ``ms_per_batch`` (how much one pass varies); with per-call times also ``min_ms``, per call the fastest
    of the rounds, then the mean over the pass: the cost undisturbed by other load (timeit's advice for a
    shared machine), which :func:`architecture_spread` compares as well, and ``log_se``, the bootstrap
    standard error of log(``median_ms``) (:func:`robust_log_se`). The speed-ups over the full DE,
    ``fixed_share`` and ``expected_speedup`` (:func:`add_round_ratios`) come from these times of models
    timed in the same interleaved passes; ``speedup_iqr`` is the IQR over rounds of the per-pass speed-up."""
    def q(x, p):
        return float(np.percentile(np.asarray(x, dtype=float), p))

    def med(x):
        x = np.asarray(x, dtype=float)
        return float(np.median(x)) if np.isfinite(x).any() else np.nan

    per_round = ("round", "ms_per_batch", "call_ms", "n_runs", "queries_per_s", "speedup_vs_de",
                 "speedup_vs_eager_de", "fixed_share", "expected_speedup")
    robust = "call_ms" in rounds_df.columns
    out = []
    for key, g in rounds_df.groupby(SETTING_KEYS, sort=False):
        first = g.iloc[0].to_dict()
        calls = call_matrix(g["call_ms"]) if robust else None
        ms = robust_ms(calls) if robust else float(np.median(g["ms_per_batch"]))
        extra = {c: med(g[c]) for c in ("speedup_vs_de", "speedup_vs_eager_de", "fixed_share", "expected_speedup")
                 if c in g}
        if robust:
            extra["min_ms"] = float(calls.min(axis=0).mean())
            extra["log_se"] = robust_log_se(calls)
        out.append({**{k: v for k, v in first.items() if k not in per_round},
                    "median_ms": ms, "iqr_ms": q(g["ms_per_batch"], 75) - q(g["ms_per_batch"], 25),
                    "n_rounds": int(g["round"].nunique()), "n_runs": int(g["n_runs"].sum()),
                    "queries_per_s": 1e3 * int(first["batch_size"]) / ms,
                    "speedup_iqr": q(g["speedup_vs_de"], 75) - q(g["speedup_vs_de"], 25), **extra})
    df = pd.DataFrame(out)
    if robust:  # ratios of the robust times (the per-pass ratios' medians are in speed_rounds.csv)
        ratios = add_round_ratios(df.assign(round=0, ms_per_batch=df["median_ms"]))
        for c in ("speedup_vs_de", "speedup_vs_eager_de", "fixed_share", "expected_speedup"):
            df[c] = ratios[c].to_numpy()
    if "flop_ratio" in df.columns:
        df["flop_efficiency"] = df["speedup_vs_de"] / df["flop_ratio"]
    return df[[c for c in SPEED_COLUMNS if c in df.columns] + [c for c in df.columns if c not in SPEED_COLUMNS]]


def architecture_spread(df: pd.DataFrame, z: float = 2.58, target: float = 1.05) -> pd.DataFrame:
    """Models with the same architecture (role-independent: layers, width, pair or not) in the same
    setting should time the same: per group, the slowest / fastest median (``spread``) and the models
    compared. A spread well above 1 means the measurement, not the model, made the difference.

    With ``iqr_ms`` and ``n_rounds`` (a summary of interleaved rounds), also the measurement's own
    precision: ``spread_se``, the standard error of log(spread) from the two medians' standard errors of
    log time: their bootstrap ``log_se`` when the summary has it (per-call times), else from the IQR over
    rounds (sigma ~ IQR / 1.349, the standard error of a median ~ 1.2533 sigma / sqrt(rounds)); ``limit`` =
    max(``target``, exp(z * spread_se)), the largest spread that the noise alone explains (z = 2.58:
    two-sided 1%); ``within_target`` (spread <= target) and ``within_noise`` (spread <= limit).

    With ``min_ms`` (per-call times), also ``spread_min``: the same ratio of the undisturbed times, and
    ``within_target_min`` (spread_min <= target)."""
    d = df[~df["role"].isin(["ce", "overhead"])].copy()
    d["arch"] = d["n_layers"].astype(str) + "L"
    if "backend" not in d.columns:
        d["backend"] = "torch"
    keys = ["arch", "backend", "batch_size", "threads", "device", "dtype", "tokenization"]
    noisy = {"iqr_ms", "n_rounds"} <= set(d.columns)
    out = []
    for key, g in d.groupby(keys):
        if g["model"].nunique() < 2:
            continue
        row = {**dict(zip(keys, key)), "models": ", ".join(sorted(g["model"])),
               "spread": float(g["median_ms"].max() / g["median_ms"].min())}
        if "min_ms" in g.columns and g["min_ms"].notna().all():
            row["spread_min"] = float(g["min_ms"].max() / g["min_ms"].min())
            row["within_target_min"] = row["spread_min"] <= target
        if noisy:
            ends = g.loc[[g["median_ms"].idxmax(), g["median_ms"].idxmin()]]
            if "log_se" in ends.columns and ends["log_se"].notna().all():
                rel = ends["log_se"]
            else:
                rel = 1.2533 * (ends["iqr_ms"] / 1.349) / ends["median_ms"] / np.sqrt(ends["n_rounds"].clip(lower=1))
            se = float(np.sqrt((rel ** 2).sum()))
            row.update(spread_se=se, limit=max(target, float(np.exp(z * se))),
                       within_target=row["spread"] <= target)
            row["within_noise"] = row["spread"] <= row["limit"]
        out.append(row)
    return pd.DataFrame(out)


def speed_section(cfg: dict) -> dict:
    """The profile's ``speed`` section with defaults filled in (max_length from ``encode``, else 128:
    a query rarely reaches it, and a CE pair gets twice that)."""
    sp = dict(section(cfg, "speed"))
    if sp.get("max_length") is None:
        sp["max_length"] = int((cfg.get("encode") or {}).get("max_length") or 128)
    for key in ("n_queries", "batch_sizes"):
        if sp.get(key) is None:
            raise ConfigError(f"speed.{key} is not set in profile {cfg.get('name')!r}.")
    return sp


def summary_table(df: pd.DataFrame, batch_size: int | None = None, tokenization: str = "included") -> pd.DataFrame:
    """One row per model: queries/s and speed-up at ``batch_size`` (default: the largest) per
    CPU thread count / device, next to the FLOP ratio."""
    d = df[df["tokenization"] == tokenization]
    if batch_size is None:
        batch_size = int(d["batch_size"].max())
    d = d[d["batch_size"] == batch_size].copy()
    d["setting"] = d["device"].str.replace("cuda:", "", regex=False) + " " + d["dtype"] + " " + \
        d["threads"].astype(str) + "t"
    wide = d.pivot_table(index=["model", "role", "n_layers", "n_params", "flop_ratio"], columns="setting",
                         values=["queries_per_s", "speedup_vs_de"], sort=False)
    wide.columns = [f"{a} [{b}]" for a, b in wide.columns]
    return wide.reset_index()


def add_model_ids(df: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    """``model_id`` of every timed model, named as in the quality CSVs (the full DE by its profile
    label, DE-k CE students by notebook 02's names, query students ``qd:L<layers>`` as notebook 03,
    the CE ``<CE label> (pair)`` / ``(self-pair)``): the key the Pareto figure joins on."""

    de, ce = model_label(cfg["models"]["de"]), model_label(cfg["models"].get("ce") or "ce")
    aliases = {}
    df = df.copy()
    if "backend" not in df.columns:
        df["backend"] = "torch"
    for name, role, layers, backend in df[["model", "role", "layers", "backend"]].drop_duplicates().itertuples(
            index=False):
        if role == "de":
            base = de
        elif role == "query-student":
            base = "qd:L" + str(layers).replace(",", "_")
        elif role == "ce":
            base = f"{ce} ({str(name).split('(', 1)[1].rstrip(')')})"
        else:
            base = str(name).split(" [", 1)[0]
        aliases[name] = base if backend == "torch" else f"{base}@{backend}"
    return add(df, "speed.csv", aliases)


def flop_goal_table(df: pd.DataFrame, goal: float = 0.9, threads: int = 1, batch_sizes: Sequence[int] | None = None
                    ) -> pd.DataFrame:
    """Every eager student (DE-k CE, query students) on the CPU at ``threads`` thread(s), at the smallest and
    the largest batch size (or ``batch_sizes``), tokenisation included and excluded: the measured speed-up
    over the full DE, the FLOP ratio, the speed-up as a share of it (``of_flop_ratio``; the goal: at least
    ``goal``), and the speed-up that the FLOPs plus the measured fixed per-call cost predict
    (``expected_speedup``, :func:`add_round_ratios`) with that cost's share of the model's time."""

    d = eager(df)
    d = d[d["role"].isin(["de-k-ce", "query-student"]) & (d["device"] == "cpu") & (d["threads"] == threads)
          & (d["dtype"] == "fp32")]
    if d.empty:
        return pd.DataFrame()
    sizes = list(batch_sizes) if batch_sizes else sorted({int(d["batch_size"].min()), int(d["batch_size"].max())})
    d = d[d["batch_size"].isin(sizes)]
    cols = ["model", "n_layers", "batch_size", "tokenization", "flop_ratio", "speedup_vs_de"]
    cols += [c for c in ("speedup_iqr", "expected_speedup", "fixed_share") if c in d.columns]
    out = d[cols].copy()
    out.insert(6, "of_flop_ratio", d["speedup_vs_de"] / d["flop_ratio"])
    out["meets_goal"] = out["of_flop_ratio"] >= goal
    return out.sort_values(["tokenization", "batch_size", "n_layers", "model"],
                           ascending=[False, True, True, True]).reset_index(drop=True)
