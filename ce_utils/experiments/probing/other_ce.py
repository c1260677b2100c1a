"""Other ce of :mod:`ce_utils.experiments.probing`."""

from __future__ import annotations


import copy
from ce_utils.core.config import ConfigError
from ce_utils.core.layers import KINDS
from ce_utils.core.models import load_cross_encoder, load_sentence_transformer
from ce_utils.core.scoring import check_reranks
from ce_utils.experiments.probing.probe import ce_rerank_rows, control_rows, probe_dataset, probe_sample, probe_settings, probe_sts


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


