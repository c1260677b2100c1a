"""Rounds -> one row per (model, setting): times per batch robust to bursts of load (per call the median over
rounds, then the mean over the pass), the IQR over rounds, bootstrap standard errors, speed-ups as ratios of
models timed in the same passes next to their FLOP ratios, the same-architecture check, and the tables of
notebook 04."""

from __future__ import annotations


import numpy as np
import pandas as pd

from ce_utils.core.io import add_model_ids as add, model_label

SPEED_COLUMNS = ["model", "base_model", "backend", "role", "layers", "n_layers", "n_params", "batch_size", "threads",
                 "device", "dtype", "tokenization", "median_ms", "iqr_ms", "n_runs", "queries_per_s", "speedup_vs_de",
                 "speedup_vs_eager_de", "flop_ratio", "flop_efficiency", "flops_per_item", "mean_tokens", "max_length",
                 "n_queries"]
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
    """One row per (model, setting). ``median_ms``: with per-call times (``call_ms``, :func:`~.timing.run_speed`)
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


