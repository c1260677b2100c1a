"""Datasets: BEIR collections (via beir's GenericDataLoader), query-text files and STS pairs."""

from __future__ import annotations

import csv
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit
from beir import util
from beir.datasets.data_loader import GenericDataLoader
from ce_utils.core.config import ConfigError, data_dir


log = logging.getLogger(__name__)

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"
MIRROR_ENV = "CE_DATA_MIRROR"  # as `make data --mirror` (ce_utils.core.download): a base URL replacing scheme and host


@dataclass
class BeirDataset:
    name: str
    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    split: str = "test"
    approximate: bool = False
    note: str = ""
    path: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def doc_ids(self) -> list[str]:
        return list(self.corpus)

    @property
    def query_ids(self) -> list[str]:
        return list(self.queries)

    def doc_texts(self, ids: list[str] | None = None) -> list[str]:
        return [doc_text(self.corpus[i]) for i in (ids or self.doc_ids)]

    def query_texts(self, ids: list[str] | None = None) -> list[str]:
        return [self.queries[i] for i in (ids or self.query_ids)]


def doc_text(doc: dict[str, str]) -> str:
    """BEIR's convention for dense models: title and text joined by a space."""
    title = (doc.get("title") or "").strip()
    text = (doc.get("text") or "").strip()
    return f"{title} {text}".strip() if title else text


def dataset_spec(cfg: dict, name: str) -> dict:
    specs = cfg.get("datasets") or {}
    if name not in specs:
        raise ConfigError(
            f"Unknown dataset {name!r} for profile {cfg.get('name')!r}. Known: {', '.join(specs) or 'none'}. "
            "Add it under `datasets:` in the profile YAML."
        )
    return specs[name]


def beir_url(name: str) -> str:
    """BEIR's official zip of ``name``; with $CE_DATA_MIRROR set, the mirror's base URL replaces the
    official scheme and host (the path is kept), as for `make data`."""

    url = BEIR_URL.format(name=name)
    mirror = os.environ.get(MIRROR_ENV)
    return mirror.rstrip("/") + urlsplit(url).path if mirror else url


def _download_beir(name: str, target: Path) -> None:

    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("Downloading BEIR %s into %s", name, target.parent)
    util.download_and_unzip(beir_url(name), str(target.parent))
    unpacked = target.parent / name
    if unpacked != target and unpacked.is_dir() and not target.exists():
        unpacked.rename(target)


def beir_files(split: str = "test", members: list[str] | None = None) -> list[str]:
    """The files a BEIR folder needs for ``split``, relative to it; of a group, those of every member."""
    need = ["corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"]
    return [f"{m}/{f}" for m in members for f in need] if members else need


def missing_files(folder: str | Path, split: str = "test", members: list[str] | None = None) -> list[str]:
    """The files of :func:`beir_files` that ``folder`` lacks."""
    return [f for f in beir_files(split, members) if not (Path(folder) / f).is_file()]


def load_beir_folder(folder: str | Path, split: str = "test", name: str | None = None) -> BeirDataset:
    """Load a folder in BEIR layout (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)."""

    folder = Path(folder)
    missing = missing_files(folder, split)
    if missing:
        raise ConfigError(
            f"{folder} is not a BEIR dataset folder: missing {', '.join(missing)}. Expected corpus.jsonl, "
            f"queries.jsonl and qrels/{split}.tsv (with a header line)."
        )
    try:
        corpus, queries, qrels = GenericDataLoader(data_folder=str(folder)).load(split=split)
    except Exception as exc:  # malformed JSON lines, bad qrels rows
        raise ConfigError(f"Could not read the BEIR dataset in {folder}: {exc}. Check the files' format.") from exc
    # beir keeps only queries with qrels; keep qrels of queries we have (judged docs may be absent)
    qrels = {q: {d: int(s) for d, s in docs.items()} for q, docs in qrels.items() if q in queries}
    queries = {q: queries[q] for q in qrels}
    if not queries:
        raise ConfigError(f"{folder}: no query of queries.jsonl has judgements in qrels/{split}.tsv.")
    return BeirDataset(name=name or folder.name, corpus=corpus, queries=queries, qrels=qrels, split=split,
                       path=str(folder))


def dataset_members(cfg: dict, name: str) -> list[str]:
    """The member collections of a dataset that is a group (``members:`` in its spec, e.g. CQADupStack's 12
    forums, each a BEIR folder under the group's path); ``[]`` for a plain dataset."""
    return [str(m) for m in (dataset_spec(cfg, name).get("members") or [])]


def dataset_folder(cfg: dict, name: str) -> Path:
    """Where the profile's dataset ``name`` lives in the data directory (present or not)."""
    spec = dataset_spec(cfg, name)
    return data_dir(cfg, must_exist=not cfg.get("allow_download")) / spec.get("path", f"beir/{name}")


def _dataset_folder(cfg: dict, name: str, spec: dict, members: list[str]) -> Path:
    """The dataset's folder in the data directory, downloaded first when missing and the profile allows it."""
    folder = dataset_folder(cfg, name)
    if missing_files(folder, spec.get("split", "test"), members):
        if cfg.get("allow_download") and spec.get("beir_name"):
            _download_beir(spec["beir_name"], folder)
        else:
            raise ConfigError(
                f"Dataset {name!r} not found at {folder}. Point CE_DATA_DIR (or -p data_dir) at the folder that "
                f"holds {spec.get('path', 'beir/' + name)}, or use a profile with allow_download: true and "
                "internet access."
            )
    return folder


def load_beir_dataset(cfg: dict, name: str, split: str | None = None, member: str | None = None) -> BeirDataset:
    """Load a dataset named in the profile, from the data directory; of a group, one ``member``
    (named ``<group>/<member>``).

    If it is missing there and the profile allows downloads (paper profile), BEIR's
    official zip is downloaded into the data directory first.
    """
    spec = dataset_spec(cfg, name)
    members = dataset_members(cfg, name)
    if members and member not in members:
        raise ConfigError(
            f"Dataset {name!r} is a group of {len(members)} collections ({', '.join(members)}): load one with "
            f"member=..., or evaluate the group with ce_utils.core.evaluate.eval_datasets (the mean over its "
            "members, as BEIR reports it).")
    if member is not None and not members:
        raise ConfigError(f"Dataset {name!r} has no members; drop member={member!r}.")
    split = split or spec.get("split", "test")
    folder = _dataset_folder(cfg, name, spec, members)
    ds = load_beir_folder(folder / member if member else folder, split=split,
                          name=f"{name}/{member}" if member else name)
    ds.approximate = bool(spec.get("approximate", False))
    ds.note = spec.get("note", "")
    return ds


def subsample(ds: BeirDataset, max_queries: int | None = None, max_docs: int | None = None,
              seed: int = 42) -> BeirDataset:
    """A smaller dataset: a random sample of queries, and a corpus of all their judged
    documents plus random distractors up to ``max_docs``. ``None`` keeps everything."""
    rng = random.Random(seed)
    qids = sorted(ds.queries)
    if max_queries is not None and max_queries < len(qids):
        qids = sorted(rng.sample(qids, max_queries))
    qrels = {q: ds.qrels[q] for q in qids}
    keep = sorted({d for q in qids for d in qrels[q] if d in ds.corpus})
    if max_docs is not None and max_docs < len(ds.corpus):
        others = sorted(set(ds.corpus) - set(keep))
        n_more = max(0, max_docs - len(keep))
        keep = keep + rng.sample(others, min(n_more, len(others)))
        doc_ids = [d for d in ds.corpus if d in set(keep)]
    else:
        doc_ids = list(ds.corpus)
    return BeirDataset(name=ds.name, corpus={d: ds.corpus[d] for d in doc_ids},
                       queries={q: ds.queries[q] for q in qids}, qrels=qrels, split=ds.split,
                       approximate=ds.approximate, note=ds.note, path=ds.path,
                       extra={**ds.extra, "subsampled": (max_queries, max_docs, seed)})


def load_query_file(path: str | Path) -> dict[str, str]:
    """Read an ``id<TAB>text`` file (no header). Malformed lines raise with their line number."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Query file {path} does not exist. Check CE_DATA_DIR / the query_files section.")
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            parts = line.split("\t", 1)
            if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
                raise ConfigError(f"{path}:{n}: expected 'id<TAB>text', got {line[:80]!r}.")
            out[parts[0].strip()] = parts[1].strip()
    if not out:
        raise ConfigError(f"Query file {path} holds no queries.")
    return out


def load_query_files(cfg: dict, names: list[str] | None = None, exclude: list[str] | tuple = ()) -> dict[str, str]:
    """Unlabelled query text from the profile's ``query_files``; ids are prefixed by the file's
    name so they cannot collide. ``exclude`` drops files by name (e.g. the sets you evaluate on)."""
    files = cfg.get("query_files") or {}
    unknown = [n for n in (names or []) if n not in files]
    if unknown:
        raise ConfigError(f"Unknown query file(s) {unknown}; known: {', '.join(files)}.")
    root = data_dir(cfg)
    out: dict[str, str] = {}
    for name in names or list(files):
        if name in exclude:
            continue
        for qid, text in load_query_file(root / files[name]).items():
            out[f"{name}:{qid}"] = text
    return out


def load_sts(cfg: dict, name: str = "stsb-test") -> list[tuple[str, str, float]]:
    """Sentence pairs with gold similarity: STS-B (tab-separated, score in column 5) or SICK."""
    specs = cfg.get("sts") or {}
    if name not in specs:
        raise ConfigError(f"Unknown STS set {name!r}; known: {', '.join(specs) or 'none'}.")
    spec = specs[name]
    return read_sts_file(data_dir(cfg) / spec["path"], spec.get("format", "stsb"), split=spec.get("split"))


# SICK as released for SemEval-2014 Task 1 and as `ce_utils.core.download` assembles it: the train, trial and
# test files concatenated in that order, one header; each part lists its pairs by increasing pair_ID.
SICK_SPLITS = {"train": 4500, "trial": 500, "test": 4927}


def sick_split(pairs: list, ids: list[int], split: str, path: Path) -> list:
    """The rows of one SemEval split of a concatenated SICK file, found by the known part sizes; refuses
    a file that is not train + trial + test in that order (a part's pair_IDs must increase)."""
    if split not in SICK_SPLITS:
        raise ConfigError(f"Unknown SICK split {split!r}; use one of {', '.join(SICK_SPLITS)}.")
    if len(pairs) != sum(SICK_SPLITS.values()):
        raise ConfigError(f"{path}: {len(pairs)} SICK pairs; a split can only be taken from the SemEval-2014 "
                          f"release (train + trial + test = {sum(SICK_SPLITS.values())} pairs, in that order).")
    start, spans = 0, {}
    for name, n in SICK_SPLITS.items():
        part = ids[start:start + n]
        if part != sorted(part) or (start and ids[start - 1] < ids[start]):
            raise ConfigError(f"{path}: the rows are not SemEval-2014's train, trial and test files in that order "
                              f"(pair_IDs of {name} are not a separate increasing run).")
        spans[name] = (start, start + n)
        start += n
    return pairs[slice(*spans[split])]


def read_sts_file(path: str | Path, fmt: str = "stsb", split: str | None = None) -> list[tuple[str, str, float]]:
    """Sentence pairs of an STS file; ``split`` (SICK only: train / trial / test) keeps one SemEval split."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"STS file {path} does not exist. Check CE_DATA_DIR / the sts section.")
    pairs: list[tuple[str, str, float]] = []
    with open(path, encoding="utf-8") as fh:
        if fmt == "stsb":
            for n, line in enumerate(fh, 1):
                cols = line.rstrip("\n").split("\t")
                if len(cols) < 7:
                    raise ConfigError(f"{path}:{n}: expected >= 7 tab-separated STS-B columns.")
                pairs.append((cols[5], cols[6], float(cols[4])))
        elif fmt == "sick":
            ids = []
            for row in csv.DictReader(fh, delimiter="\t"):
                pairs.append((row["sentence_A"], row["sentence_B"], float(row["relatedness_score"])))
                ids.append(int(row["pair_ID"]))
            if split is not None:
                pairs = sick_split(pairs, ids, split, path)
        else:
            raise ConfigError(f"Unknown STS format {fmt!r}; use 'stsb' or 'sick'.")
    if split is not None and fmt != "sick":
        raise ConfigError(f"{path}: `split` applies to SICK only; STS-B keeps one file per split.")
    return pairs


def load_eval_dataset(cfg: dict, name: str, member: str | None = None) -> BeirDataset:
    """A test collection (of a group, one ``member``) as every notebook evaluates it: the profile's
    ``eval.max_queries`` / ``eval.max_docs`` subsample (seeded by the profile seed; ``None`` keeps everything)."""
    ev = cfg.get("eval") or {}
    ds = load_beir_dataset(cfg, name, member=member)
    spec = dataset_spec(cfg, name)
    max_q = spec.get("max_queries", ev.get("max_queries"))
    max_d = spec.get("max_docs", ev.get("max_docs"))
    if max_q is None and max_d is None:
        return ds
    return subsample(ds, max_queries=max_q, max_docs=max_d, seed=int(cfg.get("seed", 42)))
