"""Budget sweep: how many steps (and which learning rate) each kind of student needs, measured by
independent runs on dev splits carved from training data.

Every point is its own run with its own complete learning-rate schedule (warm-up, then linear decay to
zero at *that run's* last step), never a checkpoint of a longer run whose rate had not yet decayed. For
each student of ``budgets.students`` the sweep runs, in this order:

1. ``budget``: the budgets ``base_steps x multipliers`` at the recipe's learning rate, seed
   ``seeds[0]``; doubling stops early once two doublings in a row gain less than ``flat`` (1 point
   of retention);
2. ``lr``: the ``learning_rates`` grid at ``lr_budget_steps``, widened while its best rate sits at an edge
   (x2 above, /2 below; at most ``lr_widen`` times), then ``extra_steps`` (e.g. paper 2's own ~3,900 steps)
   at the recipe's rate;
3. ``tuned``: the budget curve again at the chosen learning rate (the best of the grid), doubling from
   ``lr_budget_steps`` through the budgets above it until two doublings gain less than ``flat``; each tuned
   run is scored on the full test collections too (never selected on them), so the one at the chosen budget
   is that budget's first seed;
4. ``seed``: once the tuned curve has flattened or reached the last budget, the chosen point (of every point
   measured, at any rate, the smallest budget within ``flat`` of the best; :func:`chosen_point`) with every
   seed of ``seeds``. These are the
   headline runs: each is also scored on the full test collections (``phase == "test"`` rows;
   :func:`headline`); a finished run of the same key is relabelled ``seed`` in the CSV, and one without test
   rows (a budget run at the chosen point) is trained again with them.

New runs train in ``budgets.precision`` (``auto``: bf16 autocast where the device computes bf16 natively,
a GPU or a CPU with AVX512-BF16 / AMX, else fp32; about 2x faster than fp32 on such a CPU). Whenever that
is not fp32, a ``precision`` sweep runs first and shows the two equal: at each budget of a student's
``precision_check`` (``{steps: [seeds]}``) the same run in fp32 and in bf16. Runs of both precisions
make up one curve (the mean at a budget); ``summary`` prints the check.

Scoring is as in :mod:`ce_utils.experiments.curves`: a query student against the teacher's document
embeddings, a DE-k CE student symmetric; retention = student / teacher (full DE) on the same dev
queries. Each finished run is appended to ``results/<profile>/budgets.csv`` at once (temp file, then
rename), and a run already there is skipped: a killed sweep resumes where it stopped.

    python -m ce_utils budgets --profile default --dry-run     # the plan, with what is done
    python -m ce_utils budgets --profile default               # run what is missing
"""

from __future__ import annotations

import fcntl
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
from ce_utils.core.config import ConfigError
from ce_utils.core.encode import native_bf16
from ce_utils.core.io import merge_rows, seed_spread, with_metadata, write_csv_atomic
from ce_utils.core.students import DE2CE_INITS
from ce_utils.core.train import PRECISIONS
from ce_utils.experiments.curves.run import DEFAULT_DEV, run_curve, run_de2ce_curve


BUDGETS_CSV = "budgets.csv"
KEY = ["spec", "budget_steps", "seed", "learning_rate", "schedule", "precision"]
COLUMNS = ["student", "spec", "kind", "sweep", "budget_steps", "step", "seed", "learning_rate", "schedule",
           "precision", "epochs_of_text", "train_texts", "minutes", "steps_per_s", "texts_per_s", "phase", "dataset", "split",
           "metric", "value", "teacher_value", "retention", "n_queries", "n_docs"]
SWEEPS = ("precision", "budget", "lr", "tuned", "seed")


@dataclass(frozen=True)
class Run:
    spec: str                 # "subset:0,5" (query student) or "de2ce:de:1" (DE-k CE student)
    budget_steps: int
    learning_rate: float
    seed: int
    sweep: str                # precision | budget | lr | tuned | seed
    schedule: str = "linear"
    precision: str = "fp32"   # fp32 | bf16 (autocast)

    @property
    def kind(self) -> str:
        return "de-k-ce" if self.spec.startswith("de2ce:") else "query-student"

    def key(self) -> tuple:
        return (self.spec, int(self.budget_steps), int(self.seed), float(self.learning_rate), self.schedule,
                self.precision)


def recipe_learning_rate(cfg: dict, spec: str) -> float:
    """The learning rate of the notebook whose recipe ``spec`` follows (02 for DE-k CE, 03 for query students)."""
    if spec.startswith("de2ce:"):
        return float(((cfg.get("de2ce") or {}).get("train") or {}).get("learning_rate", 1e-4))
    return float((cfg.get("query_distill") or {}).get("learning_rate", 1e-4))


def student_settings(cfg: dict) -> dict[str, dict]:
    """``{spec: settings}`` of ``budgets.students`` with their defaults filled in, checked."""
    b = cfg.get("budgets") or {}
    students = b.get("students") or {}
    if not any(s is not None for s in students.values()):
        raise ConfigError("the profile has no budgets.students: name at least one student, e.g. "
                          "'subset:0,5': {base_steps: 80}.")
    out = {}
    for spec, s in students.items():
        if s is None:
            continue  # a student set to null (e.g. by a profile that extends another) is not swept
        s = dict(s)
        if spec.startswith("de2ce:"):
            init, _, k = spec[len("de2ce:"):].partition(":")
            if init not in DE2CE_INITS or not k.isdigit() or int(k) < 1:
                raise ConfigError(f"budgets.students: {spec!r} is no DE-k CE student; write de2ce:INIT:K with INIT "
                                  f"{', '.join(DE2CE_INITS)} and K >= 1 (e.g. de2ce:de:1).")
        elif not spec.startswith("subset:") and not spec.startswith("first:"):
            raise ConfigError(f"budgets.students: {spec!r}: write a query student (subset:0,5 / first:2) or a DE-k "
                              "CE student (de2ce:de:1).")
        if int(s.get("base_steps") or 0) < 1:
            raise ConfigError(f"budgets.students.{spec}.base_steps must be a whole number >= 1.")
        base = int(s["base_steps"])
        lr = recipe_learning_rate(cfg, spec)
        mult = [int(m) for m in s.get("multipliers", b.get("multipliers", [1, 2, 4, 8, 16]))]
        out[spec] = {
            "base_steps": base,
            "budgets": sorted({base * m for m in mult}),
            "extra_steps": sorted(int(x) for x in s.get("extra_steps") or []),
            "learning_rate": lr,
            "learning_rates": sorted({float(x) for x in s.get("learning_rates") or [lr]} | {lr}),
            "lr_budget_steps": int(s.get("lr_budget_steps") or base * 4),
            "lr_widen": int(s.get("lr_widen", b.get("lr_widen", 3))),
            "seeds": [int(x) for x in s.get("seeds", b.get("seeds", [42, 43, 44]))],
            "pool": s.get("pool", b.get("pool")),
            "flat": float(s.get("flat", b.get("flat", 0.01))),
            "precision_check": {int(k): [int(x) for x in v] for k, v in (s.get("precision_check") or {}).items()},
        }
    return out


def sweep_precision(cfg: dict, device: str | None = None) -> str:
    """The precision of new runs: ``budgets.precision`` (fp32 / bf16 / auto), ``auto`` and ``bf16`` resolved
    to fp32 where ``device`` has no native bf16."""
    p = str((cfg.get("budgets") or {}).get("precision") or "fp32")
    if p not in ("auto", *PRECISIONS):
        raise ConfigError(f"budgets.precision must be auto, fp32 or bf16, not {p!r}.")
    if p == "fp32":
        return p
    return "bf16" if native_bf16(device or "cpu") else "fp32"


def mean_retention(done: pd.DataFrame, spec: str, lr: float | None = None, seed: int | None = None) -> pd.Series:
    """``{budget_steps: mean dev retention over the dev collections}`` of one student's finished runs
    (the runs' last step), optionally at one learning rate and seed; mean over seeds otherwise."""
    if done is None or done.empty:
        return pd.Series(dtype=float)
    d = final_dev_rows(done, spec, lr, seed)
    if d.empty:
        return pd.Series(dtype=float)
    per_run = d.groupby(["budget_steps", "seed", "learning_rate"])["retention"].mean()
    return per_run.groupby(level="budget_steps").mean().sort_index()


def final_dev_rows(done: pd.DataFrame, spec: str, lr: float | None = None, seed: int | None = None) -> pd.DataFrame:
    """The dev rows at their run's last step of ``spec``'s linear-schedule runs, optionally at one rate and seed."""
    d = done[(done["spec"] == spec) & (done["phase"] == "dev") & (done["step"] == done["budget_steps"])
             & (done["schedule"] == "linear")]
    if lr is not None:
        d = d[(d["learning_rate"] - lr).abs() < 1e-12]
    return d if seed is None else d[d["seed"] == seed]


def converged_budget(curve: pd.Series, flat: float = 0.01) -> int | None:
    """The smallest budget whose retention is within ``flat`` of the best measured."""
    if curve.empty:
        return None
    return int(curve.index[curve >= curve.max() - flat][0])


def chosen_point(done: pd.DataFrame, spec: str, seed: int, flat: float = 0.01) -> tuple[int, float]:
    """The headline's (budget_steps, learning_rate): of every point ``spec``'s sweep measured with ``seed`` (any
    budget, any rate), the smallest budget whose mean dev retention is within ``flat`` of the best, at its best rate."""
    d = final_dev_rows(done, spec, seed=seed)
    pts = d.groupby(["budget_steps", "learning_rate", "precision"])["retention"].mean().groupby(
        level=["budget_steps", "learning_rate"]).mean()
    near = pts[pts >= pts.max() - flat].reset_index().sort_values(["budget_steps", "retention"],
                                                                   ascending=[True, False])
    return int(near["budget_steps"].iloc[0]), float(near["learning_rate"].iloc[0])


def flattened(curve: pd.Series, flat: float = 0.01) -> bool:
    """True when the last two doublings (the last three budgets, each twice the one before) gained less
    than ``flat`` together: more steps of this recipe stop paying."""
    c = curve.sort_index()
    if len(c) < 3:
        return False
    b = list(c.index[-3:])
    return b[1] == 2 * b[0] and b[2] == 2 * b[1] and c.iloc[-1] - c.iloc[-3] < flat


def learning_rate_grid(done: pd.DataFrame | None, spec: str, s: dict) -> list[float]:
    """The learning rates to run at ``lr_budget_steps``: the profile's grid, widened while its best measured rate
    sits at an edge (twice the top rate, or half the bottom one, at most ``lr_widen`` times): an optimum at the
    grid's edge is no optimum. The rates of a widening are asked for one at a time, each once the last is measured."""
    rates = list(s["learning_rates"])
    for _ in range(s["lr_widen"]):
        grid = {lr: mean_retention(done, spec, lr, s["seeds"][0]).get(s["lr_budget_steps"]) for lr in rates}
        if any(v is None or pd.isna(v) for v in grid.values()):
            break
        best = max(grid, key=grid.get)
        if best == max(rates):
            rates.append(best * 2)
        elif best == min(rates):
            rates.append(best / 2)
        else:
            break
    return rates


def plan(cfg: dict, done: pd.DataFrame | None = None, precision: str = "fp32") -> list[Run]:
    """Every run of the sweep that the finished runs ``done`` call for, in order (finished ones included);
    new runs in ``precision`` (:func:`sweep_precision`)."""
    runs: list[Run] = []
    done = with_precision(done)
    for spec, s in student_settings(cfg).items():
        lr0, seed0 = s["learning_rate"], s["seeds"][0]
        if precision != "fp32":
            runs += [Run(spec, steps, lr0, seed, "precision", precision=p)
                     for steps, seeds in sorted(s["precision_check"].items()) for seed in seeds
                     for p in ("fp32", precision)]
        curve = mean_retention(done, spec, lr0, seed0)

        def run(steps, lr, seed, sweep):  # a finished run keeps its precision, a new one trains in `precision`
            return Run(spec, steps, lr, seed, sweep, precision=_done_precision(done, spec, steps, lr, seed, precision))

        for steps in s["budgets"]:
            if flattened(curve[curve.index < steps], s["flat"]):
                break  # two doublings gained less than `flat`: no larger budget
            runs.append(run(steps, lr0, seed0, "budget"))
            if steps not in curve.index:
                break  # the next doubling waits for this one's result
        rates = learning_rate_grid(done, spec, s)
        runs += [run(s["lr_budget_steps"], lr, seed0, "lr") for lr in rates]
        runs += [run(steps, lr0, seed0, "budget") for steps in s["extra_steps"]]
        grid = {lr: mean_retention(done, spec, lr, seed0).get(s["lr_budget_steps"]) for lr in rates}
        if any(v is None or pd.isna(v) for v in grid.values()):
            continue  # the tuned curve and the seeds wait for the learning-rate grid
        best_lr = max(grid, key=grid.get)  # inside the widened grid, or at its edge after lr_widen widenings
        tuned = mean_retention(done, spec, best_lr, seed0)
        waiting = False
        for steps in (b for b in s["budgets"] if b > s["lr_budget_steps"]):
            if flattened(tuned[tuned.index < steps], s["flat"]):
                break  # two doublings at the chosen rate gained less than `flat`
            runs.append(run(steps, best_lr, seed0, "tuned"))
            if steps not in tuned.index:
                waiting = True  # the next doubling, and the seeds, wait for this one's result
                break
        if waiting:
            continue
        chosen, chosen_lr = chosen_point(done, spec, seed0, s["flat"])
        runs += [run(chosen, chosen_lr, seed, "seed") for seed in s["seeds"]]
    seen, out = set(), []
    headline = {r.key() for r in runs if r.sweep == "seed"}
    for r in runs:  # one run per key, named by the first sweep that asks for it, or "seed" (scored on test too)
        if r.key() not in seen:
            seen.add(r.key())
            out.append(replace(r, sweep="seed") if r.key() in headline else r)
    return out


def with_precision(done: pd.DataFrame | None) -> pd.DataFrame | None:
    """``done`` with a ``precision`` column (rows written before it existed trained in fp32)."""
    if done is None:
        return None
    if "precision" not in done.columns:
        return done.assign(precision="fp32")
    return done.assign(precision=done["precision"].fillna("fp32"))


def _done_precision(done: pd.DataFrame | None, spec: str, steps: int, lr: float, seed: int, default: str) -> str:
    """The precision of the finished run (spec, steps, lr, seed) of the budget or learning-rate curve; ``default``
    when there is none (the precision of ``default`` first when both exist)."""
    if done is None or done.empty:
        return default
    d = done[(done["spec"] == spec) & (done["budget_steps"] == steps) & (done["seed"] == seed)
             & ((done["learning_rate"] - lr).abs() < 1e-12) & (done["schedule"] == "linear")]
    have = set(d["precision"])
    return default if not have or default in have else sorted(have)[0]


def row_keys(df: pd.DataFrame) -> list[tuple]:
    """Each row's run key (:meth:`Run.key`)."""
    df = with_precision(df)
    return [(str(a), int(b), int(c), float(d), str(e), str(f)) for a, b, c, d, e, f in df[KEY].itertuples(index=False)]


def done_keys(done: pd.DataFrame | None) -> set[tuple]:
    return set() if done is None or done.empty else set(row_keys(done))


def tested_keys(done: pd.DataFrame | None) -> set[tuple]:
    """The keys of finished runs scored on the test collections too."""
    if done is None or done.empty or "phase" not in done.columns:
        return set()
    return done_keys(done[done["phase"] == "test"])


def pending(cfg: dict, done: pd.DataFrame | None, precision: str = "fp32", runs: list[Run] | None = None) -> list[Run]:
    """The runs of :func:`plan` (or of ``runs``, a plan already made of ``done``) still to train: not finished,
    or a seed run without its test rows."""
    keys, tested = done_keys(done), tested_keys(done)
    return [r for r in (plan(cfg, done, precision) if runs is None else runs)
            if r.key() not in keys or (r.sweep == "seed" and r.key() not in tested)]


def run_one(cfg: dict, run: Run, device: str | None = None, progress: bool = True) -> pd.DataFrame:
    """Train and score one run of the sweep; its dev rows at its last step, and for a tuned or seed run (a
    headline run) its rows on the full test collections too."""

    s = student_settings(cfg)[run.spec]
    dev = (cfg.get("budgets") or {}).get("dev") or DEFAULT_DEV
    common = dict(dev=dev, device=device, progress=progress, learning_rate=run.learning_rate, schedule=run.schedule,
                  seed=run.seed, pool=s["pool"], eval_at=[run.budget_steps], score_start=False, precision=run.precision,
                  test=run.sweep in ("tuned", "seed"))
    if run.kind == "de-k-ce":
        init, _, k = run.spec[len("de2ce:"):].partition(":")
        rows, _, info = run_de2ce_curve(cfg, init, int(k), run.budget_steps, run.budget_steps, **common)
        batch = int(((cfg.get("de2ce") or {}).get("train") or {}).get("batch_size", 32))
    else:
        rows, _, info = run_curve(cfg, run.spec, run.budget_steps, run.budget_steps, **common)
        batch = int((cfg.get("query_distill") or {}).get("batch_size", 128))
    df = pd.DataFrame(rows)
    df = df[df["step"] == info["train_steps"]].copy()
    seconds = max(float(df["minutes"].max()) * 60, 1e-9)
    df = df.assign(spec=run.spec, kind=run.kind, sweep=run.sweep, budget_steps=run.budget_steps, seed=run.seed,
                   learning_rate=run.learning_rate, schedule=run.schedule, precision=info["train_precision"],
                   train_texts=info["train_texts"],
                   epochs_of_text=df["step"] * batch / info["train_texts"],
                   steps_per_s=df["step"] / seconds, texts_per_s=df["step"] * batch / seconds)
    return df.assign(**ce_columns(info.get("ce_record")))  # no columns for a run that copied no CE


CE_COLUMNS = {"ce_trained_on": "cpu", "ce_selected_step": "selected_step", "ce_dev_NDCG@10": "dev_NDCG@10",
              "ce_git_commit": "git_commit"}


def ce_columns(record: dict | None) -> dict:
    """Which CE a DE-k CE run copied, from the CE's training record: the CPU it was trained on, its selected step
    and dev score. A trained CE is trained on first use on the machine of the run, and the same recipe gives
    another CE on another CPU, so runs of one student may copy different CEs; empty for a start without a CE."""
    if not record:
        return {}
    return {col: record.get(key) for col, key in CE_COLUMNS.items()}


def only_students(cfg: dict, specs) -> dict:
    """``cfg`` with ``budgets.students`` cut to ``specs`` (all when empty); an unknown spec is an error naming
    the known ones."""
    if not specs:
        return cfg
    known = (cfg.get("budgets") or {}).get("students") or {}
    unknown = [s for s in specs if s not in known]
    if unknown:
        raise ConfigError(f"{unknown[0]!r} is not in budgets.students (known: {sorted(known)}).")
    return {**cfg, "budgets": {**cfg["budgets"], "students": {s: known[s] for s in specs}}}


def run_pending(cfg: dict, path: Path, device: str | None = None, sweeps=(), max_runs: int | None = None,
                before=None, meta=None, progress: bool = True, log=print) -> pd.DataFrame:
    """Train the pending runs of ``cfg``'s sweep (only those of ``sweeps`` when given), one at a time, each
    appended to ``path`` at once, until none is left or ``max_runs`` ran; the plan is made afresh after each
    run (a result decides the next doubling). ``before(run)`` is called before a run trains (e.g. to train the
    CE a DE-2 CE run copies), ``meta(run)`` gives the run-metadata columns of its rows. Returns ``path``'s rows."""
    precision = sweep_precision(cfg, device)
    n = 0
    while max_runs is None or n < max_runs:
        done, runs = _mark_headline(cfg, path, precision)
        todo = [r for r in pending(cfg, done, precision, runs) if not sweeps or r.sweep in sweeps]
        if not todo:
            break
        run = todo[0]
        log(f"run {run.sweep}: {run.spec} {run.budget_steps} steps, lr {run.learning_rate:g}, seed {run.seed}, "
            f"{run.precision}")
        if before is not None:
            before(run)
        rows = run_one(cfg, run, device, progress=progress)
        if meta is not None:
            rows = with_metadata(rows, meta(run))
        append_run(path, rows)
        n += 1
    return pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=COLUMNS)


HEADLINE_RUNS = {"seed": ["seed"], "all": [], "none": None}


def run_headline(cfg: dict, specs, path: Path, device: str | None = None, runs: str = "seed", meta=None,
             progress: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """A notebook's headline students ``specs`` (of ``budgets.students``) at their measured budget: trains what
    ``runs`` allows (``seed``: the seed runs at the chosen budget and rate, once the sweep has chosen them;
    ``all``: the whole sweep of these students; ``none``: nothing), appending to ``path`` (``budgets.csv``, shared
    with `make budgets`: a run done by either is not trained again). Returns these students' rows and
    :func:`headline_notes`."""
    if runs not in HEADLINE_RUNS:
        raise ConfigError(f"headline_runs must be one of {', '.join(HEADLINE_RUNS)}, not {runs!r}.")
    specs = list(specs or [])
    if not specs:
        return pd.DataFrame(columns=COLUMNS), []
    sub = only_students(cfg, specs)
    student_settings(sub)
    if HEADLINE_RUNS[runs] is not None:
        run_pending(sub, path, device, HEADLINE_RUNS[runs], meta=meta, progress=progress)
    done = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=COLUMNS)
    return done[done["spec"].isin(specs)].reset_index(drop=True), headline_notes(sub, done, sweep_precision(sub, device))


def mark_headline(cfg: dict, path: Path, precision: str = "fp32") -> pd.DataFrame | None:
    """``path``'s rows, those of finished runs that the plan now names headline runs (a tuned run at the chosen
    budget) relabelled ``sweep = "seed"`` in the file, and seed runs it no longer names so given their plan's
    sweep; ``None`` without a file."""
    return _mark_headline(cfg, path, precision)[0]


def _mark_headline(cfg: dict, path: Path, precision: str) -> tuple[pd.DataFrame | None, list[Run]]:
    """:func:`mark_headline`, and the plan it made (the plan reads results, never the sweep names it relabels)."""
    if not path.is_file():
        return None, plan(cfg, None, precision)
    with open(path.with_name(f".{path.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = pd.read_csv(path)
        runs = plan(cfg, done, precision)
        if done.empty:
            return done, runs
        named = {r.key(): r.sweep for r in runs}
        tested = tested_keys(done)  # a headline run without test rows is trained again, and named then
        want = pd.Series([None if named.get(k) == "seed" and k not in tested else named.get(k)
                          for k in row_keys(done)], index=done.index)
        # a headline run is "seed"; a "seed" run the plan no longer names headline (the chosen point moved on
        # a later result) gets the name the plan gives its key
        relabel = want.notna() & (done["sweep"] != want) & ((want == "seed") | (done["sweep"] == "seed"))
        if relabel.any():
            done.loc[relabel, "sweep"] = want[relabel]
            write_csv_atomic(done, path)
    return done, runs


def append_run(path: Path, rows: pd.DataFrame) -> pd.DataFrame:
    """``path``'s rows with this run's replacing any earlier rows of the same key, written atomically;
    other sweeps may append at the same time (one lock)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        out = merge_rows(path, with_precision(rows), KEY, prepare=with_precision)  # rows from before the column: fp32
        first = [c for c in COLUMNS if c in out.columns]
        out = out[first + [c for c in out.columns if c not in first]]
        write_csv_atomic(out, path)
    return out


def precision_check(done: pd.DataFrame | None, spec: str) -> pd.DataFrame:
    """Runs of ``spec`` at the (budget, learning rate) points where both precisions were trained: one row per
    (budget_steps, learning_rate, precision) with the mean, sd and number of seeds of the runs' mean dev retention."""
    done = with_precision(done)
    if done is None or done.empty:
        return pd.DataFrame(columns=["budget_steps", "learning_rate", "precision", "mean", "sd", "seeds"])
    d = done[(done["spec"] == spec) & (done["phase"] == "dev") & (done["step"] == done["budget_steps"])]
    point = ["budget_steps", "learning_rate"]
    per_run = d.groupby(point + ["precision", "seed"], as_index=False)["retention"].mean()
    both = per_run.groupby(point)["precision"].transform("nunique")
    return per_run[both > 1].groupby(point + ["precision"], as_index=False).agg(
        mean=("retention", "mean"), sd=("retention", "std"), seeds=("seed", "nunique"))


def headline(done: pd.DataFrame | None, spec: str) -> pd.DataFrame:
    """The seed runs of ``spec`` on the full test collections: one row per (budget_steps, learning_rate)
    with the mean over seeds of each run's mean test retention, its sd, min, max and number of seeds."""
    cols = ["budget_steps", "learning_rate", "mean", "sd", "lo", "hi", "seeds"]
    if done is None or done.empty or "phase" not in done.columns:
        return pd.DataFrame(columns=cols)
    d = with_precision(done)
    d = d[(d["spec"] == spec) & (d["phase"] == "test") & (d["sweep"] == "seed")]
    return seed_spread(d, ["budget_steps", "learning_rate"])[cols]


def headline_notes(cfg: dict, done: pd.DataFrame | None, precision: str = "fp32") -> list[str]:
    """Per student of ``cfg``'s sweep, where its headline runs stand: the chosen budget and rate with the seeds
    still to train, or what the seed runs wait for (the budget doubling or the learning-rate grid: `make budgets`)."""
    lines = []
    keys, tested = done_keys(done), tested_keys(done)
    for spec, s in student_settings(cfg).items():
        runs = plan(only_students(cfg, [spec]), done, precision)
        seeds = [r for r in runs if r.sweep == "seed"]
        if seeds:
            left = [r.seed for r in seeds if r.key() not in tested]
            lines.append(f"{spec}: headline at {seeds[0].budget_steps} steps, lr {seeds[0].learning_rate:g} (of every point "
                         f"measured on dev, the smallest budget within {100 * s['flat']:.0f} pt of the best); seeds "
                         f"{[r.seed for r in seeds]}" + (f", {left} still to train" if left else ", all trained") + ".")
            continue
        wait = [r for r in runs if r.key() not in keys]
        if not wait or any(r.sweep == "lr" for r in wait):
            what = f"the learning-rate grid at {s['lr_budget_steps']} steps"
        else:  # the grid is done: the last run planned is the next doubling at the chosen rate
            what = (f"the {'tuned ' if wait[-1].sweep == 'tuned' else ''}budget run at {wait[-1].budget_steps} steps, "
                    f"lr {wait[-1].learning_rate:g}")
        lines.append(f"{spec}: no headline yet; its seed runs wait for {what} (`make budgets`, or headline_runs='all').")
    return lines


def summary(done: pd.DataFrame, cfg: dict) -> list[str]:
    """One line per student: mean dev retention per budget, where it flattens, the chosen budget and rate;
    and the precision check where there is one."""
    lines = []
    done = with_precision(done)
    with_headline = {r.spec for r in plan(cfg, done) if r.sweep == "seed"}
    for spec, s in student_settings(cfg).items():
        chk = precision_check(done, spec)
        for (steps, lr), g in chk.groupby(["budget_steps", "learning_rate"]):
            parts = [f"{r.precision} {100 * r.mean:.1f}%" + (f" \u00b1 {100 * r.sd:.1f}" if r.seeds > 1 else "")
                     + f" ({r.seeds} seed{'s' if r.seeds > 1 else ''})" for r in g.itertuples()]
            lines.append(f"{spec} precision check at {steps} steps, lr {lr:g}: " + " vs ".join(parts) + ".")
        curve = mean_retention(done, spec, s["learning_rate"], s["seeds"][0])
        if curve.empty:
            lines.append(f"{spec}: no finished run yet.")
            continue
        pts = ", ".join(f"{b} {100 * v:.1f}%" for b, v in curve.items())
        state = "flat (two doublings < {:.0f} pt)".format(100 * s["flat"]) if flattened(curve, s["flat"]) \
            else "still rising" if len(curve) >= 2 and curve.iloc[-1] > curve.iloc[-2] else "not flat yet"
        lines.append(f"{spec} (lr {s['learning_rate']:g}): dev retention by budget {pts}; {state}; "
                     f"smallest budget within {100 * s['flat']:.0f} pt of the best: {converged_budget(curve, s['flat'])}.")
        tuned = done[(done["spec"] == spec) & done["sweep"].isin(["tuned", "seed"])]["learning_rate"].unique()
        for lr in sorted(x for x in tuned if abs(x - s["learning_rate"]) > 1e-12):
            c = mean_retention(done, spec, lr, s["seeds"][0])
            state = "flat" if flattened(c, s["flat"]) else "not flat yet"
            lines.append(f"{spec} at the chosen lr {lr:g} (tuned): dev retention by budget "
                         + ", ".join(f"{b} {100 * v:.1f}%" for b, v in c.items()) + f"; {state}.")
        if spec in with_headline:
            steps, lr = chosen_point(done, spec, s["seeds"][0], s["flat"])
            lines.append(f"{spec} headline point: {steps} steps, lr {lr:g} (of every point measured on dev, the "
                         f"smallest budget within {100 * s['flat']:.0f} pt of the best).")
        for r in headline(done, spec).itertuples():
            lines.append(f"{spec} headline ({r.budget_steps} steps, lr {r.learning_rate:g}): test retention "
                         f"{100 * r.mean:.1f}%" + (f" \u00b1 {100 * r.sd:.1f} sd" if r.seeds > 1 else "")
                         + f" ({r.seeds} seed{'s' if r.seeds > 1 else ''}, range {100 * r.lo:.1f}-{100 * r.hi:.1f}).")
    return lines



