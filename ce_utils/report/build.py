"""Every figure and table the result CSVs allow, in one call (notebook 05, `make figures`)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ce_utils.core.config import ConfigError, repo_root
from ce_utils.report.budgets import budgets_figure
from ce_utils.report.curves import query_curve_figure
from ce_utils.report.de2ce import de2ce_figure, pipeline_figure
from ce_utils.report.headline import headline_table
from ce_utils.report.paper1 import ce_quality_table, layer_probe_figure, learning_curve_figure, other_ce_figure
from ce_utils.report.paper2 import (geometry_figure, geometry_results, geometry_table, query_distill_figure,
                                   same_set_levels)
from ce_utils.report.pareto import pareto_figure
from ce_utils.report.speed import backends_figure, speed_figure, speed_tables
from ce_utils.report.style import setup_matplotlib
from ce_utils.report.tables import DEFAULTS, Output, read_result, read_results
from ce_utils.report.verdicts import independent_rows, verdict_table


def check_options(results: dict[str, pd.DataFrame], opts: dict) -> None:
    """Every figure option must name something the CSVs hold: a metric no quality CSV has (or an
    STS metric the probe lacks) would otherwise write near-empty figures over the committed ones."""
    quality = [n for n in ("layer_probe.csv", "ce_quality.csv", "de2ce.csv", "pipeline.csv", "query_distill.csv")
               if n in results]
    have = sorted({m for n in quality for m in results[n]["metric"].astype(str).unique()})
    if quality and opts["metric"] not in have:
        raise ConfigError(f"figures.metric {opts['metric']!r} is in none of {', '.join(quality)}; available: "
                          f"{', '.join(m for m in have if not m.startswith('retention_'))}.")
    if "layer_probe.csv" in results and opts["sts_metric"] not in set(results["layer_probe.csv"]["metric"]):
        raise ConfigError(f"figures.sts_metric {opts['sts_metric']!r} is not in layer_probe.csv.")
    ds = opts.get("pareto_datasets")
    known = {d for n in quality for d in results[n]["dataset"].astype(str).unique()}
    if ds and not set(ds) <= known:
        raise ConfigError(f"figures.pareto_datasets {sorted(set(ds) - known)} are in no result CSV; have "
                          f"{', '.join(sorted(known))}.")


def figure_options(cfg: dict | None, options: dict | None = None) -> dict:
    """:data:`DEFAULTS`, then the profile's ``figures`` section, then ``options``; ``None`` keeps the default."""
    opts = {**DEFAULTS, **((cfg or {}).get("figures") or {}), **(options or {})}
    return {k: (DEFAULTS.get(k) if v is None and k in DEFAULTS and k != "pareto_datasets" else v)
            for k, v in opts.items()}


def make_all(results_dir: str | Path, figures_dir: str | Path, cfg: dict | None = None,
             options: dict | None = None) -> dict:
    """Every figure and table the CSVs under ``results_dir`` allow; returns the manifest."""
    opts = figure_options(cfg, options)
    results_dir = Path(results_dir)
    results = read_results(results_dir)
    check_options(results, opts)  # before anything is written: a bad option replaces no committed file
    plt = setup_matplotlib()
    out = Output(Path(figures_dir), results_dir / "tables", results_dir, dpi=int(opts["dpi"]))
    metric = opts["metric"]
    if "layer_probe.csv" in results:
        layer_probe_figure(plt, out, results["layer_probe.csv"], metric, opts["sts_metric"])
    if "ce_quality.csv" in results:
        ce_quality_table(out, results["ce_quality.csv"], metric)
    if "ce_training.csv" in results:
        learning_curve_figure(plt, out, results["ce_training.csv"])
    if "layer_probe_extra.csv" in results and "layer_probe.csv" in results:
        other_ce_figure(plt, out, results["layer_probe.csv"], results["layer_probe_extra.csv"],
                        results.get("ce_quality_extra.csv"), metric, opts["sts_metric"])
    peer_table(out, results)
    if "de2ce.csv" in results:
        de2ce_figure(plt, out, results["de2ce.csv"], metric)
    if "pipeline.csv" in results:
        pipeline_figure(plt, out, results["pipeline.csv"], metric)
    if "query_distill.csv" in results:
        query_distill_figure(plt, out, results["query_distill.csv"], metric, cfg)
    if "query_distill_curve.csv" in results:
        query_curve_figure(plt, out, results["query_distill_curve.csv"])
    geometry, geo, geo_budgets = geometry_results(opts), None, None
    if geometry is not None:
        gdf = read_result(geometry.parent, geometry.name)
        if (geometry.parent / "budgets.csv").is_file():   # that profile's own budget sweep
            geo_budgets = read_result(geometry.parent, "budgets.csv")
        if gdf is not None:
            geo = geometry_table(gdf, metric, cfg)
            geometry_figure(plt, out, *geo, metric, os.path.relpath(geometry, results_dir), df=gdf)
        curve = geometry.parent / "query_distill_curve.csv"
        if curve.is_file():
            query_curve_figure(plt, out, read_result(curve.parent, curve.name), "query_distill_geometry_curve",
                               os.path.relpath(curve, results_dir))
    if "budgets.csv" in results:
        budgets_figure(plt, out, results["budgets.csv"], same_set_levels(results.get("query_distill.csv"), metric, cfg))
    if "speed.csv" in results:
        speed_figure(plt, out, results["speed.csv"])
        backends_figure(plt, out, results["speed.csv"], results.get("backend_quality.csv"), metric)
    speed_tables(out, results)
    if "run_times.csv" in results:
        out.table(run_time_table(results["run_times.csv"]), "run_times", ["run_times.csv"],
                  "Wall time of the last successful run of each notebook (run_times.csv), on the machine named.",
                  formats={"minutes": ".1f"})
    pareto_figure(plt, out, results, opts)
    head = headline_table(results, cfg, metric, geometry=geo, geometry_budgets=geo_budgets)
    if not head.empty:
        srcs = [s for s in ("peer_check.csv", "ce_quality.csv", "de2ce.csv", "speed.csv", "pipeline.csv", "query_distill.csv")
                if s in results] + ([os.path.relpath(geometry, results_dir)] if geo is not None else [])
        out.table(head, "headline", srcs, "Headline claims: each paper's claim (paper) next to this reproduction's "
                  "number (ours), computed from the result CSVs; details and budgets in the other tables.")
    verdicts = verdict_table(results, metric, results_dir.name, geometry=geo, geometry_budgets=geo_budgets)
    independent = independent_results(opts)
    if independent is not None:  # paper 1 answered again with a CE that is not derived from the DE
        where, res = independent
        verdicts = pd.concat([verdicts, independent_rows(res, metric, where.name)], ignore_index=True)
    if not verdicts.empty:
        srcs = [s for s in ("peer_check.csv", "layer_probe.csv", "ce_quality.csv", "ce_seeds.csv", "de2ce.csv", "budgets.csv",
                            "speed.csv", "query_distill.csv") if s in results] + (
            [os.path.relpath(geometry, results_dir)] if geo is not None else []) + (
            [os.path.relpath(geometry.parent / "budgets.csv", results_dir)] if geo_budgets is not None else []) + (
            [os.path.relpath(independent[0] / n, results_dir) for n in sorted(independent[1])] if independent else [])
        out.table(verdicts, "verdicts", srcs, "Every claim of both papers (P1: Ananthakrishnan et al. 2025; P2: Wang & Lyu "
                  "2023), the paper's number, ours and the verdict, computed from the result CSVs by the rules of "
                  "ce_utils.report.verdicts (reproduced / partly / not reproduced / not testable offline; seeds "
                  "stated; a level missed while the budget sweep still rises is marked budget not converged).")
    out.write_manifest()
    return out.manifest


def run_time_table(times: pd.DataFrame) -> pd.DataFrame:
    """One row per notebook of ``run_times.csv`` (the runner's record of each notebook's last successful run):
    its wall time in minutes, the machine, whether that CPU has native bf16, and the day it finished; then the
    sum, which mixes machines when the notebooks ran on different ones (the machine column says)."""
    t = times.sort_values("notebook")
    gpu = t["gpu"].fillna("none").astype(str) if "gpu" in t else pd.Series("none", index=t.index)
    machine = (t["cpu"].astype(str) + ", " + t["cores"].astype(int).astype(str) + " cores"
               + gpu.map(lambda g: "" if g == "none" else f", GPU {g}"))
    bf16 = t["native_bf16"].map({True: "yes", False: "no", "True": "yes", "False": "no"}) \
        if "native_bf16" in t else pd.Series("", index=t.index)
    rows = pd.DataFrame({"notebook": t["notebook"].astype(str), "minutes": t["seconds"].astype(float) / 60,
                         "machine": machine, "native bf16": bf16.fillna(""),
                         "finished": t["finished"].astype(str).str[:10]})
    total = pd.DataFrame([{"notebook": "total", "minutes": rows["minutes"].sum(),
                           "machine": "one machine" if machine.nunique() == 1 else f"{machine.nunique()} machines",
                           "native bf16": "", "finished": rows["finished"].max()}])
    return pd.concat([rows, total], ignore_index=True)


def independent_results(opts: dict) -> tuple[Path, dict[str, pd.DataFrame]] | None:
    """``figures.independent_ce`` (a results folder, relative to the repository root: the judge profile's) and the
    CSVs it holds; ``None`` when the option is unset or the folder holds none of paper 1's results."""
    where = opts.get("independent_ce")
    if not where:
        return None
    p = Path(where) if Path(where).is_absolute() else repo_root() / where
    res = read_results(p, log=lambda *_: None) if p.is_dir() else {}
    res = {k: v for k, v in res.items() if k in ("layer_probe.csv", "ce_quality.csv", "ce_seeds.csv", "de2ce.csv")}
    return (p, res) if res else None


def peer_table(out: Output, results: dict[str, pd.DataFrame]) -> None:
    """Our evaluator next to published scores (``peer_check.csv``, ``peer_check_models.csv``)."""
    peer_srcs = [n for n in ("peer_check.csv", "peer_check_models.csv") if n in results]
    if peer_srcs:
        pc = pd.concat([results[n] for n in peer_srcs], ignore_index=True)
        out.table(pc[["model", "dataset", "metric", "value", "published", "delta", "tolerance", "source"]],
                  "peer_check", peer_srcs, "Our evaluator's score of public models on full test collections next to "
                  "the published one (source), with the delta and the tolerance it must stay within.")
