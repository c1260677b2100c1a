"""Inference backends for query encoders: what a 2-layer query encoder gains where it is deployed.

Every backend wraps a mean-pooling SentenceTransformer (the full DE or a query student) and encodes
text with the same tokenizer, so speed and quality are measured on the same inputs:

``torch``       eager PyTorch, fp32 (the reference of every speed-up)
``torch-int8``  PyTorch dynamic int8 quantisation of every ``nn.Linear`` (weights int8, activations
                quantised on the fly), ``torch.ao.quantization.quantize_dynamic``
``onnx``        the model exported to ONNX (``torch.onnx.export``) and run by ONNX Runtime, fp32
``onnx-int8``   that ONNX graph with dynamic int8 quantisation (``onnxruntime.quantization``) of every
                MatMul and of the embedding table (Gather), weights per tensor
``onnx-int8-pc``     the same with per-channel weights (one scale per output column)
``onnx-int8-mm``     per-channel int8 MatMuls only: the embedding table stays fp32
``onnx-int8-static`` static int8 (QDQ) of the linear layers: per-channel weights and activation ranges
                calibrated once on training queries (``calibration``: never test queries)
``lean``        the lean deployable encoder (:mod:`ce_utils.core.lean`): the same fp32 graph driven by the
                ``tokenizers`` fast tokenizer directly, no torch or transformers per call
``lean-int8``   the lean encoder with the per-channel int8 graph (``onnx-int8-pc``)
``torch-bf16``  eager PyTorch under bf16 autocast, where the CPU computes bf16 natively (AVX512-BF16 /
                AMX); elsewhere it is refused (emulated bf16 is several times slower than fp32)

The ONNX backends need the ``[onnx]`` extra (onnx, onnxruntime). Exported graphs are cached under
``<cache_dir>/onnx/`` by the model's weights fingerprint, so each model is exported once.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ce_utils.core.config import ConfigError, show_progress
from ce_utils.core.encode import native_bf16, weights_fingerprint
from ce_utils.core.io import fingerprint
from ce_utils.core.evaluate import AsymmetricEvaluator, eval_datasets
from ce_utils.core.lean import GRAPH, INPUTS, LeanEncoder, export_lean, export_onnx
from ce_utils.core.retrieval import evaluate, exact_search
from ce_utils.core.texts import training_queries


BACKENDS = {
    "torch": "eager PyTorch fp32",
    "torch-int8": "PyTorch dynamic int8 (nn.Linear)",
    "onnx": "ONNX Runtime fp32",
    "onnx-int8": "ONNX Runtime dynamic int8",
    "onnx-int8-pc": "ONNX Runtime dynamic int8, per-channel weights",
    "onnx-int8-mm": "ONNX Runtime dynamic int8, per-channel, embeddings fp32",
    "onnx-int8-static": "ONNX Runtime static int8 (calibrated), per-channel, embeddings fp32",
    "torch-bf16": "eager PyTorch bf16 autocast (native)",
    "lean": "lean encoder: ONNX Runtime fp32 + tokenizers",
    "lean-int8": "lean encoder: ONNX Runtime int8 per-channel + tokenizers",
}
# dynamic int8 variants of the ONNX graph: keyword arguments of onnxruntime.quantization.quantize_dynamic
DYNAMIC = {"onnx-int8": {}, "onnx-int8-pc": {"per_channel": True},
           "onnx-int8-mm": {"per_channel": True, "op_types_to_quantize": ["MatMul"]}}
CALIBRATION_TEXTS = 512


def check_backends(names: Sequence[str] | None, available_only: bool = False) -> list[str]:
    """``names`` checked (an unknown one names the fix); ``available_only``: without ``torch-bf16`` where the
    CPU has no native bf16 (a profile lists it for the machines that have it)."""
    names = list(names or ["torch"])
    bad = [n for n in names if n not in BACKENDS]
    if bad:
        raise ConfigError(f"Unknown inference backend(s) {bad}; use some of {', '.join(BACKENDS)} "
                          "(e.g. `speed.backends: [torch, onnx-int8]` in the profile).")
    if any(n.startswith(("onnx", "lean")) for n in names):
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            raise ConfigError(f"Backend(s) {[n for n in names if n.startswith(('onnx', 'lean'))]} need the [onnx] extra "
                              f"(`pip install -e '.[onnx]'`): {exc}") from exc
    if available_only and "torch-bf16" in names and not native_bf16("cpu"):
        names = [n for n in names if n != "torch-bf16"]
    return names


def onnx_work_dir(cfg: dict) -> Path:
    """Where exported and quantised graphs are cached: ``<cache_dir>/onnx``."""
    return Path(cfg.get("cache_dir") or ".") / "onnx"


def calibration_queries(cfg: dict, n: int = CALIBRATION_TEXTS) -> list[str]:
    """The queries static int8 calibrates on: the first ``n`` of notebook 03's seeded sample of training queries
    (never an evaluated set's test queries)."""
    qd = cfg.get("query_distill") or {}
    return list(training_queries(cfg, list(qd.get("datasets") or cfg.get("datasets") or [])).values())[:n]


@dataclass
class BackendModel:
    """One query encoder in one backend: ``features(texts)`` tokenises, ``run(features)`` returns the
    embeddings ``[batch, dim]`` (a tensor for torch backends, an array for ONNX), ``encode`` does both."""

    name: str
    backend: str
    model: object                      # the SentenceTransformer (quantised copy for torch-int8)
    onnx_path: Path | None = None
    lean: LeanEncoder | None = None    # lean backends: its tokenizer makes the features
    _sessions: dict = field(default_factory=dict)

    def features(self, texts: Sequence[str]) -> dict:
        if self.lean is not None:
            return self.lean.features(texts)
        feats = self.model.preprocess(list(texts))
        return {k: v for k, v in feats.items() if k in INPUTS}

    def session(self, threads: int):
        """One ONNX Runtime session per thread count (ORT fixes its thread pool per session)."""
        if threads not in self._sessions:
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads = int(threads)
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self._sessions[threads] = ort.InferenceSession(str(self.onnx_path), so,
                                                           providers=["CPUExecutionProvider"])
        return self._sessions[threads]

    def run(self, features: dict):
        if self.onnx_path is None:
            if self.backend == "torch-bf16":
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return self.model(dict(features))["sentence_embedding"]
            return self.model(dict(features))["sentence_embedding"]
        sess = self.session(torch.get_num_threads())  # the timing harness sets torch's thread count
        names = [i.name for i in sess.get_inputs()]
        return sess.run(None, {n: np.asarray(features[n]) for n in names})[0]

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                emb = self.run(self.features(texts[i:i + batch_size]))
                out.append(emb.float().cpu().numpy() if isinstance(emb, torch.Tensor) else np.asarray(emb))
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)


def quantize_onnx(src: str | Path, dst: str | Path, **options) -> Path:
    """Dynamic int8 quantisation of an ONNX graph (weights int8, activations quantised per call); ``options``:
    ``quantize_dynamic``'s (``per_channel``, ``op_types_to_quantize``; :data:`DYNAMIC`)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dst = Path(dst)
    if dst.is_file():
        return dst
    tmp = dst.with_name(dst.stem + ".partial.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, **options)
    tmp.replace(dst)
    return dst


LEAN_INT8 = "model-int8-pc.onnx"   # the lean-int8 graph, beside the fp32 one in an exported lean folder


def quantize_lean(folder: str | Path) -> Path:
    """``folder``'s lean-int8 graph (:data:`LEAN_INT8`): its fp32 ``model.onnx`` with the weights quantised to int8
    per channel (``onnx-int8-pc``'s options). Leaves the manifest as it is."""
    folder = Path(folder)
    return quantize_onnx(folder / GRAPH, folder / LEAN_INT8, **DYNAMIC["onnx-int8-pc"])


def quantize_onnx_static(src: str | Path, dst: str | Path, batches: Sequence[dict]) -> Path:
    """Static int8 (QDQ) quantisation of an ONNX graph's weight MatMuls (the linear layers; attention's two
    activation-by-activation MatMuls stay fp32): per-channel int8 weights and asymmetric uint8 activations whose
    ranges (min-max) come from running ``batches`` (tokenised calibration queries) through the graph. Of the
    settings tried on the full DE (symmetric int8 activations; every MatMul), this one lost least NDCG@10."""
    import onnx

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    dst = Path(dst)
    if dst.is_file():
        return dst
    if not batches:
        raise ConfigError("static int8 needs calibration queries (training queries, never test queries).")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(batches)

        def get_next(self):
            return next(self.it, None)

    graph = onnx.load(str(src), load_external_data=False).graph
    weights = {i.name for i in graph.initializer}
    linear = [n.name for n in graph.node if n.op_type == "MatMul" and any(x in weights for x in n.input)]
    tmp = dst.with_name(dst.stem + ".partial.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_static(str(src), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8, op_types_to_quantize=["MatMul"],
                        nodes_to_quantize=linear)
    tmp.replace(dst)
    for extra in dst.parent.glob(dst.stem + ".partial*"):  # calibration's augmented copies
        extra.unlink(missing_ok=True)
    return dst


def torch_int8(model):
    """A dynamically quantised copy (int8 ``nn.Linear``) of a SentenceTransformer, on the CPU."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).cpu().float().eval(),
                                                      {torch.nn.Linear}, dtype=torch.qint8)


def build(model, backend: str, name: str, work_dir: str | Path | None = None,
          calibration: Sequence[str] | None = None) -> BackendModel:
    """``model`` (a SentenceTransformer) in ``backend``; ONNX files go to ``work_dir`` (named by the
    model's weights fingerprint, so a model is exported once). ``calibration``: the queries static int8
    calibrates on (training queries; the first :data:`CALIBRATION_TEXTS`, in batches of 32)."""
    check_backends([backend])
    model = model.eval()
    if backend == "torch":
        return BackendModel(name, backend, model)
    if backend == "torch-int8":
        return BackendModel(name, backend, torch_int8(model))
    if backend == "torch-bf16":
        if not native_bf16("cpu"):
            raise ConfigError("torch-bf16 needs a CPU that computes bf16 natively (AVX512-BF16 / AMX); drop it from "
                              "speed.backends on this machine (emulated bf16 is several times slower than fp32).")
        return BackendModel(name, backend, model)
    if work_dir is None:
        raise ConfigError("ONNX backends need a work directory (the profile's cache_dir).")
    if backend.startswith("lean"):
        folder = export_lean(model, Path(work_dir) / f"{weights_fingerprint(model)}-lean")
        graph = folder / GRAPH
        if backend == "lean-int8":
            graph = quantize_lean(folder)
        return BackendModel(name, backend, model, onnx_path=graph, lean=LeanEncoder(folder, graph=graph.name))
    fp32 = export_onnx(model, Path(work_dir) / f"{weights_fingerprint(model)}-fp32.onnx")
    if backend == "onnx":
        return BackendModel(name, backend, model, onnx_path=fp32)
    dst = fp32.with_name(fp32.name.replace("-fp32", backend[len("onnx"):]))
    if backend in DYNAMIC:
        return BackendModel(name, backend, model, onnx_path=quantize_onnx(fp32, dst, **DYNAMIC[backend]))
    texts = list(calibration or [])[:CALIBRATION_TEXTS]
    probe = BackendModel(name, "onnx", model, onnx_path=fp32)
    batches = [{k: np.asarray(v) for k, v in probe.features(texts[i:i + 32]).items()} for i in range(0, len(texts), 32)]
    # the calibration set and the quantisation settings name the graph
    dst = dst.with_name(f"{dst.stem}-{fingerprint(texts=texts, nodes='linear', activations='uint8')}.onnx")
    return BackendModel(name, backend, model, onnx_path=quantize_onnx_static(fp32, dst, batches))


# --------------------------------------------------------------------------- quality per backend
def quality_rows(cfg: dict, models: Sequence[tuple[str, str, object]], names: Sequence[str], teacher,
                 datasets: Sequence[str], teacher_spec: str = "", progress: bool = True,
                 calibration: Sequence[str] | None = None) -> list[dict]:
    """NDCG@10 & co. of each query encoder in each backend, on the full-corpus protocol of notebook
    03: the encoder embeds every test query, searched against the full DE's (teacher's) cached
    document embeddings. ``models``: (name, model_id, SentenceTransformer). ``torch`` rows are the
    eager fp32 reference of the ``delta`` column (no autocast: the backends run in fp32 too); every
    row's ``model_id`` is ``<model_id>@<backend>``."""
    names = check_backends(names, available_only=True)
    if "static" in " ".join(names) and calibration is None:
        calibration = calibration_queries(cfg)
    if "torch" not in names:
        names = ["torch", *names]
    ev = AsymmetricEvaluator(teacher=teacher, datasets=eval_datasets(cfg, datasets), teacher_spec=teacher_spec,
                             cfg=cfg)
    work = onnx_work_dir(cfg)
    rows = []
    plan = [(m, b) for m in models for b in names]
    for (name, model_id, model), backend in tqdm(plan, desc="backend quality", disable=not show_progress(progress)):
        bm = build(model, backend, name, work_dir=work, calibration=calibration)
        for ds_name, ds in ev.datasets.items():
            q = bm.encode(ds.query_texts(), batch_size=64)
            res = exact_search(q, ev.doc_emb[ds_name], ds.query_ids, ds.doc_ids, top_k=ev.top_k,
                               score_function=ev.score_function)
            for metric, value in evaluate(ds.qrels, res, ev.metrics).items():
                rows.append({"model": name, "backend": backend, "backend_label": BACKENDS[backend],
                             "model_id": f"{model_id}@{backend}", "dataset": ds_name, "metric": metric,
                             "value": float(value), "approximate": bool(ds.approximate),
                             "n_queries": len(ds.queries), "n_docs": len(ds.corpus),
                             "max_length": int(getattr(model, "max_seq_length", 0) or 0),
                             "documents": f"{teacher_spec} (cached, profile encode settings)"})
    ref = {(r["model"], r["dataset"], r["metric"]): r["value"] for r in rows if r["backend"] == "torch"}
    for r in rows:
        r["delta_vs_torch_fp32"] = r["value"] - ref[(r["model"], r["dataset"], r["metric"])]
    return rows


def recommend(tab, model: str, metric: str = "NDCG@10", max_loss: float = 0.005,
              batch_size: int = 1) -> dict | None:
    """For ``model``, the fastest backend at ``batch_size`` whose mean ``metric`` stays within
    ``max_loss`` of the same model in eager fp32: what to deploy for online query encoding."""
    col, dcol = f"vs eager DE bs{batch_size}", f"{metric} delta vs fp32"
    if tab is None or tab.empty or col not in tab or dcol not in tab:
        return None
    ok = tab[(tab["model"] == model) & tab[dcol].notna() & (tab[dcol] >= -max_loss)]
    if ok.empty:
        return None
    best = ok.sort_values(col, ascending=False).iloc[0]
    return {"model": best["model"], "backend": best["backend"], "speedup": float(best[col]),
            "delta": float(best[dcol]), "batch_size": batch_size, "max_loss": max_loss}
