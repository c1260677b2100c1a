"""A lean, deployable encoder: one ONNX graph (transformer, pooling, normalisation: the whole
SentenceTransformer) driven by the ``tokenizers`` fast tokenizer directly, no torch or transformers at
inference. Any query student, or the full dual encoder for a fair comparison.

    folder = export_lean(SentenceTransformer("my_student"), "my_student-onnx")   # once, with torch
    enc = LeanEncoder("my_student-onnx", threads=1)                               # onnxruntime + tokenizers only
    q = enc.encode(["what do cross encoders learn?"])                            # as the model's own encode

The same from the shell: ``python -m ce_utils export --model my_student --out my_student-onnx`` and
``python -m ce_utils encode --model my_student-onnx --input queries.tsv --out queries.npy``.
``onnx`` and ``onnxruntime`` come with the ``[onnx]`` extra.
"""

from __future__ import annotations

import copy
import functools
import json
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

from ce_utils.core.config import ConfigError
from ce_utils.core.io import atomic_write_text

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
GRAPH, TOKENIZER, MANIFEST = "model.onnx", "tokenizer.json", "lean.json"


class _SentenceEmbedding(torch.nn.Module):
    """The whole SentenceTransformer (transformer, pooling, normalisation) as one traced function."""

    def __init__(self, model, names: Sequence[str]):
        super().__init__()
        self.model = model
        self.names = list(names)

    def forward(self, *tensors):
        return self.model(dict(zip(self.names, tensors)))["sentence_embedding"]


def export_onnx(model, path: str | Path, opset: int = 17) -> Path:
    """Export a SentenceTransformer (tokens in, sentence embedding out) to ONNX, atomically; an existing
    file is kept."""
    path = Path(path)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    model = copy.deepcopy(model).cpu().float().eval()
    feats = model.preprocess(["an example query for tracing", "a second one"])
    names = [k for k in INPUTS if k in feats]
    args = tuple(feats[k] for k in names)
    axes = {k: {0: "batch", 1: "tokens"} for k in names}
    axes["sentence_embedding"] = {0: "batch"}
    tmp = path.with_name(path.name + ".partial")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(_SentenceEmbedding(model, names), args, str(tmp), input_names=names,
                          output_names=["sentence_embedding"], dynamic_axes=axes, opset_version=opset,
                          dynamo=False)
    tmp.replace(path)
    return path


def export_lean(model, out: str | Path, opset: int = 17) -> Path:
    """``out/``: ``model.onnx`` (tokens in, the model's sentence embedding out), ``tokenizer.json`` (its fast
    tokenizer) and ``lean.json`` (maximum length, padding, inputs, dimension). ``model``: a
    SentenceTransformer, or a folder / hub id it loads from."""
    if isinstance(model, (str, Path)):
        model = SentenceTransformer(str(model), device="cpu")
    tok = getattr(model.tokenizer, "backend_tokenizer", None)
    if tok is None:
        raise ConfigError("The model's tokenizer is not a fast (tokenizers) tokenizer; a lean encoder needs one.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    graph = export_onnx(model, out / GRAPH, opset)
    atomic_write_text(out / TOKENIZER, tok.to_str())
    feats = model.preprocess(["probe"])
    manifest = {"max_length": int(model.max_seq_length), "pad_id": int(model.tokenizer.pad_token_id),
                "pad_token": str(model.tokenizer.pad_token), "inputs": [k for k in INPUTS if k in feats],
                "dim": int(model.get_embedding_dimension()), "graph": graph.name}
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return out


def use_graph(folder: str | Path, graph: str) -> None:
    """Make ``folder``'s manifest name ``graph`` (a file in the folder, e.g. a quantised copy of ``model.onnx``) as
    the graph :class:`LeanEncoder` and ``python -m ce_utils encode`` run."""
    folder = Path(folder)
    if not (folder / graph).is_file():
        raise ConfigError(f"{folder} holds no {graph}: write the graph before naming it in {MANIFEST}.")
    manifest = json.loads((folder / MANIFEST).read_text())
    atomic_write_text(folder / MANIFEST, json.dumps({**manifest, "graph": graph}, indent=2) + "\n")


class LeanEncoder:
    """Encode text with an exported folder (:func:`export_lean`): ``tokenizers`` and ONNX Runtime only."""

    def __init__(self, folder: str | Path, threads: int = 1, graph: str | None = None):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ConfigError(f"A lean encoder needs onnxruntime (`pip install -e '.[onnx]'`): {exc}") from exc
        from tokenizers import Tokenizer

        folder = Path(folder)
        if not (folder / MANIFEST).is_file():
            raise ConfigError(f"{folder} holds no {MANIFEST}: export the model first "
                              "(`python -m ce_utils export --model ... --out ...`).")
        self.manifest = json.loads((folder / MANIFEST).read_text())
        self.tokenizer = Tokenizer.from_file(str(folder / TOKENIZER))
        self.tokenizer.enable_truncation(max_length=self.manifest["max_length"])
        self.tokenizer.enable_padding(pad_id=self.manifest["pad_id"], pad_token=self.manifest["pad_token"])
        self.graph_path = folder / (graph or self.manifest["graph"])
        self.threads = int(threads)
        self._ort = ort

    @functools.cached_property
    def session(self):
        """The ONNX Runtime session, opened on first use (a caller that only tokenises never opens one)."""
        so = self._ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return self._ort.InferenceSession(str(self.graph_path), so, providers=["CPUExecutionProvider"])

    def features(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        enc = self.tokenizer.encode_batch(list(texts))
        arrays = {"input_ids": [e.ids for e in enc], "attention_mask": [e.attention_mask for e in enc],
                  "token_type_ids": [e.type_ids for e in enc]}
        return {k: np.asarray(arrays[k], dtype=np.int64) for k in self.manifest["inputs"]}

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """``[len(texts), dim]`` float32, what the model's own ``encode`` returns."""
        out = [self.session.run(None, self.features(texts[i:i + batch_size]))[0]
               for i in range(0, len(texts), batch_size)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.manifest["dim"]), np.float32)
