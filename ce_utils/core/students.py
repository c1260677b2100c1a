"""Students built from layers of other models (shared by notebooks 02 and 03).

A student is a copy of a template SentenceTransformer (same tokenizer, pooling and
normalisation) whose transformer keeps a chosen list of layers. Each student layer is
either copied from a source model's encoder layer, or freshly (randomly) initialised.
The embedding layer is copied from a chosen source, or randomly initialised.

* Wang & Lyu's query students: ``layer_subset_student(teacher, [0, 5])``.
* Ananthakrishnan et al.'s DE-k CE: ``compose_student(de, embeddings=ce,
  layers=[(ce, 0), RANDOM])`` (CE embeddings + CE layer 0 + one random layer).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Sequence, Union

import torch
from torch import nn
import re
from dataclasses import dataclass
from ce_utils.core.config import ConfigError


RANDOM = "random"
LayerSpec = Union[str, tuple]  # RANDOM, or (source_model, layer_index)


def backbone(model) -> nn.Module:
    """The BERT-like module (``.embeddings``, ``.encoder.layer``) inside a SentenceTransformer,
    a CrossEncoder, a transformers ``*ForSequenceClassification`` or a bare ``BertModel``."""
    m = model
    if hasattr(m, "__getitem__") and hasattr(m, "_modules") and len(m._modules) and hasattr(m[0], "auto_model"):
        m = m[0].auto_model  # SentenceTransformer / CrossEncoder first module
    if not hasattr(m, "encoder") and hasattr(m, "base_model"):
        m = m.base_model  # *ForSequenceClassification -> BertModel
    if not (hasattr(m, "embeddings") and hasattr(m, "encoder") and hasattr(m.encoder, "layer")):
        raise ConfigError(f"{type(model).__name__} has no BERT-style encoder layers to copy.")
    return m


def num_layers(model) -> int:
    return len(backbone(model).encoder.layer)


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    """Whether two modules hold the same parameter and buffer names with bit-identical tensors
    (how the notebooks and tests check that a layer was copied, not re-initialised)."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def check_layers(model, layers: Sequence[int], what: str = "model") -> None:
    n = num_layers(model)
    bad = [l for l in layers if not isinstance(l, int) or not 0 <= l < n]
    if bad:
        raise ConfigError(f"Layer index {bad} out of range for the {what}: it has layers 0..{n - 1}.")
    if len(set(layers)) != len(layers):
        raise ConfigError(f"Repeated layer index in {list(layers)}.")


def reset_output_hooks(model) -> None:
    """Forget transformers' output-capturing hooks (installed lazily, once, the first time a model
    is asked for ``output_hidden_states``). A model assembled from other models' layers carries the
    template's "installed" flag and none or foreign hooks on the new layers, so it would return no
    hidden states; after this reset they are installed afresh for its own module tree."""
    for module in backbone(model).modules():
        module._forward_hooks.clear()
        if "_output_capturing_hooks_installed" in module.__dict__:
            del module.__dict__["_output_capturing_hooks_installed"]


def compose_student(template, layers: Sequence[LayerSpec], embeddings=None, seed: int = 0):
    """A deep copy of ``template`` whose encoder layers are ``layers``.

    ``embeddings``: a model to copy the embedding layer from (default: the template),
    or ``RANDOM``. Every copied layer must match the template's hidden size."""
    if not layers:
        raise ConfigError("A student needs at least one layer.")
    torch.manual_seed(seed)
    student = copy.deepcopy(template)
    bb = backbone(student)
    config = bb.config
    fresh = type(bb)(copy.deepcopy(config))  # random initialisation, template's config
    new_layers = []
    for i, spec in enumerate(layers):
        if spec == RANDOM:
            new_layers.append(copy.deepcopy(fresh.encoder.layer[i % len(fresh.encoder.layer)]))
            continue
        source, index = spec
        check_layers(source, [index], "source model")
        new_layers.append(copy.deepcopy(backbone(source).encoder.layer[index]))
    bb.encoder.layer = nn.ModuleList(new_layers)
    bb.config.num_hidden_layers = len(new_layers)
    if embeddings is RANDOM or embeddings == RANDOM:
        bb.embeddings.load_state_dict(fresh.embeddings.state_dict())
    elif embeddings is not None:
        bb.embeddings.load_state_dict(backbone(embeddings).embeddings.state_dict())
    reset_output_hooks(student)
    return student


def absolute_layers(layers: Sequence[int], n_layers: int) -> list[int]:
    """Layer indices with negative ones counted from the top (``-1`` = the last of ``n_layers``)."""
    return [int(l) + n_layers if int(l) < 0 else int(l) for l in layers]


def layer_subset_student(teacher, layers: Sequence[int], seed: int = 0):
    """Wang & Lyu's initialisation: the teacher's embeddings and the chosen teacher layers (``-1`` = its top
    layer: ``[0, -1]`` is paper 2's best 2-layer student)."""
    layers = absolute_layers(layers, num_layers(teacher))
    check_layers(teacher, list(layers), "teacher")
    return compose_student(teacher, [(teacher, l) for l in layers], seed=seed)


@dataclass(frozen=True)
class Strategy:
    """A student initialisation: ``kind`` is ``subset`` (teacher layers) or ``onnx`` (another
    pretrained model, converted from ONNX)."""

    spec: str
    kind: str
    layers: tuple = ()
    name: str = ""

    @property
    def layers_str(self) -> str:
        return ",".join(str(l) for l in self.layers)

    @property
    def n_layers(self) -> int:
        return len(self.layers) if self.kind == "subset" else ONNX_L3_LAYERS


ONNX_STRATEGIES = ("onnx-l3",)


ONNX_L3_LAYERS = 3


_SPEC_HELP = ('Use "subset:i,j,..." (teacher layer indices), "first:k" (the first k teacher layers) '
              'or "onnx-l3" (paraphrase-MiniLM-L3-v2 converted from ONNX).')


def parse_strategy(spec: str, n_teacher_layers: int) -> Strategy:
    """Parse a student strategy string against a teacher with ``n_teacher_layers`` layers.

    ``subset:0,5`` -> teacher layers 0 and 5; ``first:2`` -> layers 0, 1 (the layer-reduction
    recipe of sentence-transformers' distillation example); ``onnx-l3`` -> another pretrained
    model (its own 3 layers and embeddings, the teacher's tokenizer, pooling and normalisation)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"Empty student strategy {spec!r}. {_SPEC_HELP}")
    s = spec.strip()
    if s in ONNX_STRATEGIES:
        return Strategy(spec=s, kind="onnx", name=s)
    m = re.fullmatch(r"(subset|first)\s*:\s*([0-9,\s-]+)", s)
    if not m:
        raise ConfigError(f"Unknown student strategy {spec!r}. {_SPEC_HELP}")
    kind, arg = m.group(1), m.group(2)
    try:
        numbers = [int(x) for x in arg.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"Strategy {spec!r}: {arg!r} is not a comma-separated list of integers. {_SPEC_HELP}")
    if kind == "subset":
        numbers = absolute_layers(numbers, n_teacher_layers)  # subset:0,-1 = bottom + top
    if kind == "first":
        if len(numbers) != 1 or not 1 <= numbers[0] <= n_teacher_layers:
            raise ConfigError(f"Strategy {spec!r}: first:k needs one k in 1..{n_teacher_layers} "
                              f"(the teacher has {n_teacher_layers} layers).")
        layers = tuple(range(numbers[0]))
        return Strategy(spec=s, kind="subset", layers=layers, name=f"first{numbers[0]}")
    if not numbers:
        raise ConfigError(f"Strategy {spec!r} names no layer. {_SPEC_HELP}")
    bad = [l for l in numbers if not 0 <= l < n_teacher_layers]
    if bad:
        raise ConfigError(f"Strategy {spec!r}: layer index {bad} out of range; the teacher has layers "
                          f"0..{n_teacher_layers - 1}.")
    if len(set(numbers)) != len(numbers) or numbers != sorted(numbers):
        raise ConfigError(f"Strategy {spec!r}: give distinct layer indices in increasing order.")
    layers = tuple(numbers)
    return Strategy(spec=s, kind="subset", layers=layers, name="L" + "_".join(map(str, layers)))


def parse_strategies(specs: Sequence[str], n_teacher_layers: int) -> list[Strategy]:
    if isinstance(specs, str) or not specs:
        raise ConfigError("query_distill.strategies must be a non-empty list of strategy strings. " + _SPEC_HELP)
    return [parse_strategy(s, n_teacher_layers) for s in specs]


INITS = ("ce", "ce-top", "ce-base", "random", "de", "full")
DE2CE_INITS = ("ce", "ce-top", "ce-base", "de", "random")   # the trained DE-k CE students (all but "full")


CE_INITS = ("ce", "ce-top", "ce-base")  # students whose embeddings and first layers are a CE's
BASE_CE_INITS = ("ce-base",)            # ... of the untuned CE its fine-tuning started from (ce_training.base)


def student_name(init: str, n_layers: int, loss: str = "mse") -> str:
    """``DE-2 CE``, ``DE-3 CE``, ``DE-2 CE+top``, ``DE-2 random``, ``DE-2 DE``, ``DE-6 full``; ``+ (MNRL)`` for
    the ablation."""
    label = {"ce": "CE", "ce-top": "CE+top", "ce-base": "untuned CE", "random": "random", "de": "DE", "full": "full"}[init]
    name = f"DE-{n_layers} {label}"
    return name + " (MNRL)" if loss == "mnrl" else name


def slug(name: str) -> str:
    """A folder name for a student: ``DE-2 CE (MNRL)`` -> ``de-2-ce-mnrl``."""
    out = "".join(c.lower() if c.isalnum() else "-" for c in name)
    while "--" in out:
        out = out.replace("--", "-")
    return out.strip("-")


def build_de2ce(de, ce, init: str = "ce", k: int = 1, seed: int = 0):
    """One student with DE-2 CE's recipe: ``k`` copied layers + one random layer.

    ``init``: ``"ce"`` (CE embeddings + CE layers 0..k-1 + a random layer), ``"ce-top"`` (CE embeddings + CE
    layers 0..k-1 + the full DE's top layer instead of the random one: the DE's output space from the start),
    ``"ce-base"`` (as ``"ce"``, from the CE ``ce`` the caller passes: the untuned CE that ``ce_training`` fine-tuned,
    e.g. the NLI judge before relevance training), ``"de"`` (DE embeddings + DE layers 0..k, no random layer),
    ``"random"`` (random embeddings and k+1 random layers), ``"full"`` (the DE as is)."""
    if init not in INITS:
        raise ConfigError(f"Unknown student init {init!r}; use one of {', '.join(INITS)}.")
    if init == "full":
        return compose_student(de, [(de, i) for i in range(num_layers(de))], seed=seed)
    if not isinstance(k, int) or k < 1:
        raise ConfigError(f"k (copied layers) must be an integer >= 1, got {k!r}.")
    if init in CE_INITS:
        check_layers(ce, list(range(k)), "cross encoder")
        if backbone(ce).config.hidden_size != backbone(de).config.hidden_size:
            raise ConfigError("The cross encoder and the dual encoder have different hidden sizes; "
                              "DE-k CE needs a CE with the DE's architecture (models.ce / models.de).")
        last = (de, num_layers(de) - 1) if init == "ce-top" else RANDOM
        return compose_student(de, [(ce, i) for i in range(k)] + [last], embeddings=ce, seed=seed)
    if init == "de":
        check_layers(de, list(range(k + 1)), "dual encoder")
        return compose_student(de, [(de, i) for i in range(k + 1)], seed=seed)
    return compose_student(de, [RANDOM] * (k + 1), embeddings=RANDOM, seed=seed)


# --------------------------------------------------------------------------- where trained students are saved
QUERY_STUDENTS = "query-students"


def student_dir(cfg: dict, name: str) -> Path | None:
    """Where notebook 02 keeps a trained DE-k CE student: ``<models_dir>/<slug(name)>``
    (``DE-2 CE`` -> ``de-2-ce``); ``None`` without a models directory."""
    models_dir = cfg.get("models_dir")
    return None if not models_dir else Path(models_dir) / slug(name)


def query_student_dir(cfg: dict, name: str) -> Path | None:
    """Where notebook 03 keeps a trained query student: ``<models_dir>/query-students/<name>`` (``L0_5``);
    ``None`` without a models directory."""
    models_dir = cfg.get("models_dir")
    return None if not models_dir else Path(models_dir) / QUERY_STUDENTS / name
