"""A cross encoder's re-ranking gain over its training seeds (``ce_seeds.csv``, ``python -m ce_utils ce-seeds``):
mean, spread and what may be said of it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

MIN_SEEDS = 3


def gain_summary(df: pd.DataFrame, min_seeds: int = MIN_SEEDS) -> pd.DataFrame:
    """Per CE, dataset and metric: mean gain over seeds, its sd, min and max, the number of seeds, the mean first
    stage, and the verdict: ``beats`` (mean - sd > 0), ``worse`` (mean + sd < 0), ``tie`` (the interval mean +- sd
    holds 0), or ``1 seed`` / ``n seeds`` when fewer than ``min_seeds``."""
    by = ["ce", "dataset", "metric"]
    t = df.groupby(by, sort=False)["gain"].agg(mean="mean", sd="std", min="min", max="max", seeds="count").reset_index()
    t["first_stage"] = df.groupby(by, sort=False)["first_stage"].mean().values

    def verdict(r) -> str:
        if r["seeds"] < min_seeds:
            return f"{int(r['seeds'])} seed" + ("s" if r["seeds"] > 1 else "")
        if r["mean"] - r["sd"] > 0:
            return "beats"
        if r["mean"] + r["sd"] < 0:
            return "worse"
        return "tie"

    t["verdict"] = t.apply(verdict, axis=1)
    return t


def ce_works(df: pd.DataFrame | None, ce: str, dataset: str, metric: str = "NDCG@10") -> bool | None:
    """Whether the CE ``ce`` beats its first stage on ``dataset`` over its seeds (:func:`gain_summary`): True for
    ``beats``, False for a tie or worse, None with fewer than :data:`MIN_SEEDS` seeds (the one-run guard decides)."""
    if df is None or df.empty:
        return None
    t = gain_summary(df)
    r = t[(t["ce"] == ce) & (t["dataset"] == dataset) & (t["metric"] == metric)]
    if r.empty or r["verdict"].iloc[0] not in ("beats", "tie", "worse"):
        return None
    return bool(r["verdict"].iloc[0] == "beats")


def seeded_guard(path, ce: str, dataset: str, one_run: bool | None, metric: str = "NDCG@10") -> tuple[bool | None, str]:
    """``ce_works`` as the notebooks record it, and why: the verdict over the CE's training seeds where ``path``
    (``ce_seeds.csv``) holds >= :data:`MIN_SEEDS` of them on ``dataset`` (True only for ``beats``: a tie is no
    working CE), else ``one_run`` (the notebook's own one-run guard)."""
    p = Path(path)
    df = pd.read_csv(p) if p.is_file() else None
    seeded = ce_works(df, ce, dataset, metric)
    if seeded is None:
        return one_run, f"one run (the guard's re-ranking check); {p.name} has no {MIN_SEEDS} seeds of {ce} on {dataset}"
    r = gain_summary(df)
    r = r[(r["ce"] == ce) & (r["dataset"] == dataset) & (r["metric"] == metric)].iloc[0]
    return seeded, (f"{int(r['seeds'])} training seeds in {p.name}: {metric} gain {r['mean']:+.4f} \u00b1 {r['sd']:.4f} sd "
                    f"on {dataset} ({r['verdict']})")
