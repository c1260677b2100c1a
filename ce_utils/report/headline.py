"""The headline table: each paper's claim next to this reproduction's number, computed from the CSVs."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ce_utils.report.budgets import budget_headline_table, tested_rows
from ce_utils.report.de2ce import pct_of_full, pipeline_latency_table
from ce_utils.report.verdicts import seed_headline, seeds_text


def headline_table(results: dict, cfg: dict | None, metric: str = "NDCG@10",
                   geometry: tuple[pd.DataFrame, dict] | None = None,
                   geometry_budgets: pd.DataFrame | None = None) -> pd.DataFrame:
    """The papers' headline claims next to ours, computed from the CSVs; ``geometry``: paper 2's geometry
    as :func:`geometry_table` returns it; ``geometry_budgets``: that profile's budgets.csv, whose test runs of
    {0,11} stand beside notebook 03's number."""
    rows = []
    sp = results.get("speed.csv")
    de2ce = results.get("de2ce.csv")
    qd = results.get("query_distill.csv")
    pc = results.get("peer_check.csv")
    cq = results.get("ce_quality.csv")
    if pc is not None:
        for _, r in pc[pc["metric"] == metric].iterrows():
            rows.append({"claim": f"evaluator check: {r['model']} on full {r['dataset']}, {metric} (published: MTEB)",
                         "paper": f"{r['published']:.3f}", "ours": f"{r['value']:.3f}", "delta": f"{r['delta']:+.3f}"})
    if cq is not None:
        d = cq[cq["metric"] == metric]
        for ds, g in d.groupby("dataset"):
            st = g.set_index("stage")["value"]
            if {"first_stage", "ce_rerank"} <= set(st.index):
                n, depth = int(g["n_queries"].iloc[0]), int(g["depth"].iloc[0])
                works = "" if "ce_works" not in g or g["ce_works"].astype(str).iloc[0] != "False" else " [NOT a working CE]"
                rows.append({"claim": f"the CE re-ranks the DE's top-{depth} on full {ds} ({n} queries), {metric}{works}",
                             "paper": "a CE re-ranks its first stage's top-k (MS MARCO CE)",
                             "ours": f"{st['first_stage']:.3f} -> {st['ce_rerank']:.3f}",
                             "delta": f"{st['ce_rerank'] - st['first_stage']:+.3f} (target: +0.020)"})
    if de2ce is not None:
        d = de2ce[de2ce["metric"] == metric]
        for model, claim, paper in (
                ("DE-2 CE", "DE-2 CE", "within ~1% of the full DE"),
                ("DE-2 CE+top", "DE-2 CE+top (CE embeddings + CE layer 0 + the full DE's top layer)",
                 "not in paper 1 (its DE-2 CE: within ~1%)")):
            per_seed, common = pct_of_full(d, model)
            if common:
                pct = float(np.mean(per_seed))
                steps = int(d.loc[d["model"] == model, "train_steps"].max()) if "train_steps" in d else None
                rows.append({"claim": f"{claim} {metric}, % of full DE (mean over {', '.join(common)})",
                             "paper": paper, "ours": f"{pct:.1f}%" + (f" ({steps} steps, notebook 02)" if steps else ""),
                             "delta": f"{pct - 99:+.1f} pts vs 99%"})
    if sp is not None:
        d = sp[(sp["model"] == "DE-2 CE") & (sp["tokenization"] == "included") & (sp["device"] == "cpu")
               & (sp["threads"] == 1)]
        if not d.empty:
            lo, hi = d["speedup_vs_de"].min(), d["speedup_vs_de"].max()
            rows.append({"claim": "DE-2 CE query-encoding speed-up over the full DE (CPU, 1 thread, batch 1-128)",
                         "paper": "5.15x (paper's hardware)", "ours": f"{lo:.2f}x - {hi:.2f}x "
                         f"(FLOP ratio {d['flop_ratio'].iloc[0]:.2f})", "delta": "different hardware and depth"})
    pl = results.get("pipeline.csv")
    lat = pipeline_latency_table(pl, metric) if pl is not None else pd.DataFrame()
    if not lat.empty:
        lat = lat[lat["depth"] > 0].dropna(subset=["ms / query"])
        full_name = next((f for f in lat["first_stage"].unique() if "full" in str(f)), None)
        if cq is not None and set(cq["dataset"]) & set(lat["dataset"]):  # the CE's own check set; the table has all
            lat = lat[lat["dataset"].isin(set(cq["dataset"]))]
        for (ds, depth), g in lat.groupby(["dataset", "depth"]):
            if depth != lat["depth"].min() or full_name not in set(g["first_stage"]):
                continue
            ref = g[g["first_stage"] == full_name].iloc[0]
            for _, r in g[g["first_stage"] != full_name].iterrows():
                rows.append({"claim": f"pipeline on full {ds}: {r['first_stage']} retrieves, the CE re-ranks its top-{depth}; "
                                      f"{metric} and measured CPU ms per query ({int(r['threads'])} thread), "
                                      f"vs the full DE + the same CE",
                             "paper": "DE-2 CE + CE re-ranking (paper 1); first stage 5.15x faster",
                             "ours": f"{r[metric]:.3f} vs {ref[metric]:.3f}; {r['ms / query']:.0f} (IQR {r['IQR ms']:.0f}) "
                                     f"vs {ref['ms / query']:.0f} (IQR {ref['IQR ms']:.0f}) ms",
                             "delta": f"{r[metric] - ref[metric]:+.3f}; end to end {ref['ms / query'] / r['ms / query']:.2f}x"})
    if qd is not None:
        ret = qd[(qd["metric"] == f"retention_{metric}") & (qd["dataset"] == "mean")]
        two = ret[(ret["n_layers"] == 2)]
        if not two.empty:
            teacher = qd[qd["student"] == "teacher"]
            n_t = int(teacher["n_layers"].max()) if not teacher.empty and teacher["n_layers"].notna().any() else None
            top = f"0,{n_t - 1}" if n_t else None
            pick = two[two["layers"].astype(str) == top] if top else two.iloc[0:0]
            r = pick.iloc[0] if not pick.empty else two.sort_values("value").iloc[-1]
            steps = f"; {int(r['train_steps'])} steps, notebook 03" if pd.notna(r.get("train_steps")) else ""
            rows.append({"claim": f"2-layer query student (bottom + top layer) keeps % of teacher {metric}",
                         "paper": "92.5% (layers 0,11 of 12; mean of 15 BEIR sets)",
                         "ours": f"{100 * r['value']:.1f}% (layers {r['layers']}; {r['student']}{steps})",
                         "delta": f"{100 * r['value'] - 92.5:+.1f} pts"})
    budgets = results.get("budgets.csv")
    head = budget_headline_table(budgets) if budgets is not None else pd.DataFrame()
    tested = tested_rows(budgets)
    for _, r in head.iterrows():  # the budget sweep's headline students: the chosen point, every seed, on test
        of = "teacher" if r["kind"] == "query-student" else "full DE"
        at = (tested["student"] == r["student"]) & (tested["budget_steps"] == r["budget (steps)"]) \
            & (tested["learning_rate"].map("{:g}".format) == r["learning rate"])
        sets = list(dict.fromkeys(tested.loc[at, "dataset"]))
        spread = f" ± {r['sd (pt)']:.1f}" if pd.notna(r["sd (pt)"]) else ""
        rows.append({"claim": f"{r['student']} at the budget sweep's chosen point, % of {of} {metric} "
                              f"(mean over {', '.join(sets)})",
                     "paper": f"{r['paper %']:.1f}%" if pd.notna(r["paper %"]) else "—",
                     "ours": f"{r['mean %']:.1f}%{spread} ({int(r['seeds'])} seed{'s' if r['seeds'] > 1 else ''}; "
                             f"{int(r['budget (steps)'])} steps, lr {r['learning rate']})",
                     "delta": f"{r['ours - paper (pt)']:+.1f} pts" if pd.notna(r["ours - paper (pt)"]) else "—"})
    if geometry is not None and not geometry[0].empty:
        tab, agree = geometry
        row = tab[tab["layers"] == "0,11"]
        if not row.empty:
            r = row.iloc[0]
            rows.append({"claim": f"the same, in paper 2's geometry: layers 0,11 of a 12-layer teacher "
                                  f"(all-mpnet-base-v2), % of teacher {metric} (mean over our sets)",
                         "paper": f"{100 * r['paper_same_sets']:.1f}% on the same sets ({100 * r['paper_mean']:.1f}% "
                                  "over 15)",
                         "ours": f"{100 * r['ours_mean']:.1f}% (1 seed"
                                 + (f"; {int(r['train_steps'])} steps, notebook 03)" if pd.notna(r.get("train_steps"))
                                    else ")"),
                         "delta": f"{100 * (r['ours_mean'] - r['paper_same_sets']):+.1f} pts"})
            swept, steps = seed_headline(geometry_budgets, "L0_11")
            if len(swept):  # the same student at the budget sweep's largest tested point
                rows.append({"claim": "the same {0,11} student in its budget sweep, on test (its headline seeds, else "
                                      "its largest tuned run; mean over our sets)",
                             "paper": f"{100 * r['paper_same_sets']:.1f}% on the same sets",
                             "ours": f"{seeds_text(swept, unit='%')}, {steps} steps",
                             "delta": f"{swept.mean() - 100 * r['paper_same_sets']:+.1f} pts"})
            rows.append({"claim": f"ranking of paper 2's {agree['n_subsets']} layer subsets (Spearman, ours vs paper's "
                                  "retention on the same sets)",
                         "paper": f"best 2-layer subset {{{agree['best_2_paper']}}} over 15 sets "
                                  f"({{{agree['best_2_paper_same_sets']}}} on ours)",
                         "ours": f"{agree['spearman_same_sets']:.2f}; best 2-layer {{{agree['best_2_ours']}}}",
                         "delta": "same best subset" if agree["best_2_ours"] == agree["best_2_paper"]
                         else "another best subset"})
    return pd.DataFrame(rows, columns=["claim", "paper", "ours", "delta"])
