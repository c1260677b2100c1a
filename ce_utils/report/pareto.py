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
from ce_utils.report.style import plain_log_ticks, subplots, system_color
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


ROLE_MARKERS = {"de": "*", "de-k-ce": "o", "query-student": "s"}
DEPTH_MARKERS = ("^", "v", "<", ">")
ROWS = (("query encoding", "encodes the query (batch {bs}, {threads} thread)"),
        ("end-to-end pipeline", "retrieves, then the CE re-ranks (measured end to end per query)"))


def point_label(model: str) -> str:
    """A point's label: the model, queries-only shortened, a pipeline as ``<first stage> @k``."""
    s = str(model).replace(" (queries only)", " (q. only)")
    return s.split(" + ")[0] + " @" + s.rsplit("@", 1)[1] if " + " in s and "@" in s else s


def spread_labels(fx: np.ndarray, fy: np.ndarray, widths: np.ndarray, offset: float = 0.025, gap: float = 0.06,
                  point: float = 0.02) -> np.ndarray:
    """Label heights (axes fraction) for points at (``fx``, ``fy``), each label starting ``offset`` right of its
    point: it moves up until it clears every label placed before it and every other point whose horizontal
    extent (a label's ``widths``, a point's ``point`` either side) it overlaps."""
    out = np.array(fy, dtype=float)
    placed: list[tuple[float, float, float]] = []
    for i in np.argsort(fy, kind="stable"):
        others = placed + [(fx[j] - point, fx[j] + point, fy[j]) for j in range(len(fx)) if j != i]
        x0, x1, y = fx[i] + offset, fx[i] + offset + widths[i], fy[i]
        for a, b, py in sorted(others, key=lambda p: p[2]):
            if x0 < b and a < x1 and py - gap < y < py + gap:
                y = py + gap
        out[i] = y
        placed.append((x0, x1, y))
    return out


def pareto_panel(ax, g: pd.DataFrame, depths: list[int]) -> None:
    """One panel: every point in its system's colour and labelled (labels moved apart where they would
    overlap, with a line to their point), the Pareto front dashed."""
    x, y = g["queries_per_s"].to_numpy(dtype=float), g["quality"].to_numpy(dtype=float)
    for (_, r), xi, yi in zip(g.iterrows(), x, y):
        marker = (DEPTH_MARKERS[depths.index(int(r["depth"])) % len(DEPTH_MARKERS)] if r["role"] == "pipeline"
                  else ROLE_MARKERS.get(r["role"], "o"))
        ax.scatter(xi, yi, marker=marker, s=60 if marker == "*" else 26, zorder=3, edgecolor="k", lw=0.3,
                   color=system_color(str(r["model"]).split(" + ")[0]))
    front = pareto_front(x, y)
    ax.plot(x[front], y[front], color="0.4", ls="--", lw=0.7, zorder=1)
    x0, x1 = x.min() / 1.3, x.max() * 3.0             # room for the labels right of the fastest points
    pad = max(float(np.ptp(y)), 1e-3)
    y0, y1 = y.min() - 0.08 * pad, y.max() + 0.25 * pad
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    fx = (np.log(x) - np.log(x0)) / (np.log(x1) - np.log(x0))
    fy = (y - y0) / (y1 - y0)
    labels = [point_label(m) for m in g["model"]]
    ly = spread_labels(fx, fy, np.array([0.016 * len(s) for s in labels]))
    for label, px, py, fxi, lyi in zip(labels, x, y, fx, ly):
        moved = abs(lyi - (py - y0) / (y1 - y0)) > 1e-9
        ax.annotate(label, (px, py), xytext=(fxi + 0.025, lyi), textcoords="axes fraction", fontsize=5.5,
                    va="center", arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.5"} if moved else None)
    plain_log_ticks(ax.xaxis)


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
    j = j.assign(kind=np.where(j["role"] == "pipeline", ROWS[1][0], ROWS[0][0]))
    rows = [r for r in ROWS if (j["kind"] == r[0]).any()]
    depths = sorted(int(x) for x in j.loc[j["role"] == "pipeline", "depth"].unique())
    fig, axes = subplots(plt, len(rows), len(datasets), width=4.0, height=3.1)
    setting = {"bs": opts["pareto_batch_size"], "threads": opts["pareto_threads"]}
    for (kind, what), row in zip(rows, axes):
        for ax, ds in zip(row, datasets):
            g = j[(j["dataset"] == ds) & (j["kind"] == kind)].groupby(["source", "model"], as_index=False).agg(
                quality=("quality", "mean"), queries_per_s=("queries_per_s", "first"), role=("role", "first"),
                depth=("depth", "first"))
            ax.set(xscale="log", title=f"{kind}: {ds}", xlabel="queries / s (measured)", ylabel=opts["metric"])
            if g.empty:
                ax.text(0.5, 0.5, f"no {kind}\nmeasured on {ds}", ha="center", va="center", fontsize=7,
                        transform=ax.transAxes)
                ax.set_axis_off()
                continue
            pareto_panel(ax, g, depths)
        row[0].annotate(what.format(**setting), (0, 1.13), xycoords="axes fraction", fontsize=7, style="italic")
    keys = [plt.Line2D([], [], marker=m, ls="", color="0.5", mec="k", mew=0.3, label=label)
            for m, label in (("*", "full DE"), ("o", "DE-k CE student"), ("s", "query student"))]
    keys += [plt.Line2D([], [], marker=DEPTH_MARKERS[i % len(DEPTH_MARKERS)], ls="", color="0.5", mec="k", mew=0.3,
                        label=f"pipeline: the CE re-ranks the top-{d}") for i, d in enumerate(depths)]
    keys.append(plt.Line2D([], [], color="0.4", ls="--", lw=0.7, label="Pareto front"))
    fig.legend(handles=keys, loc="outside right center", fontsize=6, title="colour: the (first-stage) system",
               title_fontsize=6)
    fig.suptitle(f"Quality vs speed (CPU, {opts['pareto_threads']} thread(s), tokenisation "
                 f"{opts['pareto_tokenization']}): query encoding at batch {opts['pareto_batch_size']}, pipelines "
                 "end to end per query", fontsize=9)
    out.figure(fig, "pareto", sources)
    tab = j[j["dataset"].isin(datasets)].pivot_table(index=["kind", "source", "model", "speed_row"], columns="dataset",
                                                     values="quality", aggfunc="mean", sort=False).reset_index()
    qps = j.groupby(["source", "model"])["queries_per_s"].first()
    tab.insert(4, "queries_per_s", [qps.get((s, m), np.nan) for s, m in zip(tab["source"], tab["model"])])
    out.table(tab, "pareto", sources,
              f"{opts['metric']} (full test collections) and measured queries/s of every system with a timed row: "
              f"query encoders at batch {opts['pareto_batch_size']}, {opts['pareto_threads']} CPU thread, "
              f"tokenisation {opts['pareto_tokenization']}; pipelines measured end to end per query (else one query "
              "encoding plus k CE pair scorings; speed_row). Joined by model_id (ce_utils.report.pareto).",
              formats={"queries_per_s": ".1f"})
    return j
