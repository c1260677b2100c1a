"""Reading an ONNX BERT graph: its weights (dequantised, in torch layout, under transformers names) and
what the graph says about its shape, and the float twin of a dynamically quantised graph.

Handles the plain TorchScript export (``MatMul`` with anonymous ``onnx::MatMul_*`` weights, ``Gemm`` for the
pooler / classifier, ``Identity`` aliases of deduplicated initializers) and onnxruntime's dynamic
quantisation of it (``quantize_dynamic``: ``MatMulInteger`` with int8 or uint8 weights ``X_quantized`` /
``X_scale`` / ``X_zero_point``, ``Gather`` + ``DequantizeLinear`` embeddings; Gemm weights stored transposed
as ``X`` or ``X_Transposed``). int8/uint8 initializers are dequantised as ``(q - zero_point) * scale``;
linear weights are transposed (``MatMul`` weight [in, out] -> ``nn.Linear`` [out, in]); anonymous
weights are named after the bias added to their output. The number of attention heads comes from the
attention ``Reshape`` constants ([..., heads, head_size] or [..., -1, head_size]); LayerNorm epsilon
from the graph's constants; GELU (Erf) activation. ``onnx`` is an optional package (the [onnx] extra):
it is imported where it is used.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import numpy as np

from ce_utils.core.models import ModelNotFoundError


@dataclass
class OnnxBertGraph:
    """What the converter reads off an ONNX BERT graph."""

    state: dict            # name -> float32 numpy array, torch layout, transformers names
    num_attention_heads: int | None
    head_size: int | None
    layer_norm_eps: float | None
    hidden_act: str
    input_names: list[str]
    fixed_length: int | None
    quantized: bool
    notes: list[str] = field(default_factory=list)


def _const_values(graph) -> dict:
    """Initializers and Constant-node outputs as numpy arrays, by name."""
    from onnx import numpy_helper

    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type != "Constant":
            continue
        for a in node.attribute:
            if a.name == "value":
                values[node.output[0]] = numpy_helper.to_array(a.t)
            elif a.name in ("value_int", "value_float"):
                values[node.output[0]] = np.array(a.i if a.name == "value_int" else a.f)
            elif a.name in ("value_ints", "value_floats"):
                values[node.output[0]] = np.array(list(a.ints) if a.name == "value_ints" else list(a.floats))
    return values


def read_onnx_bert(onnx_path: str | os.PathLike) -> OnnxBertGraph:
    """Weights (dequantised, torch layout, transformers names) and shape hints of an ONNX BERT.

    Handles the plain TorchScript export (``MatMul`` with anonymous ``onnx::MatMul_*`` weights,
    ``Gemm`` for the pooler / classifier, ``Identity`` aliases of deduplicated initializers) and
    onnxruntime's dynamic quantisation of it (``X_quantized`` / ``X_scale`` / ``X_zero_point``,
    ``MatMulInteger``; Gemm weights stored transposed as ``X`` or ``X_Transposed``)."""
    import onnx

    model = onnx.load(str(onnx_path))
    graph = model.graph
    values = _const_values(graph)
    init_names = {t.name for t in graph.initializer}

    alias: dict[str, str] = {}
    for node in graph.node:
        if node.op_type == "Identity" and node.input and node.input[0] in init_names | set(alias):
            alias[node.output[0]] = node.input[0]

    def resolve(name: str) -> str:
        seen = 0
        while name in alias and seen < 16:
            name, seen = alias[name], seen + 1
        return name

    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for inp in node.input:
            consumers.setdefault(inp, []).append(node)

    # dequantise X_quantized with X_scale, X_zero_point
    floats: dict[str, np.ndarray] = {}
    quant_base: dict[str, str] = {}  # X_quantized -> X
    for name in init_names:
        if not name.endswith("_quantized"):
            continue
        base = name[: -len("_quantized")]
        if base + "_scale" not in values:
            raise ModelNotFoundError(f"{onnx_path}: quantised tensor {name} has no {base}_scale.")
        q = values[name].astype(np.float32)
        scale = np.asarray(values[base + "_scale"], dtype=np.float32)
        zp = np.asarray(values.get(base + "_zero_point", np.zeros_like(scale)), dtype=np.float32)
        if scale.ndim == 1 and scale.size > 1 and q.ndim == 2 and scale.size != q.shape[-1]:
            scale, zp = scale.reshape(-1, 1), zp.reshape(-1, 1)  # per-row (axis 0) quantisation
        floats[base] = (q - zp) * scale
        quant_base[name] = base
    skip = {b + s for b in quant_base.values() for s in ("_scale", "_zero_point")} | set(quant_base)
    for name in init_names - skip:
        if values[name].dtype.kind == "f":
            floats[name] = values[name].astype(np.float32)

    def tensor(name: str) -> tuple[str, np.ndarray] | None:
        """(base name, float array) of a node input that is a weight, else None."""
        name = resolve(name)
        if name in quant_base:
            name = quant_base[name]
        return (name, floats[name]) if name in floats else None

    def named(name: str) -> str:  # onnxruntime >= 1.2x stores Gemm weights as X_Transposed_quantized
        return re.sub(r"_Transposed$", "", name)

    state: dict[str, np.ndarray] = {}
    for out, src in alias.items():  # deduplicated initializers keep their own names as Identity outputs
        if resolve(src) in floats and not out.startswith("onnx::") and "/" not in out:
            state[out] = floats[resolve(src)]
    for name, arr in floats.items():
        if not name.startswith("onnx::") and "/" not in name:
            state[named(name)] = arr

    def bias_after(node, depth: int = 4) -> str | None:
        frontier = list(node.output)
        for _ in range(depth):
            nxt = []
            for out in frontier:
                for c in consumers.get(out, []):
                    if c.op_type == "Add":
                        for i in c.input:
                            if i != out and i.endswith(".bias") and tensor(i) is not None:
                                return i
                    if c.op_type in ("Cast", "Mul", "Add"):
                        nxt.extend(c.output)
            frontier = nxt
        return None

    linear_ops = {"MatMul", "MatMulInteger", "Gemm"}
    for node in graph.node:
        if node.op_type not in linear_ops or len(node.input) < 2:
            continue
        w = tensor(node.input[1])
        if w is None:
            continue  # attention score MatMuls have no weight
        wname, arr = w
        if node.op_type == "Gemm":
            attrs = {a.name: a.i for a in node.attribute if a.name in ("transA", "transB")}
            torch_layout = arr if attrs.get("transB", 0) else arr.T
            bias = node.input[2] if len(node.input) > 2 and node.input[2] else bias_after(node)
        else:
            torch_layout = arr.T
            bias = bias_after(node)
        key = named(wname)
        if key.startswith("onnx::") or "/" in key or not key.endswith(".weight"):
            if bias is None:
                raise ModelNotFoundError(
                    f"{onnx_path}: cannot name the weight {wname} of {node.op_type} {node.name} (no bias Add after "
                    "it); this graph is not a BERT layout the converter understands.")
            key = bias[: -len(".bias")] + ".weight"
        state[key] = np.ascontiguousarray(torch_layout)
    state = {k: v for k, v in state.items() if "/" not in k and not k.startswith("onnx::")}

    # heads: Reshape of the query/key/value projections to [..., heads, head_size]
    def shape_values(name: str) -> list | None:
        name = resolve(name)
        if name in values:
            return [int(x) for x in np.asarray(values[name]).ravel()]
        node = producers.get(name)
        if node is not None and node.op_type == "Concat":
            out = []
            for i in node.input:
                v = values.get(resolve(i))
                if v is None or np.asarray(v).size != 1:
                    out.append(None)
                else:
                    out.append(int(np.asarray(v).ravel()[0]))
            return out
        return None

    def feeds_from_projection(name: str, depth: int = 3) -> bool:
        frontier = [name]
        for _ in range(depth):
            nxt = []
            for t in frontier:
                node = producers.get(t)
                if node is None:
                    continue
                if any(re.search(r"attention\.self\.(query|key|value)\.bias$", i) for i in node.input):
                    return True
                if node.op_type in ("Add", "Mul", "Cast"):
                    nxt.extend(node.input)
            frontier = nxt
        return False

    hidden = state["bert.embeddings.word_embeddings.weight"].shape[1] if "bert.embeddings.word_embeddings.weight" in state \
        else next((v.shape[1] for k, v in state.items() if k.endswith("embeddings.word_embeddings.weight")), None)
    head_pairs = set()
    for node in graph.node:
        if node.op_type == "Reshape" and len(node.input) == 2 and feeds_from_projection(node.input[0]):
            dims = shape_values(node.input[1])
            if dims and len(dims) >= 2:
                head_pairs.add((dims[-2], dims[-1]))
    heads = head_size = None
    notes = []
    for h, d in sorted(head_pairs, key=str):
        if h is not None and h > 0:
            cand_h, cand_d = h, (d if d and d > 0 else (hidden // h if hidden else None))
        elif d is not None and d > 0 and hidden:
            cand_h, cand_d = hidden // d, d
        else:
            continue
        if heads is not None and (cand_h, cand_d) != (heads, head_size):
            raise ModelNotFoundError(f"{onnx_path}: inconsistent attention reshapes {sorted(head_pairs, key=str)}.")
        heads, head_size = cand_h, cand_d
    if heads is not None and hidden and heads * head_size != hidden:
        raise ModelNotFoundError(f"{onnx_path}: {heads} heads x {head_size} != hidden size {hidden}.")

    eps = None
    for node in graph.node:
        if node.op_type == "LayerNormalization":
            eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
            break
        if node.op_type == "Add" and len(node.input) == 2:
            prod = producers.get(node.input[0])
            other = values.get(resolve(node.input[1]))
            if prod is not None and prod.op_type == "ReduceMean" and other is not None and np.asarray(other).size == 1 \
                    and "LayerNorm" in node.name + prod.name:
                eps = float(np.asarray(other).ravel()[0])
                break
    if eps is not None:  # stored as float32: the shortest decimal that is that float32 (1e-12, not 9.99...e-13)
        eps = float(np.format_float_scientific(np.float32(eps), unique=True))
    ops = {n.op_type for n in graph.node}
    tanh_gelu = any(n.op_type == "Tanh" and "intermediate" in n.name for n in graph.node)
    hidden_act = "gelu" if "Erf" in ops or not tanh_gelu else "gelu_new"

    inputs = [i.name for i in graph.input if i.name not in init_names]
    fixed = None
    for i in graph.input:
        if i.name == "input_ids":
            dims = i.type.tensor_type.shape.dim
            if len(dims) == 2 and dims[1].HasField("dim_value"):
                fixed = int(dims[1].dim_value)
    return OnnxBertGraph(state=state, num_attention_heads=heads, head_size=head_size, layer_norm_eps=eps,
                         hidden_act=hidden_act, input_names=inputs, fixed_length=fixed,
                         quantized=bool(quant_base), notes=notes)


def dequantized_onnx(onnx_path: str | os.PathLike):
    """The graph of a dynamically quantised ONNX model with its activations left in float:
    every ``DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul(scale)`` chain becomes a float
    ``MatMul`` with the dequantised weight (embedding ``Gather -> DequantizeLinear`` are exact
    already). Returns an ``onnx.ModelProto`` (None when the graph has no ``MatMulInteger``).

    ONNX Runtime on this graph computes what the converted transformers model computes, so the
    two agree to float rounding: that checks the conversion. The quantised graph itself
    differs from both by its run-time activation quantisation, which depends on the whole
    batch (padding included)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(onnx_path))
    graph = model.graph
    values = _const_values(graph)
    quant_src = {}
    for node in graph.node:
        if node.op_type == "DynamicQuantizeLinear":
            quant_src[node.output[0]] = node.input[0]
    consumers: dict[str, list] = {}
    for node in graph.node:
        for inp in node.input:
            consumers.setdefault(inp, []).append(node)
    drop, new_nodes, new_inits = set(), {}, []
    for node in graph.node:
        if node.op_type != "MatMulInteger":
            continue
        a, b = node.input[0], node.input[1]
        if a not in quant_src or not b.endswith("_quantized"):
            raise ModelNotFoundError(f"{onnx_path}: MatMulInteger {node.name} is not a dynamic-quantisation pattern.")
        base = b[: -len("_quantized")]
        q = values[b].astype(np.float32)
        scale = np.asarray(values[base + "_scale"], dtype=np.float32)
        zp = np.asarray(values.get(base + "_zero_point", np.zeros_like(scale)), dtype=np.float32)
        w = ((q - zp) * scale).astype(np.float32)
        cast = [c for c in consumers.get(node.output[0], []) if c.op_type == "Cast"]
        mul = [m for m in consumers.get(cast[0].output[0], []) if m.op_type == "Mul"] if len(cast) == 1 else []
        if len(mul) != 1:
            raise ModelNotFoundError(f"{onnx_path}: MatMulInteger {node.name} is not followed by Cast and Mul.")
        wname = base + "_dequantized_float"
        new_inits.append(numpy_helper.from_array(w, wname))
        drop.update(id(n) for n in (node, cast[0], mul[0]))
        new_nodes[id(mul[0])] = helper.make_node("MatMul", [quant_src[a], wname], [mul[0].output[0]],
                                                 name=node.name + "_float")
    if not new_nodes:
        return None
    nodes = []
    for node in graph.node:  # keep topological order: the float MatMul takes the place of the scale Mul
        if id(node) in new_nodes:
            nodes.append(new_nodes[id(node)])
        elif id(node) not in drop:
            nodes.append(node)
    inits = [t for t in graph.initializer] + new_inits
    while True:  # drop what no longer feeds the outputs (the activation quantisers, scale products)
        used = {o.name for o in graph.output} | {i for n in nodes for i in n.input}
        kept = [n for n in nodes if any(o in used for o in n.output)]
        if len(kept) == len(nodes):
            break
        nodes = kept
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(t for t in inits if t.name in used)
    return model
