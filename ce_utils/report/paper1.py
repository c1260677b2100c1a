"""Paper 1 (Ananthakrishnan et al., 2025), part one: the per-layer probe of the cross encoder's self-pair
embeddings next to the dual encoders', another cross encoder probed the same way, and the CE's training curve."""

from __future__ import annotations

import pandas as pd

from ce_utils.core.config import ConfigError
from ce_utils.report.style import figure_legend, grid, legend_right, minutes_axis, subplots, system_color
from ce_utils.report.tables import PCT, SCORE, Output, datasets_text, saved, span


def probe_lines(df: pd.DataFrame, ce_kinds: tuple = ("ce",)) -> pd.DataFrame:
    """A legend line per model (``model_kind``); rows of a CE kind (``ce_kinds``: prefixes) from a CE
    that does not beat its first stage are marked as such."""
    d = df.copy()
    if "pooling" in d.columns and d["pooling"].nunique() > 1:
        d["line"] = d["model_kind"].str.upper() + " (" + d["pooling"].astype(str) + ")"
    else:
        d["line"] = d["model_kind"].str.upper().str.replace("-VS-", " vs ", regex=False)
    if "ce_works" in d.columns:  # rows from a CE that does not beat its first stage are marked as such
        broken = (d["ce_works"].astype(str) == "False") & d["model_kind"].astype(str).str.startswith(tuple(ce_kinds))
        d.loc[broken, "line"] = d.loc[broken, "line"] + " [non-working CE]"
    return d


SECTION_ORDER = {"retrieval": 0, "sts": 1, "control": 2}   # the argument: retrieval, STS, then the controls


def probe_panels(d: pd.DataFrame, metric: str, sts_metric: str) -> list[tuple[str, str, str]]:
    """(section, dataset, metric) panels in the argument's order: retrieval per dataset (``metric``), STS
    (``sts_metric``), then each control (CKA, cosine to the DE); datasets in the CSV's order within a section."""
    section = d["section"] if "section" in d.columns else d["metric"].map(
        lambda m: "retrieval" if m == metric else "sts" if m == sts_metric else "control")
    wanted = {"retrieval": (metric,), "sts": (sts_metric,), "control": ("CKA", "cosine")}
    panels = []
    for sec, ds, m in dict.fromkeys(zip(section.astype(str), d["dataset"].astype(str), d["metric"].astype(str))):
        if m in wanted.get(sec, ()):
            panels.append((sec, ds, m))
    return sorted(panels, key=lambda p: (SECTION_ORDER.get(p[0], 3), wanted[p[0]].index(p[2])))


def panel_title(section: str, dataset: str, metric: str) -> str:
    if section == "control":
        return f"control: {metric} to the DE\n({dataset})"
    return f"{'STS' if section == 'sts' else 'retrieval'}: {dataset}"


def draw_layer_probe(plt, df: pd.DataFrame, metric: str = "NDCG@10", sts_metric: str = "Spearman",
                     ce_kinds: tuple = ("ce",), title: str | None = None):
    """One panel per retrieval dataset (``metric``), then STS (``sts_metric``), then the CKA / cosine controls, a
    line per model in its system colour, one legend to the right; ``None`` when there is nothing to draw. Used
    by notebook 01 and :func:`layer_probe_figure`."""
    d = probe_lines(df, ce_kinds)
    panels = probe_panels(d, metric, sts_metric)
    if not panels:
        return None
    fig, axes = grid(plt, len(panels), width=3.3, height=2.6)
    for ax, (sec, ds, m) in zip(axes, panels):
        g = d[(d["dataset"].astype(str) == ds) & (d["metric"] == m)]
        for line, gl in g.groupby("line", sort=False):
            gl = gl.groupby("layer", as_index=False)["value"].mean().sort_values("layer")
            broken = "[non-working CE]" in line
            ax.plot(gl["layer"], gl["value"], marker="o", ms=3, label=line, color=system_color(line),
                    ls=":" if broken else "--" if " vs " in line else "-")
        ax.set(title=panel_title(sec, ds, m), xlabel="layer (0 = embeddings)", ylabel=m)
    figure_legend(fig, axes)
    fig.suptitle(title or "Per-layer quality of mean-pooled embeddings: cross encoder (self-pair) vs dual encoders")
    return fig


def models_text(df: pd.DataFrame) -> str:
    """``CE = trained:ce-scifact, DE = ...``: each model kind of a probe CSV with its model."""
    kinds = df[~df["model_kind"].astype(str).str.contains("-vs-")].drop_duplicates("model_kind")
    return ", ".join(f"{str(k).upper()} = {m}" for k, m in zip(kinds["model_kind"], kinds["model"]))


def layer_probe_figure(plt, out: Output, df: pd.DataFrame, metric: str, sts_metric: str) -> None:
    if not saved(out, draw_layer_probe(plt, df, metric, sts_metric), "layer_probe", "layer_probe.csv",
                 f"has no {metric}/{sts_metric} rows"):
        return
    d = probe_lines(df)
    main = d[d["metric"].isin([metric, sts_metric])]
    tab = main.pivot_table(index=["dataset", "metric", "line"], columns="layer", values="value", aggfunc="mean")
    tab.columns = [f"L{int(c)}" for c in tab.columns]
    out.table(tab.reset_index().rename(columns={"line": "model"}), "layer_probe", ["layer_probe.csv"],
              f"{metric} (retrieval, full test collections: {datasets_text(main[main['metric'] == metric])}) and "
              f"{sts_metric} (STS) of mean-pooled hidden states per layer (L0 = embedding output): the cross encoder "
              f"fed each text as a self-pair next to the dual encoders ({models_text(df)}; DE-FT: the DE fine-tuned "
              "on the CE's training data).", formats={c: SCORE for c in tab.columns})


def other_ce_figure(plt, out: Output, probe: pd.DataFrame, extra: pd.DataFrame, quality: pd.DataFrame | None,
                    metric: str, sts_metric: str) -> None:
    """Cross encoders other than the profile's (``layer_probe_extra.csv``: e.g. the NLI judge) next to the
    profile's CE and DEs (``layer_probe.csv``), per layer; and their re-ranking check."""
    kinds = tuple(sorted(set(extra["model_kind"].astype(str)) - {k for k in extra["model_kind"].astype(str)
                                                                  if "-vs-" in k}))
    both = pd.concat([probe, extra], ignore_index=True)
    fig = draw_layer_probe(plt, both, metric, sts_metric, ce_kinds=("ce",) + kinds,
                           title="Per-layer quality: another cross encoder (self-pair) next to the profile's CE and DEs")
    saved(out, fig, "layer_probe_other_ce", ["layer_probe.csv", "layer_probe_extra.csv"],
          f"has no {metric}/{sts_metric} rows")
    if quality is not None:
        q = quality[quality["metric"] == metric]
        if not q.empty:
            idx = [c for c in ("model", "stage", "depth", "n_queries", "encode_dtype", "ce_works") if c in q.columns]
            tab = q.pivot_table(index=idx, columns="dataset", values="value", aggfunc="mean").reset_index()
            out.table(tab, "ce_quality_other", ["ce_quality_extra.csv"],
                      f"{metric} of another cross encoder ({', '.join(kinds)}) re-ranking the top-{span(q, 'depth')} "
                      f"of the profile's DE (first_stage) on the full test collection ({datasets_text(q)}, "
                      f"{span(q, 'n_queries')} queries); ce_works: whether it beats its first stage.")


def draw_learning_curve(plt, df: pd.DataFrame):
    """Dev NDCG@10 of re-ranking the DE's top-k against training steps (top axis: minutes), a line
    per trained model, with the first stage's dev NDCG@10 dashed and the selected step marked
    (``ce_training.csv``; ``None`` without rows)."""
    if df is not None and "phase" in df.columns:
        df = df[df["phase"] == "training"]
    if df is None or df.empty:
        return None
    fig, axes = subplots(plt, width=6.4, height=3.4)
    ax = axes[0, 0]
    for (label, kind), g in df.groupby(["model", "model_kind"], sort=False):
        g = g.sort_values("step")
        color = system_color(kind)
        ax.plot(g["step"], g["dev_NDCG@10"], marker="o", ms=3, label=f"{kind}: {label}", color=color)
        sel = g[g["selected"].astype(str) == "True"]
        ax.plot(sel["step"], sel["dev_NDCG@10"], "*", ms=10, color=color)
    ax.plot([], [], "*", ms=8, color="0.4", label="selected step")
    ax.axhline(df["first_stage_NDCG@10"].iloc[0], color=system_color("de"), ls="--", lw=1,
               label="first stage (DE) on dev")
    ax.set(xlabel="training step", ylabel="dev NDCG@10 (re-ranking the DE top-k)",
           title="Learning curves on the dev split of the training queries")
    mins = df.groupby("step")["minutes"].max().sort_index()
    minutes_axis(ax, mins.index, mins.values)
    legend_right(ax)
    return fig


def ce_quality_table(out: Output, cq: pd.DataFrame, metric: str) -> None:
    """The profile's CE re-ranking its DE's top-k (``ce_quality.csv``)."""
    cq = cq[cq["metric"] == metric]
    if not cq.empty:
        idx = [c for c in ("model", "stage", "depth") if c in cq.columns]
        tab = cq.pivot_table(index=idx, columns="dataset", values="value", aggfunc="mean").reset_index()
        out.table(tab, "ce_quality", ["ce_quality.csv"],
                  f"{metric} of the profile's DE alone (first_stage) and after the cross encoder re-ranks its top-"
                  f"{span(cq, 'depth')} (ce_rerank), full test collection ({datasets_text(cq)}, "
                  f"{span(cq, 'n_queries')} queries).")


def learning_curve_figure(plt, out: Output, df: pd.DataFrame) -> None:
    if not saved(out, draw_learning_curve(plt, df), "ce_training", "ce_training.csv", "has no training rows"):
        return
    if "phase" not in df.columns:
        df = df.assign(phase="training")
    checks = df[df["phase"] != "training"].assign(row=lambda d: "dev check at max_length " + d["max_length"].astype(str))
    df = df[df["phase"] == "training"]
    sel = df[df["selected"].astype(str) == "True"]
    last = df.sort_values("step").groupby("model_kind").tail(1)
    tab = pd.concat([sel.assign(row="selected"), last.assign(row="last"), checks])[
        ["model_kind", "model", "row", "step", "minutes", "max_length", "dev_NDCG@10", "dev_MRR@10",
         "first_stage_NDCG@10"]]
    dev = f"{span(df, 'n_dev_queries')} dev queries" if "n_dev_queries" in df.columns else "the dev queries"
    out.table(tab, "ce_training", ["ce_training.csv"],
              f"Learning curves on the dev split of the training queries ({dev}, re-ranking the DE's top-"
              f"{span(df, 'dev_depth') or 'k'}): the cross encoder (ce) and the same-data DE control (de-ft) at the "
              f"selected step and the last ({span(df, 'step').split('-')[-1]}), and the selected CE's dev check at "
              "each max_length; first_stage: the DE alone.", formats={"minutes": PCT})


# --------------------------------------------------------------------------- the probe in sentences
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

