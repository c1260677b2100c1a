"""Layer probing (Ananthakrishnan et al., 2025): are a cross encoder's early layers useful
sentence embedders?

A cross encoder (CE) sees one text by pairing it with itself, ``[CLS] s [SEP] s [SEP]``; every
hidden state (``0`` = embedding output, ``i`` = layer ``i``) is mean-pooled over a *pooling span*:

* ``first_segment`` (the paper's choice, default): tokens of the first copy, without
  ``[CLS]`` / ``[SEP]`` / padding;
* ``both_segments``: every non-special token of both copies;
* ``with_cls``: the first copy plus ``[CLS]``.

A dual encoder (DE) sees the text alone and is mean-pooled over its non-padding tokens, at the
same hidden states. One forward pass per text yields every layer; the stacked
``[n_layers + 1, n_texts, dim]`` array is cached. Each layer's embeddings are then used for exact
cosine retrieval (BEIR metrics), STS-B Spearman correlation, and a linear-CKA / cosine control
between the CE's and the DE's embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import random
from ce_utils.core.config import ConfigError
from ce_utils.core.data import load_eval_dataset, load_sts, subsample
from ce_utils.core.encode import dataset_embeddings, layer_embeddings, model_max_length
from ce_utils.core.io import model_label
from ce_utils.core.layers import KINDS, check_pooling
from ce_utils.core.retrieval import DEFAULT_METRICS, evaluate, exact_search, rerank
from ce_utils.core.runinfo import _encode_dtype
from ce_utils.core.scoring import ce_scorer, check_reranks, pipeline_queries
from ce_utils.core.students import backbone
from ce_utils.experiments.probing.measures import layer_rows, retrieval_by_layer, similarity_by_layer, sts_by_layer, sts_texts


# columns every layer_probe.csv row has (run metadata is appended by save_results)
PROBE_COLUMNS = ["model", "model_kind", "layer", "n_layers", "section", "dataset", "metric", "value", "pooling",
                 "n_queries", "n_docs", "approximate", "max_length", "seed"]
CE_QUALITY_COLUMNS = ["model", "stage", "first_stage_model", "dataset", "metric", "value", "depth",
                      "n_queries", "n_docs", "approximate", "max_length", "seed"]


# --------------------------------------------------------------------------- settings
@dataclass
class ProbeSettings:
    models: dict[str, dict]                    # label -> {"kind": "ce"|"de", "spec": model spec}
    datasets: list[str]
    layers: list[int] | None = None            # None = every hidden state 0..L
    pooling: str = "first_segment"
    batch_size: int = 32
    max_length: int | None = None              # tokens per text (None: a DE's own; each copy of a CE self-pair: 256)
    max_queries: int | None = None
    max_docs: int | None = None
    sizes: dict = field(default_factory=dict)  # dataset -> {max_queries, max_docs}
    sts: str | None = "stsb-test"
    sts_max_pairs: int | None = None
    control_dataset: str | None = None
    control_texts: int = 512
    rerank_dataset: str | None = None
    rerank_max_queries: int | None = None
    rerank_depth: int = 20
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    seed: int = 42


def _as_model_dict(models, cfg: dict) -> dict[str, dict]:
    if not models:
        models = {"ce": cfg["models"].get("ce"), "de": cfg["models"].get("de")}
    if not isinstance(models, dict):
        raise ConfigError("`models` must be a dict {label: spec} or {label: {kind: ce|de, spec: ...}}.")
    out = {}
    for label, value in models.items():
        if value is None and label not in KINDS:
            continue  # null drops a model that the profile this one extends names
        if isinstance(value, str) or value is None:
            if label not in KINDS:
                raise ConfigError(f"Model {label!r}: give {{'kind': 'ce' or 'de', 'spec': {value!r}}}; only the "
                                  "labels 'ce' and 'de' imply their kind.")
            value = {"kind": label, "spec": value}
        kind, spec = value.get("kind"), value.get("spec")
        if kind not in KINDS:
            raise ConfigError(f"Model {label!r}: kind must be 'ce' or 'de', not {kind!r}.")
        if not spec:
            raise ConfigError(f"Model {label!r} has no spec; set models.{kind} in the profile or pass "
                              f"`-p {kind}_model <spec>`.")
        out[label] = {"kind": kind, "spec": spec}
    return out


def probe_settings(cfg: dict, **params) -> ProbeSettings:
    """The ``probing`` section of the profile, overridden by non-``None`` ``params``
    (``models``, ``de_model``, ``ce_model``, ``datasets``, ``layers``, ``pooling``, ...)."""
    sec = dict(cfg.get("probing") or {})
    sec.update({k: v for k, v in params.items() if v is not None})
    models = sec.pop("models", None)
    models = _as_model_dict(models, cfg)
    for kind in KINDS:  # de_model / ce_model replace the spec of the model of that kind
        spec = sec.pop(f"{kind}_model", None)
        if spec:
            for m in models.values():
                if m["kind"] == kind:
                    m["spec"] = spec
    known = list(cfg.get("datasets") or {})
    datasets = sec.pop("datasets", None) or known
    if isinstance(datasets, str):
        datasets = [datasets]
    unknown = [d for d in datasets if d not in known]
    if unknown:
        raise ConfigError(f"Unknown dataset(s) {unknown}; the profile has {', '.join(sorted(known))}. "
                          "Add them under `datasets:` in the profile YAML.")
    ev = cfg.get("eval") or {}
    layers = sec.pop("layers", None)
    if layers is not None:
        if isinstance(layers, int):
            layers = [layers]
        if not all(isinstance(l, int) and not isinstance(l, bool) for l in layers):
            raise ConfigError(f"layers must be a list of ints (0 = embedding output), not {layers!r}.")
    s = ProbeSettings(
        models=models, datasets=list(datasets), layers=layers,
        pooling=check_pooling(sec.pop("pooling", "first_segment")),
        batch_size=int(sec.pop("batch_size", None) or (cfg.get("encode") or {}).get("batch_size", 32)),
        max_length=sec.pop("max_length", None) or (cfg.get("encode") or {}).get("max_length"),
        max_queries=sec.pop("max_queries", None), max_docs=sec.pop("max_docs", None),
        sizes=dict(sec.pop("sizes", None) or {}),
        sts=sec.pop("sts", "stsb-test"), sts_max_pairs=sec.pop("sts_max_pairs", None),
        control_dataset=sec.pop("control_dataset", None), control_texts=int(sec.pop("control_texts", 512)),
        rerank_dataset=sec.pop("rerank_dataset", None), rerank_max_queries=sec.pop("rerank_max_queries", None),
        rerank_depth=int(sec.pop("rerank_depth", None) or ev.get("rerank_depth", 20)),
        metrics=list(sec.pop("metrics", None) or ev.get("metrics") or DEFAULT_METRICS),
        seed=int(sec.pop("seed", None) or cfg.get("seed", 42)),
    )
    if s.control_dataset is None or s.control_dataset not in s.datasets:
        s.control_dataset = "scifact" if "scifact" in s.datasets else (s.datasets[0] if s.datasets else None)
    if s.rerank_dataset is None or s.rerank_dataset not in s.datasets:
        s.rerank_dataset = s.control_dataset
    if (s.max_length is not None and int(s.max_length) < 4) or s.batch_size < 1:
        raise ConfigError("max_length must be >= 4 and batch_size >= 1.")
    if sec:
        raise ConfigError(f"Unknown probing parameter(s) {sorted(sec)}.")
    return s


def check_probe_layers(layers: Sequence[int] | None, n_layers: int, what: str = "model") -> list[int]:
    """Hidden-state indices 0..n_layers (0 = embedding output); ``None`` = all."""
    if layers is None:
        return list(range(n_layers + 1))
    bad = [l for l in layers if not isinstance(l, int) or not 0 <= l <= n_layers]
    if bad:
        raise ConfigError(f"Layer index {bad} out of range for the {what}: it has hidden states 0..{n_layers} "
                          "(0 = embedding output). Pass e.g. `-p layers '[0, 1, 2]'`.")
    return sorted(set(layers))


# --------------------------------------------------------------------------- tokenisation and masks


# --------------------------------------------------------------------------- encoding


# --------------------------------------------------------------------------- orchestration


def probe_sample(cfg: dict, s: ProbeSettings, name: str):
    """The test collection ``name`` as every notebook evaluates it (``load_eval_dataset``: the whole
    corpus and every test query), cut only when ``max_queries`` / ``max_docs`` are passed (smoke runs)."""

    ds = load_eval_dataset(cfg, name)
    per = s.sizes.get(name) or {}
    mq = s.max_queries if s.max_queries is not None else per.get("max_queries")
    md = s.max_docs if s.max_docs is not None else per.get("max_docs")
    if mq is None and md is None:
        return ds
    return subsample(ds, max_queries=mq, max_docs=md, seed=s.seed)


def probe_layers(cfg: dict, s: ProbeSettings, m: dict, texts, ids, what: str, device: str | None = None,
                 progress: bool = True) -> np.ndarray:
    """Every hidden state of one probed model over ``texts``, through the shared embedding cache."""

    return layer_embeddings(cfg, m["model"], m["kind"], texts, ids, what, probe_length(s, m), s.pooling, device,
                            progress)


CE_COPY_LENGTH = 256  # tokens of each copy of a CE self-pair when no max_length is set (a DE's usual length)


def probe_length(s: ProbeSettings, m: dict) -> int:
    """Tokens per text: ``max_length``, else a DE's own max_seq_length; for a CE, each copy of the
    self-pair gets ``max_length`` (default 256) tokens, so the pair spans twice that."""

    if s.max_length:
        return int(s.max_length)
    return CE_COPY_LENGTH if m["kind"] == "ce" else model_max_length(m["model"])


def probe_dataset(cfg: dict, s: ProbeSettings, ds, models: dict, device: str | None = None,
                  progress: bool = True):
    """Rows of per-layer retrieval metrics for every model on ``ds``, and the embeddings
    ``{label: (query_layers, doc_layers)}`` (all hidden states)."""
    rows, emb = [], {}
    for label, m in models.items():
        n_layers = len(backbone(m["model"]).encoder.layer)
        layers = check_probe_layers(s.layers, n_layers, label)
        d = probe_layers(cfg, s, m, ds.doc_texts(), ds.doc_ids, f"{ds.name}-docs", device, progress)
        q = probe_layers(cfg, s, m, ds.query_texts(), ds.query_ids, f"{ds.name}-{ds.split}-queries", device, False)
        emb[label] = (q, d)
        metrics = retrieval_by_layer(q, d, ds, layers, s.metrics)
        rows += layer_rows(metrics, model=model_label(m["spec"]), model_kind=kind_of(label, m), n_layers=n_layers,
                           section="retrieval", dataset=ds.name, pooling=s.pooling,
                           n_queries=len(ds.queries), n_docs=len(ds.corpus), approximate=bool(ds.approximate),
                           max_length=probe_length(s, m), seed=s.seed)
    return rows, emb


def kind_of(label: str, m: dict) -> str:
    """``model_kind`` of a probed model in the CSV: ``ce``, ``de`` (the profile's DE) or the label
    of any other DE (e.g. ``de-ft``, the same-data control)."""
    return m["kind"] if label in KINDS else label


def probe_sts(cfg: dict, s: ProbeSettings, models: dict, device: str | None = None, progress: bool = True):
    """Rows of per-layer STS Spearman correlation (metric ``Spearman``, dataset = the STS set)."""

    pairs = load_sts(cfg, s.sts)
    if s.sts_max_pairs is not None and s.sts_max_pairs < len(pairs):

        pairs = random.Random(s.seed).sample(pairs, int(s.sts_max_pairs))
    texts, ia, ib = sts_texts(pairs)
    gold = [p[2] for p in pairs]
    rows = []
    for label, m in models.items():
        n_layers = len(backbone(m["model"]).encoder.layer)
        layers = check_probe_layers(s.layers, n_layers, label)
        e = probe_layers(cfg, s, m, texts, texts, f"{s.sts}-{len(pairs)}", device, progress)
        rho = sts_by_layer(e[:, ia], e[:, ib], gold, layers)
        rows += layer_rows({l: {"Spearman": v} for l, v in rho.items()}, model=model_label(m["spec"]),
                           model_kind=kind_of(label, m), n_layers=n_layers, section="sts", dataset=s.sts,
                           pooling=s.pooling, n_queries=len(pairs), n_docs=len(texts), approximate=False,
                           max_length=probe_length(s, m), seed=s.seed)
    return rows


def control_rows(s: ProbeSettings, ds, emb: dict, models: dict, reference: str = "de") -> list[dict]:
    """CKA / mean cosine, per layer, between each model's embeddings and those of ``reference``
    (the shared initialisation: the profile's DE) on a seeded sample of ``control_texts`` documents
    of ``ds`` (dataset = ``<name>-docs-<n>``; model_kind = ``<label>-vs-<reference>``)."""
    if reference not in emb:
        return []
    ref = emb[reference][1]
    n = min(int(s.control_texts), ref.shape[1])
    idx = np.sort(np.random.default_rng(s.seed).choice(ref.shape[1], size=n, replace=False))
    rows = []
    for label, (_, docs) in emb.items():
        if label == reference:
            continue
        n_layers = min(docs.shape[0], ref.shape[0]) - 1
        layers = check_probe_layers(s.layers, n_layers, f"{label} / {reference} pair")
        sims = similarity_by_layer(docs[:, idx], ref[:, idx], layers)
        rows += layer_rows(sims, model=f"{model_label(models[label]['spec'])} vs {model_label(models[reference]['spec'])}",
                           model_kind=f"{kind_of(label, models[label])}-vs-{reference}", n_layers=n_layers,
                           section="control", dataset=f"{ds.name}-docs-{n}", pooling=s.pooling, n_queries=0,
                           n_docs=n, approximate=bool(ds.approximate), max_length=s.max_length, seed=s.seed)
    return rows


def ce_rerank_rows(cfg: dict, s: ProbeSettings, ds, models: dict, progress: bool = True,
                   first_stage_cfg: dict | None = None) -> list[dict]:
    """The CE's own quality: it re-ranks the DE's top ``rerank_depth`` on ``ds`` (every test query
    unless ``rerank_max_queries``); rows for the DE first stage (stage ``first_stage``) and the
    re-ranked list (stage ``ce_rerank``). CE scores go through the cache notebook 02 shares.

    The first stage is the DE's last hidden state, mean-pooled: exactly its sentence embedding
    (the shared cache's array) when the DE is a mean-pooling SentenceTransformer. ``first_stage_cfg``:
    another profile dict for the DE's embeddings (e.g. another encode dtype); rows say each part's dtype."""

    ce = next((l for l, m in models.items() if m["kind"] == "ce"), None)
    de = "de" if "de" in models else next((l for l, m in models.items() if m["kind"] == "de"), None)
    if ce is None or de is None:
        return []
    qids = pipeline_queries(ds, s.rerank_max_queries, s.seed)
    st = models[de]["model"]
    fs_cfg = first_stage_cfg or cfg
    q_all, d_emb = dataset_embeddings(fs_cfg, st, ds, s.max_length, progress=progress)
    pos = {q: i for i, q in enumerate(ds.query_ids)}
    first = exact_search(q_all[[pos[q] for q in qids]], d_emb, qids, ds.doc_ids, top_k=100)
    qrels = {q: ds.qrels[q] for q in qids}
    cross = models[ce]["model"]
    scorer = ce_scorer(cross, ds, cfg)
    reranked = rerank(first, scorer, s.rerank_depth)
    common = dict(first_stage_model=model_label(models[de]["spec"]), dataset=ds.name, depth=s.rerank_depth,
                  n_queries=len(qids), n_docs=len(ds.corpus), approximate=bool(ds.approximate), seed=s.seed)
    rows = [{"model": model_label(models[de]["spec"]), "stage": "first_stage", "metric": k, "value": v,
             "max_length": model_max_length(st, s.max_length), **common}
            for k, v in evaluate(qrels, first, s.metrics).items()]
    rows += [{"model": model_label(models[ce]["spec"]), "stage": "ce_rerank", "metric": k, "value": v,
              "max_length": cross.max_length, **common} for k, v in evaluate(qrels, reranked, s.metrics).items()]
    if first_stage_cfg is not None:

        for r in rows:
            r["encode_dtype"] = _encode_dtype(fs_cfg if r["stage"] == "first_stage" else cfg)
    return rows


def check_ce(cfg: dict, ce, de, allow: bool = False) -> dict:
    """The guard of notebook 02, the same check as notebook 01's: the CE re-ranks the DE's top
    ``eval.rerank_depth`` for every test query of ``probing.rerank_dataset`` (CE scores and DE
    embeddings come from the shared caches, so after notebook 01 this costs nothing). Raises
    :class:`~ce_utils.experiments.cross_encoder.CrossEncoderNotWorkingError` when the CE does not beat its
    first stage, unless ``allow``."""

    s = probe_settings(cfg)
    models = {"ce": {"kind": "ce", "spec": cfg["models"]["ce"], "model": ce},
              "de": {"kind": "de", "spec": cfg["models"]["de"], "model": de}}
    rows = ce_rerank_rows(cfg, s, probe_sample(cfg, s, s.rerank_dataset), models, progress=False)
    ndcg = {r["stage"]: r["value"] for r in rows if r["metric"] == "NDCG@10"}
    works = check_reranks(ndcg["first_stage"], ndcg["ce_rerank"], f"{s.rerank_dataset} (full test set)", allow=allow)
    return {"works": works, "dataset": s.rerank_dataset, "depth": s.rerank_depth, "n_queries": rows[0]["n_queries"],
            "first_stage": ndcg["first_stage"], "reranked": ndcg["ce_rerank"]}
