"""Per-layer embeddings: every hidden state of a dual encoder (the text alone) or of a cross encoder (the
text paired with itself, ``[CLS] s [SEP] s [SEP]``), mean-pooled over a pooling span, in one forward
pass with ``output_hidden_states``.

Pooling spans of a CE self-pair:

* ``first_segment`` (paper 1's choice, default): tokens of the first copy, without ``[CLS]`` /
  ``[SEP]`` / padding;
* ``both_segments``: every non-special token of both copies;
* ``with_cls``: the first copy plus ``[CLS]``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from ce_utils.core.config import ConfigError, show_progress
from ce_utils.core.students import backbone


POOLINGS = ("first_segment", "both_segments", "with_cls")


KINDS = ("ce", "de")


def check_pooling(pooling: str) -> str:
    if pooling not in POOLINGS:
        raise ConfigError(f"Unknown pooling {pooling!r}; use one of {', '.join(POOLINGS)} "
                          "(e.g. `-p pooling first_segment`).")
    return pooling


def self_pair_batch(tokenizer, texts: Sequence[str], max_length: int):
    """``[CLS] s [SEP] s [SEP]`` for each text: the tokenizer's pair encoding, both segments
    truncated alike (longest first) to a pair total of ``2 * max_length``."""
    return tokenizer(list(texts), list(texts), truncation="longest_first", max_length=2 * int(max_length),
                     padding=True, return_tensors="pt", return_special_tokens_mask=True)


def single_batch(tokenizer, texts: Sequence[str], max_length: int):
    return tokenizer(list(texts), truncation=True, max_length=int(max_length), padding=True, return_tensors="pt",
                     return_special_tokens_mask=True)


def _segment_ids(enc) -> torch.Tensor:
    """0 / 1 for the first / second segment (special tokens and padding get -1)."""
    attn = enc["attention_mask"].bool()
    special = enc["special_tokens_mask"].bool()
    if "token_type_ids" in enc:
        seg = enc["token_type_ids"].clone().long()
    else:  # tokenizers without token types (RoBERTa-like): the fast tokenizer's sequence ids
        seg = torch.tensor([[-1 if s is None else s for s in enc.sequence_ids(i)] for i in range(len(attn))])
    seg[~attn | special] = -1
    return seg


def pooling_mask(enc, pooling: str = "first_segment", cls_token_id: int | None = None) -> torch.Tensor:
    """Boolean ``[batch, tokens]`` mask of the tokens a CE self-pair embedding averages."""
    check_pooling(pooling)
    seg = _segment_ids(enc)
    if pooling == "both_segments":
        return seg >= 0
    mask = seg == 0
    if pooling == "with_cls":
        ids = enc["input_ids"]
        cls = ids == cls_token_id if cls_token_id is not None else torch.zeros_like(mask)
        if not cls.any():
            cls[:, 0] = True
        mask = mask | (cls & enc["attention_mask"].bool())
    return mask


def mean_pool_layers(hidden_states: Sequence[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """``[n_hidden, batch, dim]``: each hidden state averaged over the tokens of ``mask``."""
    h = torch.stack(tuple(hidden_states))                  # [n_hidden, batch, tokens, dim]
    m = mask.to(h.dtype)[None, :, :, None]
    return (h * m).sum(2) / m.sum(2).clamp(min=1.0)


def tokenizer_of(model):
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise ConfigError(f"{type(model).__name__} has no tokenizer.")
    return tok


@torch.inference_mode()
def encode_layers(model, texts: Sequence[str], kind: str, max_length: int, batch_size: int = 32,
                  pooling: str = "first_segment", device: str | None = None, progress: bool = True,
                  desc: str = "encode") -> np.ndarray:
    """Mean-pooled embeddings of every hidden state, ``[n_layers + 1, n_texts, dim]`` (float32).

    ``kind="ce"``: ``model`` is a CrossEncoder; each text is paired with itself and pooled over
    ``pooling``. ``kind="de"``: ``model`` is a SentenceTransformer; the text alone, pooled over its
    non-padding tokens."""
    if kind not in KINDS:
        raise ConfigError(f"kind must be 'ce' or 'de', not {kind!r}.")
    check_pooling(pooling)
    bb = backbone(model)
    bb.eval()
    tok = tokenizer_of(model)
    dev = next(bb.parameters()).device if device is None else torch.device(device)
    texts = list(texts)
    n_hidden = len(bb.encoder.layer) + 1
    dim = bb.config.hidden_size
    out = np.zeros((n_hidden, len(texts), dim), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # similar lengths share a batch
    starts = range(0, len(texts), batch_size)
    for start in tqdm(starts, desc=desc, disable=not show_progress(progress) or len(starts) < 2):
        idx = order[start:start + batch_size]
        chunk = [texts[i] for i in idx]
        if kind == "ce":
            enc = self_pair_batch(tok, chunk, max_length)
            mask = pooling_mask(enc, pooling, getattr(tok, "cls_token_id", None))
        else:
            enc = single_batch(tok, chunk, max_length)
            mask = enc["attention_mask"].bool()
        inputs = {k: v.to(dev) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        hs = bb(**inputs, output_hidden_states=True).hidden_states
        out[:, idx, :] = mean_pool_layers(hs, mask.to(dev)).float().cpu().numpy()
    return out
