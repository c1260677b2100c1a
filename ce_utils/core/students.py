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
from typing import Sequence, Union

import torch
from torch import nn

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


def layer_subset_student(teacher, layers: Sequence[int], seed: int = 0):
    """Wang & Lyu's initialisation: the teacher's embeddings and the chosen teacher layers."""
    check_layers(teacher, list(layers), "teacher")
    return compose_student(teacher, [(teacher, l) for l in layers], seed=seed)
