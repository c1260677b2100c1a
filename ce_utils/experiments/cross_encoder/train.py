"""The cross encoder: loaded from the hub (paper profile) or trained here (default profile).

No cross encoder can be downloaded offline, so the default profile fine-tunes one from the
offline MiniLM weights with sentence-transformers' ``CrossEncoderTrainer`` on SciFact's *train*
qrels. The recipe is listwise: per training (query, positive) one example holds the positive
and ``negatives_per_query`` hard negatives mined by the dual encoder from its top ``mine_depth``
over the *whole* corpus (every judged positive of the query removed); the loss is the softmax
cross-entropy of the positive among those candidates (sentence-transformers'
``MultipleNegativesRankingLoss`` for cross encoders, with no in-batch negatives, raw logits and
scale 1). Pointwise BCE with one negative per query does not learn within a CPU budget; this does.

The base may be a plain encoder (the default: the DE's own MiniLM weights, a fresh one-logit head) or a
pair classifier with several labels (the judge profile: an NLI-style model trained apart from the DE). A
classifier's head is folded into one logit that starts as the log-odds direction of its relevance label
(``relevance_head``: that label's row minus the mean of the others), so fine-tuning starts from what the
classifier already scores instead of from a random head.

Model selection uses a *dev* split carved from the train queries (never test queries): every
``eval_steps`` the CE re-ranks the DE's top ``dev_depth`` for the dev queries over the whole
corpus, scored with the same pytrec_eval metrics as every result table; the best step's weights
are kept and the learning curve is returned (and written to ``ce_training.csv`` by notebook 01).
Training is seed-fixed and saved under the profile's models_dir, so later notebooks reuse it.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import time
from pathlib import Path

import fcntl
import torch
from datasets import Dataset
from sentence_transformers import (CrossEncoder, SentenceTransformer, SentenceTransformerTrainer,
                                   SentenceTransformerTrainingArguments)
from sentence_transformers.base.evaluation.evaluator import BaseEvaluator
from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
from sentence_transformers.cross_encoder.losses import MultipleNegativesRankingLoss as CrossEncoderMNRL
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from torch import nn
from transformers import (AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback,
                          set_seed)
from ce_utils.core.config import ConfigError, section
from ce_utils.core.data import BeirDataset
from ce_utils.core.encode import check_dtype, encode_settings, forget_fingerprint
from ce_utils.core.models import (converted_info, default_device, entailment_index, load_cross_encoder,
                                  load_sentence_transformer, resolve_model, TRAINED_INFO, training_record)
from ce_utils.core.train import trainer_kwargs
from ce_utils.core.retrieval import evaluate, rerank
from ce_utils.core.runinfo import run_metadata
from ce_utils.core.scoring import score_pairs_fn
from ce_utils.experiments.cross_encoder.data import training_data
from ce_utils.core.io import save_model


log = logging.getLogger(__name__)
CURVE_FILE = "learning_curve.json"
CURVE_COLUMNS = ["step", "minutes", "dev_NDCG@10", "dev_MRR@10", "first_stage_NDCG@10", "first_stage_MRR@10",
                 "train_loss", "max_length", "selected", "n_dev_queries", "dev_depth"]


# --------------------------------------------------------------------------- data
def cross_encoder_path(cfg: dict, seed: int | None = None) -> Path | None:
    """Where a ``trained:`` CE lives (``None`` for a hub / local CE): ``models_dir/<name>``, and for a training
    seed other than the profile's ``models_dir/<name>-s<seed>``."""
    spec = cfg["models"]["ce"]
    if not spec.startswith("trained:"):
        return None
    name = spec.split(":", 1)[1]
    if seed is not None and int(seed) != int(cfg.get("seed", 42)):
        name = f"{name}-s{int(seed)}"
    return Path(cfg["models_dir"]) / name


# --------------------------------------------------------------------------- dev evaluation


def rerank_quality(model, ds: BeirDataset, qids, first: dict, depth: int, metrics=("NDCG@10", "MRR@10"),
                   batch_size: int = 32, dtype: str | None = None, kind: str = "ce") -> tuple[dict, dict]:
    """(first-stage metrics, re-ranked metrics) on ``qids``: ``model`` re-scores the top ``depth``."""
    qrels = {q: ds.qrels[q] for q in qids}
    run = {q: first[q] for q in qids}
    docs = {d: t for d, t in zip(ds.doc_ids, ds.doc_texts())}
    fn = score_pairs_fn(model, ds.queries, docs, batch_size, False, dtype, kind)
    return evaluate(qrels, run, metrics), evaluate(qrels, rerank(run, fn, depth), metrics)


def _dev_evaluator(data: dict, depth: int, batch_size: int, dtype: str, max_length: int, kind: str):
    """A sentence-transformers evaluator: NDCG@10 / MRR@10 of the model re-scoring the DE's top
    ``depth`` for the dev queries (pytrec_eval, as every table of this project)."""

    ds, dev, ranked = data["dataset"], data["dev_queries"], data["ranked"]
    attr = "max_length" if kind == "ce" else "max_seq_length"

    class DevRerankEvaluator(BaseEvaluator):
        def __init__(self):
            super().__init__()
            self.primary_metric = "ndcg@10"
            self.name = "dev"

        def __call__(self, model, output_path=None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
            old = getattr(model, attr)
            setattr(model, attr, max_length)
            try:
                first, new = rerank_quality(model, ds, dev, ranked, depth, batch_size=batch_size, dtype=dtype,
                                            kind=kind)
            finally:
                setattr(model, attr, old)
            metrics = {"ndcg@10": new["NDCG@10"], "mrr@10": new["MRR@10"],
                       "first_ndcg@10": first["NDCG@10"], "first_mrr@10": first["MRR@10"]}
            metrics = self.prefix_name_to_metrics(metrics, self.name)
            self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
            return metrics

    return DevRerankEvaluator()


def _curve_callback(curve: list, state: dict, t0: float, max_length: int, depth: int, n_dev: int):
    """Records every dev evaluation (step, minutes, metrics) and keeps the best weights."""

    class Curve(TrainerCallback):
        last_loss = float("nan")

        def on_log(self, args, st, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.last_loss = float(logs["loss"])

        def on_evaluate(self, args, st, control, metrics=None, model=None, **kw):
            if not metrics or "eval_dev_ndcg@10" not in metrics:
                return
            row = {"step": int(st.global_step), "minutes": round((time.time() - t0) / 60, 2),
                   "dev_NDCG@10": metrics["eval_dev_ndcg@10"], "dev_MRR@10": metrics["eval_dev_mrr@10"],
                   "first_stage_NDCG@10": metrics["eval_dev_first_ndcg@10"],
                   "first_stage_MRR@10": metrics["eval_dev_first_mrr@10"], "train_loss": self.last_loss,
                   "max_length": max_length, "selected": False, "n_dev_queries": n_dev, "dev_depth": depth}
            curve.append(row)
            log.info("dev step %d: NDCG@10 %.4f (first stage %.4f)", row["step"], row["dev_NDCG@10"],
                     row["first_stage_NDCG@10"])
            if model is not None and row["dev_NDCG@10"] > state.get("best", -1.0):
                state.update(best=row["dev_NDCG@10"], step=row["step"],
                             weights=copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()}))

    return Curve()


# --------------------------------------------------------------------------- training
def relevance_head(base: str | Path, work: Path) -> str:
    """``base`` as a one-logit pair model: a folder as it is when its config has one label; for a classifier
    with several labels, a copy in ``work`` whose head is one logit, its weights the relevance label's row
    minus the mean of the other rows (and so for the bias): the classifier's log-odds of relevance for two
    labels. The relevance label: the converter's record (``relevance_label``), else the entailment label."""
    config = AutoConfig.from_pretrained(str(base))
    n = int(getattr(config, "num_labels", 1) or 1)
    if n <= 1 or not getattr(config, "architectures", None) or not any(
            a.endswith("ForSequenceClassification") for a in config.architectures):
        return str(base)
    label = converted_info(base).get("relevance_label")
    label = int(label) if label is not None else entailment_index(config)
    clf = AutoModelForSequenceClassification.from_pretrained(str(base))
    head = clf.classifier if hasattr(clf, "classifier") else None
    if not isinstance(head, nn.Linear):
        raise ConfigError(f"ce_training.base {base}: a {n}-label classifier whose head is not one linear layer; "
                          "give a one-logit model or a plain encoder as the base.")
    others = [i for i in range(n) if i != label]
    one = nn.Linear(head.in_features, 1)
    with torch.no_grad():
        one.weight.copy_(head.weight[label:label + 1] - head.weight[others].mean(0, keepdim=True))
        one.bias.copy_(head.bias[label:label + 1] - head.bias[others].mean(0, keepdim=True))
    clf.classifier = one
    clf.config.num_labels = 1
    clf.config.id2label, clf.config.label2id = {0: "relevance"}, {"relevance": 0}
    clf.num_labels = 1
    work.mkdir(parents=True, exist_ok=True)
    clf.save_pretrained(str(work))
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(work))
    return str(work)


def listwise_loss(model):
    """Softmax cross-entropy of the positive among its hard negatives (raw logits, scale 1, no
    in-batch negatives): sentence-transformers' cross-encoder ``MultipleNegativesRankingLoss``
    with in-batch sampling off, and every (query, candidate) pair of a batch scored in one
    forward pass (the library scores one candidate column per pass: 2x slower on CPU)."""

    class ListwiseSoftmaxLoss(CrossEncoderMNRL):
        def forward(self, inputs, labels=None, prompt=None, task=None):
            anchors, columns = inputs[0], inputs[1:]          # columns: positive, negative_1..n
            pairs = [[a, c] for col in columns for a, c in zip(anchors, col)]
            logits = self.call_model_with_pairs(pairs, prompt=prompt, task=task)
            logits = logits.reshape(len(columns), len(anchors)).T.float()  # [batch, 1 + n]
            target = torch.zeros(len(anchors), dtype=torch.long, device=logits.device)
            return self.cross_entropy_loss(self.scale * self.activation_fn(logits), target)

    return ListwiseSoftmaxLoss(model, num_negatives=None, scale=1.0, activation_fn=nn.Identity())


RECIPES = {
    "ce": "listwise: softmax cross-entropy over 1 positive + DE-mined hard negatives (cross encoder)",
    "de": ("MultipleNegativesRankingLoss over the same positives + DE-mined hard negatives, plus in-batch "
           "negatives (dual encoder, same queries, steps, learning rate and length as the CE)"),
}


def train_listwise(cfg: dict, output: str | Path, kind: str = "ce", device: str | None = None,
                   data: dict | None = None, seed: int | None = None):
    """Fine-tune ``ce_training.base`` on the listwise SciFact-train data and save it (with a JSON
    record and the dev learning curve) to ``output``; returns (model, info).

    ``kind="ce"``: a cross encoder (:func:`listwise_loss`). ``kind="de"``: the same-data DE
    control of the paper's setting, a dual encoder fine-tuned from the same base on the same
    examples, with the same budget, learning rate and token length (sentence-transformers'
    ``MultipleNegativesRankingLoss``). Both keep the dev split's best step. ``seed``: the training seed (head
    initialisation, example order, dropout; default the profile's); the dev split and the mined negatives
    always come from the profile's seed, so the seeds of one CE differ in training only."""

    if kind not in RECIPES:
        raise ConfigError(f"kind must be 'ce' or 'de', not {kind!r}.")
    tc = section(cfg, "ce_training")
    seed = int(cfg.get("seed", 42) if seed is None else seed)
    set_seed(seed)
    device = device or default_device()
    t_start = time.time()
    data = data or training_data(cfg, tc, device)
    examples = data["examples"]
    max_length = int(tc.get("max_length", 128))
    base = resolve_model(tc["base"], cfg)
    if kind == "ce":
        Trainer, Args = CrossEncoderTrainer, CrossEncoderTrainingArguments
        base = relevance_head(base, Path(output).parent / f".{Path(output).name}-base")
        model = CrossEncoder(base, num_labels=1, max_length=max_length, device=device)
        loss = listwise_loss(model)
        train = Dataset.from_list(examples)
    else:
        Trainer, Args = SentenceTransformerTrainer, SentenceTransformerTrainingArguments
        model = SentenceTransformer(base, device=device)
        eval_length = model.max_seq_length
        model.max_seq_length = max_length
        loss = MultipleNegativesRankingLoss(model)
        train = Dataset.from_list([{"anchor": e["query"], **{k: v for k, v in e.items() if k != "query"}}
                                   for e in examples])
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    work = output.parent / f".{output.name}-checkpoints"
    dtype = check_dtype(tc.get("dtype", "auto"), device)
    depth = int(tc.get("dev_depth", 20))
    extra = {"bf16": dtype == "bf16", "fp16": dtype == "fp16"}
    curve: list[dict] = []
    best: dict = {}
    evaluator = None
    if data["dev_queries"] and tc.get("eval_steps"):
        evaluator = _dev_evaluator(data, depth, encode_settings(cfg)["batch_size"], dtype, max_length, kind)
        extra.update(eval_strategy="steps", eval_steps=int(tc["eval_steps"]))
    args = Args(**trainer_kwargs(tc, work, seed, device, batch_size=4, learning_rate=8e-5, logging_steps=25,
                                 **extra))
    t0 = time.time()
    recorder = _curve_callback(curve, best, t0, max_length, depth, len(data["dev_queries"]))
    trainer = Trainer(model=model, args=args, train_dataset=train, loss=loss, evaluator=evaluator,
                      callbacks=[recorder] if evaluator else None)

    def record():  # an evaluation outside the trainer's schedule (step 0, the last step)
        metrics = {f"eval_{k}": v for k, v in evaluator(model).items()}
        recorder.on_evaluate(args, trainer.state, trainer.control, metrics=metrics, model=model)

    if evaluator is not None:
        record()  # step 0: the base model (for the CE: the base's weights with a fresh head)
    result = trainer.train()
    train_minutes = (time.time() - t0) / 60
    if evaluator is not None and (not curve or curve[-1]["step"] != int(result.global_step)):
        record()
    if best.get("weights") is not None:  # model selection on the dev split
        model.load_state_dict(best["weights"])
        for row in curve:
            row["selected"] = row["step"] == best["step"]
    forget_fingerprint(model)
    if kind == "de":
        model.max_seq_length = eval_length
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(output.parent / f".{output.name}-base", ignore_errors=True)  # relevance_head's copy, if any
    ds = data["dataset"]
    info = {"kind": kind, "base": tc["base"], "dataset": tc["dataset"], "split": tc.get("split", "train"),
            "recipe": RECIPES[kind], "n_train_queries": len(data["train_queries"]),
            "n_dev_queries": len(data["dev_queries"]), "n_examples": len(examples),
            "n_negatives": data["n_negatives"], "n_docs_mined": len(ds.corpus),
            "training_loss": float(result.training_loss), "global_steps": int(result.global_step),
            "selected_step": best.get("step", int(result.global_step)), "dev_NDCG@10": best.get("best"),
            "train_minutes": round(train_minutes, 2), "total_minutes": round((time.time() - t_start) / 60, 2),
            "hyperparameters": tc, **run_metadata(cfg, seed=seed, device=device)}
    save_model(model, output, {TRAINED_INFO: json.dumps(info, indent=1, default=str),
                               CURVE_FILE: json.dumps(curve, indent=1, default=str)})
    return model, info


def _trained(cfg: dict, path: Path, kind: str, device: str | None, retrain: bool, seed: int | None = None) -> dict:
    """Train into ``path`` unless a finished model is there (one training at a time: others wait
    on a lock, then load it); returns its training record."""
    if retrain or not (path / TRAINED_INFO).is_file():

        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.parent / f".{path.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if retrain or not (path / TRAINED_INFO).is_file():
                log.info("Training the %s into %s", "cross encoder" if kind == "ce" else "DE control", path)
                train_listwise(cfg, path, kind, device=device, seed=seed)
    return json.loads((path / TRAINED_INFO).read_text())  # a training that wrote no record is an error


def load_or_train_cross_encoder(cfg: dict, device: str | None = None, retrain: bool = False, seed: int | None = None):
    """The profile's CE and a dict describing it. A ``trained:`` CE is trained on first use; ``seed`` other than
    the profile's: the same CE trained with that seed (:func:`cross_encoder_path`)."""
    spec = cfg["models"].get("ce")
    if not spec:
        raise ConfigError(f"Profile {cfg.get('name')!r} names no cross encoder (models.ce).")
    path = cross_encoder_path(cfg, seed)
    max_length = rerank_max_length(cfg)
    if path is None:
        if seed is not None and int(seed) != int(cfg.get("seed", 42)):
            raise ConfigError(f"models.ce {spec!r} is not trained here: it has no seeds (a trained: CE has).")
        return load_cross_encoder(spec, cfg, device=device, max_length=max_length), {"source": spec}
    info = _trained(cfg, path, "ce", device, retrain, seed)
    return load_cross_encoder(str(path), cfg, device=device, max_length=max_length), {"source": spec, **info}


def de_control_path(cfg: dict) -> Path:
    """Where the same-data DE control lives: ``models.de_control`` (a ``trained:`` spec)."""
    spec = (cfg.get("models") or {}).get("de_control") or "trained:de-scifact"
    if not spec.startswith("trained:"):
        raise ConfigError(f"models.de_control must be a trained: spec, not {spec!r}.")
    return Path(cfg["models_dir"]) / spec.split(":", 1)[1]


def load_or_train_de_control(cfg: dict, device: str | None = None, retrain: bool = False):
    """The same-data DE control (trained on first use) and its training record."""

    path = de_control_path(cfg)
    info = _trained(cfg, path, "de", device, retrain)
    return SentenceTransformer(str(path), device=device or default_device()), {"source": str(path), **info}


def rerank_max_length(cfg: dict) -> int | None:
    """Query + passage tokens when the CE re-ranks: ``eval.rerank_max_length`` (None = the CE's own)."""
    value = (cfg.get("eval") or {}).get("rerank_max_length")
    return int(value) if value else None


def learning_curve(cfg: dict, spec: str | None = None) -> list[dict]:
    """The dev learning curve saved with a ``trained:`` model (default: the profile's CE); [] for
    a hub / local model."""
    spec = spec or cfg["models"].get("ce") or ""
    if not spec.startswith("trained:"):
        return []
    path = Path(cfg["models_dir"]) / spec.split(":", 1)[1] / CURVE_FILE
    return json.loads(path.read_text()) if path.is_file() else []


def dev_length_rows(cfg: dict, ce, lengths, device: str | None = None) -> list[dict]:
    """The trained CE on the dev split (re-ranking the DE's top ``dev_depth``) at each query +
    passage length in ``lengths``: how long a pair the CE should read when it re-ranks, chosen on
    dev queries (never test queries). Rows in the learning-curve format, at the selected step."""
    tc = section(cfg, "ce_training")
    data = training_data(cfg, tc, device)
    depth = int(tc.get("dev_depth", 20))
    info_path = cross_encoder_path(cfg)
    step = training_record(info_path).get("selected_step") if info_path else None
    old, rows = ce.max_length, []
    try:
        for length in lengths:
            ce.max_length = int(length)
            first, new = rerank_quality(ce, data["dataset"], data["dev_queries"], data["ranked"], depth,
                                        batch_size=encode_settings(cfg)["batch_size"], dtype=tc.get("dtype"))
            rows.append({"step": step, "minutes": None, "dev_NDCG@10": new["NDCG@10"], "dev_MRR@10": new["MRR@10"],
                         "first_stage_NDCG@10": first["NDCG@10"], "first_stage_MRR@10": first["MRR@10"],
                         "train_loss": None, "max_length": int(length), "selected": False,
                         "n_dev_queries": len(data["dev_queries"]), "dev_depth": depth})
    finally:
        ce.max_length = old
    return rows


def load_probe_model(cfg: dict, kind: str, spec: str, device: str | None = None, retrain: bool = False):
    """(model, info) of a model notebook 01 probes. The profile's own CE comes from
    :func:`load_or_train_cross_encoder`, its DE control (``models.de_control``) from
    :func:`load_or_train_de_control` (both trained on first use); any other spec is loaded as it is."""
    if kind == "ce":
        if spec == cfg["models"].get("ce"):
            return load_or_train_cross_encoder(cfg, device=device, retrain=retrain)
        return load_cross_encoder(spec, cfg, device=device), {"source": spec}
    if spec == (cfg["models"].get("de_control") or "trained:de-scifact") and spec.startswith("trained:"):
        return load_or_train_de_control(cfg, device=device, retrain=retrain)
    return load_sentence_transformer(spec, cfg, device=device), {"source": spec}
