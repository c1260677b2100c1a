"""Analytic FLOPs of a BERT encoder: what a model's speed-up over the full DE would be if only FLOPs counted."""

from __future__ import annotations

from ce_utils.core.config import ConfigError


def flops_per_token(hidden: int, intermediate: int, n_layers: int, seq_len: float, pooler: bool = False) -> float:
    """Forward FLOPs per token of a BERT encoder (multiply-add = 2 FLOPs), at sequence length ``seq_len``.

    Embeddings: the sum of word, position and token-type vectors (2h) and a LayerNorm (~5h);
    the lookup itself is free. Each transformer layer: Q, K, V and output projections
    (4 x 2h^2), attention scores and the weighted sum of values (2 x 2 x seq_len x h), the
    feed-forward block (2 x 2 h I) and two LayerNorms (2 x 5h); softmax, GELU, biases and
    residual additions are lower-order and ignored. Mean pooling adds h per token;
    ``pooler`` adds BERT's pooler and a one-logit head (2h^2 + 2h), spread over the tokens."""
    h, i, L = float(hidden), float(intermediate), float(seq_len)
    if min(h, i, L) <= 0 or n_layers < 0:
        raise ConfigError(f"flops_per_token needs positive sizes, got hidden={hidden}, intermediate={intermediate}, "
                          f"n_layers={n_layers}, seq_len={seq_len}.")
    embeddings = 2 * h + 5 * h
    layer = 4 * 2 * h * h + 2 * 2 * L * h + 2 * 2 * h * i + 2 * 5 * h
    pool = h + ((2 * h * h + 2 * h) / L if pooler else 0.0)
    return embeddings + n_layers * layer + pool


def flops_per_item(hidden: int, intermediate: int, n_layers: int, tokens: float, pooler: bool = False) -> float:
    """FLOPs to encode one item (a query, or a query-document pair) of ``tokens`` tokens."""
    return float(tokens) * flops_per_token(hidden, intermediate, n_layers, tokens, pooler=pooler)


def flop_ratio(reference_flops: float, model_flops: float) -> float:
    """Theoretical speed-up: reference FLOPs / model FLOPs (> 1: the model needs fewer FLOPs)."""
    if model_flops <= 0:
        raise ConfigError("model FLOPs must be positive.")
    return float(reference_flops) / float(model_flops)
