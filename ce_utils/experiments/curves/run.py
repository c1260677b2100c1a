"""Learning curves of query-encoder students (Wang & Lyu, 2023) and of DE-k CE students
(Ananthakrishnan et al., 2025): how many MSE steps a student needs.

A student (``query_distill.strategies`` syntax, e.g. ``subset:0,5``) is aligned with the teacher's
query embeddings exactly as notebook 03 does it (same training queries, loss, learning rate and
batch size), for more steps, and every ``eval_steps`` it is scored on **dev** queries carved from
training data, never on a test query: ``curve.dev`` maps a collection of the profile to one of its
non-test splits (SciFact's ``train``, NFCorpus's ``dev``). Retrieval is asymmetric as everywhere
in paper 2's setting: student query embeddings against the teacher's embeddings of the whole
corpus (the shared embedding cache); retention = student NDCG@10 / teacher NDCG@10 on the same dev
queries. The curve goes to ``results/<profile>/query_distill_curve.csv``; with ``--test``, the
last student is also scored on the full test collections (its own model_id, ``qd:<name>@<steps>``).

A DE-k CE student (``--de2ce ce:1`` = DE-2 CE) is trained with notebook 02's recipe instead (MSE toward
the full DE's embeddings of unlabelled queries and corpus passages, its batch and learning rate, the
training text scaled to one epoch of ``max_steps``) and scored *symmetrically*: it encodes the dev
queries and the whole corpus itself; its "retention" is its NDCG@10 over the full DE's.

    python -m ce_utils curve --profile default --strategy subset:0,5 --de2ce ce:1 --max-steps 300 --test
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
from ce_utils.core.config import ConfigError
from ce_utils.core.data import load_beir_dataset
from ce_utils.core.encode import autocast, dataset_embeddings, encode, encode_settings
from ce_utils.core.evaluate import AsymmetricEvaluator, eval_datasets, score_function_of
from ce_utils.core.models import load_sentence_transformer
from ce_utils.core.retrieval import evaluate, exact_search
from ce_utils.core.students import num_layers, parse_strategy
from ce_utils.core.texts import training_queries
from ce_utils.core.config import section
from ce_utils.core.evaluate import eval_dataset
from ce_utils.core.models import load_cross_encoder, trained_record
from ce_utils.core.students import BASE_CE_INITS, CE_INITS, build_de2ce, layer_subset_student, slug, student_name
from ce_utils.core.train import (DE2CE_DEFAULTS, curve_callback, overrides, prepare_distillation, teacher_targets,
                                 train_mse, train_query_student)


CURVE_CSV = "query_distill_curve.csv"
CURVE_COLUMNS = ["student", "strategy", "layers", "n_layers", "phase", "step", "train_queries_seen", "minutes",
                 "dataset", "split", "metric", "value", "teacher_value", "retention", "n_queries", "n_docs"]
DEFAULT_DEV = {"scifact": "train", "nfcorpus-preprocessed": "dev"}


def dev_collections(cfg: dict, dev: dict[str, str]) -> dict:
    """``{name: BeirDataset}`` of each collection's dev split (whole corpus, every query of the split);
    a test split is refused: budgets are never chosen on test queries."""

    out = {}
    for name, split in dev.items():
        if split == "test":
            raise ConfigError(f"curve dev split of {name!r} is 'test': choose budgets on a split carved from "
                              "training data (e.g. scifact: train, nfcorpus-preprocessed: dev).")
        if name not in (cfg.get("datasets") or {}):
            raise ConfigError(f"curve dev collection {name!r} is not a dataset of the profile "
                              f"(known: {sorted(cfg.get('datasets') or {})}).")
        out[name] = load_beir_dataset(cfg, name, split)
    return out


def dev_scores(model, dev: dict, doc_emb: dict, score_function: str, metric: str = "NDCG@10",
               batch_size: int = 128) -> dict[str, float]:
    """``{collection: metric}`` of ``model`` as a query encoder against fixed document embeddings;
    queries are encoded afresh (a model in training has no stable cache identity)."""

    was_training = model.training
    model.eval()
    try:
        out = {}
        for name, ds in dev.items():
            q = encode(model, ds.query_texts(), batch_size=batch_size)
            run = exact_search(q, doc_emb[name], ds.query_ids, ds.doc_ids, top_k=100, score_function=score_function)
            out[name] = float(evaluate(ds.qrels, run, [metric])[metric])
        return out
    finally:
        model.train(was_training)


class CurveRecorder:
    """Scores a student in training every time it is called with a step (``score()`` -> ``{collection:
    value}``) against reference scores of the same collections (the teacher / full DE), and keeps the
    rows; ``minutes`` counts training time only (the time spent scoring is left out)."""

    def __init__(self, base: dict, batch: int, sets: dict, reference: dict, score, metric: str,
                 progress: bool = True, what: str = "retention"):
        self.base, self.batch, self.sets, self.reference = base, batch, sets, reference
        self.score, self.metric, self.progress, self.what = score, metric, progress, what
        self.rows: list[dict] = []
        self.train_seconds = 0.0
        self.since = time.perf_counter()

    @property
    def minutes(self) -> float:
        return round(self.train_seconds / 60, 3)

    def row(self, phase: str, step: int, name: str, ds, value: float, reference: float) -> dict:
        return {**self.base, "phase": phase, "step": step, "train_queries_seen": step * self.batch,
                "minutes": self.minutes, "dataset": name, "split": ds.split, "metric": self.metric, "value": value,
                "teacher_value": reference, "retention": value / reference if reference else np.nan,
                "n_queries": len(ds.queries), "n_docs": len(ds.corpus)}

    def __call__(self, step: int) -> None:
        self.train_seconds += time.perf_counter() - self.since
        scores = self.score()
        self.rows += [self.row("dev", step, n, self.sets[n], v, self.reference[n]) for n, v in scores.items()]
        if self.progress:
            mean = np.mean([r["retention"] for r in self.rows[-len(scores):]])
            print(f"step {step:>5}: dev {self.what} {100 * mean:.1f}% ({self.train_seconds / 60:.1f} min of training)",
                  flush=True)
        self.since = time.perf_counter()

    @property
    def last_step(self):
        return self.rows[-1]["step"] if self.rows else None


def run_curve(cfg: dict, strategy_spec: str, max_steps: int, eval_steps: int, dev: dict[str, str] | None = None,
              device: str | None = None, test: bool = False, metric: str = "NDCG@10", progress: bool = True, *,
              learning_rate: float | None = None, schedule: str | None = None, seed: int | None = None,
              pool: int | str | None = None, eval_at=None, score_start: bool = True, precision: str | None = None):
    """Train one student for ``max_steps`` (batch and learning rate of ``query_distill``), scoring it on
    the dev collections at step 0 and every ``eval_steps`` (or at the steps of ``eval_at``).

    ``learning_rate``, ``schedule`` (a transformers scheduler name) and ``precision`` (``fp32`` / ``bf16``
    autocast where native, :func:`ce_utils.core.train.overrides`) override the profile's; ``seed``
    seeds the student's initialisation and the training order (the training text is sampled with the
    profile's seed, so every seed of one budget trains on the same text and shares the teacher's
    targets); ``pool``: the training queries, ``None`` = a sample of ``max_steps`` x batch (one epoch),
    ``"all"`` = every training query (cycled over epochs when the budget needs more), an int = a sample
    of that many. Returns (rows, student, info)."""

    if max_steps < 1 or eval_steps < 1:
        raise ConfigError("max_steps and eval_steps must be >= 1.")
    qd = dict(cfg.get("query_distill") or {})
    teacher_spec = qd.get("teacher") or cfg["models"]["de"]
    teacher = load_sentence_transformer(teacher_spec, cfg, device=device)
    n_teacher = num_layers(teacher)
    strategy = parse_strategy(strategy_spec, n_teacher)
    batch = int(qd.get("batch_size", 128))
    seed = int(cfg.get("seed", 42) if seed is None else seed)
    run_cfg = copy.deepcopy(cfg)
    run_cfg["query_distill"] = {**qd, "max_steps": int(max_steps), "epochs": 1,
                                "max_train_queries": None if pool == "all" else int(pool or int(max_steps) * batch),
                                **overrides(learning_rate, schedule, precision)}
    datasets = list(qd.get("datasets") or cfg.get("datasets") or [])
    queries = training_queries(run_cfg, datasets)
    texts = list(queries.values())
    if len(texts) < max_steps * batch:
        print(f"note: {len(texts)} training queries, fewer than {max_steps} x {batch}: "
              f"{-(-len(texts) // batch)} steps make one epoch; training goes on over several epochs.")
    max_len = int(teacher.max_seq_length)
    targets = teacher_targets(teacher, texts, cfg.get("cache_dir"), teacher_spec, max_len, name="qd-train")
    sf = score_function_of(teacher, qd.get("score_function"))
    dev_sets = dev_collections(cfg, dev or DEFAULT_DEV)
    doc_emb = {n: dataset_embeddings(cfg, teacher, ds, queries=False, progress=progress)[1] for n, ds in dev_sets.items()}
    teacher_dev = dev_scores(teacher, dev_sets, doc_emb, sf, metric)
    if strategy.kind != "subset":
        raise ConfigError(f"curves train layer-subset students only, not {strategy.spec!r}.")
    student = layer_subset_student(teacher, list(strategy.layers), seed=seed)
    base = {"student": strategy.name, "strategy": strategy.spec, "layers": strategy.layers_str,
            "n_layers": strategy.n_layers}
    rec = CurveRecorder(base, batch, dev_sets, teacher_dev, lambda: dev_scores(student, dev_sets, doc_emb, sf, metric),
                        metric, progress)
    if score_start:
        rec(0)
    cb = curve_callback(rec, int(eval_steps), eval_at)
    info = train_query_student(student, texts, targets, run_cfg, seed, device, [cb])
    info["train_texts"] = len(texts)
    if rec.last_step != info["train_steps"]:
        rec(info["train_steps"])
    info["train_minutes"] = rec.minutes
    if test:
        ev = AsymmetricEvaluator(teacher, eval_datasets(cfg, datasets), teacher_spec, cfg=cfg, score_function=sf)
        # the student encoded afresh, never through the shared cache: it is not notebook 03's student
        t_scores = ev.evaluate(teacher)
        s_scores = dev_scores(student, ev.datasets, ev.doc_emb, ev.score_function, metric)
        rec.rows += [rec.row("test", info["train_steps"], n, ds, s_scores[n], t_scores[n][metric])
                     for n, ds in ev.datasets.items()]
    return rec.rows, student, info


def symmetric_dev_scores(model, dev: dict, metric: str = "NDCG@10", batch_size: int = 64,
                         dtype: str | None = None) -> dict[str, float]:
    """``{collection: metric}`` of ``model`` encoding both the queries and the whole corpus (a DE-k CE
    student is a full dual encoder); encoded afresh, as a model in training has no cache identity."""

    was_training = model.training
    model.eval()
    try:
        out = {}
        for name, ds in dev.items():
            with autocast(dtype, model.device):
                q = encode(model, ds.query_texts(), batch_size=batch_size)
                d = encode(model, ds.doc_texts(), batch_size=batch_size)
            run = exact_search(q, d, ds.query_ids, ds.doc_ids, top_k=100)
            out[name] = float(evaluate(ds.qrels, run, [metric])[metric])
        return out
    finally:
        model.train(was_training)


def cached_de_scores(cfg: dict, de, sets: dict, metric: str = "NDCG@10") -> dict[str, float]:
    """``{collection: metric}`` of the full DE (a fixed model) through the shared embedding cache: the
    corpus arrays every notebook uses."""

    out = {}
    for name, ds in sets.items():
        q, d = dataset_embeddings(cfg, de, ds, progress=False)
        out[name] = float(evaluate(ds.qrels, exact_search(q, d, ds.query_ids, ds.doc_ids, top_k=100), [metric])[metric])
    return out


TEXT_KINDS = ("n_queries", "n_passages", "n_sentences")


def scaled_text_counts(tc: dict, n_texts: int) -> dict[str, int]:
    """Notebook 02's mix of training text (queries, passages, sentences) scaled to ``n_texts`` in all
    (largest remainders, so the counts add up exactly)."""
    have = {k: float(tc.get(k) or 0) for k in TEXT_KINDS}
    total = sum(have.values())
    if total <= 0:
        raise ConfigError("de2ce.train names no training text (n_queries, n_passages, n_sentences are all 0).")
    exact = {k: n_texts * v / total for k, v in have.items()}
    out = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: (out[k] - exact[k], TEXT_KINDS.index(k)))[: n_texts - sum(out.values())]:
        out[k] += 1
    return out


def de2ce_ce_spec(cfg: dict, init: str) -> str:
    """The CE a DE-k CE student of ``init`` copies: ``models.ce`` (the profile's relevance CE), or for ``ce-base``
    the untuned CE its training started from (``ce_training.base``)."""
    if init in BASE_CE_INITS:
        base = (cfg.get("ce_training") or {}).get("base")
        if not base:
            raise ConfigError(f"a {init} student copies ce_training.base, which the profile does not set.")
        return str(base)
    return cfg["models"]["ce"]


def run_de2ce_curve(cfg: dict, init: str, k: int, max_steps: int, eval_steps: int, dev: dict[str, str] | None = None,
                    device: str | None = None, test: bool = False, metric: str = "NDCG@10", progress: bool = True, *,
                    learning_rate: float | None = None, schedule: str | None = None, seed: int | None = None,
                    pool: int | None = None, eval_at=None, score_start: bool = True, precision: str | None = None):
    """Paper 1's DE-k CE students (notebook 02's recipe: ``init`` ce / ce-top / ce-base / de / random, ``k`` copied layers + one
    random layer; MSE toward the full DE's embeddings of unlabelled queries and corpus passages) trained for
    ``max_steps``, with the training text scaled to one epoch of that many steps (or to ``pool`` texts, in
    notebook 02's mix, cycled over epochs when the budget needs more), scored on the dev collections at step
    0 and every ``eval_steps`` (or at ``eval_at``), symmetric (the student encodes queries and documents).
    ``learning_rate``, ``schedule``, ``precision`` and ``seed`` as in :func:`run_curve`. Returns (rows, student, info)."""

    if max_steps < 1 or eval_steps < 1:
        raise ConfigError("max_steps and eval_steps must be >= 1.")
    text_seed = int(cfg.get("seed", 42))
    seed = text_seed if seed is None else int(seed)
    dc = dict(section(cfg, "de2ce"))
    dc["datasets"] = list(dc.get("datasets") or cfg.get("datasets") or [])
    tc = dict(dc["train"])
    batch = int(tc.get("batch_size", 32))
    dc["train"] = {**tc, "max_steps": int(max_steps), **scaled_text_counts(tc, int(pool or max_steps * batch)),
                   **overrides(learning_rate, schedule, precision)}
    de = load_sentence_transformer(cfg["models"]["de"], cfg, device=device, max_length=(cfg.get("encode") or {}).get("max_length"))
    ce = load_cross_encoder(de2ce_ce_spec(cfg, init), cfg, device=device) if init in CE_INITS else None
    student = build_de2ce(de, ce, init, k, seed=seed)
    name = student_name(init, k + 1, "mse")
    dtype = encode_settings(cfg)["dtype"]  # the dtype of the full DE's cached embeddings it is compared with
    data = prepare_distillation(cfg, dc["train"], de, dc["datasets"], text_seed)
    dev_sets = dev_collections(cfg, dev or DEFAULT_DEV)
    de_dev = cached_de_scores(cfg, de, dev_sets, metric)
    base = {"student": name, "strategy": f"de2ce:{init}:{k}", "layers": "", "n_layers": k + 1}
    eval_length = student.max_seq_length
    train_length = int(dc["train"].get("max_length") or eval_length)

    def score() -> dict:
        student.max_seq_length = eval_length
        try:
            return symmetric_dev_scores(student, dev_sets, metric, dtype=dtype)
        finally:
            student.max_seq_length = train_length

    rec = CurveRecorder(base, batch, dev_sets, de_dev, score, metric, progress, what="% of the full DE:")
    student.max_seq_length = train_length
    if score_start:
        rec(0)
    cb = curve_callback(rec, int(eval_steps), eval_at)
    work = Path(cfg.get("cache_dir") or ".") / f"curve-{slug(name)}"
    info = train_mse(student, data["texts"], data["labels"], dc["train"], seed, device, work, [cb], DE2CE_DEFAULTS)
    info = dict(info, training_loss=info["train_loss"])
    if rec.last_step != info["train_steps"]:
        rec(info["train_steps"])
    student.max_seq_length = eval_length
    info["train_minutes"] = rec.minutes
    info["train_loss"] = info.get("training_loss")
    info["train_texts"] = sum(len(v) for v in data["texts"].values())
    info["ce_record"] = trained_record(de2ce_ce_spec(cfg, init), cfg) if ce is not None else {}
    if test:
        for dname in dc["datasets"]:
            ds = eval_dataset(cfg, dc, dname)
            rec.rows.append(rec.row("test", info["train_steps"], dname, ds,
                                    symmetric_dev_scores(student, {dname: ds}, metric, dtype=dtype)[dname],
                                    cached_de_scores(cfg, de, {dname: ds}, metric)[dname]))
    return rec.rows, student, info
