"""The check of an ONNX BERT conversion against ONNX Runtime running the same graph (with its activation
quantisation removed when it is quantised: ``ce_utils.convert.onnx_graph.dequantized_onnx``). onnxruntime
is optional (the [onnx] extra): without it a conversion is saved unchecked."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ce_utils.convert.onnx_graph import dequantized_onnx
from ce_utils.core.models import ModelNotFoundError

log = logging.getLogger(__name__)


def onnxruntime_outputs(onnx_path, feeds: dict) -> list:
    """ONNX Runtime's outputs for numpy int64 ``feeds`` (only the graph's inputs are passed);
    ``onnx_path`` may also be an ``onnx.ModelProto``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    source = onnx_path.SerializeToString() if hasattr(onnx_path, "SerializeToString") else str(onnx_path)
    sess = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    return sess.run(None, {k: v for k, v in feeds.items() if k in names})


def onnxruntime_logits(onnx_path, feeds: dict):
    """ONNX Runtime's outputs[0] (a classifier's logits)."""
    return onnxruntime_outputs(onnx_path, feeds)[0]


def transformers_output(model, feeds: dict) -> np.ndarray:
    """The logits of a classifier, the last hidden state (token embeddings) of a bare encoder."""
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in feeds.items()
                       if k in ("input_ids", "attention_mask", "token_type_ids")})
    return (out.logits if hasattr(out, "logits") else out.last_hidden_state).numpy()


def compare_with_onnxruntime(model, onnx_path, feeds: dict) -> float:
    """max |ONNX Runtime output - transformers output| on ``feeds``: the graph's first float output of the
    transformers output's shape (a sentence-transformers export also returns its inputs and pooled embedding)."""
    got = transformers_output(model, feeds)
    refs = [r for r in onnxruntime_outputs(onnx_path, feeds)
            if getattr(r, "dtype", None) is not None and r.dtype.kind == "f" and r.shape == got.shape]
    if not refs:
        raise ModelNotFoundError(f"{onnx_path}: no ONNX output of shape {got.shape} to compare with.")
    return float(np.abs(got - refs[0]).max())


def _synthetic_feeds(vocab: int, length: int, input_names: Sequence[str], seed: int = 0) -> dict:
    """Two [CLS] a [SEP] b [SEP] pairs (one shorter, padded) of random word pieces."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((2, length), dtype=np.int64)
    mask = np.zeros_like(ids)
    types = np.zeros_like(ids)
    for row, n in enumerate((max(4, length * 3 // 4), max(4, length // 3))):
        a = n // 2
        ids[row, :n] = rng.integers(min(1000, vocab // 2), vocab, n)
        ids[row, 0] = min(101, vocab - 1)
        ids[row, a] = ids[row, n - 1] = min(102, vocab - 1)
        mask[row, :n] = 1
        types[row, a + 1:n] = 1
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    return {k: v for k, v in feeds.items() if k in input_names}


def verify_conversion(model, onnx_path: Path, g, tolerance: float = 1e-3) -> dict:
    """The differences to ONNX Runtime (see the module docstring); {} without onnxruntime. Raises when the
    conversion itself (against the float graph) is off by more than ``tolerance``."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        log.info("onnxruntime not installed: %s converted without a check against ONNX Runtime", onnx_path)
        return {}
    length = g.fixed_length or min(64, model.config.max_position_embeddings)
    feeds = _synthetic_feeds(model.config.vocab_size, length, g.input_names)
    float_graph = dequantized_onnx(onnx_path) if g.quantized else None
    exact = compare_with_onnxruntime(model, float_graph if float_graph is not None else onnx_path, feeds)
    checks = {"max_abs_diff_vs_onnxruntime_float_graph": exact}
    if float_graph is not None:
        checks["max_abs_diff_vs_onnxruntime_quantized"] = compare_with_onnxruntime(model, onnx_path, feeds)
    if exact > tolerance:
        raise ModelNotFoundError(
            f"{onnx_path}: the converted model differs from ONNX Runtime on the "
            f"{'dequantised ' if float_graph is not None else ''}graph by up to {exact:.5f} (> {tolerance}); "
            "check the number of attention heads (num_attention_heads) and the weight layout.")
    return checks
