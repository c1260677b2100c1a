"""Quality against query speed for every model (speed.csv joined with the quality CSVs).

The join is by the explicit ``model_id`` every result CSV carries (``ce_utils.core.io.add_model_ids``): a
quality point takes the speed.csv row with the same id, and a model without a timed row is left out (no guess
by name or architecture). The full DE has one point, whichever CSV it comes from. Pipelines (first stage + CE
re-ranking of the top ``depth``) take their end-to-end time per query measured in notebook 02, else one query
encoding plus ``depth`` CE pair scorings.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ce_utils.core.io import LATENCY_MS, eager
from ce_utils.report.style import grid
from ce_utils.report.tables import Output


def speed_lookup(sp: pd.DataFrame, batch_size: int, threads: int, tokenization: str) -> pd.DataFrame:
    """One speed row per model in the chosen setting (CPU fp32, eager PyTorch, when present)."""
    sp = eager(sp)
    d = sp[(sp["tokenization"] == tokenization) & (sp["threads"] == threads)]
    if "dtype" in d.columns and (d["dtype"] == "fp32").any():
        d = d[d["dtype"] == "fp32"]
    if d["device"].eq("cpu").any():
        d = d[d["device"] == "cpu"]
    out = []
    for _, g in d.groupby("model_id" if "model_id" in d.columns else "model", sort=False):
        sizes = sorted(g["batch_size"].unique())
        bs = batch_size if batch_size in sizes else max([b for b in sizes if b <= batch_size] or [min(sizes)])
        out.append(g[g["batch_size"] == bs].iloc[0])
    return pd.DataFrame(out)


def quality_points(results: dict[str, pd.DataFrame], metric: str) -> pd.DataFrame:
    """One quality point per (model_id, dataset): (source, model_id, model, role, dataset, quality,
    depth, first_stage_id) from de2ce.csv, query_distill.csv (students and teacher) and pipeline.csv
    (CE re-ranking rows). A system that appears in several CSVs (the full DE) has one value there
    (tests/test_results_consistency.py), so it is kept once."""
    rows = []
    de2ce = results.get("de2ce.csv")
    if de2ce is not None and "model_id" in de2ce.columns:
        for _, r in de2ce[de2ce["metric"] == metric].iterrows():
            rows.append({"source": "de2ce.csv", "model_id": r["model_id"], "model": r["model"],
                         "role": "de" if r["init"] == "full" else "de-k-ce", "dataset": r["dataset"],
                         "quality": r["value"], "depth": 0})
    qd = results.get("query_distill.csv")
    if qd is not None and "model_id" in qd.columns:
        for _, r in qd[qd["metric"] == metric].iterrows():
            teacher = r["student"] == "teacher"
            rows.append({"source": "query_distill.csv", "model_id": r["model_id"],
                         "model": "teacher (full DE)" if teacher else r["student"],
                         "role": "de" if teacher else "query-student", "dataset": r["dataset"],
                         "quality": r["value"], "depth": 0})
    pl = results.get("pipeline.csv")
    if pl is not None and "model_id" in pl.columns:
        p = pl[(pl["metric"] == metric) & (pl["reranker"].astype(str) != "none")]
        for _, r in p.iterrows():
            rows.append({"source": "pipeline.csv", "model_id": r["model_id"],
                         "model": f"{r['first_stage']} + {r['reranker']}@{int(r['depth'])}",
                         "first_stage_id": str(r["model_id"]).split(" >> ")[0], "role": "pipeline",
                         "dataset": r["dataset"], "quality": r["value"], "depth": int(r["depth"])})
    out = pd.DataFrame(rows)
    return out.drop_duplicates(["model_id", "dataset"]) if not out.empty else out


def join_speed(points: pd.DataFrame, speed: pd.DataFrame, ce_pair_rows: pd.DataFrame | None = None,
               latency: pd.DataFrame | None = None) -> pd.DataFrame:
    """Attach measured queries/s to every quality point by its ``model_id`` (the speed row with the
    same id; a point without one gets NaN and is left out of the plot). A pipeline ``F >> CE@k`` takes
    its end-to-end time per query measured in notebook 02 (``latency``: pipeline.csv's ``latency_ms`` rows,
    by model id and dataset) when there is one; otherwise it costs F's query encoding plus ``k`` CE pair
    scorings, at the CE pair row (id ``<CE> (pair)``) of the largest measured batch size <= k
    (``ce_pair_rows``: those rows at every batch size)."""
    by_id = speed.drop_duplicates("model_id").set_index("model_id")
    measured = {}
    if latency is not None and not latency.empty:
        lat = latency[latency["metric"] == LATENCY_MS]
        measured = {(m, d): (v, n) for m, d, v, n in zip(lat["model_id"], lat["dataset"], lat["value"], lat["n_queries"])}
    qps, matched = [], []
    for _, p in points.iterrows():
        if p["role"] == "pipeline" and (p["model_id"], p["dataset"]) in measured:
            ms, n = measured[(p["model_id"], p["dataset"])]
            qps.append(1000.0 / float(ms))
            matched.append(f"pipeline.csv: measured end to end ({int(n)} queries, median)")
            continue
        mid = p["first_stage_id"] if p["role"] == "pipeline" else p["model_id"]
        if mid not in by_id.index:
            qps.append(np.nan)
            matched.append("")
            continue
        t = 1.0 / float(by_id.loc[mid, "queries_per_s"])
        src = str(mid)
        if p["role"] == "pipeline":
            ce_id = str(p["model_id"]).split(" >> ")[1].rsplit("@", 1)[0] + " (pair)"
            pairs = ce_pair_rows[ce_pair_rows["model_id"] == ce_id] if ce_pair_rows is not None else pd.DataFrame()
            if pairs.empty:
                qps.append(np.nan)
                matched.append("")
                continue
            ok = pairs[pairs["batch_size"] <= p["depth"]]
            pair_row = (ok if not ok.empty else pairs).sort_values("batch_size").iloc[-1]
            t += p["depth"] / float(pair_row["queries_per_s"])
            src += f" + {int(p['depth'])} x {ce_id} (batch {int(pair_row['batch_size'])})"
        qps.append(1.0 / t)
        matched.append(src)
    out = points.copy()
    out["queries_per_s"] = qps
    out["speed_row"] = matched
    return out


def pareto_front(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of the points not dominated (higher x and higher y are better), sorted by x."""
    idx = [i for i in range(len(x)) if not any((x[j] >= x[i] and y[j] >= y[i]) and (x[j] > x[i] or y[j] > y[i])
                                               for j in range(len(x)))]
    return np.array(sorted(idx, key=lambda i: x[i]), dtype=int)


def pareto_figure(plt, out: Output, results: dict, opts: dict) -> pd.DataFrame | None:
    sp = results.get("speed.csv")
    points = quality_points(results, opts["metric"])
    if sp is None or points.empty:
        print("note: the Pareto plot needs speed.csv and at least one quality CSV -- skipped.")
        return None
    speed = speed_lookup(sp, int(opts["pareto_batch_size"]), int(opts["pareto_threads"]), opts["pareto_tokenization"])
    if speed.empty:
        print("note: speed.csv has no row in the Pareto setting -- skipped.")
        return None
    if "model_id" not in sp.columns:
        print("note: speed.csv has no model_id column (rerun notebook 04) -- Pareto plot skipped.")
        return None
    pair_rows = sp[sp["model_id"].astype(str).str.endswith(" (pair)") & (sp["threads"] == int(opts["pareto_threads"]))
                   & (sp["tokenization"] == opts["pareto_tokenization"]) & (sp["dtype"] == "fp32")
                   & (sp["device"] == speed["device"].iloc[0])]
    j = join_speed(points, speed, pair_rows, results.get("pipeline.csv")).dropna(subset=["queries_per_s", "quality"])
    datasets = opts.get("pareto_datasets") or sorted(j["dataset"].unique())
    datasets = [d for d in datasets if d in set(j["dataset"]) and d != "mean"]
    if not datasets:
        print("note: no dataset with both quality and speed -- Pareto plot skipped.")
        return None
    sources = sorted({"speed.csv", *j["source"].unique()})
    fig, axes = grid(plt, len(datasets), width=4.2, height=3.4)
    markers = {"de2ce.csv": "o", "query_distill.csv": "s", "pipeline.csv": "^"}
    colors = {"de2ce.csv": "C0", "query_distill.csv": "C2", "pipeline.csv": "C1"}
    for ax, ds in zip(axes, datasets):
        g = j[j["dataset"] == ds].groupby(["source", "model"], as_index=False).agg(
            quality=("quality", "mean"), queries_per_s=("queries_per_s", "first"))
        for src, gs in g.groupby("source"):
            ax.scatter(gs["queries_per_s"], gs["quality"], marker=markers.get(src, "o"), s=18,
                       color=colors.get(src, "C7"), label=src.replace(".csv", ""))
        front = pareto_front(g["queries_per_s"].to_numpy(), g["quality"].to_numpy())
        ax.plot(g["queries_per_s"].to_numpy()[front], g["quality"].to_numpy()[front], "k--", lw=0.7)
        for i in front:
            ax.annotate(str(g["model"].iloc[i]), (g["queries_per_s"].iloc[i], g["quality"].iloc[i]), fontsize=5,
                        xytext=(2, 2), textcoords="offset points")
        ax.set(xscale="log", title=ds, xlabel="queries / s (measured)", ylabel=opts["metric"])
        ax.legend(fontsize=6)
    fig.suptitle(f"Quality vs query-encoding speed (CPU, {opts['pareto_threads']} thread(s), batch "
                 f"{opts['pareto_batch_size']}, tokenisation {opts['pareto_tokenization']}); pipelines: measured "
                 "end to end per query", fontsize=9)
    fig.tight_layout()
    out.figure(fig, "pareto", sources)
    tab = j[j["dataset"].isin(datasets)].pivot_table(index=["source", "model", "speed_row"], columns="dataset",
                                                     values="quality", aggfunc="mean").reset_index()
    qps = j.groupby(["source", "model"])["queries_per_s"].first()
    tab.insert(3, "queries_per_s", [qps.get((s, m), np.nan) for s, m in zip(tab["source"], tab["model"])])
    out.table(tab, "pareto", sources, f"{opts['metric']} and measured queries/s of every model (join: see "
              "ce_utils.report.figures).", floatfmt=".3f")
    return j

