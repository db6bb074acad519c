"""Per-layer cost profile: parameters, multiply-accumulates (MACs), FLOPs and activation memory of every node.

Counts come from static shapes: the shapes the model carries, else :meth:`Graph.shape` (ONNX shape inference on a
clone), symbolic dimensions sized by ``dims``; where a shape derives from free input dimensions (``batch*seq``),
shape inference once more on a clone whose inputs get the sizes in ``dims``. The user's model is never modified.

Conventions (one MAC = one multiply and one add = 2 FLOPs):

- **Conv / ConvTranspose** (and ConvInteger, QLinearConv): ``MACs = output elements × Cin/groups × kernel``
  (ConvTranspose: per *input* element × Cout/groups × kernel); strides, pads, dilations and groups enter through
  the shapes (or, when the output shape is unknown, through the attributes). A bias adds one FLOP per output.
- **Gemm / MatMul** (batched, broadcast; MatMulInteger, QLinearMatMul, QGemm): ``M × N × K`` per batch;
  **Einsum**: the product of every index size when something is contracted.
- **Attention**: the two batched products ``Q·Kᵀ`` and ``P·V`` (``B·H·Sq·Sk·(dk + dv)``); onnxruntime's
  ``com.microsoft::Attention`` also its packed Q/K/V projection. Softmax, scale and mask add FLOPs.
- **LSTM / GRU / RNN**: ``directions × steps × batch × gates·H × (input + H)`` MACs (4, 3, 1 gates), plus
  element-wise gate arithmetic.
- **Pooling**: FLOPs = output elements × kernel size (global pools and reductions: input elements); no MACs.
- **Normalization** and **element-wise** ops: FLOPs per output element from :data:`FLOPS_PER_ELEMENT`
  (BatchNormalization 2, LayerNormalization 8, Softmax 5, activations and arithmetic 1); data movement
  (Reshape, Transpose, Gather, Concat, Slice, Cast…) costs nothing.
- **Parameters**: elements of the learnable tensors a node consumes (floating-point weights, biases, norm
  scales, embeddings, and integer weights that a DequantizeLinear or a quantized op dequantizes), each stored
  tensor counted once, at its first consumer, looking through Transpose/Cast/DequantizeLinear. Not counted:
  BatchNormalization running statistics (``buffers``), quantization scales and zero points, shape and index
  constants, and scalars. This is what frameworks call parameters (``sum(p.numel() for p in
  net.parameters())`` in torch).
- **Activation memory**: bytes of the node's outputs; nodes computed from weights alone (folded by runtimes)
  count none.

Nodes inside If/Loop/Scan bodies are profiled once (per iteration; ``scope`` names the body).

Example:
    >>> import onnxscope
    >>> from onnxscope.testing import mlp_model
    >>> p = profile(onnxscope.Model(mlp_model(in_features=3, hidden=16, out_features=4)), dims={"batch": 2})
    >>> [(r.node, r.params, r.macs) for r in p.layers]
    [('fc1', 64, 96), ('relu', 0, 0), ('fc2', 68, 128)]
    >>> p.params, p.macs
    (132, 224)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from onnxscope._ir import ir
from onnxscope.errors import InputError
from onnxscope.graph import Graph, attr

__all__ = ["FLOPS_PER_ELEMENT", "LayerCost", "Profile", "profile"]

Shape = tuple[int, ...]

# FLOPs per output element of element-wise, normalization and activation ops (a documented convention).
FLOPS_PER_ELEMENT: dict[str, int] = {
    **dict.fromkeys(
        (
            "Add Sub Mul Div Pow Max Min Mean Sum Mod Neg Abs Reciprocal Sqrt Exp Log Ceil Floor Round Sign "
            "Relu LeakyRelu PRelu ThresholdedRelu Elu Selu Celu Sigmoid HardSigmoid Tanh Softplus Softsign "
            "HardSwish Clip Erf Sin Cos Where Equal Less LessOrEqual Greater GreaterOrEqual Not And Or Xor "
            "BitShift IsNaN IsInf Trilu CumSum QuantizeLinear DequantizeLinear DynamicQuantizeLinear"
        ).split(),
        1,
    ),
    "Swish": 2,
    "Mish": 4,
    "Gelu": 8,
    "FastGelu": 8,
    "BiasGelu": 9,
    "QuickGelu": 3,
    "BatchNormalization": 2,
    "InstanceNormalization": 8,
    "LayerNormalization": 8,
    "GroupNormalization": 8,
    "RMSNormalization": 5,
    "SimplifiedLayerNormalization": 5,
    "SkipLayerNormalization": 9,
    "SkipSimplifiedLayerNormalization": 6,
    "LpNormalization": 3,
    "MeanVarianceNormalization": 7,
    "Softmax": 5,
    "LogSoftmax": 6,
    "Hardmax": 1,
}
_POOL = frozenset({"MaxPool", "AveragePool", "LpPool", "MaxRoiPool"})
_REDUCE = frozenset(
    {
        "GlobalAveragePool",
        "GlobalMaxPool",
        "GlobalLpPool",
        "ReduceMean",
        "ReduceSum",
        "ReduceMax",
        "ReduceMin",
        "ReduceProd",
        "ReduceL1",
        "ReduceL2",
        "ReduceLogSum",
        "ReduceLogSumExp",
        "ReduceSumSquare",
        "ArgMax",
        "ArgMin",
        "TopK",
    }
)
_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
# Input positions that hold quantization parameters (never counted as parameters).
_QPARAM_ROLES = {
    "QuantizeLinear": {1, 2},
    "DequantizeLinear": {1, 2},
    "QLinearConv": {1, 2, 4, 5, 6, 7},
    "QLinearMatMul": {1, 2, 4, 5, 6, 7},
    "QGemm": {1, 2, 4, 5, 7, 8},
    "MatMulInteger": {2, 3},
    "ConvInteger": {2, 3},
    "BatchNormalization": {3, 4},  # running mean and variance: buffers, not parameters
    "DynamicQuantizeLSTM": {8, 9, 10, 11},
}
_INT_WEIGHT = {
    "QLinearConv": {3},
    "QLinearMatMul": {3},
    "QGemm": {3},
    "MatMulInteger": {1},
    "ConvInteger": {1},
    "DynamicQuantizeLSTM": {1, 2},  # com.microsoft: int8 W and R
}


@dataclass(frozen=True)
class LayerCost:
    """One node's costs. ``macs``/``flops`` are ``None`` when a shape they need is unknown.

    ``scope`` names the enclosing If/Loop/Scan body (``""`` at top level); ``folded`` marks nodes computed
    from weights alone (a runtime folds them: no activation memory).
    """

    node: str
    op: str
    module: str | None
    output_shape: Shape | None
    params: int
    buffers: int
    macs: int | None
    flops: int | None
    activation_bytes: int
    scope: str = ""
    folded: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = asdict(self)
        d["output_shape"] = None if self.output_shape is None else list(self.output_shape)
        return d


@dataclass(frozen=True)
class Profile:
    """The per-layer profile of a model, in graph order, with totals.

    ``dims`` are the sizes used for symbolic dimensions; ``unknown`` lists nodes whose MACs/FLOPs could not
    be computed (a shape unknown even after inference).
    """

    layers: tuple[LayerCost, ...]
    dims: dict[str, int] = field(default_factory=dict)
    unknown: tuple[str, ...] = ()

    @property
    def params(self) -> int:
        """Total parameters (each stored tensor once)."""
        return sum(r.params for r in self.layers)

    @property
    def buffers(self) -> int:
        """Total non-learnable stored statistics (BatchNormalization running mean and variance)."""
        return sum(r.buffers for r in self.layers)

    @property
    def macs(self) -> int:
        """Total multiply-accumulates over the nodes whose count is known."""
        return sum(r.macs or 0 for r in self.layers)

    @property
    def flops(self) -> int:
        """Total FLOPs over the nodes whose count is known."""
        return sum(r.flops or 0 for r in self.layers)

    @property
    def activation_bytes(self) -> int:
        """Bytes of every node output (the memory a capture-all run holds)."""
        return sum(r.activation_bytes for r in self.layers)

    def by_op(self) -> dict[str, dict[str, int]]:
        """Totals per op type: ``{op: {"nodes", "params", "macs", "flops", "activation_bytes"}}``, by MACs.

        Example:
            >>> import onnxscope
            >>> from onnxscope.testing import mlp_model
            >>> profile(onnxscope.Model(mlp_model()), dims={"batch": 1}).by_op()["Gemm"]["nodes"]
            2
        """
        out: dict[str, dict[str, int]] = {}
        for r in self.layers:
            d = out.setdefault(r.op, {"nodes": 0, "params": 0, "macs": 0, "flops": 0, "activation_bytes": 0})
            d["nodes"] += 1
            d["params"] += r.params
            d["macs"] += r.macs or 0
            d["flops"] += r.flops or 0
            d["activation_bytes"] += r.activation_bytes
        return dict(sorted(out.items(), key=lambda kv: (-kv[1]["macs"], -kv[1]["flops"], kv[0])))

    def by_module(self, depth: int | None = None) -> dict[str, dict[str, int]]:
        """Totals per framework module path (cut to ``depth`` components when given), in graph order.

        Example:
            >>> import onnxscope
            >>> from onnxscope.testing import mlp_model
            >>> profile(onnxscope.Model(mlp_model()), dims={"batch": 1}).by_module()
            {}
        """
        out: dict[str, dict[str, int]] = {}
        for r in self.layers:
            if not r.module:
                continue
            key = r.module if depth is None else ".".join(r.module.split(".")[:depth])
            d = out.setdefault(key, {"nodes": 0, "params": 0, "macs": 0, "flops": 0, "activation_bytes": 0})
            d["nodes"] += 1
            d["params"] += r.params
            d["macs"] += r.macs or 0
            d["flops"] += r.flops or 0
            d["activation_bytes"] += r.activation_bytes
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with totals."""
        return {
            "params": self.params,
            "buffers": self.buffers,
            "macs": self.macs,
            "flops": self.flops,
            "activation_bytes": self.activation_bytes,
            "dims": dict(self.dims),
            "unknown": list(self.unknown),
            "layers": [r.to_dict() for r in self.layers],
        }


# -- shapes --------------------------------------------------------------------------------------------------
def _concrete(shape: tuple[Any, ...] | None) -> Shape | None:
    if shape is None or not all(isinstance(d, int) and d >= 0 for d in shape):
        return None
    return tuple(int(d) for d in shape)


def _name_of(d: Any) -> Any:
    return d.value if isinstance(d, ir.SymbolicDim) else d


class _Shapes:
    """Concrete static shapes: the model's own (symbolic names replaced by ``dims``), else shape inference run
    once on a clone whose inputs are concrete — the user's model is never modified."""

    def __init__(self, graph: Graph, dims: Mapping[str, int]) -> None:
        self.graph = graph
        self.dims = dict(dims)
        self._clone: dict[str, Shape | None] | None = None

    def __call__(self, v: ir.Value | None) -> Shape | None:
        if v is None:
            return None
        if v.const_value is not None:
            return tuple(int(d) for d in v.const_value.shape)
        for shape in (v.shape, None):
            if shape is None:  # what the model carries is not enough: ask the graph (inference on its clone)
                shape = self.graph.shape(v)
            if shape is not None:
                sized = tuple(d if type(d) is int else self.dims.get(_name_of(d), d) for d in shape)
                if not any(_free(d) for d in sized):
                    return sized  # type: ignore[return-value]
        if not v.name:
            return None
        return self._inferred().get(v.name)

    def _inferred(self) -> dict[str, Shape | None]:
        if self._clone is None:
            self._clone = _infer_on_clone(self.graph.ir, self.dims)
        return self._clone


def _free(d: Any) -> bool:
    """A dimension without a size: symbolic, unnamed, or declared -1/0."""
    return not (type(d) is int and d > 0)


def _dim_key(v: ir.Value, axis: int, d: Any) -> str:
    """How ``dims`` names a free input dimension: its symbolic name, else ``input:axis``."""
    name = d.value if isinstance(d, ir.SymbolicDim) else None
    return name if name and name != "?" else f"{v.name}:{axis}"


def _size_of(v: ir.Value, axis: int, d: Any, dims: Mapping[str, int]) -> Any:
    """The size ``dims`` gives an input dimension (by ``input:axis`` first, then by name), else ``d``."""
    for key in (f"{v.name}:{axis}", _dim_key(v, axis, d)):
        if key in dims:
            return int(dims[key])
    return d


def _graph_inputs(model: ir.Model) -> list[ir.Value]:
    inits = model.graph.initializers
    return [v for v in model.graph.inputs if v.name not in inits and v.shape is not None]


def _input_dims(model: ir.Model) -> dict[str, list[str]]:
    """Free dimensions of the graph inputs (symbolic, unnamed, -1/0): dim key → the inputs that use it."""
    out: dict[str, list[str]] = {}
    for v in _graph_inputs(model):
        for axis, d in enumerate(v.shape):  # type: ignore[arg-type]
            if _free(d):
                out.setdefault(_dim_key(v, axis, d), []).append(v.name or "")
    return out


def _infer_on_clone(model: ir.Model, dims: Mapping[str, int]) -> dict[str, Shape | None]:
    """Shapes inferred on a clone of ``model`` whose inputs carry concrete sizes (the model is untouched)."""
    from onnx_ir.passes.common import ShapeInferencePass  # noqa: TID251  (onnx_ir is imported: onnxscope._ir)

    clone = model.clone()
    for v in _graph_inputs(clone):
        v.shape = ir.Shape([_size_of(v, axis, d, dims) for axis, d in enumerate(v.shape)])  # type: ignore[arg-type]
    for g in clone.graphs():  # forget the shapes that are not concrete, so inference writes concrete ones
        for n in g:
            for v in n.outputs:
                if v.shape is not None and any(_free(d) for d in v.shape):
                    v.shape = None
    ShapeInferencePass(strict_mode=False)(clone)
    out: dict[str, Shape | None] = {
        v.name: _concrete(tuple(d if isinstance(d, int) else None for d in v.shape))  # type: ignore[union-attr]
        for v in _graph_inputs(clone)
        if v.name
    }
    for g in clone.graphs():
        for n in g:
            for v in n.outputs:
                if v.name and v.name not in out and v.shape is not None:
                    out[v.name] = _concrete(tuple(d if isinstance(d, int) else None for d in v.shape))
    return out


# -- parameters ----------------------------------------------------------------------------------------------
def _constant_tensor(v: ir.Value) -> ir.TensorProtocol | None:
    if v.const_value is not None:
        return v.const_value
    node = v.producer()
    if node is not None and node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
        a = node.attributes.get("value")
        if a is not None and a.value is not None:
            return a.value
    return None


def _is_stored(v: ir.Value, folded: set[int]) -> bool:
    """Whether ``v`` is a stored tensor or computed from stored tensors alone."""
    if _constant_tensor(v) is not None:
        return True
    node = v.producer()
    return node is not None and id(node) in folded


_DATA_ONLY = frozenset(
    {
        "DequantizeLinear",
        "QuantizeLinear",
        "Cast",
        "CastLike",
        "Reshape",
        "Transpose",
        "Squeeze",
        "Unsqueeze",
        "Identity",
        "Flatten",
        "Expand",
        "Tile",
    }
)


def _stored(v: ir.Value, folded: set[int]) -> list[tuple[ir.TensorProtocol, bool]]:
    """The stored tensors that ``v`` re-encodes through folded transforms (:func:`_is_transform`), each with
    whether an integer tensor was turned into real values on the way (DequantizeLinear, or a Cast to float then a
    scale: weight-only). Quantization parameters are not followed: only the data input of Q/DQ, Cast, layout ops,
    and the larger operand of an element-wise op (a weight, not its per-channel scale)."""
    out: list[tuple[ir.TensorProtocol, bool]] = []
    stack = [(v, False)]
    while stack:
        v, converted = stack.pop()
        t = _constant_tensor(v)
        if t is not None:
            out.append((t, converted))
            continue
        node = v.producer()
        if node is None or not _is_transform(node, folded):
            continue  # computed (even from constants, e.g. a Gather of an embedding): its own node owns them
        ins = [i for i in node.inputs if i is not None]
        if not ins:
            continue
        if node.op_type in _DATA_ONLY:
            to_float = node.op_type == "DequantizeLinear" or (
                node.op_type in ("Cast", "CastLike") and _to_float(node)
            )
            stack.append((ins[0], converted or to_float))
        else:  # an element-wise scale: follow the weight
            sizes = [_stored_size(i, folded) for i in ins]
            stack.append((ins[int(np.argmax(sizes))], converted))
    return out


def _is_transform(node: ir.Node, folded: set[int]) -> bool:
    """A node that only re-encodes stored tensors for its consumer (a runtime folds it): layout ops, Cast,
    Q/DQ and element-wise scales. Its consumer owns those tensors; any other node owns its stored inputs."""
    return id(node) in folded and (node.op_type in _DATA_ONLY or node.op_type in ("Mul", "Div", "Add", "Sub"))


def _to_float(node: ir.Node) -> bool:
    """Whether a Cast (``to``) or CastLike (its second input's type) produces floating-point values."""
    if node.op_type == "Cast":
        to = attr(node, "to", None)
        return to is not None and ir.DataType(int(to)).is_floating_point()
    like = node.inputs[1] if len(node.inputs) > 1 else None
    return like is not None and like.dtype is not None and like.dtype.is_floating_point()


def _stored_size(v: ir.Value, folded: set[int], depth: int = 8) -> int:
    """Elements of the largest stored tensor ``v`` is computed from (through folded nodes), 0 if none."""
    t = _constant_tensor(v)
    if t is not None:
        return int(math.prod(int(d) for d in t.shape))
    node = v.producer()
    if node is None or id(node) not in folded or depth == 0:
        return 0
    return max((_stored_size(i, folded, depth - 1) for i in node.inputs if i is not None), default=0)


def _is_float(t: ir.TensorProtocol) -> bool:
    return t.dtype.is_floating_point()


def _numel(shape: Shape | None) -> int | None:
    return None if shape is None else int(math.prod(shape))


def _itemsize(v: ir.Value) -> int:
    dt = v.dtype
    if dt is None or dt == ir.DataType.STRING:
        return 0
    return int(math.ceil(dt.bitwidth / 8))


# -- MACs per op ---------------------------------------------------------------------------------------------
def _conv_out_spatial(node: ir.Node, x: Shape, w: Shape) -> Shape | None:
    """Output spatial size of a Conv from its attributes (used when the output shape is unknown)."""
    spatial = x[2:]
    k = tuple(attr(node, "kernel_shape", None) or w[2:])
    n = len(spatial)
    strides = tuple(attr(node, "strides", None) or (1,) * n)
    dil = tuple(attr(node, "dilations", None) or (1,) * n)
    pads = tuple(attr(node, "pads", None) or (0,) * (2 * n))
    auto = attr(node, "auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    out = []
    for i in range(n):
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            out.append(-(-spatial[i] // strides[i]))
        else:
            eff = dil[i] * (k[i] - 1) + 1
            pad = 0 if auto == "VALID" else pads[i] + pads[i + n]
            out.append((spatial[i] + pad - eff) // strides[i] + 1)
    return tuple(out)


def _einsum_macs(eq: str, shapes: list[Shape]) -> int | None:
    eq = eq.replace(" ", "")
    if "->" in eq:
        lhs, rhs = eq.split("->")
    else:
        lhs, rhs = eq, None
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        return None
    size: dict[str, int] = {}
    ellipsis = 1
    for term, shape in zip(terms, shapes, strict=True):
        letters = term.replace("...", "")
        n_ell = len(shape) - len(letters)
        if "..." in term:
            start = term.index("...")
            ell = shape[start : start + n_ell]
            ellipsis = max(ellipsis, int(math.prod(ell)) if ell else 1)
            shape = shape[:start] + shape[start + n_ell :]
        for ch, d in zip(letters, shape, strict=False):
            size[ch] = max(size.get(ch, 1), d)
    out_letters = set(rhs.replace("...", "")) if rhs is not None else {c for c in size if lhs.count(c) == 1}
    contracted = set(size) - out_letters
    if not contracted or len(shapes) < 2:
        return 0
    return int(math.prod(size.values())) * ellipsis


def _macs(node: ir.Node, op: str, shape: _Shapes, out: Shape | None) -> tuple[int | None, int]:
    """``(MACs, extra FLOPs)`` of the matrix/conv/recurrent/attention part of ``node``; ``(0, 0)`` for others."""
    ins = node.inputs
    if op in ("Conv", "ConvInteger", "QLinearConv"):
        xi, wi = (0, 3) if op == "QLinearConv" else (0, 1)
        x, w = shape(ins[xi]), shape(ins[wi] if len(ins) > wi else None)
        if w is None:
            return None, 0
        o = out
        if o is None and x is not None:
            sp = _conv_out_spatial(node, x, w)
            o = None if sp is None else (x[0], w[0], *sp)
        if o is None:
            return None, 0
        bias_idx = 8 if op == "QLinearConv" else 2
        bias = len(ins) > bias_idx and ins[bias_idx] is not None
        return int(math.prod(o)) * int(math.prod(w[1:])), int(math.prod(o)) if bias else 0
    if op == "ConvTranspose":
        x, w = shape(ins[0]), shape(ins[1])
        if x is None or w is None:
            return None, 0
        bias = len(ins) > 2 and ins[2] is not None and out is not None
        return int(math.prod(x)) * int(math.prod(w[1:])), int(math.prod(out)) if bias and out else 0
    if op in ("Gemm", "QGemm"):
        ai, bi = (0, 3) if op == "QGemm" else (0, 1)
        a, b = shape(ins[ai]), shape(ins[bi])
        if a is None or b is None or len(a) != 2 or len(b) != 2:
            return None, 0
        m, k = (a[1], a[0]) if attr(node, "transA", 0) else a
        n = b[0] if attr(node, "transB", 0) else b[1]
        ci = 6 if op == "QGemm" else 2
        bias = len(ins) > ci and ins[ci] is not None
        return m * n * k, m * n if bias else 0
    if op in ("MatMul", "MatMulInteger", "QLinearMatMul", "FusedMatMul", "MatMulNBits"):
        ai, bi = (0, 3) if op == "QLinearMatMul" else (0, 1)
        a = shape(ins[ai])
        if a is None:
            return None, 0
        k = a[-1]
        if op == "MatMulNBits":
            k = int(attr(node, "K", k))
        if out is None:
            b = shape(ins[bi])
            if b is None:
                return None, 0
            n = b[-1] if len(b) >= 2 else 1
            m = a[-2] if len(a) >= 2 else 1
            batch = np.broadcast_shapes(a[:-2], b[:-2]) if len(a) > 2 or len(b) > 2 else ()
            return int(math.prod(batch)) * m * n * k, 0
        return int(math.prod(out)) * k, 0
    if op == "Einsum":
        shapes = [shape(v) for v in ins]
        if any(s is None for s in shapes):
            return None, 0
        eq = attr(node, "equation", "")
        eq = eq.decode() if isinstance(eq, bytes) else eq
        return _einsum_macs(eq, shapes), 0  # type: ignore[arg-type]
    if op in _GATES or op == "DynamicQuantizeLSTM":
        x, w = shape(ins[0]), shape(ins[1])
        if x is None or w is None or len(x) != 3 or len(w) != 3:
            return None, 0
        seq, batch = (x[1], x[0]) if attr(node, "layout", 0) else (x[0], x[1])
        if op == "DynamicQuantizeLSTM":  # onnxruntime's layout: W is [directions, input, 4·hidden]
            dirs, inp, gh = w
            op = "LSTM"
        else:
            dirs, gh, inp = w
        h = gh // _GATES[op]
        steps = dirs * seq * batch
        ew = steps * ({"LSTM": 2 * gh + 3 * h + 3 * h, "GRU": 2 * gh + 4 * h, "RNN": 2 * h}[op])
        return steps * gh * (inp + h), ew
    if op == "Attention" and node.domain in ("", "ai.onnx"):
        return _onnx_attention(node, shape)
    if node.domain == "com.microsoft" and op in ("Attention", "MultiHeadAttention", "GroupQueryAttention"):
        return _ms_attention(node, op, shape)
    return 0, 0


def _onnx_attention(node: ir.Node, shape: _Shapes) -> tuple[int | None, int]:
    q, k, v = (shape(node.inputs[i]) if len(node.inputs) > i else None for i in range(3))
    if q is None or k is None or v is None:
        return None, 0
    if len(q) == 3:  # [B, S, H*d] with q_num_heads / kv_num_heads attributes
        hq = int(attr(node, "q_num_heads", 1))
        hkv = int(attr(node, "kv_num_heads", hq))
        b, sq, dq = q[0], q[1], q[2] // hq
        sk, dv = k[1], v[2] // hkv
    else:
        b, hq, sq, dq = q
        sk, dv = k[2], v[3]
    present = shape(node.outputs[1]) if len(node.outputs) > 1 else None
    if present is not None and len(present) == 4:
        sk = present[2]
    scores = b * hq * sq * sk
    return scores * (dq + dv), scores * FLOPS_PER_ELEMENT["Softmax"] + scores * 2  # scale and mask


def _ms_attention(node: ir.Node, op: str, shape: _Shapes) -> tuple[int | None, int]:
    heads = int(attr(node, "num_heads", 1))
    x = shape(node.inputs[0])
    if x is None:
        return None, 0
    if op == "Attention":  # packed: input [B, S, Din], weights [Din, q+k+v hidden]
        w = shape(node.inputs[1]) if len(node.inputs) > 1 else None
        if w is None or len(x) != 3:
            return None, 0
        b, s, din = x
        sizes = attr(node, "qkv_hidden_sizes", None)
        qh, kh, vh = (int(d) for d in sizes) if sizes else (w[1] // 3,) * 3
        past = shape(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4] is not None else None
        sk = s + (past[3] if past is not None and len(past) == 5 else 0)
        proj = b * s * din * (qh + kh + vh)
        scores = b * heads * s * sk
        return proj + b * s * sk * (qh + vh), scores * (FLOPS_PER_ELEMENT["Softmax"] + 2) + b * s * (
            qh + kh + vh
        )
    # MultiHeadAttention / GroupQueryAttention: query [B, Sq, Hq*d]; key/value [B, Sk, Hkv*d] or [B, Hkv, Sk, d]
    if len(x) == 5:  # packed QKV [B, S, H, 3, d]
        b, sq, h, _, d = x
        scores = b * h * sq * sq
        return scores * 2 * d, scores * (FLOPS_PER_ELEMENT["Softmax"] + 2)
    if len(x) != 3:
        return None, 0
    b, sq, dq_total = x
    k = shape(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] is not None else None
    v = shape(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
    present = shape(node.outputs[1]) if len(node.outputs) > 1 and node.outputs[1] is not None else None
    if present is not None and len(present) == 4:
        sk = present[2]
    elif k is not None:
        sk = k[2] if len(k) == 4 else k[1]
    elif op == "GroupQueryAttention" or k is None:
        sk = sq
    dv_total = dq_total
    if v is not None:
        dv_total = v[1] * v[3] if len(v) == 4 else v[2]
        if op == "GroupQueryAttention":
            kv_heads = int(attr(node, "kv_num_heads", heads))
            dv_total = dv_total * heads // max(1, kv_heads)
    scores = b * heads * sq * sk
    return b * sq * sk * (dq_total + dv_total), scores * (FLOPS_PER_ELEMENT["Softmax"] + 2)


def _flops(node: ir.Node, op: str, shape: _Shapes, out: Shape | None) -> int | None:
    """FLOPs of the non-MAC part: pooling, reductions, normalization, element-wise."""
    if op in _POOL:
        if out is None:
            return None
        k = attr(node, "kernel_shape", None)
        return int(math.prod(out)) * int(math.prod(k)) if k else int(math.prod(out))
    if op in _REDUCE:
        x = shape(node.inputs[0])
        return None if x is None else int(math.prod(x))
    if op == "Resize":
        mode = attr(node, "mode", "nearest")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if out is None:
            return None
        return int(math.prod(out)) * {"nearest": 0, "linear": 4, "cubic": 16}.get(mode, 0)
    per = FLOPS_PER_ELEMENT.get(op)
    if per is None:
        return 0
    return None if out is None else int(math.prod(out)) * per


# -- the profile ---------------------------------------------------------------------------------------------
def profile(graph: Graph, dims: Mapping[str, int] | None = None) -> Profile:
    """Parameters, MACs, FLOPs and activation memory of every node (see the module docstring for conventions).

    Parameters:
        graph: a :class:`onnxscope.Model` (or :class:`~onnxscope.graph.Graph`).
        dims: sizes for the symbolic dimensions of the model's inputs, e.g. ``{"batch": 1, "seq": 128}``; an
            unnamed unknown dimension is keyed ``"input:axis"``.

    Returns:
        A :class:`Profile` (layers in graph order; subgraph bodies after their node).

    Raises:
        InputError: an input has a symbolic dimension that ``dims`` does not size, or a size is not positive.

    Example:
        >>> import onnxscope
        >>> from onnxscope.testing import mlp_model
        >>> profile(onnxscope.Model(mlp_model()))
        Traceback (most recent call last):
        ...
        onnxscope.errors.InputError: input 'x' has symbolic dimension 'batch': pass its size, e.g. dims={'batch': 1}
    """
    dims = dict(dims or {})
    for k, d in dims.items():
        if not isinstance(d, (int, np.integer)) or int(d) <= 0:
            raise InputError(f"dims[{k!r}] = {d!r}: a dimension size must be a positive integer")
    needed = _input_dims(graph.ir)
    missing = list(
        dict.fromkeys(
            _dim_key(v, axis, d)
            for v in _graph_inputs(graph.ir)
            for axis, d in enumerate(v.shape)  # type: ignore[arg-type]
            if _free(d) and _size_of(v, axis, d, dims) is d
        )
    )
    if missing:
        k = missing[0]
        example = ", ".join(f"{m!r}: 1" for m in missing)
        what = f"symbolic dimension {k!r}" if ":" not in k else f"an unnamed dimension (key {k!r})"
        raise InputError(f"input {needed[k][0]!r} has {what}: pass its size, e.g. dims={{{example}}}")
    axes = {f"{v.name}:{axis}" for v in _graph_inputs(graph.ir) for axis in range(len(v.shape))}  # type: ignore[arg-type]
    unused = [k for k in dims if k not in needed and k not in axes]
    if unused:
        raise InputError(f"dims {unused} name no input dimension; the model's are {sorted(needed)}")
    shape = _Shapes(graph, dims)
    seen: set[int] = set()
    folded_nodes: set[int] = set()
    layers: list[LayerCost] = []
    unknown: list[str] = []
    for e in graph.entries:
        path, node, scope = e.path, e.node, e.prefix
        op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
        # computed from constants alone (a runtime folds it)
        folded = node.op_type == "Constant" or (
            any(v is not None for v in node.inputs)
            and all(v is None or _is_stored(v, folded_nodes) for v in node.inputs)
        )
        params = buffers = 0
        if folded:
            folded_nodes.add(id(node))
        if not _is_transform(node, folded_nodes):
            qparams = _QPARAM_ROLES.get(node.op_type, set())
            for i, v in enumerate(node.inputs):
                if v is None:
                    continue
                for tensor, converted in _stored(v, folded_nodes):
                    key = id(tensor)
                    if key in seen:
                        continue
                    size = int(math.prod(int(d) for d in tensor.shape))
                    if i in qparams:
                        if node.op_type == "BatchNormalization":
                            seen.add(key)
                            buffers += size
                        continue
                    # integers count when dequantized on the way (QDQ, weight-only Cast·Mul) or read as weights
                    learnable = _is_float(tensor) or converted or i in _INT_WEIGHT.get(node.op_type, ())
                    if learnable and size > 1:
                        seen.add(key)
                        params += size
        outs = [v for v in node.outputs if v is not None and v.name]
        out = shape(outs[0]) if outs else None
        macs: int | None
        flops: int | None
        if folded:
            macs, flops, act = 0, 0, 0
        else:
            macs, extra = _macs(node, node.op_type, shape, out)
            base = _flops(node, node.op_type, shape, out)
            flops = None if macs is None or base is None else 2 * macs + extra + base
            act = 0
            for v in outs:
                s = shape(v)
                if s is not None:
                    act += int(math.prod(s)) * _itemsize(v)
            if macs is None or flops is None:
                unknown.append(path)
        layers.append(
            LayerCost(
                node=path,
                op=op,
                module=graph.module_of(node),
                output_shape=out,
                params=params,
                buffers=buffers,
                macs=macs,
                flops=flops,
                activation_bytes=act,
                scope=scope.rstrip("/"),
                folded=folded,
            )
        )
    return Profile(tuple(layers), dims, tuple(unknown))
