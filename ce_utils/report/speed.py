"""Query-encoding speed (notebook 04): throughput per setting, measured speed-up against the FLOP ratio, and
inference backends (eager PyTorch, int8, ONNX Runtime) against their quality."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.patches import Patch

from ce_utils.core.io import eager
from ce_utils.report.style import grid, legend_right, plain_log_ticks, subplots, system_color
from ce_utils.report.tables import SCORE, Output, datasets_text, span, values_text

# inference backends in the order the backend table lists them (ce_utils.experiments.speed.backends.BACKENDS)
BACKENDS = ("torch", "torch-bf16", "torch-int8", "onnx", "onnx-int8", "onnx-int8-pc", "onnx-int8-mm", "onnx-int8-static",
            "lean", "lean-int8")


def flop_goal_table(df: pd.DataFrame, goal: float = 0.9, threads: int = 1, batch_sizes: Sequence[int] | None = None
                    ) -> pd.DataFrame:
    """Every eager student (DE-k CE, query students) on the CPU at ``threads`` thread(s), at the smallest and
    the largest batch size (or ``batch_sizes``), tokenisation included and excluded: the measured speed-up
    over the full DE, the FLOP ratio, the speed-up as a share of it (``of_flop_ratio``; the goal: at least
    ``goal``), and the speed-up that the FLOPs plus the measured fixed per-call cost predict
    (``expected_speedup``, ``ce_utils.experiments.speed.add_round_ratios``) with that cost's share of the model's time."""
    d = eager(df)
    d = d[d["role"].isin(["de-k-ce", "query-student"]) & (d["device"] == "cpu") & (d["threads"] == threads)
          & (d["dtype"] == "fp32")]
    if d.empty:
        return pd.DataFrame()
    sizes = list(batch_sizes) if batch_sizes else sorted({int(d["batch_size"].min()), int(d["batch_size"].max())})
    d = d[d["batch_size"].isin(sizes)]
    cols = ["model", "n_layers", "batch_size", "tokenization", "flop_ratio", "speedup_vs_de"]
    cols += [c for c in ("speedup_iqr", "expected_speedup", "fixed_share") if c in d.columns]
    out = d[cols].copy()
    out.insert(6, "of_flop_ratio", d["speedup_vs_de"] / d["flop_ratio"])
    out["meets_goal"] = out["of_flop_ratio"] >= goal
    return out.sort_values(["tokenization", "batch_size", "n_layers", "model"],
                           ascending=[False, True, True, True]).reset_index(drop=True)


def backend_table(speed_df, quality_df, metric: str = "NDCG@10", threads: int = 1,
                  batch_sizes: Sequence[int] = (1, 128), tokenization: str = "included"):
    """One row per (model, backend): measured speed-up over the eager-fp32 full DE and over the full
    DE in the same backend (CPU, ``threads`` thread(s), per batch size), the FLOP ratio, and the mean
    ``metric`` over datasets with its delta from the same model in eager fp32."""
    sp = speed_df[(speed_df["device"] == "cpu") & (speed_df["threads"] == threads)
                  & (speed_df["tokenization"] == tokenization) & speed_df["role"].isin(["de", "query-student"])]
    sizes = [b for b in batch_sizes if b in set(sp["batch_size"])]
    rows = []
    for (base, backend), g in sp.groupby(["base_model", "backend"], sort=False):
        r = {"model": base, "backend": backend, "n_layers": int(g["n_layers"].iloc[0]),
             "flop_ratio": float(g["flop_ratio"].iloc[0])}
        for b in sizes:
            gb = g[g["batch_size"] == b]
            if not gb.empty:
                r[f"ms/batch bs{b}"] = float(gb["median_ms"].iloc[0])
                r[f"vs eager DE bs{b}"] = float(gb["speedup_vs_eager_de"].iloc[0])
                r[f"vs DE same backend bs{b}"] = float(gb["speedup_vs_de"].iloc[0])
        rows.append(r)
    tab = pd.DataFrame(rows)
    if quality_df is not None and not quality_df.empty and not tab.empty:
        q = quality_df[quality_df["metric"] == metric].groupby(["model", "backend"])[
            ["value", "delta_vs_torch_fp32"]].mean().reset_index()
        q = q.rename(columns={"model": "quality_model", "value": f"mean {metric}",
                              "delta_vs_torch_fp32": f"{metric} delta vs fp32"})
        tab["quality_model"] = [quality_name(m) for m in tab["model"]]
        tab = tab.merge(q, on=["quality_model", "backend"], how="left").drop(columns="quality_model")
    if not tab.empty:  # largest model first; per model, backends in BACKENDS order
        order = {b: i for i, b in enumerate(BACKENDS)}
        tab = (tab.assign(_b=tab["backend"].map(order).fillna(len(order)))
               .sort_values(["n_layers", "model", "_b"], ascending=[False, True, True], kind="stable")
               .drop(columns="_b").reset_index(drop=True))
    return tab


def quality_name(speed_name: str) -> str:
    """Notebook 04's speed name -> the name used in backend_quality.csv (``full DE``, ``L0_5``)."""
    s = str(speed_name)
    if s.startswith("query-student "):
        return s.split(" ", 1)[1]
    return "full DE" if s.startswith("DE-") and s.endswith(" full") else s


def speed_figure(plt, out: Output, df: pd.DataFrame) -> None:
    df = eager(df)
    goal = flop_goal_table(df)
    if not goal.empty:
        out.table(goal, "speed_flop_goal", ["speed.csv"],
                  f"Every eager student (CPU fp32, 1 thread) at batch {values_text(goal, 'batch_size')}, tokenisation "
                  "included and excluded: measured speed-up over the full DE, as a share of the FLOP ratio "
                  "(of_flop_ratio; goal: 0.9), next to the speed-up that FLOPs plus the measured fixed per-call cost "
                  "predict (expected_speedup) and that cost's share of the model's time.", floatfmt=".2f")
    if "role" in df.columns:
        df = df[df["role"] != "overhead"]  # the full DE without layers: in the goal table's fixed cost only
    d = df[df["tokenization"] == "included"]
    if d.empty:
        d = df
    settings = d[["device", "dtype", "threads"]].drop_duplicates().sort_values(["device", "dtype", "threads"])
    fig, axes = grid(plt, len(settings), width=4.0, height=3.2)
    order = d.groupby("model", sort=False)["queries_per_s"].max().sort_values(ascending=False).index
    for ax, s in zip(axes, settings.itertuples(index=False)):
        g = d[(d["device"] == s.device) & (d["dtype"] == s.dtype) & (d["threads"] == s.threads)]
        for name in order:
            gm = g[g["model"] == name].sort_values("batch_size")
            if not gm.empty:
                ax.plot(gm["batch_size"], gm["queries_per_s"], marker="o", ms=3, label=name, color=system_color(name),
                        ls="--" if "self-pair" in str(name) else "-")
        ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="queries / s",
               title=f"{str(s.device).replace('cuda:', '')} {s.dtype}, {int(s.threads)} thread(s)")
    legend_right(axes[-1], fontsize=6, title="fastest first", title_fontsize=6)
    fig.suptitle("Query-encoding throughput (tokenisation included)")
    out.figure(fig, "speed_throughput", ["speed.csv"])
    big = int(d["batch_size"].max())
    t = d[d["batch_size"].isin([1, big])].copy()
    t["setting"] = (t["device"].astype(str).str.replace("cuda:", "", regex=False) + " " + t["dtype"] + " "
                    + t["threads"].astype(int).astype(str) + "t bs" + t["batch_size"].astype(int).astype(str))
    tab = t.pivot_table(index=["model", "n_layers", "flop_ratio"], columns="setting", values="speedup_vs_de",
                        sort=False).reset_index()
    tab = tab.sort_values(["n_layers", "model"], ascending=[False, True], kind="stable").reset_index(drop=True)
    out.table(tab, "speed", ["speed.csv"],
              f"Measured query-encoding speed-up over the full DE (eager PyTorch, tokenisation included"
              f"{', ' + span(d, 'n_queries') + ' sampled queries' if span(d, 'n_queries') else ''}) per setting (device, dtype, threads, batch size) next to the "
              "FLOP ratio.", floatfmt=".2f")


BACKEND_MARKERS = {"torch": "o", "torch-bf16": "h", "torch-int8": "s", "onnx": "^", "onnx-int8": "D", "onnx-int8-pc": "d",
                   "onnx-int8-mm": "P", "onnx-int8-static": "X", "lean": "v", "lean-int8": "*"}


def backends_figure(plt, out: Output, sp: pd.DataFrame, bq: pd.DataFrame | None, metric: str) -> pd.DataFrame:
    """Per inference backend: speed-up over the eager full DE (CPU, 1 thread, batch 1 and the largest
    batch) against mean quality, for the full DE and each query student; table ``backends``."""
    if "backend" not in sp.columns or sp["backend"].nunique() < 2:
        return pd.DataFrame()
    big = int(sp["batch_size"].max())
    tab = backend_table(sp, bq, metric=metric, threads=1, batch_sizes=(1, big))
    if tab.empty:
        return tab
    qcol = f"mean {metric}"
    fig, axes = subplots(plt, 1, 2, width=4.2, height=3.4, sharey=qcol in tab)
    for ax, bs in zip(axes[0], (1, big)):
        col = f"vs eager DE bs{bs}"
        if col not in tab:
            continue
        for model, g in tab.groupby("model", sort=False):
            for _, r in g.iterrows():
                y = r[qcol] if qcol in tab and pd.notna(r.get(qcol)) else float(r["n_layers"])
                ax.scatter(r[col], y, marker=BACKEND_MARKERS.get(r["backend"], "x"), color=system_color(model),
                           s=28, edgecolor="k", lw=0.3, zorder=3)
        ax.set(xscale="log", ylabel=f"mean {metric}" if qcol in tab else "layers", title=f"batch size {bs}, 1 thread")
        plain_log_ticks(ax.xaxis)
    fig.supxlabel("speed-up over the eager fp32 full DE (CPU)", fontsize=8)
    models = [Patch(color=system_color(m), label=m) for m in dict.fromkeys(tab["model"])]
    backends = [plt.Line2D([], [], marker=m, ls="", mfc="none", mec="k", label=b) for b, m in BACKEND_MARKERS.items()
                if b in set(tab["backend"])]
    fig.legend(handles=models + backends, loc="outside right center", fontsize=6,
               title="colour: model; marker: backend", title_fontsize=6)
    fig.suptitle("Query encoders per inference backend (CPU)")
    srcs = ["speed.csv"] + (["backend_quality.csv"] if bq is not None else [])
    out.figure(fig, "backends", srcs)
    quality = f"mean {metric} over {datasets_text(bq)}" if bq is not None else "no quality rows"
    out.table(tab, "backends", srcs,
              f"Query encoders per inference backend: ms per batch and speed-up (CPU, 1 thread, batch 1 and {big}, "
              f"tokenisation included) over the eager fp32 full DE and over the full DE in the same backend, and the "
              f"{quality} (full-corpus protocol) with its delta from the same model in eager fp32.", floatfmt=".2f",
              formats={c: SCORE for c in tab.columns if metric in str(c)})
    return tab


# --------------------------------------------------------------------------- matmul.csv, call_profile.csv
def matmul_summary(rows) -> pd.DataFrame:
    """Median and IQR of GFLOP/s over rounds per (tokens, shape, dtype, threads), and the time of one
    layer's multiplies (4 x qkv+out, ffn-in, ffn-out) at the median rate."""
    df = pd.DataFrame(rows)
    g = df.groupby(["tokens", "shape", "op", "dtype", "threads"], sort=False)
    t = g.agg(median_gflop_per_s=("gflop_per_s", "median"), median_ms=("ms_per_call", "median"),
              q1=("gflop_per_s", lambda s: np.percentile(s, 25)), q3=("gflop_per_s", lambda s: np.percentile(s, 75)),
              rounds=("round", "nunique")).reset_index()
    t["iqr_gflop_per_s"] = t["q3"] - t["q1"]
    return t.drop(columns=["q1", "q3"])


def layer_ms(summary) -> pd.DataFrame:
    """Per (tokens, dtype, threads): the median time of one transformer layer's weight multiplies (4 of
    qkv+out, one of each feed-forward), the least a layer can cost on these shapes."""
    count = {"qkv+out": 4, "ffn-in": 1, "ffn-out": 1}
    s = summary.assign(ms=summary["median_ms"] * summary["op"].map(count))
    return s.groupby(["tokens", "dtype", "threads"], as_index=False, sort=False)["ms"].sum().rename(
        columns={"ms": "layer_matmul_ms"})


def multiply_dtype(backend: str) -> str:
    """The dtype a backend multiplies its weights in: int8 for the quantised backends, bf16 for torch-bf16,
    else fp32."""
    return "int8" if "int8" in backend else "bf16" if "bf16" in backend else "fp32"


def multiply_floor_table(speed_df: pd.DataFrame, matmul_df, threads: int = 1) -> pd.DataFrame:
    """Each query encoder's measured time per batch (``speed.csv``: CPU, ``threads`` thread(s), tokenisation
    included) against this CPU's limit (``matmul.csv``): ``floor_ms`` is its layers' weight multiplies at the
    benchmark's median rate (``n_layers`` x :func:`layer_ms` in the backend's dtype, at the benchmark's token count
    per query nearest the sample's mean), ``floor_share`` that floor as a share of the measured time, and
    ``speedup_at_floor`` the full DE's floor over the model's in the same dtype (the FLOP ratio). A path far above
    its floor spends its time outside the multiplies (``call_profile.csv`` says where)."""
    if "mean_tokens" not in speed_df.columns:          # a speed.csv from before token counts were recorded
        return pd.DataFrame()
    lay = layer_ms(matmul_summary(matmul_df))
    lay = lay[lay["threads"] == threads]
    if "backend" not in speed_df.columns:              # a speed.csv from before backends: the eager torch path only
        speed_df = speed_df.assign(backend="torch")
    d = speed_df[(speed_df["device"] == "cpu") & (speed_df["threads"] == threads)
                 & (speed_df["tokenization"] == "included") & speed_df["role"].isin(["de", "query-student", "de-k-ce"])]
    if d.empty or lay.empty:
        return pd.DataFrame()
    rows = []
    for _, r in d.iterrows():
        dtype, b = multiply_dtype(r["backend"]), int(r["batch_size"])
        cand = lay[(lay["dtype"] == dtype) & (lay["tokens"] % b == 0)]
        if cand.empty:
            continue
        per_query = cand["tokens"] / b
        best = cand.loc[(per_query - float(r["mean_tokens"])).abs().idxmin()]
        floor = int(r["n_layers"]) * float(best["layer_matmul_ms"])
        rows.append({"model": r["model"], "backend": r["backend"], "n_layers": int(r["n_layers"]), "batch_size": b,
                     "multiply_dtype": dtype, "tokens_per_query": int(best["tokens"]) // b,
                     "median_ms": float(r["median_ms"]), "floor_ms": floor,
                     "floor_share": floor / float(r["median_ms"])})
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    de = out[out["n_layers"] == out["n_layers"].max()].groupby(["batch_size", "multiply_dtype"])["floor_ms"].first()
    out["speedup_at_floor"] = [de.get((b, t), np.nan) / f if f else np.nan
                               for b, t, f in zip(out["batch_size"], out["multiply_dtype"], out["floor_ms"])]
    order = {b: i for i, b in enumerate(BACKENDS)}
    return out.sort_values(["batch_size", "n_layers", "model", "backend"], ascending=[True, False, True, True],
                           key=lambda c: c.map(order) if c.name == "backend" else c).reset_index(drop=True)


def call_profile_table(df: pd.DataFrame) -> pd.DataFrame:
    """``call_profile.csv`` as a table: per part of a call (rows, in the CSV's order), each (model, backend, batch
    size, threads)'s median milliseconds and share of its call (%)."""
    d = df.assign(setting=[f"{m} [{b}] b{bs} t{t}" for m, b, bs, t in
                           zip(df["model"], df["backend"], df["batch_size"], df["threads"])])
    order = list(dict.fromkeys(d["part"]))
    ms = d.pivot_table(index="part", columns="setting", values="ms", sort=False).reindex(order)
    share = 100 * d.pivot_table(index="part", columns="setting", values="share", sort=False).reindex(order)
    out = pd.concat({"ms": ms, "% of call": share}, axis=1).swaplevel(axis=1).sort_index(axis=1, level=0, sort_remaining=False)
    out.columns = [f"{s}: {k}" for s, k in out.columns]
    return out.reset_index()


def speed_tables(out: Output, results: dict) -> None:
    """The tables of ``matmul.csv`` (this CPU's multiply rate at the model's shapes, and one layer's multiplies at
    that rate) and ``call_profile.csv`` (where one call's time goes), where they exist."""
    if "matmul.csv" in results:
        m = matmul_summary(results["matmul.csv"])
        out.table(m, "matmul", ["matmul.csv"],
                  "Matrix multiplies at the query encoder's own shapes (tokens = batch x query length; weights of one "
                  "layer), each dtype timed alone, interleaved call by call: median GFLOP/s over rounds, its IQR and ms "
                  "per multiply. This CPU's limit on these shapes.", floatfmt=".3f")
        out.table(layer_ms(m), "matmul_layer", ["matmul.csv"],
                  "One transformer layer's weight multiplies (4 of 384x384, 384x1536, 1536x384) at the median rates "
                  "above: the least a layer can cost on this CPU.", floatfmt=".4f")
        floor = (multiply_floor_table(results["speed.csv"], results["matmul.csv"]) if "speed.csv" in results
                 else pd.DataFrame())
        if not floor.empty:
            out.table(floor, "multiply_floor",
                      ["speed.csv", "matmul.csv"],
                      "Each query encoder's time per batch (1 thread, tokenisation included) against this CPU's limit: "
                      "floor_ms is its layers' weight multiplies alone at the benchmark's median rate in the dtype the "
                      "backend multiplies in (ONNX Runtime's int8 kernels are not PyTorch's: an approximation), "
                      "floor_share that floor as a share of the measured time. The rest is tokenisation, embeddings, "
                      "attention, pooling and per-call overhead (call_profile).", floatfmt=".3f")
    if "call_profile.csv" in results:
        out.table(call_profile_table(results["call_profile.csv"]), "call_profile", ["call_profile.csv"],
                  "Where one query-encoding call's time goes (median over repeated calls of one batch): the tokeniser, "
                  "the embeddings and each layer in eager PyTorch, ONNX Runtime's operators by type, and what lies "
                  "outside the model; ms and % of the call.", floatfmt=".3f")
