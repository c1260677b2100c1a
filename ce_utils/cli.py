"""Every command line of the project, in one place: ``python -m ce_utils <command> --help``.

    run            run notebooks headlessly with papermill (``make reproduce``, ``make figures``)
    data           fetch what a profile needs from official sources (``make data``)
    convert        turn an optional packaged model into a plain model folder once
    budgets        the budget sweep: independent runs per budget, learning rate and seed (``make budgets``)
    ce-seeds       the CE trained with every seed of ce_training.seeds: its re-ranking gain with its spread
    matmul         this CPU's matrix-multiply rate at the query encoder's own shapes (fp32, bf16, int8)
    profile-call   where one query-encoding call's time goes, per backend (tokeniser, layers, ONNX operators)
    curve          learning curves of query / DE-k CE students on dev splits (``make query-curve``)
    peer-check     a model on SciFact against its published score (``make peer-check``)
    probe-other-ce paper 1's layer probe of another cross encoder (``make probe-other-ce``)
    distill-queries paper 2's recipe on your own teacher and queries (no profile needed)
    export         a query student (or any sentence-transformers model) as one lean ONNX graph + tokenizer
    encode         encode a query file with an exported folder (onnxruntime + tokenizers only)
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import Sequence

import pandas as pd
from ce_utils import convert, runner
from ce_utils.core import download, lean
from ce_utils.core.config import ConfigError, load_profile, output_dir
from ce_utils.core.data import load_query_file
from ce_utils.core.io import (add_model_ids, model_label, save_array_atomic, save_results, with_metadata, write_csv_atomic,
                              write_rows)
from ce_utils.core.models import default_device, load_sentence_transformer
from ce_utils.core.runinfo import run_metadata
from ce_utils.core.students import DE2CE_INITS
from ce_utils.experiments import peer_check, probing
from ce_utils.experiments.cross_encoder import load_or_train_cross_encoder
from ce_utils.experiments.cross_encoder import seeds as ce_seeds
from ce_utils.experiments.curves import budgets
from ce_utils.experiments.curves import run as curves
from ce_utils.experiments.speed import backends as speed_backends
from ce_utils.experiments.speed import call_profile, matmul
from ce_utils.experiments.speed.build import query_student_name, trained_query_student
from ce_utils.experiments.speed.inputs import query_sample, speed_section
from ce_utils.experiments.query_distill import distill_query_encoder
from ce_utils.report.ce_seeds import gain_summary
from ce_utils.report.curves import curve_summary
from ce_utils.report import speed as report_speed


def handles_errors(command):
    """The one error handler of every command: a bad parameter, a missing file or model, and an offline
    download end the command with one line that names the fix (exit 2; a failed download exits 1), no
    traceback."""

    @functools.wraps(command)
    def wrapped(argv=None) -> int:
        try:
            return command(argv)
        except download.OfflineError as exc:
            print(str(exc), file=sys.stderr)
            return 2
        except download.DownloadError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except (ConfigError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    return wrapped


@handles_errors
def cmd_data(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ce_utils data", description=download.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="default", help="configs/<name>.yaml or a YAML path")
    ap.add_argument("--dest", default=str(download.repo_root() / "data"), help="the data directory to fill (default: data/)")
    ap.add_argument("--sources", default=None, help="data-sources YAML (default: configs/data_sources.yaml)")
    ap.add_argument("--only", nargs="+", metavar="NAME",
                    help="only these datasets / query files / STS sets of the profile (or source names)")
    ap.add_argument("--mirror", default=None, help=f"base URL replacing scheme+host of every source (${download.MIRROR_ENV})")
    ap.add_argument("--dry-run", action="store_true", help="print what would be downloaded, download nothing")
    ap.add_argument("--keep-archives", action="store_true", help=f"keep the verified downloads in {download.DOWNLOADS}/")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target has no official download")
    ap.add_argument("--quiet", action="store_true", help="no progress bars or progress lines")
    args = ap.parse_args(argv)
    return download.run(args.profile, args.dest, args.sources, only=args.only, mirror=args.mirror, quiet=args.quiet,
               dry_run=args.dry_run, keep_archives=args.keep_archives, strict=args.strict)


@handles_errors
def cmd_peer_check(argv=None) -> int:
    """``python -m ce_utils.experiments.peer_check --profile default --model SPEC [--model SPEC ...]``: the peer
    check of models other than the profile's DE, merged into ``results/<profile>/peer_check_models.csv``."""


    ap = argparse.ArgumentParser(prog="python -m ce_utils peer-check", description=cmd_peer_check.__doc__)
    ap.add_argument("--profile", default="default")
    ap.add_argument("--model", action="append", required=True, help="model spec (repeatable)")
    ap.add_argument("--datasets", nargs="*", default=None)
    ap.add_argument("--results-dir", default=None)
    args = ap.parse_args(argv)
    cfg = load_profile(args.profile, {"results_dir": args.results_dir})
    device = default_device()
    out = output_dir(cfg, "results_dir") / peer_check.MODELS_CSV
    meta = run_metadata(cfg, int(cfg.get("seed", 42)), device)
    for spec in args.model:
        df = peer_check.run_peer_check(cfg, spec, args.datasets, device=device)
        df = with_metadata(add_model_ids(df, "peer_check.csv"), meta)
        merged = peer_check.merge_peer_rows(out, df)
        write_csv_atomic(merged, out)
        print(df[["model", "dataset", "metric", "value", "published", "delta", "within_tolerance"]].to_string())
        bad = peer_check.failures(df)
        if len(bad):
            print(f"WARNING: {spec} misses its published score beyond the tolerance.", file=sys.stderr)
    print(f"wrote {out}")
    return 0


@handles_errors
def cmd_probe_other_ce(argv=None) -> int:
    """``python -m ce_utils probe-other-ce --profile default --label judge --ce SPEC``: paper 1's probe of
    another cross encoder, merged into ``results/<profile>/layer_probe_extra.csv`` and
    ``ce_quality_extra.csv`` (its rows replace its earlier ones)."""


    ap = argparse.ArgumentParser(prog="python -m ce_utils probe-other-ce", description=cmd_probe_other_ce.__doc__)
    ap.add_argument("--profile", default="default")
    ap.add_argument("--label", required=True, help="model_kind of its rows, e.g. judge")
    ap.add_argument("--ce", required=True, help="cross-encoder spec (ce_utils.core.models)")
    ap.add_argument("--dtype", default=None, help="the CE's encode dtype (fp32 | bf16 | auto; default: the profile's)")
    ap.add_argument("--first-stage-dtype", default=None, help="the DE first stage's encode dtype (default: --dtype)")
    ap.add_argument("--results-dir", default=None)
    args = ap.parse_args(argv)
    cfg = load_profile(args.profile, {"results_dir": args.results_dir, "encode.dtype": args.dtype})
    device = default_device()
    out = output_dir(cfg, "results_dir")
    meta = run_metadata(cfg, int(cfg.get("seed", 42)), device)
    rows, quality, works = probing.probe_other_ce(cfg, args.label, args.ce, device=device,
                                          first_stage_dtype=args.first_stage_dtype)
    written = []
    for name, new in [(probing.EXTRA_QUALITY_CSV, quality), (probing.EXTRA_PROBE_CSV, rows)]:
        if not new:
            continue
        df = with_metadata(add_model_ids(pd.DataFrame(new), name), meta)
        col = "model_kind" if name == probing.EXTRA_PROBE_CSV else "model"
        if name == probing.EXTRA_QUALITY_CSV:  # the DE first stage is shared: keep one copy per (dataset, depth, sample)
            old = pd.read_csv(out / name) if (out / name).is_file() else df.iloc[0:0]
            old = old[old["model"] != model_label(args.ce)]
            key = ["model", "stage", "dataset", "metric", "depth", "n_queries", "encode_dtype"]
            df = pd.concat([old, df], ignore_index=True).drop_duplicates(key, keep="last")
            write_csv_atomic(df, out / name)
        else:
            write_rows(out / name, df, col)
        written.append(name)
    q = pd.DataFrame(quality)
    if len(q):
        print(q[q["metric"] == "NDCG@10"][["model", "stage", "value", "n_queries", "depth"]].to_string(index=False))
    print(f"{args.label}: ce_works={works}; wrote {', '.join(written)} in {out}")
    return 0


@handles_errors
def cmd_curve(argv: Sequence[str] | None = None) -> int:


    ap = argparse.ArgumentParser(prog="python -m ce_utils curve", description=curves.__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--strategy", action="append", default=[], help="a query student, e.g. subset:0,5 (repeatable)")
    ap.add_argument("--de2ce", action="append", default=[], metavar="INIT:K",
                    help="a DE-k CE student of notebook 02, e.g. ce:1 (DE-2 CE), de:1, random:1 (repeatable)")
    ap.add_argument("--max-steps", type=int, default=300)
    ap.add_argument("--eval-steps", type=int, default=25)
    ap.add_argument("--dev", action="append", default=None, metavar="DATASET=SPLIT",
                    help="a dev split carved from training data (repeatable; default: scifact=train, "
                         "nfcorpus-preprocessed=dev)")
    ap.add_argument("--test", action="store_true", help="also score the last student on the full test collections")
    ap.add_argument("--results-dir", default=None)
    args = ap.parse_args(argv)
    dev = None
    if args.dev:
        bad = [d for d in args.dev if d.count("=") != 1]
        if bad:
            raise ConfigError(f"--dev {bad[0]!r}: give DATASET=SPLIT, e.g. scifact=train.")
        dev = dict(d.split("=") for d in args.dev)
    cfg = load_profile(args.profile, {"results_dir": args.results_dir})
    device = default_device()
    out = output_dir(cfg, "results_dir") / curves.CURVE_CSV
    meta = run_metadata(cfg, int(cfg.get("seed", 42)), device)
    frames = []
    if not args.strategy and not args.de2ce:
        raise ConfigError("name at least one --strategy (query student) or --de2ce (DE-k CE student).")
    for spec in args.strategy:
        rows, _, info = curves.run_curve(cfg, spec, args.max_steps, args.eval_steps, dev=dev, device=device,
                                  test=args.test)
        frames.append(pd.DataFrame(rows).assign(kind="query-student", mode="asymmetric",
                                                train_loss=info["train_loss"]))
    for spec in args.de2ce:
        init, _, k = spec.partition(":")
        if init not in DE2CE_INITS or not k.isdigit() or int(k) < 1:
            raise ConfigError(f"--de2ce {spec!r}: give INIT:K with INIT {', '.join(DE2CE_INITS)} and K >= 1 "
                              "(e.g. ce:1).")
        rows, _, info = curves.run_de2ce_curve(cfg, init, int(k), args.max_steps, args.eval_steps, dev=dev,
                                        device=device, test=args.test)
        frames.append(pd.DataFrame(rows).assign(kind="de-k-ce", mode="symmetric", train_loss=info["train_loss"]))
    new = pd.concat(frames, ignore_index=True)
    new["model_id"] = [(f"qd:{s}@{int(st)}" if kd == "query-student" else f"de2ce:{s}@{int(st)}") if ph == "test"
                       else "" for s, st, ph, kd in zip(new["student"], new["step"], new["phase"], new["kind"])]
    new = write_rows(out, with_metadata(new, meta), "student")  # a student's rows replace its earlier ones
    for line in curve_summary(new):
        print(line)
    print(f"wrote {out}")
    return 0


@handles_errors
def cmd_budgets(argv: Sequence[str] | None = None) -> int:


    ap = argparse.ArgumentParser(prog="python -m ce_utils budgets", description=budgets.__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--student", action="append", default=[], help="only these specs of budgets.students (repeatable)")
    ap.add_argument("--sweep", action="append", default=[], choices=budgets.SWEEPS,
                    help="only the pending runs of these sweeps (repeatable), e.g. --sweep lr runs the learning-rate "
                         "grid before the next budget doubling")
    ap.add_argument("--max-runs", type=int, default=None, help="stop after this many runs")
    ap.add_argument("--dry-run", action="store_true", help="print the budgets.plan and what is done, train nothing")
    ap.add_argument("--results-dir", default=None)
    args = ap.parse_args(argv)
    cfg = budgets.only_students(load_profile(args.profile, {"results_dir": args.results_dir}), args.student)
    budgets.student_settings(cfg)
    path = output_dir(cfg, "results_dir") / budgets.BUDGETS_CSV
    device = default_device()
    precision = budgets.sweep_precision(cfg, device)
    print(f"new runs train in {precision} on {device}")
    if args.dry_run:
        done = pd.read_csv(path) if path.is_file() else None
        keys = budgets.done_keys(done)
        for r in budgets.plan(cfg, done, precision):
            print(f"{'done' if r.key() in keys else 'todo'}  {r.sweep:<6} {r.spec:<14} {r.budget_steps:>6} steps  "
                  f"lr {r.learning_rate:g}  seed {r.seed}  {r.precision}")

    def before(run):  # DE-2 CE starts from the profile's CE: trained on first use
        if run.spec.startswith(("de2ce:ce:", "de2ce:ce-top:")):
            load_or_train_cross_encoder(cfg, device)

    done = budgets.run_pending(cfg, path, device, args.sweep, 0 if args.dry_run else args.max_runs, before=before,
                               meta=lambda run: run_metadata(cfg, run.seed, device),
                               log=lambda line: print(line, flush=True))
    for line in budgets.summary(done, cfg):
        print(line)
    return 0


@handles_errors
def cmd_matmul(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ce_utils matmul", description=matmul.__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--tokens", type=int, nargs="+", default=[9, 16 * 12, 128 * 12],
                    help="batch x query length (default: 1 x 9, 16 x 12, 128 x 12)")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--results-dir", default=None)
    args = ap.parse_args(argv)
    cfg = load_profile(args.profile, {"results_dir": args.results_dir})
    rows = [r for t in args.threads for r in matmul.matmul_rows(args.tokens, threads=t, rounds=args.rounds)]
    out = output_dir(cfg, "results_dir") / "matmul.csv"
    save_results(rows, out, run_metadata(cfg, int(cfg.get("seed", 42)), "cpu"))
    print(report_speed.matmul_summary(rows).to_string(index=False))
    print(f"wrote {out}")
    return 0


@handles_errors
def cmd_profile_call(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ce_utils profile-call", description=call_profile.__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--model", action="append", default=[],
                    help="de (the full DE) or a trained query student's layers, e.g. 0,5 (repeatable; default: de, 0,5)")
    ap.add_argument("--backend", action="append", default=[], help="repeatable (default: torch, onnx, lean)")
    ap.add_argument("--batch-size", type=int, nargs="+", default=[1])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--results-dir", default=None)
    args = ap.parse_args(argv)
    cfg = load_profile(args.profile, {"results_dir": args.results_dir})
    names = args.backend or ["torch", "onnx", "lean"]
    speed_backends.check_backends(names)
    queries = query_sample(cfg, speed_section(cfg))
    models = []
    for spec in args.model or ["de", "0,5"]:
        if spec == "de":
            model = load_sentence_transformer(cfg["models"]["de"], cfg, device="cpu")
            name = f"full DE ({model_label(cfg['models']['de'])})"
        else:
            layers = [int(x) for x in spec.split(",")]
            model, name = trained_query_student(cfg, layers, "cpu"), query_student_name(layers)
            if model is None:
                raise ConfigError(f"no trained query student with layers {spec} in {cfg.get('models_dir')}: "
                                  "run notebook 03 first (`make reproduce ONLY=03`).")
        models.append((name, model))
    rows = call_profile.profile_models(cfg, models, names, queries, args.batch_size, args.repeats, args.threads)
    rows = with_metadata(rows, run_metadata(cfg, int(cfg.get("seed", 42)), "cpu"))
    out = output_dir(cfg, "results_dir") / "call_profile.csv"
    write_rows(out, rows, ["model", "backend", "batch_size", "threads"])  # a setting's rows replace its earlier ones
    print(rows.pivot_table(index="part", columns=["model", "backend", "batch_size"], values="ms", sort=False).round(3)
          .to_string())
    print(f"wrote {out}")
    return 0


@handles_errors
def cmd_ce_seeds(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ce_utils ce-seeds", description=ce_seeds.__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="default: ce_training.seeds")
    ap.add_argument("--results-dir", default=None)
    args = ap.parse_args(argv)
    cfg = load_profile(args.profile, {"results_dir": args.results_dir, "ce_training.seeds": args.seeds})
    ce_seeds.seed_settings(cfg)
    out = output_dir(cfg, "results_dir") / ce_seeds.CE_SEEDS_CSV
    df = ce_seeds.run_seeds(cfg, out, default_device())
    t = gain_summary(df[df["ce"] == cfg["models"]["ce"]])
    for r in t.itertuples():
        sd = "" if pd.isna(r.sd) else f" \u00b1 {r.sd:.4f}"
        print(f"{r.ce} on {r.dataset} {r.metric}: gain {r.mean:+.4f}{sd} over {r.seeds} seeds "
              f"(min {r.min:+.4f}, max {r.max:+.4f}): {r.verdict}")
    print(f"wrote {out}")
    return 0


def read_queries(path: str | Path) -> list[str]:
    """Query texts of a file: ``id<TAB>text`` lines (BEIR / MS MARCO query files), else one query per line."""
    lines = [l.rstrip("\n") for l in Path(path).read_text(encoding="utf-8").splitlines() if l.strip()]
    if lines and all("\t" in l for l in lines):
        return list(load_query_file(path).values())
    return lines


@handles_errors
def cmd_distill_queries(argv: Sequence[str] | None = None) -> int:
    """Paper 2's recipe on your own retriever: a query encoder from a subset of the teacher's layers, aligned
    with the teacher's query embeddings on unlabelled queries; the teacher keeps encoding the documents."""
    ap = argparse.ArgumentParser(prog="python -m ce_utils distill-queries", description=cmd_distill_queries.__doc__)
    ap.add_argument("--teacher", required=True, help="a sentence-transformers folder or hub id")
    ap.add_argument("--queries", required=True, help="id<TAB>text lines, or one query per line")
    ap.add_argument("--layers", default="0,-1", help="teacher layers kept, negative from the top (default 0,-1)")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps (default: --epochs over the queries)")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--learning-rate", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", required=True, help="folder for the student (SentenceTransformer(out) loads it)")
    args = ap.parse_args(argv)
    try:
        layers = [int(x) for x in args.layers.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--layers {args.layers!r}: give teacher layers as integers, e.g. 0,-1.") from None
    queries = read_queries(args.queries)
    distill_query_encoder(args.teacher, queries, layers, steps=args.steps, epochs=args.epochs,
                          batch_size=args.batch_size, learning_rate=args.learning_rate, seed=args.seed,
                          out=args.out)
    print(f"wrote {args.out}: {len(layers)} layers of {args.teacher}, {len(queries)} training queries")
    return 0


@handles_errors
def cmd_export(argv: Sequence[str] | None = None) -> int:
    """Export a sentence-transformers model (a query student, the full DE) as one ONNX graph with its pooling
    and normalisation, plus its fast tokenizer (ce_utils.core.lean)."""
    ap = argparse.ArgumentParser(prog="python -m ce_utils export", description=cmd_export.__doc__)
    ap.add_argument("--model", required=True, help="a sentence-transformers folder or hub id")
    ap.add_argument("--out", required=True, help="the folder to write (model.onnx, tokenizer.json, lean.json)")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--int8", action="store_true",
                    help="also quantise the graph's weights to int8 per channel (ONNX Runtime dynamic quantisation; "
                         "notebook 04's lean-int8) and encode with it")
    args = ap.parse_args(argv)
    out = lean.export_lean(args.model, args.out, args.opset)
    graphs = [lean.GRAPH]
    if args.int8:
        graphs.append(speed_backends.quantize_lean(out).name)
        lean.use_graph(out, graphs[-1])
    print(f"wrote {out}/ ({', '.join(graphs)}, {lean.TOKENIZER}, {lean.MANIFEST}: encodes with {graphs[-1]})")
    return 0


@handles_errors
def cmd_encode(argv: Sequence[str] | None = None) -> int:
    """Encode queries (id<TAB>text lines, or one per line) with an exported folder into a float32 .npy."""
    ap = argparse.ArgumentParser(prog="python -m ce_utils encode", description=cmd_encode.__doc__)
    ap.add_argument("--model", required=True, help="a folder written by `python -m ce_utils export`")
    ap.add_argument("--input", required=True, help="id<TAB>text lines, or one text per line")
    ap.add_argument("--out", required=True, help="the .npy to write, one row per input line")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args(argv)
    emb = lean.LeanEncoder(args.model, threads=args.threads).encode(read_queries(args.input), args.batch_size)
    save_array_atomic(emb, args.out)
    print(f"wrote {args.out}: {emb.shape[0]} x {emb.shape[1]}")
    return 0


@handles_errors
def cmd_run(argv: Sequence[str] | None = None) -> int:
    """The papermill runner (:mod:`ce_utils.runner`): notebooks of a profile, checked before any kernel."""
    return runner.main(list(argv or []))


COMMANDS = {"data": cmd_data, "export": cmd_export, "encode": cmd_encode, "distill-queries": cmd_distill_queries, "budgets": cmd_budgets, "ce-seeds": cmd_ce_seeds, "matmul": cmd_matmul, "profile-call": cmd_profile_call, "curve": cmd_curve, "peer-check": cmd_peer_check,
            "probe-other-ce": cmd_probe_other_ce}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {**COMMANDS, "run": cmd_run, "convert": convert.main}
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        print(__doc__.strip())
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nerror: unknown command {argv[0]!r}; choose one of: {', '.join(sorted(commands))}.", file=sys.stderr)
            return 2
        return 0
    return int(commands[argv[0]](argv[1:]) or 0)
