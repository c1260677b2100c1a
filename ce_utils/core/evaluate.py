"""Evaluation on the full test collections, one protocol for every notebook: a query encoder's embeddings
of the test queries against an index of the whole corpus (the teacher's / full DE's, from the shared
embedding cache), exact search, BEIR metrics. A dataset that is a group of collections (CQADupStack's 12
forums) is scored collection by collection and reported as the mean of their metrics, as BEIR and the
papers' tables report it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence
from ce_utils.core.config import ConfigError
from ce_utils.core.data import BeirDataset, dataset_members, load_eval_dataset, subsample
from ce_utils.core.encode import dataset_embeddings
from ce_utils.core.retrieval import DEFAULT_METRICS, evaluate, exact_search


SCORE_FUNCTIONS = {"cosine": "cos_sim", "cos_sim": "cos_sim", "dot": "dot", "dot_score": "dot"}


def score_function_of(model, override: str | None = None) -> str:
    """The retrieval score (``cos_sim`` / ``dot``): the profile's override, else the model's
    ``similarity_fn_name``."""
    name = override or getattr(model, "similarity_fn_name", None) or "cosine"
    if name not in SCORE_FUNCTIONS:
        raise ConfigError(f"Score function {name!r} unsupported; use one of {sorted(SCORE_FUNCTIONS)}.")
    return SCORE_FUNCTIONS[name]


@dataclass
class DatasetGroup:
    """A dataset made of member collections, each evaluated on its own; its score is their mean."""
    name: str
    members: dict  # member name ("cqadupstack/android") -> BeirDataset

    @property
    def approximate(self) -> bool:
        return any(ds.approximate for ds in self.members.values())

    @property
    def n_queries(self) -> int:
        return sum(len(ds.queries) for ds in self.members.values())

    @property
    def n_docs(self) -> int:
        return sum(len(ds.corpus) for ds in self.members.values())


def parts(name: str, ds) -> dict:
    """``{collection name: BeirDataset}``: the dataset itself, or a group's members."""
    return dict(ds.members) if isinstance(ds, DatasetGroup) else {name: ds}


def collection_sizes(datasets: dict) -> list[dict]:
    """One row per dataset: its queries, documents (a group's summed over its members), members and whether
    it is approximate."""
    return [{"dataset": n, "queries": ds.n_queries if isinstance(ds, DatasetGroup) else len(ds.queries),
             "docs": ds.n_docs if isinstance(ds, DatasetGroup) else len(ds.corpus),
             "members": len(ds.members) if isinstance(ds, DatasetGroup) else 1, "approximate": ds.approximate}
            for n, ds in datasets.items()]


def mean_metrics(per_part: dict[str, dict[str, float]]) -> dict[str, float]:
    """The mean over a group's members of each metric."""
    metrics = next(iter(per_part.values())).keys()
    return {m: float(sum(p[m] for p in per_part.values()) / len(per_part)) for m in metrics}


@dataclass
class AsymmetricEvaluator:
    """Student queries against the TEACHER's document embeddings.

    Document embeddings are computed once per dataset with the teacher, through the embedding
    cache every notebook shares (:mod:`ce_utils.core.encode`: the teacher's corpus embeddings are
    the very arrays notebooks 01 and 02 use); ``evaluate(query_encoder)`` only ever encodes query
    text. Without a profile (``cfg=None``) nothing is cached."""

    teacher: object
    datasets: dict  # name -> BeirDataset
    teacher_spec: str
    cfg: dict | None = None
    score_function: str | None = None
    metrics: Sequence[str] = DEFAULT_METRICS
    top_k: int = 100
    doc_emb: dict = field(default_factory=dict)

    def __post_init__(self):

        self.score_function = score_function_of(self.teacher, self.score_function)
        self.collections = {k: d for name, ds in self.datasets.items() for k, d in parts(name, ds).items()}
        for key, ds in self.collections.items():
            self.doc_emb[key] = dataset_embeddings(self.cfg or {}, self.teacher, ds, queries=False)[1]

    def search(self, query_encoder, name: str) -> dict:
        """The top-k of one collection (a dataset, or one member of a group: ``cqadupstack/android``)."""
        ds: BeirDataset = self.collections[name]
        q = dataset_embeddings(self.cfg or {}, query_encoder, ds, docs=False)[0]
        return exact_search(q, self.doc_emb[name], ds.query_ids, ds.doc_ids, top_k=self.top_k,
                            score_function=self.score_function)

    def evaluate(self, query_encoder) -> dict[str, dict[str, float]]:
        """{dataset: {metric: value}} for a query encoder (student or teacher); a group's value is the mean
        over its members."""
        out = {}
        for name, ds in self.datasets.items():
            per = {k: evaluate(d.qrels, self.search(query_encoder, k), self.metrics) for k, d in parts(name, ds).items()}
            out[name] = per[name] if not isinstance(ds, DatasetGroup) else mean_metrics(per)
        return out

    def rows(self, scores: dict, base: dict) -> list[dict]:
        out = []
        for name, metrics in scores.items():
            ds = self.datasets[name]
            group = isinstance(ds, DatasetGroup)
            n_q, n_d = (ds.n_queries, ds.n_docs) if group else (len(ds.queries), len(ds.corpus))
            for metric, value in metrics.items():
                out.append({**base, "dataset": name, "metric": metric, "value": float(value),
                            "approximate": bool(ds.approximate), "n_queries": n_q, "n_docs": n_d})
        return out


def eval_datasets(cfg: dict, names: Sequence[str]) -> dict:
    """The evaluation collections as every notebook evaluates them (``load_eval_dataset``: whole
    corpus, every test query), cut only by ``query_distill.max_queries`` / ``max_docs`` when a
    smoke run sets them (seeded by the profile seed as everywhere)."""

    qd = cfg.get("query_distill") or {}

    def load(n: str, member: str | None = None) -> BeirDataset:
        ds = load_eval_dataset(cfg, n, member)
        if qd.get("max_queries") is not None or qd.get("max_docs") is not None:
            ds = subsample(ds, max_queries=qd.get("max_queries"), max_docs=qd.get("max_docs"),
                           seed=int(cfg.get("seed", 42)))
        return ds

    out = {}
    for n in names:
        members = dataset_members(cfg, n)
        out[n] = DatasetGroup(n, {f"{n}/{m}": load(n, m) for m in members}) if members else load(n)
    return out


def eval_dataset(cfg: dict, dc: dict, name: str) -> BeirDataset:
    """The shared evaluation sample (``load_eval_dataset``), cut further by ``de2ce.sizes[name]``
    (``max_queries`` / ``max_docs``: every judged document of the kept queries + seeded distractors)."""
    ds = load_eval_dataset(cfg, name)
    size = (dc.get("sizes") or {}).get(name) or {}
    unknown = set(size) - {"max_queries", "max_docs"}
    if unknown:
        raise ConfigError(f"de2ce.sizes.{name}: unknown key(s) {sorted(unknown)}; use max_queries / max_docs.")
    if size:
        ds = subsample(ds, max_queries=size.get("max_queries"), max_docs=size.get("max_docs"),
                       seed=int(cfg.get("seed", 42)))
    return ds
