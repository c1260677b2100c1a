"""Paper 2's published numbers (Wang & Lyu, 2023) and our query students set beside them, in pandas alone.

The reference CSV released with the paper when a reference directory is set (``query_distill.reference_dir``,
$CE_REFERENCE_DIR, or ``data/reference/`` from `make data`), else the numbers transcribed below.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from ce_utils.core.config import ConfigError, get_dotted, repo_root

REFERENCE_ENV = "CE_REFERENCE_DIR"
REFERENCE_SUBDIR = "query-encoder-distillation"
REFERENCE_FILE = "eval_results_extract.csv"
PAPER_TEACHER = "msmarco-bert-base-dot-v5"
PAPER_TEACHER_LAYERS = 12
RETENTION_METRIC = "NDCG@10"

# Published numbers, transcribed so the comparison renders without the reference files.
# Source: Wang & Lyu (2023), released table eval_results_extract.csv (teacher
# msmarco-bert-base-dot-v5, 12 layers, dot product, BEIR). Retention = NDCG@10(student) /
# NDCG@10(teacher); "mean" is the mean over the table's 15 datasets (the paper's headline:
# the 2-layer student from teacher layers {0, 11} keeps 92.5%); scifact / nfcorpus per dataset.
PAPER_RETENTION = {
    "0": {"mean": 0.8290, "scifact": 0.8276, "nfcorpus": 0.9412},
    "1": {"mean": 0.8089, "scifact": 0.8174, "nfcorpus": 0.9338},
    "10": {"mean": 0.8421, "scifact": 0.8857, "nfcorpus": 0.9546},
    "11": {"mean": 0.8604, "scifact": 0.8708, "nfcorpus": 0.9676},
    "0,10": {"mean": 0.9089, "scifact": 0.9236, "nfcorpus": 0.9810},
    "0,11": {"mean": 0.9249, "scifact": 0.9164, "nfcorpus": 0.9947},
    "1,10": {"mean": 0.8988, "scifact": 0.9234, "nfcorpus": 0.9735},
    "1,11": {"mean": 0.9219, "scifact": 0.9323, "nfcorpus": 0.9850},
    "0,1,10,11": {"mean": 0.9617, "scifact": 0.9431, "nfcorpus": 1.0032},
    "0,1,2,3": {"mean": 0.9079, "scifact": 0.9002, "nfcorpus": 0.9750},
    "1,4,7,10": {"mean": 0.9366, "scifact": 0.9624, "nfcorpus": 0.9933},
    "4,5,6,7": {"mean": 0.8739, "scifact": 0.8983, "nfcorpus": 0.9577},
    "8,9,10,11": {"mean": 0.9322, "scifact": 0.9386, "nfcorpus": 0.9852},
}
PAPER_DECIMALS = 4   # the transcription's precision; the released CSV's retention is rounded to it as well
PAPER_TEACHER_NDCG10 = {"scifact": 0.60824, "nfcorpus": 0.31506}  # same table, teacher rows
PAPER_HEADLINE = {"layers": "0,11", "retention": PAPER_RETENTION["0,11"]["mean"]}


# --------------------------------------------------------------------------- the paper's numbers
def fetched_reference_dir() -> Path:
    """Where `make data` puts the published tables (configs/data_sources.yaml, ``reference``)."""
    return repo_root() / "data" / "reference"


def reference_dir(cfg: dict | None = None) -> Path | None:
    """The folder of the published CSVs: ``query_distill.reference_dir``, else $CE_REFERENCE_DIR
    (either the folder holding ``query-encoder-distillation/`` or that folder itself), else
    ``data/reference/`` where `make data` put them; ``None`` when there are none."""
    d = get_dotted(cfg or {}, "query_distill.reference_dir") or os.environ.get(REFERENCE_ENV)
    if not d:
        fetched = fetched_reference_dir()
        if not (fetched / REFERENCE_SUBDIR / REFERENCE_FILE).is_file():
            return None
        d = fetched
    p = Path(d).expanduser()
    if (p / REFERENCE_SUBDIR / REFERENCE_FILE).is_file():
        return p / REFERENCE_SUBDIR
    if (p / REFERENCE_FILE).is_file():
        return p
    raise ConfigError(f"Reference directory {p} holds no {REFERENCE_FILE} (nor {REFERENCE_SUBDIR}/{REFERENCE_FILE}). "
                      f"Point query_distill.reference_dir or {REFERENCE_ENV} at the published result tables, "
                      "or leave both unset to use the numbers transcribed in ce_utils.report.reference.")


def paper_layers(query_encoder: str) -> str | None:
    """``basemodel_2layer_0_11`` -> ``"0,11"``; the teacher's own name -> ``None``."""
    m = re.fullmatch(r"basemodel_\d+layer_([0-9_]+)", query_encoder)
    return m.group(1).replace("_", ",") if m else None


def load_paper_results(ref_dir: str | os.PathLike) -> pd.DataFrame:
    path = Path(ref_dir) / REFERENCE_FILE
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; see query_distill.reference_dir.")
    return pd.read_csv(path)


def paper_retention(results: pd.DataFrame, metric: str = RETENTION_METRIC) -> pd.DataFrame:
    """Per subset of the published table: retention per dataset and the mean over datasets.
    Columns: layers, n_layers, dataset, retention, teacher_value, value."""
    teacher = results[results["query_encoder"] == PAPER_TEACHER].set_index("dataset_name")[metric]
    rows = []
    for enc, grp in results[results["query_encoder"] != PAPER_TEACHER].groupby("query_encoder"):
        layers = paper_layers(enc)
        if layers is None:
            continue
        per = []
        for _, r in grp.iterrows():
            t = teacher.get(r["dataset_name"])
            if t is None:
                continue
            ratio = float(r[metric]) / float(t)
            per.append(ratio)
            rows.append({"layers": layers, "n_layers": len(layers.split(",")), "dataset": r["dataset_name"],
                         "retention": ratio, "value": float(r[metric]), "teacher_value": float(t)})
        rows.append({"layers": layers, "n_layers": len(layers.split(",")), "dataset": "mean",
                     "retention": float(np.mean(per)), "value": np.nan, "teacher_value": np.nan})
    return pd.DataFrame(rows)


def paper_retention_table(cfg: dict | None = None) -> tuple[pd.DataFrame, str]:
    """The paper's retention per subset (columns layers, n_layers, dataset, retention) and where it
    came from: the reference CSV when a reference directory is set, else the transcribed numbers; both with
    :data:`PAPER_DECIMALS` decimals, so every table is the same either way."""
    ref = reference_dir(cfg)
    if ref is not None:  # rounded as the transcription is: the same table with or without the released CSV
        return (paper_retention(load_paper_results(ref)).round({"retention": PAPER_DECIMALS}),
                f"{REFERENCE_SUBDIR}/{REFERENCE_FILE}")
    rows = [{"layers": layers, "n_layers": len(layers.split(",")), "dataset": ds, "retention": v,
             "value": np.nan, "teacher_value": PAPER_TEACHER_NDCG10.get(ds, np.nan)}
            for layers, per in PAPER_RETENTION.items() for ds, v in per.items()]
    return pd.DataFrame(rows), "transcribed (ce_utils.report.reference.PAPER_RETENTION)"


def map_to_paper_layers(layers: Sequence[int], n_teacher_layers: int,
                        n_paper_layers: int = PAPER_TEACHER_LAYERS) -> str:
    """Map a subset of our teacher's layers to the paper's 12-layer teacher by relative position:
    bottom layers keep their index, top layers keep their distance from the top (our 5 of 0..5 ->
    11), layers in between scale proportionally."""
    half = n_teacher_layers / 2
    out = []
    for l in layers:
        if l < min(2, half):
            out.append(l)
        elif n_teacher_layers - 1 - l < min(2, half):
            out.append(n_paper_layers - (n_teacher_layers - l))
        else:
            out.append(int(round(l * (n_paper_layers - 1) / (n_teacher_layers - 1))))
    return ",".join(str(x) for x in out)


def side_by_side(ours: pd.DataFrame, paper: pd.DataFrame, n_teacher_layers: int,
                 dataset_map: dict | None = None) -> pd.DataFrame:
    """Our retention rows (metric ``retention_*``) next to the paper's, for the strategies whose
    relative-position subset the paper evaluated. ``dataset_map``: our dataset -> paper dataset
    (``mean`` maps to ``mean``). Columns: student, layers, paper_layers, n_layers, dataset,
    paper_dataset, ours, paper."""
    dataset_map = {"mean": "mean", **(dataset_map or {})}
    ret = ours[ours["metric"].astype(str).str.startswith("retention_")]
    ret = ret[ret["strategy"].astype(str).str.startswith(("subset", "first"))]
    pidx = paper.set_index(["layers", "dataset"])["retention"]
    rows = []
    for _, r in ret.iterrows():
        pds = dataset_map.get(r["dataset"])
        if pds is None:
            continue
        layers = [int(x) for x in str(r["layers"]).split(",")]
        pl = map_to_paper_layers(layers, n_teacher_layers)
        if (pl, pds) not in pidx.index:
            continue
        rows.append({"student": r["student"], "layers": r["layers"], "paper_layers": pl, "n_layers": len(layers),
                     "dataset": r["dataset"], "paper_dataset": pds, "ours": float(r["value"]),
                     "paper": float(pidx[(pl, pds)])})
    return pd.DataFrame(rows, columns=["student", "layers", "paper_layers", "n_layers", "dataset", "paper_dataset",
                                       "ours", "paper"])


def paper_dataset_map(datasets: Sequence[str], mapping: dict | None = None) -> dict:
    """Our dataset -> the paper's: ``mapping`` (``query_distill.paper_datasets``) where it names one, else
    the name before the first ``-`` (``nfcorpus-preprocessed`` -> ``nfcorpus``)."""
    mapping = mapping or {}
    return {ds: mapping.get(ds, str(ds).split("-")[0]) for ds in datasets if ds != "mean"}


def subset_table(ours: pd.DataFrame, paper: pd.DataFrame, n_teacher_layers: int,
                 dataset_map: dict | None = None) -> pd.DataFrame:
    """Paper 2's table row by row: for every subset of ``ours`` (query_distill.csv rows) that the paper
    evaluated, our retention per dataset and its mean (``ours_mean``), the paper's retention on the same
    datasets and its mean (``paper_same_sets``), and the paper's headline mean over its 15 sets
    (``paper_mean``). One row per subset, in the order of the paper's table (by size, then layers)."""
    dmap = paper_dataset_map(ours["dataset"].astype(str).unique(), dataset_map)
    side = side_by_side(ours, paper, n_teacher_layers, dataset_map=dmap)
    if side.empty:
        return pd.DataFrame(columns=["layers", "paper_layers", "n_layers", "ours_mean", "paper_same_sets",
                                     "paper_mean"])
    per = side[side["dataset"] != "mean"]
    rows = []
    for (layers, pl, n), grp in per.groupby(["layers", "paper_layers", "n_layers"], sort=False):
        row = {"layers": layers, "paper_layers": pl, "n_layers": int(n)}
        for _, r in grp.iterrows():
            row[f"ours_{r['dataset']}"] = r["ours"]
            row[f"paper_{r['paper_dataset']}"] = r["paper"]
        row["ours_mean"] = float(grp["ours"].mean())
        row["paper_same_sets"] = float(grp["paper"].mean())
        mean = side[(side["dataset"] == "mean") & (side["layers"] == layers)]["paper"]
        row["paper_mean"] = float(mean.iloc[0]) if len(mean) else np.nan
        rows.append(row)
    out = pd.DataFrame(rows)
    key = out["paper_layers"].map(lambda s: tuple(int(x) for x in str(s).split(",")))
    return out.assign(_k=key).sort_values(["n_layers", "_k"]).drop(columns="_k").reset_index(drop=True)


def rank_agreement(table: pd.DataFrame) -> dict:
    """How well our ranking of the subsets matches the paper's: Spearman between our mean retention and the
    paper's on the same datasets (``spearman_same_sets``) and over its 15 sets (``spearman_paper_mean``),
    the number of subsets, and the best 2-layer subset of each (the paper's over its 15 sets and on ours)."""
    out: dict = {"n_subsets": int(len(table))}
    for col, key in (("paper_same_sets", "spearman_same_sets"), ("paper_mean", "spearman_paper_mean")):
        d = table[["ours_mean", col]].dropna() if col in table else pd.DataFrame()
        out[key] = float(spearmanr(d["ours_mean"], d[col]).statistic) if len(d) >= 3 else np.nan
    two = table[table["n_layers"] == 2]
    if len(two):
        out["best_2_ours"] = str(two.loc[two["ours_mean"].idxmax(), "layers"])
        for col, key in (("paper_mean", "best_2_paper"), ("paper_same_sets", "best_2_paper_same_sets")):
            out[key] = str(two.loc[two[col].idxmax(), "paper_layers"]) if two[col].notna().any() else ""
    return out


