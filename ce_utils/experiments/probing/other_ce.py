"""Other ce of :mod:`ce_utils.experiments.probing`."""

from __future__ import annotations



import copy
import pandas as pd
from ce_utils.core.config import ConfigError
from ce_utils.core.layers import KINDS
from ce_utils.core.models import load_cross_encoder, load_sentence_transformer
from ce_utils.core.scoring import check_reranks
from ce_utils.experiments.probing.probe import ce_rerank_rows, control_rows, probe_dataset, probe_sample, probe_settings, probe_sts


def probe_summary(probe_df, ce_works: bool | None = None, metric: str = "NDCG@10", falloff: float = 0.5):
    """Per dataset: each model's best layer, the CE's best layer next to the DEs' at that depth, and
    the layer where the CE's usefulness falls off (first layer after its best below ``falloff`` x its
    best). Returns (table, sentences); the sentences are the notebook's conclusion, from the CSV."""

    ret = probe_df[(probe_df["section"] == "retrieval") & (probe_df["metric"] == metric)]
    rows, lines = [], []
    if ce_works is False:
        lines.append("The CE does NOT beat its first stage: every CE row below comes from a non-working cross "
                     "encoder and supports no claim about cross encoders.")
    for name, g in ret.groupby("dataset", sort=True):
        by = {k: s.set_index("layer")["value"].sort_index() for k, s in g.groupby("model_kind")}
        ce = by.get("ce")
        des = {k: v for k, v in by.items() if k != "ce"}
        if ce is None or not des:
            continue
        best = int(ce.idxmax())
        after = ce[ce.index > best]
        fall = after[after < falloff * ce.max()]
        row = {"dataset": name, "CE best layer": best, f"CE best {metric}": ce.max(),
               "CE last layer": ce.iloc[-1], "CE falls below half at layer": int(fall.index[0]) if len(fall) else None}
        for k, v in des.items():
            row[f"{k} at layer {best}"] = v.get(best)
            row[f"{k} best layer"] = int(v.idxmax())
            row[f"{k} last layer"] = v.iloc[-1]
        rows.append(row)
        cmp = ", ".join(f"{k} {v.get(best):.3f} at that layer (its own last layer {v.iloc[-1]:.3f})"
                        for k, v in des.items())
        early = ce[ce.index <= 2]
        early_de = {k: v[v.index <= 2] for k, v in des.items()}
        ratio = ", ".join(f"{100 * early.mean() / v.mean():.0f}% of {k}'s" for k, v in early_de.items() if v.mean())
        lines.append(f"{name}: the CE's best layer is {best} ({metric} {ce.max():.3f}); {cmp}. Over layers 0-2 the "
                     f"CE's self-pair embeddings reach {ratio} mean {metric}. "
                     + (f"Its usefulness falls below half of its best at layer {int(fall.index[0])}" if len(fall)
                        else "It never falls below half of its best")
                     + f" and ends at {ce.iloc[-1]:.3f} at its last layer.")
    return pd.DataFrame(rows), lines


# --------------------------------------------------------------------------- another cross encoder
EXTRA_PROBE_CSV = "layer_probe_extra.csv"   # per-layer rows of CEs other than the profile's own


EXTRA_QUALITY_CSV = "ce_quality_extra.csv"  # their re-ranking check (the same DE first stage)


def probe_other_ce(cfg: dict, label: str, spec: str, device: str | None = None, progress: bool = True,
                   first_stage_dtype: str | None = None, **params) -> tuple:
    """Paper 1's probe of a cross encoder that is not the profile's own (e.g. one nobody here trained),
    exactly as notebook 01 probes the profile's CE: its re-ranking check first (it re-ranks the
    profile's DE top ``rerank_depth`` on the full ``rerank_dataset``), then every hidden state of its
    self-pair embeddings on every full test collection, STS-B and CKA / cosine to the profile's DE.

    Returns ``(probe_rows, quality_rows, ce_works)``; rows are those of ``layer_probe.csv`` /
    ``ce_quality.csv`` for this CE only (``model_kind`` = ``label``) and the first-stage rows of the DE,
    each marked with the CE's verdict. The DE's own per-layer rows live in ``layer_probe.csv``.
    ``first_stage_dtype``: the DE first stage's encode dtype when it differs from the profile's (so that
    its rows are the very numbers other CSVs hold for it)."""

    if not label or label in KINDS or "-vs-" in label:
        raise ConfigError(f"label {label!r}: name the other CE with a label of its own (e.g. 'judge'), not "
                          f"{' / '.join(KINDS)}.")
    de_spec = cfg["models"].get("de")
    s = probe_settings(cfg, models={label: {"kind": "ce", "spec": spec}, "de": {"kind": "de", "spec": de_spec}},
                       **params)
    models = {}
    for name, m in s.models.items():
        load = load_cross_encoder if m["kind"] == "ce" else load_sentence_transformer
        obj = load(m["spec"], cfg, device=device)
        models[name] = {**m, "model": obj}
    fs_cfg = None
    if first_stage_dtype:

        fs_cfg = copy.deepcopy(cfg)
        fs_cfg.setdefault("encode", {})["dtype"] = first_stage_dtype
    quality = (ce_rerank_rows(cfg, s, probe_sample(cfg, s, s.rerank_dataset), models, progress, fs_cfg)
               if s.rerank_dataset else [])
    ce_works = None
    if quality:
        by = {r["stage"]: r["value"] for r in quality if r["metric"] == "NDCG@10"}
        ce_works = check_reranks(by["first_stage"], by["ce_rerank"], f"{s.rerank_dataset} (full test set)", allow=True)
    mine = {label: models[label]}
    rows = []
    for name in s.datasets:
        ds = probe_sample(cfg, s, name)
        r, emb = probe_dataset(cfg, s, ds, mine if name != s.control_dataset else models, device, progress)
        rows += [x for x in r if x["model_kind"] == label]
        if name == s.control_dataset:
            rows += control_rows(s, ds, emb, models)
    if s.sts:
        rows += probe_sts(cfg, s, mine, device, progress)
    flag = {"ce_works": ce_works}
    return [{**r, **flag} for r in rows], [{**r, **flag} for r in quality], ce_works


def other_ce_summary(probe_df, extra_df, label: str, metric: str = "NDCG@10"):
    """:func:`probe_summary` for another CE (``extra_df`` rows of ``model_kind == label``) against the
    profile's DEs and its own CE (``probe_df``, relabelled ``own-ce``): (table, sentences)."""

    mine = extra_df[extra_df["model_kind"] == label].assign(model_kind="ce")
    if mine.empty:
        raise ConfigError(f"No rows of {label!r} in the other-CE probe; have {sorted(set(extra_df['model_kind']))}.")
    others = probe_df.assign(model_kind=probe_df["model_kind"].replace({"ce": "own-ce"}))
    works = mine["ce_works"].astype(str).iloc[0] == "True" if "ce_works" in mine.columns else None
    table, lines = probe_summary(pd.concat([mine, others], ignore_index=True), works, metric)
    lines = [line.replace("the CE's", f"the {label}'s").replace("The CE ", f"The {label} ") for line in lines]
    return table, lines
