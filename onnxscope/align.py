"""Which tensor of one model is which tensor of another: alignment for layer-by-layer comparison.

Two models that compute the same function (a float model and its quantized version, a model before and after an
optimizer, an opset conversion, an fp16 copy…) name and shape their tensors differently. :func:`align` pairs
them. One model is the *reference*, the other the *derived* one (the quantized, optimized or converted side; the
side with more quantizer, fused or contrib nodes — the two roles are kept apart from the ``a``/``b`` order the
caller chose). The derived model's nodes are walked in order, and each output is matched to a reference tensor:

1. **structure**: a reference node of the same op whose inputs are the tensors the derived node's inputs were
   matched to (ties broken by the content of the weights each consumes — a hash, else their correlation — then
   by name);
2. **transparent ops**: a quantizer (``QuantizeLinear``, ``DequantizeLinear``, ``DynamicQuantizeLinear``), a
   ``Cast``, an ``Identity`` or a layout change (onnxruntime's NCHWc ``ReorderInput``/``ReorderOutput``) passes
   its input's match on, with a :class:`Step` saying how to bring the derived value back (dequantize, un-block…).
   A quantizer whose range clamps negatives stands for the ``Relu`` it absorbed;
3. **fusion**: a fused node (``FusedConv``, ``Gemm`` from ``MatMul+Add``, ``LayerNormalization``, ``Gelu``,
   ``SkipLayerNormalization``, ``Attention``, ``QLinearConv``, a Conv with a folded ``BatchNormalization``…) is
   matched to the end of the reference *region* it replaces: the reference nodes computable from the matched
   inputs alone, with the ops the fused op stands for, the same amount of weight-matrix parameters, and a
   compatible shape — the largest such region, the best weight match first;
4. **reshapes**: a ``Reshape``/``Flatten``/``(Un)Squeeze``/``Transpose`` the reference lacks passes its input's
   match on, reshaped;
5. **names**: exact, or with a quantizer's suffix removed (``x_DequantizeLinear_Output`` → ``x``), when nothing
   structural applies; model inputs by name (else position), outputs by position.

Tensors inside If/Loop/Scan bodies are paired by their capture names only. Every pair says how it was aligned
(``how``); what could not be aligned is listed. Nothing here runs a model or changes one.

Example:
    >>> import onnxscope
    >>> from onnxscope.testing import mlp_model
    >>> m = onnxscope.Model(mlp_model())
    >>> al = align(m, m)
    >>> [(p.a, p.b, p.how) for p in al.rows()], al.coverage_a
    ([('h', 'h', 'name'), ('a', 'a', 'name'), ('y', 'y', 'name')], 1.0)
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnxscope._ir import ir
from onnxscope.graph import Graph, attr
from onnxscope.graph import subgraphs as subgraphs_of
from onnxscope.weights import const_array, dequantize_linear, is_const, quantize_linear

__all__ = ["Alignment", "Pair", "Step", "align", "derivedness"]

Shape = tuple[Any, ...] | None

# Ops whose output is their input, as far as comparison goes (on both sides).
_IDENTITY = frozenset({"Identity", "Dropout"})
# Quantized element types: values in them are compared after dequantizing.
_QUANT_DTYPES = frozenset({"INT8", "UINT8", "INT16", "UINT16", "INT4", "UINT4"})
_RESHAPES = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze"})
_ACTIVATIONS = frozenset(
    {"Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "HardSigmoid", "HardSwish", "Elu", "Selu", "Softplus"}
)
# Ops a fused node may stand for without being named for them (shape plumbing of a decomposition).
_NEUTRAL = frozenset(
    {
        "Identity",
        "Reshape",
        "Transpose",
        "Squeeze",
        "Unsqueeze",
        "Cast",
        "CastLike",
        "Shape",
        "Gather",
        "Concat",
        "Slice",
        "Split",
        "Expand",
        "Constant",
        "ConstantOfShape",
        "Range",
        "Equal",
        "Where",
        "Flatten",
        "Dropout",
        "IsNaN",
        "Not",
        "Less",
        "Greater",
        "GreaterOrEqual",
        "LessOrEqual",
    }
)
_LAYERNORM = frozenset(
    {"ReduceMean", "Sub", "Pow", "Add", "Sqrt", "Div", "Mul", "Reciprocal", "LayerNormalization", "Cast"}
)
_GELU = frozenset({"Add", "Mul", "Div", "Erf", "Tanh", "Pow", "Sqrt", "Gelu", "Sigmoid"})
_ANY = frozenset({"*"})
# Layout ops an optimizer moves, merges or removes around any op (onnxruntime's transpose optimizer).
_LAYOUT = frozenset({"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity"})


@dataclass(frozen=True)
class _Fusion:
    core: frozenset[str]  # the region must hold one of these
    allowed: frozenset[str]  # and only these (with _NEUTRAL when ``neutral``)
    neutral: bool = True


def _fusion(node: ir.Node) -> _Fusion | None:
    """What reference ops a (fused) op may stand for; ``None`` for an op that stands only for itself."""
    op = node.op_type
    act = str(attr(node, "activation", "") or "")
    acts = frozenset({act}) if act else frozenset()
    if op in ("FusedConv",) or (node.domain == "com.microsoft.nchwc" and op == "Conv"):
        return _Fusion(
            frozenset({"Conv"}), frozenset({"Conv", "BatchNormalization", "Add", "Mul"}) | acts, neutral=False
        )
    if op == "FusedGemm":
        return _Fusion(frozenset({"Gemm", "MatMul"}), frozenset({"Gemm", "MatMul", "Add"}) | acts, False)
    if op == "FusedMatMul":
        return _Fusion(frozenset({"MatMul"}), frozenset({"MatMul", "Transpose", "Mul", "Div"}), False)
    if op in ("Gelu", "FastGelu", "BiasGelu", "QuickGelu", "BiasFastGelu"):
        return _Fusion(frozenset({"Erf", "Tanh", "Gelu", "Sigmoid"}), _GELU)
    if op in ("LayerNormalization", "SimplifiedLayerNormalization", "RMSNormalization"):
        return _Fusion(frozenset({"ReduceMean", "LayerNormalization", "RMSNormalization"}), _LAYERNORM)
    if op in ("SkipLayerNormalization", "SkipSimplifiedLayerNormalization"):
        return _Fusion(frozenset({"ReduceMean", "LayerNormalization"}), _LAYERNORM | {"Add"})
    if op in ("Attention", "MultiHeadAttention", "GroupQueryAttention", "PackedAttention"):
        return _Fusion(frozenset({"Softmax"}), _ANY)
    if op == "EmbedLayerNormalization":
        return _Fusion(frozenset({"Gather"}), _ANY)
    if op in ("QLinearConv", "ConvInteger"):
        return _Fusion(frozenset({"Conv"}), frozenset({"Conv"}), False)
    if op == "MatMulInteger":  # an int32 accumulation: no bias in it
        return _Fusion(frozenset({"MatMul"}), frozenset({"MatMul"}), False)
    if op in (
        "QLinearMatMul",
        "MatMulIntegerToFloat",
        "DynamicQuantizeMatMul",
        "MatMulNBits",
    ):
        return _Fusion(frozenset({"MatMul", "Gemm"}), frozenset({"MatMul", "Add", "Mul", "Gemm"}), False)
    if op == "QGemm":
        return _Fusion(frozenset({"Gemm", "MatMul"}), frozenset({"Gemm", "MatMul", "Add"}), False)
    if op.startswith("QLinear") and node.domain == "com.microsoft":  # QLinearAdd, QLinearMul, QLinearSigmoid…
        inner = op[len("QLinear") :]
        return _Fusion(frozenset({inner}), frozenset({inner}), False)
    if node.domain in ("", "ai.onnx"):
        return None
    return _Fusion(frozenset(), _ANY)  # an op we do not know: any region with the same weights and shape


# A standard op whose weights differ from the reference's, or that the reference lacks, may stand for these
# (folded or fused by an optimizer): the ops one of which the region must hold, and the ops it may hold.
_ABSORBS = {
    "Conv": _Fusion(
        frozenset({"Conv"}), frozenset({"Conv", "BatchNormalization", "Add", "Mul", "Sub", "Div"}), False
    ),
    "ConvTranspose": _Fusion(
        frozenset({"ConvTranspose"}),
        frozenset({"ConvTranspose", "BatchNormalization", "Add", "Mul", "Sub", "Div"}),
        False,
    ),
    "Gemm": _Fusion(frozenset({"Gemm", "MatMul"}), frozenset({"Gemm", "MatMul", "Add", "Flatten"}), False),
    "MatMul": _Fusion(frozenset({"MatMul"}), frozenset({"MatMul", "Mul", "Div", "Transpose"}), False),
}


@dataclass(frozen=True)
class Step:
    """One change between a reference tensor and its derived counterpart: how the derived value was made from
    the reference one (``quantize`` with a scale and zero point — arrays, or the names of tensors of the derived
    run for dynamic quantization —, ``nchwc`` blocking, ``reshape``, ``transpose`` by ``perm``, ``cast``).

    Example:
        >>> s = Step("quantize", scale=np.float32(0.5), zero_point=np.uint8(0))
        >>> s.to_reference(np.array([2, 4], np.uint8), (2,), lambda n: None)
        array([1., 2.], dtype=float32)
    """

    kind: str
    scale: Any = None
    zero_point: Any = None
    axis: int | None = None
    perm: tuple[int, ...] | None = None
    dtype: str | None = None

    @property
    def dynamic(self) -> bool:
        """Whether the parameters are tensors of the derived run (dynamic quantization)."""
        return isinstance(self.scale, str)

    def _params(self, get: Callable[[str], Any]) -> tuple[np.ndarray, np.ndarray | None]:
        scale = np.asarray(get(self.scale)) if isinstance(self.scale, str) else np.asarray(self.scale)
        zp = self.zero_point
        zp = np.asarray(get(zp)) if isinstance(zp, str) else (None if zp is None else np.asarray(zp))
        return scale, zp

    def to_reference(
        self, x: np.ndarray, shape: tuple[int, ...] | None, get: Callable[[str], Any]
    ) -> np.ndarray:
        """The derived value ``x`` brought to the reference's form (``shape``: the reference array's, if known)."""
        if self.kind == "quantize":
            scale, zp = self._params(get)
            return dequantize_linear(x, scale, zp, self.axis if scale.size > 1 else None)
        if self.kind == "accumulate":  # an integer op's int32 sums, times the product of the input scales
            scale = np.asarray(get(self.scale), np.float32)
            if scale.ndim == 1 and scale.size > 1 and x.ndim:
                shape = [1] * x.ndim
                shape[self.axis if self.axis is not None else -1] = scale.size
                scale = scale.reshape(shape)
            return x.astype(np.float32) * scale
        if self.kind == "nchwc":  # [N, C padded, H, W] holding [N, C/blk, H, W, blk] in memory
            n, cp, h, w = x.shape
            blk = nchwc_block(cp, shape[1] if shape is not None and len(shape) == 4 else None)
            out = np.ascontiguousarray(x.reshape(n, cp // blk, h, w, blk).transpose(0, 1, 4, 2, 3))
            out = out.reshape(n, cp, h, w)
            return out[:, : shape[1]] if shape is not None and len(shape) == 4 else out
        if self.kind == "reshape":
            return x.reshape(shape) if shape is not None and int(np.prod(shape)) == x.size else x
        if self.kind == "transpose":
            assert self.perm is not None
            return np.transpose(x, np.argsort(self.perm))
        return x  # cast: compared in float64 anyway

    def from_reference(
        self, x: np.ndarray, shape: tuple[int, ...] | None, get: Callable[[str], Any]
    ) -> np.ndarray:
        """The reference value ``x`` in the derived model's form (``shape``: the derived array's)."""
        if self.kind == "quantize":
            scale, zp = self._params(get)
            return quantize_linear(x, scale, zp, self.axis if scale.size > 1 else None)
        if self.kind == "nchwc":
            assert shape is not None
            n, cp, h, w = shape
            blk = nchwc_block(cp, x.shape[1])
            pad = np.zeros((x.shape[0], cp, *x.shape[2:]), x.dtype)
            pad[:, : x.shape[1]] = x
            out = pad.reshape(n, cp // blk, blk, h, w).transpose(0, 1, 3, 4, 2)
            return np.ascontiguousarray(out).reshape(n, cp, h, w)
        if self.kind == "reshape":
            return x.reshape(shape) if shape is not None else x
        if self.kind == "transpose":
            return np.transpose(x, self.perm)
        if self.kind == "cast" and self.dtype:
            return x.astype(self.dtype)
        return x

    def describe(self) -> str:
        """A short phrase: ``dequantized``, ``NCHWc layout``…"""
        return {
            "quantize": "dequantized" if not self.dynamic else "dequantized (dynamic scale)",
            "accumulate": "int32 sums scaled",
            "nchwc": "NCHWc layout",
            "reshape": "reshaped",
            "transpose": f"transposed {list(self.perm or ())}",
            "cast": f"cast from {self.dtype}",
        }.get(self.kind, self.kind)


# The channel block of onnxruntime's NCHWc layout on this machine (8 with AVX2, 16 with AVX-512); the run-time
# part sets it (onnxscope.sides.probe_nchwc_block) before arrays are brought back.
NCHWC_BLOCK: int | None = None


def nchwc_block(padded: int, channels: int | None) -> int:
    """The NCHWc block of a tensor with ``padded`` channels holding ``channels``: what the run-time probe found,
    else what the padding tells (a multiple of 8 or 16 no more than a block above the channel count).

    Example:
        >>> nchwc_block(16, 8) in (8, 16)
        True
    """
    if NCHWC_BLOCK is not None:
        return NCHWC_BLOCK
    for blk in (16, 8):
        if padded % blk == 0 and (channels is None or padded - channels < blk) and padded != channels:
            return blk
    return 8


def _to_reference(
    steps: tuple[Step, ...], x: np.ndarray, shape: Any, get: Callable[[str], Any]
) -> np.ndarray:
    for s in reversed(steps):
        x = s.to_reference(x, shape if s is steps[0] else None, get)
    return x


@dataclass(frozen=True)
class Pair:
    """A tensor of model ``a`` and the tensor of model ``b`` holding the same quantity.

    ``how`` says how they were aligned (``structure``, ``structure+weights``, ``name``, ``fused Conv+Relu``,
    ``quantized``…); ``steps`` how the ``derived`` side's value (``"a"`` or ``"b"``) was made from the other's —
    :meth:`to_reference` undoes them. ``node_*``/``op_*`` are the producing nodes.
    """

    a: str
    b: str
    how: str
    steps: tuple[Step, ...] = ()
    derived: str = "b"
    node_a: str | None = None
    op_a: str | None = None
    node_b: str | None = None
    op_b: str | None = None
    grid: Step | None = None  # the derived value lies on this quantizer's grid (a dequantized tensor)

    def to_reference(
        self, x: np.ndarray, shape: tuple[int, ...] | None = None, get: Callable[[str], Any] | None = None
    ) -> np.ndarray:
        """The derived side's array brought to the other side's form (``get`` reads the derived run's tensors
        for dynamic quantization parameters; ``shape`` is the other side's array shape)."""
        return _to_reference(self.steps, x, shape, get or (lambda n: None))

    def from_reference(
        self, x: np.ndarray, shape: tuple[int, ...] | None = None, get: Callable[[str], Any] | None = None
    ) -> np.ndarray:
        """The other side's array in the derived side's form (``shape``: the derived array's shape)."""
        get = get or (lambda n: None)
        for s in self.steps:
            x = s.from_reference(x, shape if s is self.steps[-1] else None, get)
        return x

    @property
    def transform(self) -> str:
        """What :meth:`to_reference` does, in words (``""`` when nothing)."""
        return ", ".join(s.describe() for s in reversed(self.steps) if s.kind != "cast")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "a": self.a,
            "b": self.b,
            "how": self.how,
            "transform": self.transform,
            "derived": self.derived,
            "node_a": self.node_a,
            "op_a": self.op_a,
            "node_b": self.node_b,
            "op_b": self.op_b,
        }


@dataclass
class Alignment:
    """Pairs in the graph order of model ``a``, and what could not be aligned.

    ``unaligned_a``/``unaligned_b`` list each model's activation tensors (floating point or quantized integers,
    not computed from weights alone) that have no counterpart; ``coverage_a``/``coverage_b`` are the aligned
    fractions of those tensors. ``pairs`` may pair one tensor with several of the other side (a quantized
    tensor and its dequantized value); :meth:`rows` keeps one per tensor of ``a``.
    """

    pairs: list[Pair]
    unaligned_a: list[str]
    unaligned_b: list[str]
    eligible_a: int
    eligible_b: int
    reference: str = "a"
    notes: list[str] = field(default_factory=list)
    # a capture name of the derived side → the Pair holding it (for the boundary of re-runs)
    by_b: dict[str, Pair] = field(default_factory=dict)
    by_a: dict[str, list[Pair]] = field(default_factory=dict)

    @property
    def coverage_a(self) -> float:
        """Aligned fraction of model ``a``'s activation tensors."""
        return 1.0 - len(self.unaligned_a) / self.eligible_a if self.eligible_a else 1.0

    @property
    def coverage_b(self) -> float:
        """Aligned fraction of model ``b``'s activation tensors."""
        return 1.0 - len(self.unaligned_b) / self.eligible_b if self.eligible_b else 1.0

    def rows(self) -> list[Pair]:
        """One pair per tensor of ``a`` (in ``a``'s graph order): the ``b`` tensor downstream-most among its
        counterparts (the dequantized value rather than the int8 one, the reordered rather than the blocked);
        model inputs paired with model inputs are left out."""
        out: dict[str, Pair] = {}
        for p in self.pairs:
            if p.how == "input":
                continue
            out[p.a] = p  # pairs are in b's order within one a tensor: the last one wins
        order = {p.a: i for i, p in enumerate(self.pairs)}
        return sorted(out.values(), key=lambda p: order[p.a])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "reference": self.reference,
            "coverage_a": self.coverage_a,
            "coverage_b": self.coverage_b,
            "pairs": [p.to_dict() for p in self.pairs],
            "unaligned_a": list(self.unaligned_a),
            "unaligned_b": list(self.unaligned_b),
            "notes": list(self.notes),
        }


# ---- helpers over one model ---------------------------------------------------------------------------------


def derivedness(graph: Graph) -> int:
    """How many nodes mark a model as derived from another: quantizers and quantized ops, onnxruntime's contrib
    and layout ops, Casts of activations (fp16 copies) — nodes that compute weights alone do not count.

    Example:
        >>> from onnxscope import Model
        >>> from onnxscope.testing import mlp_model
        >>> derivedness(Model(mlp_model()))
        0
    """
    side = _Side(graph, None)
    n = 0
    for node in side.nodes:
        if not any(not side.const(o) for o in node.outputs):
            continue
        if node.domain not in ("", "ai.onnx") or node.op_type in (
            "QuantizeLinear",
            "DequantizeLinear",
            "DynamicQuantizeLinear",
            "QLinearConv",
            "QLinearMatMul",
            "ConvInteger",
            "MatMulInteger",
            "Cast",
        ):
            n += 1
    return n


class _Side:
    """Look-ups over one model's main graph that the matcher needs, computed once."""

    def __init__(self, graph: Graph, shapes: Mapping[str, tuple[int, ...]] | None) -> None:
        self.g = graph
        self.nodes = list(graph.ir.graph)
        self.pos = {id(n): i for i, n in enumerate(self.nodes)}
        self.inputs = [v for v in graph.ir.graph.inputs if v.name not in graph.ir.graph.initializers]
        self.outputs = list(graph.ir.graph.outputs)
        self._const: dict[int, bool] = {}
        self._shapes = shapes or {}
        self._hash: dict[int, str | None] = {}
        self._probe: dict[int, bytes | None] = {}
        self._arrays: dict[int, np.ndarray | None] = {}
        self._data: dict[int, list[ir.Value]] = {}
        self._computes: dict[int, bool] = {}
        self._eligible: dict[int, bool] = {}
        self._canon: dict[int, ir.Value] = {}
        self._weights: dict[tuple[int, bool], int] = {}
        # values that depend on no model input are constants here, whatever computes them (a Gather of a buffer,
        # a mask built from Range…): an optimizer may fold them into weights
        live: set[int] = {id(v) for v in self.inputs}
        for n in self.nodes:
            ins = [v for v in (n.inputs[:1] if n.op_type == "CastLike" else n.inputs) if v is not None]
            if (
                any(id(v) in live for v in ins)
                or (
                    subgraphs_of(n)
                    and not all(v.const_value is not None or v.producer() is not None for v in ins)
                )
                or (subgraphs_of(n) and _reads_outer(n, live))
            ):
                live.update(id(o) for o in n.outputs)
        self._live = live
        # quantization parameters computed at run time (DynamicQuantizeLinear's scale and zero point, their
        # products): they go with the data they quantize, they are not data themselves
        params: set[int] = set()
        for n in self.nodes:
            if n.op_type == "DynamicQuantizeLinear":
                params.update(id(o) for o in n.outputs[1:])
            elif (
                n.outputs
                and all(v is None or id(v) in params or id(v) not in live for v in n.inputs)
                and any(v is not None and id(v) in params for v in n.inputs)
            ):
                params.update(id(o) for o in n.outputs)
        self.params = params
        self.names = {v.name: v for n in self.nodes for v in n.outputs if v.name}
        self.names.update((v.name, v) for v in self.inputs if v.name)

    def const(self, v: ir.Value | None) -> bool:
        if v is None:
            return True
        if v.graph is self.g.ir.graph or v.is_initializer():
            return id(v) not in self._live
        k = id(v)
        if k not in self._const:
            self._const[k] = is_const(v)
        return self._const[k]

    def data_inputs(self, node: ir.Node) -> list[ir.Value]:
        k = id(node)
        got = self._data.get(k)
        if got is None:
            got = self._data[k] = [
                v
                for v in node.inputs
                if v is not None and v.name and not self.const(v) and id(v) not in self.params
            ]
        return got

    def computes(self, node: ir.Node) -> bool:
        """Whether a node computes data (an eligible output), not shape plumbing."""
        k = id(node)
        got = self._computes.get(k)
        if got is None:
            got = self._computes[k] = any(self.eligible(x) for x in node.outputs)
        return got

    def shape(self, v: ir.Value) -> Shape:
        if v.name in self._shapes:
            return tuple(self._shapes[v.name])
        return self.g.shape(v)

    def dtype(self, v: ir.Value) -> str | None:
        dt = self.g.dtype(v)
        return None if dt is None else dt.name

    def eligible(self, v: ir.Value) -> bool:
        """An activation tensor comparisons look at: floating point or quantized integers."""
        k = id(v)
        got = self._eligible.get(k)
        if got is None:
            if not v.name or self.const(v) or id(v) in self.params:
                got = False
            else:
                dt = self.dtype(v)
                got = dt is None or dt in _QUANT_DTYPES or dt.startswith(("FLOAT", "DOUBLE", "BFLOAT"))
            self._eligible[k] = got
        return got

    def canon(self, v: ir.Value) -> ir.Value:
        """The value through Identity/Dropout chains (an alias is the same tensor)."""
        got = self._canon.get(id(v))
        if got is None:
            got = self._canon[id(v)] = self._canon_of(v)
        return got

    def _canon_of(self, v: ir.Value) -> ir.Value:
        seen = 0
        while seen < 64:
            p = v.producer()
            if p is None or p.op_type not in _IDENTITY or not p.inputs or p.inputs[0] is None:
                return v
            if p.op_type == "Dropout" and len(p.outputs) > 1 and v is not p.outputs[0]:
                return v
            v = p.inputs[0]
            seen += 1
        return v

    def array(self, v: ir.Value) -> np.ndarray | None:
        k = id(v)
        if k not in self._arrays:
            found = const_array(v)
            a = None if found is None else np.asarray(found[0])
            self._arrays[k] = a if a is not None and a.dtype.kind in "fiub" else None
        return self._arrays[k]

    def digest(self, v: ir.Value) -> str | None:
        """A hash of the weight's values (as float32)."""
        k = id(v)
        if k not in self._hash:
            a = self.array(v)
            self._hash[k] = (
                None
                if a is None
                else hashlib.blake2b(
                    memoryview(np.ascontiguousarray(a, np.float32)), digest_size=12
                ).hexdigest()
            )
        return self._hash[k]

    def probe(self, v: ir.Value) -> bytes | None:
        """64 values spread over the weight (as float32), and its size: equal for equal weights, and cheap — only
        weights whose probes agree are hashed whole (reading a large weight costs more than the rest of the
        alignment)."""
        k = id(v)
        if k not in self._probe:
            a = self.array(v)
            if a is None:
                self._probe[k] = None
            else:
                flat = a.reshape(-1)
                sample = np.asarray(flat[:: max(1, flat.size // 64)][:64], np.float32)
                self._probe[k] = np.int64(flat.size).tobytes() + sample.tobytes()
        return self._probe[k]

    def same(self, v: ir.Value, other: _Side, w: ir.Value) -> bool:
        """Whether weight ``v`` of this side holds the values of weight ``w`` of ``other``."""
        p = self.probe(v)
        return p is not None and p == other.probe(w) and self.digest(v) == other.digest(w)

    def weight_size(self, node: ir.Node, count: bool = False) -> int:
        """Elements of the weight matrices a node consumes (constant inputs with two or more axes longer than
        one: a bias shaped [1, C, 1, 1] is a vector), or how many."""
        key = (id(node), count)
        got = self._weights.get(key)
        if got is None:
            got = self._weights[key] = self._weight_size(node, count)
        return got

    def _weight_size(self, node: ir.Node, count: bool) -> int:
        total = 0
        for v in node.inputs:
            if v is None or not self.const(v):
                continue
            s = self.g.shape(v)
            if s is None:
                a = self.array(v)
                s = None if a is None else a.shape
            if s is not None and all(isinstance(d, int) for d in s) and sum(d > 1 for d in s) >= 2:
                total += 1 if count else int(np.prod(s))
        return total

    def consts(self, node: ir.Node) -> list[ir.Value]:
        return [v for v in node.inputs if v is not None and v.name and self.const(v)]


def _shape_fit(ref: Shape, der: Shape) -> str | None:
    """How a derived shape relates to the reference's: ``same``, ``unknown``, ``reshape``, ``nchwc`` or ``None``."""
    if ref is None or der is None:
        return "unknown"
    known = all(isinstance(d, int) and d > 0 for d in (*ref, *der))
    if len(ref) == len(der):
        if all(
            not (isinstance(a, int) and isinstance(b, int) and a > 0 and b > 0) or a == b
            for a, b in zip(ref, der, strict=True)
        ):
            return "same" if known else "unknown"
    if known and len(der) == 4 and len(ref) == 4:  # onnxruntime's NCHWc tensors: channels padded to a block
        if (der[0], der[2], der[3]) == (ref[0], ref[2], ref[3]) and der[1] > ref[1] and der[1] % 8 == 0:
            return "nchwc"
    if known and int(np.prod(ref)) == int(np.prod(der)):
        return "reshape"
    return None


def _quant_step(node: ir.Node, side: _Side) -> Step | None:
    """The quantize step of a QuantizeLinear / QLinear* output (static parameters)."""
    if node.op_type == "QuantizeLinear":
        s_in, z_in = node.inputs[1], node.inputs[2] if len(node.inputs) > 2 else None
    elif node.op_type == "DynamicQuantizeLinear":
        return Step(
            "quantize",
            scale=side.g.tensor_name(node.outputs[1]),
            zero_point=side.g.tensor_name(node.outputs[2]),
        )
    else:
        idx = {"QLinearConv": (6, 7), "QLinearMatMul": (6, 7), "QGemm": (7, 8)}.get(node.op_type)
        if idx is None and node.op_type.startswith("QLinear"):
            idx = (len(node.inputs) - 2, len(node.inputs) - 1)
            if node.op_type in ("QLinearAdd", "QLinearMul"):
                idx = (6, 7)
            elif node.op_type in (
                "QLinearSigmoid",
                "QLinearLeakyRelu",
                "QLinearSoftmax",
                "QLinearGlobalAveragePool",
            ):
                idx = (3, 4)
        if idx is None or len(node.inputs) <= idx[0]:
            return None
        s_in = node.inputs[idx[0]]
        z_in = node.inputs[idx[1]] if len(node.inputs) > idx[1] else None
    scale = side.array(s_in) if s_in is not None else None
    if scale is None:
        return None
    zp = side.array(z_in) if z_in is not None else None
    axis = int(attr(node, "axis", 1)) if scale.size > 1 else None
    return Step("quantize", scale=scale, zero_point=zp, axis=axis)


def _clamps_negatives(step: Step) -> bool:
    """Whether a quantizer's range starts at or above zero (so it absorbed a Relu before it)."""
    if step.dynamic or step.scale is None:
        return False
    zp = np.asarray(step.zero_point) if step.zero_point is not None else np.zeros((), np.uint8)
    if zp.dtype.kind not in "iu":
        return False
    lo = np.iinfo(zp.dtype).min
    return bool(np.all((lo - zp.astype(np.int64)) * np.asarray(step.scale, np.float64) >= -1e-12))


_SUFFIXES = (
    "_DequantizeLinear_Output",
    "_QuantizeLinear_Output",
    "_QuantizeLinear_Input",
    "_output_quantized",
    "_quantized",
    "_dequantized",
)


def _name_candidates(name: str) -> list[str]:
    out = [name]
    for s in _SUFFIXES:
        if name.endswith(s):
            out.append(name[: -len(s)])
    return out


@dataclass
class _Match:
    ref: ir.Value  # canonical reference value
    steps: tuple[Step, ...]
    how: str
    grid: Step | None = None  # the quantizer whose grid a dequantized value lies on


class _Matcher:
    def __init__(self, ref: _Side, der: _Side) -> None:
        self.ref, self.der = ref, der
        self.m: dict[int, _Match] = {}  # id(derived value) → match

    # -- region search ---------------------------------------------------------------------------------------
    def _ref_inputs(self, node: ir.Node) -> set[int]:
        return {id(self.ref.canon(v)) for v in self.ref.data_inputs(node)}

    def _same_op(
        self, node: ir.Node, d_ref: set[int], outs: list[ir.Value], reshaped: bool = False
    ) -> list[ir.Node]:
        """Reference nodes of the same op on the same inputs, with outputs of a fitting shape (merely the same
        size when the derived inputs were reshaped: an elementwise op on flattened tensors)."""
        ok = ("same", "unknown", "reshape") if reshaped else ("same", "unknown")
        found: list[ir.Node] = []
        seen: set[int] = set()
        for k in d_ref:
            v = self._value_of[k]
            for user, _ in self._uses(v):
                if id(user) in seen:
                    continue
                seen.add(id(user))
                if not _same_kind(node, user):
                    continue
                if self._ref_inputs(user) != d_ref or len(user.outputs) < len(outs):
                    continue
                fits = [
                    _shape_fit(self.ref.shape(ro), self.der.shape(o))
                    for ro, o in zip(user.outputs, outs, strict=False)
                    if o.name
                ]
                if all(f in ok for f in fits):
                    found.append(user)
        return sorted(found, key=lambda n: self.ref.pos.get(id(n), 0))

    def _uses(self, v: ir.Value) -> list[tuple[ir.Node, int]]:
        """Consumers of ``v`` and of its Identity aliases."""
        out = []
        stack = [v]
        while stack:
            x = stack.pop()
            for user, i in x.uses():
                if user.op_type in _IDENTITY:
                    stack.extend(o for o in user.outputs[:1])
                out.append((user, i))
        return out

    def _closed(self, d_ref: set[int], limit: int = 96) -> list[ir.Node]:
        """Reference nodes computable from ``d_ref`` (and weights) alone, in graph order, at most ``limit``."""
        avail = set(d_ref)
        heap: list[tuple[int, int, ir.Node]] = []
        pushed: set[int] = set()

        def push(v: ir.Value) -> None:
            for user, _ in v.uses():
                if id(user) not in pushed and user.graph is self.ref.g.ir.graph:
                    pushed.add(id(user))
                    heapq.heappush(heap, (self.ref.pos.get(id(user), 0), id(user), user))

        for k in d_ref:
            push(self._value_of[k])
        closed: list[ir.Node] = []
        while heap and len(closed) < limit:
            _, _, node = heapq.heappop(heap)
            ins = [self.ref.canon(v) for v in self.ref.data_inputs(node)]
            if ins and all(id(v) in avail for v in ins):
                closed.append(node)
                for o in node.outputs:
                    avail.add(id(self.ref.canon(o)))
                    avail.add(id(o))
                    push(o)
        return closed

    def _regions(
        self, node: ir.Node, d_ref: set[int], fusion: _Fusion, out: ir.Value
    ) -> list[tuple[ir.Value, list[ir.Node], str]]:
        closed = self._closed(d_ref)
        ref = self.ref
        # onnxruntime's NCHWc kernels pad their weights to whole channel blocks: count the matrices instead
        count = node.domain == "com.microsoft.nchwc"
        want_w = self.der.weight_size(node, count)
        # a fused node with one output hides its intermediates: none of them may be read outside the region
        single = sum(1 for v in node.outputs if v.name) == 1
        out_shape = self.der.shape(out)
        integer = node.op_type in ("ConvInteger", "MatMulInteger")
        allowed = None
        if "*" not in fusion.allowed:
            allowed = fusion.allowed | (_NEUTRAL if fusion.neutral else _IDENTITY)
        # per closed node, in graph order: the region from d_ref to it, the data ops in it, the inputs it uses,
        # its weight size — built from its producers' (each node's region is its own plus theirs)
        regions: dict[int, frozenset[int]] = {}
        ops_of: dict[int, frozenset[str]] = {}
        used_of: dict[int, frozenset[int]] = {}
        by_id: dict[int, ir.Node] = {}
        found = []
        for n in closed:
            by_id[id(n)] = n
            region = {id(n)}
            ops = {n.op_type} if ref.computes(n) else set()
            used = {id(ref.canon(v)) for v in ref.data_inputs(n)}
            for v in ref.data_inputs(n):
                p = v.producer()
                if p is None or id(p) not in regions or id(ref.canon(v)) in d_ref:
                    continue
                region |= regions[id(p)]
                ops |= ops_of[id(p)]
                used |= used_of[id(p)]
            regions[id(n)], ops_of[id(n)], used_of[id(n)] = frozenset(region), frozenset(ops), frozenset(used)
            if not d_ref <= used or sum(ref.weight_size(by_id[k], count) for k in region) != want_w:
                continue
            if fusion.core and not ops & fusion.core:
                continue
            if allowed is not None and not ops <= allowed:
                continue
            if integer and any(len(by_id[k].inputs) > 2 and by_id[k].inputs[2] is not None for k in region):
                continue  # an integer op's sums hold no bias; a Conv/Gemm with one is another tensor
            for o in n.outputs:
                if not o.name or not ref.eligible(o):
                    continue
                fit = _shape_fit(ref.shape(o), out_shape)
                if fit is None:
                    continue
                nodes = [by_id[k] for k in region]
                if single and self._escapes(nodes, o):
                    continue
                found.append((o, nodes, fit))
        return found

    def _escapes(self, nodes: list[ir.Node], end: ir.Value) -> bool:
        """Whether a value computed inside the region (other than its end) feeds a data op outside it."""
        inside = {id(n) for n in nodes}
        for n in nodes:
            for v in n.outputs:
                if v is end or not v.name:
                    continue
                for user, _ in self._uses(v):
                    if id(user) in inside or user.op_type in _IDENTITY:
                        continue
                    if any(self.ref.eligible(x) for x in user.outputs):
                        return True
        return False

    def _weight_score(self, node: ir.Node, nodes: Iterable[ir.Node]) -> float:
        mine = [v for v in self.der.consts(node)]
        theirs = [v for n in nodes for v in self.ref.consts(n)]
        score = 0.0
        for v in mine:
            a = self.der.array(v)
            if a is None or a.size <= 1:
                continue
            best = 0.0
            for w in theirs:
                b = self.ref.array(w)
                if b is None or b.size != a.size:
                    continue
                if self.der.same(v, self.ref, w):
                    best = 1.0
                    break
                best = max(best, _similarity(a, b))
            score += best
        return score

    def _exact_weights(self, node: ir.Node, other: ir.Node) -> bool:
        mine = [
            v
            for v in self.der.consts(node)
            if (a := self.der.array(v)) is not None and a.dtype.kind == "f" and a.size > 1
        ]
        theirs = self.ref.consts(other)
        return bool(mine) and all(any(self.der.same(v, self.ref, w) for w in theirs) for v in mine)

    # -- the walk ---------------------------------------------------------------------------------------------
    def run(self) -> None:
        ref, der = self.ref, self.der
        self._value_of: dict[int, ir.Value] = {}
        for n in ref.nodes:
            for v in n.outputs:
                self._value_of[id(v)] = v
                self._value_of[id(ref.canon(v))] = ref.canon(v)
        for v in ref.inputs:
            self._value_of[id(v)] = v
        by_name = {v.name: v for v in ref.inputs}
        for i, v in enumerate(der.inputs):
            r = by_name.get(v.name)
            if r is None and len(der.inputs) == len(ref.inputs):
                r = ref.inputs[i]
            if r is not None:
                self.m[id(v)] = _Match(r, _cast_steps(ref, der, r, v), "input")
        for node in der.nodes:
            if node.op_type == "Constant" or all(der.const(o) for o in node.outputs if o.name):
                continue
            self._visit(node)
        # outputs by position, where nothing else matched them
        if len(der.outputs) == len(ref.outputs):
            for o, r in zip(der.outputs, ref.outputs, strict=True):
                if id(o) not in self.m and _shape_fit(ref.shape(r), der.shape(o)) in ("same", "unknown"):
                    self.m[id(o)] = _Match(ref.canon(r), (), "output position")

    def _visit(self, node: ir.Node) -> None:
        ref, der = self.ref, self.der
        outs = [o for o in node.outputs]
        data = der.data_inputs(node)
        matched = [self.m.get(id(v)) for v in data]
        floats = [(v, mt) for v, mt in zip(data, matched, strict=True) if mt is not None or _is_float(der, v)]
        structural = bool(floats) and all(mt is not None for _, mt in floats)
        d_ref = {id(mt.ref) for _, mt in floats if mt is not None}
        names = self._names(outs)
        op = node.op_type
        if structural:
            # 1. a reference node of the same op on the same inputs
            reshaped = any(mt is not None and any(x.kind == "reshape" for x in mt.steps) for _, mt in floats)
            same = self._same_op(node, d_ref, outs, reshaped)
            if same:
                pick = self._pick(node, same, names)
                exact = self._exact_weights(node, pick)
                how = "structure+weights" if exact else "structure"
                for o, r in zip(outs, pick.outputs, strict=False):
                    if o.name and r.name:
                        steps = _cast_steps(ref, der, r, o) + self._inherited_layout(node, floats, o)
                        if _shape_fit(ref.shape(r), der.shape(o)) == "reshape":
                            steps = _append(steps, (Step("reshape"),))
                        self.m[id(o)] = _Match(ref.canon(r), steps, "name" if o.name == r.name else how)
                if op in _ABSORBS and not exact and der.consts(node):
                    self._absorb_more(node, pick, d_ref, names, floats)
                return
            # 2. transparent ops pass their input's match on
            if self._transparent(node, data, matched):
                return
            mt0 = matched[0] if matched else None
            layout = op in _RESHAPES or op == "Transpose"
            if layout and mt0 is not None and outs and outs[0].name:
                undone = _undo_reshapes(mt0.steps)  # a reshape back to the reference's shape
                if undone is not None and _shape_fit(ref.shape(mt0.ref), der.shape(outs[0])) == "same":
                    self.m[id(outs[0])] = _Match(
                        mt0.ref, undone, mt0.how if undone == mt0.steps else "reshaped back"
                    )
                    return
            # 3. a fused node stands for a region of the reference
            fusion = _fusion(node)
            if fusion is None:  # a standard op: itself, or what it replaced, amid moved layout ops
                base = _ABSORBS.get(op, _Fusion(frozenset({op}), frozenset({op}), False))
                fusion = _Fusion(base.core, base.allowed | _LAYOUT, False)
            if outs and outs[0].name:
                regions = self._regions(node, d_ref, fusion, outs[0])
                if regions:
                    o, nodes = self._pick_region(node, regions, names.get(id(outs[0])))
                    how = "fused " + "+".join(_ops_in_order(ref, nodes)) if len(nodes) > 1 else "structure"
                    steps = _quant_steps_of(node, der) + (
                        _layout_steps(ref, der, o, outs[0]) or self._inherited_layout(node, floats, outs[0])
                    )
                    self.m[id(outs[0])] = _Match(ref.canon(o), steps, how)
                    self._absorbed_relu(outs[0])
                    return
            # 4. a reshape the reference lacks
            if layout and mt0 is not None and outs and outs[0].name:
                step = _reshape_step(node, der, outs[0], mt0.ref, ref)
                if step is not None:
                    self.m[id(outs[0])] = _Match(mt0.ref, _append(mt0.steps, step), "reshaped")
                    return
        elif self._transparent(node, data, matched):
            return
        # 5. names
        for o in outs:
            r = names.get(id(o))
            if r is not None and id(o) not in self.m:
                fit = _shape_fit(ref.shape(r), der.shape(o))
                if fit is None:
                    continue
                how = "name" if r.name == o.name else "quantizer rename"
                steps = _layout_steps(ref, der, r, o) if fit == "nchwc" else ()
                if der.dtype(o) in _QUANT_DTYPES and ref.dtype(r) not in _QUANT_DTYPES:
                    q = _quant_steps_of(node, der)
                    if not q:
                        continue
                    steps = q + steps
                elif fit == "reshape":
                    steps = (Step("reshape"),)
                self.m[id(o)] = _Match(ref.canon(r), (*steps, *_cast_steps(ref, der, r, o)), how)

    def _inherited_layout(
        self, node: ir.Node, floats: list[tuple[ir.Value, _Match | None]], out: ir.Value
    ) -> tuple[Step, ...]:
        """onnxruntime runs elementwise ops on NCHWc-blocked tensors as they are: their outputs stay blocked."""
        if node.domain == "com.microsoft.nchwc":  # every NCHWc op but ReorderOutput writes blocked tensors
            return () if node.op_type == "ReorderOutput" else (Step("nchwc"),)
        if node.op_type in _LAYOUT or node.op_type == "Transpose":
            return ()
        if self.der.shape(out) is not None and len(self.der.shape(out) or ()) != 4:
            return ()
        if any(mt is not None and mt.steps and mt.steps[-1].kind == "nchwc" for _, mt in floats):
            return (Step("nchwc"),)
        return ()

    def _names(self, outs: list[ir.Value]) -> dict[int, ir.Value]:
        found = {}
        for o in outs:
            if not o.name:
                continue
            for cand in _name_candidates(o.name):
                r = self.ref.names.get(cand)
                if r is not None:
                    found[id(o)] = r
                    break
        return found

    def _pick(self, node: ir.Node, same: list[ir.Node], names: dict[int, ir.Value]) -> ir.Node:
        """Among reference nodes of the same op on the same inputs: the one the output's name says, else the
        one with the same attributes, small constants and input order, else the best weight match."""
        if len(same) == 1:
            return same[0]
        want = {id(self.ref.canon(r)) for r in names.values()}
        for n in same:
            if any(id(self.ref.canon(o)) in want for o in n.outputs):
                return n
        likeness = [self._likeness(node, n) for n in same]
        best = max(likeness)
        same = [n for n, k in zip(same, likeness, strict=True) if k == best]
        if len(same) == 1:
            return same[0]
        scores = [self._weight_score(node, [n]) for n in same]
        return same[int(np.argmax(scores))]

    def _likeness(self, node: ir.Node, other: ir.Node) -> int:
        score = 0
        for k, a in node.attributes.items():
            b = other.attributes.get(k)
            if b is not None and repr(a.value) == repr(b.value):
                score += 1
        for i, (v, w) in enumerate(zip(node.inputs, other.inputs, strict=False)):
            if v is None or w is None:
                continue
            mt = self.m.get(id(v))
            if mt is not None:
                score += int(self.ref.canon(w) is mt.ref)
            elif self.der.const(v) and self.ref.const(w):
                a, b = self.der.array(v), self.ref.array(w)
                if a is not None and b is not None and a.size <= 64 and a.shape == b.shape:
                    score += 2 * int(np.array_equal(a, b))
            del i
        return score

    def _pick_region(
        self, node: ir.Node, regions: list[tuple[ir.Value, list[ir.Node], str]], named: ir.Value | None
    ) -> tuple[ir.Value, list[ir.Node]]:
        """The region a fused node stands for: the one its output's name says, else by the best weight match,
        then where the reference goes on with the ops the derived graph goes on with, the closest shape, an end
        that is no layout op, the most ops absorbed."""
        if named is not None:
            for o, nodes, _ in regions:
                if self.ref.canon(o) is self.ref.canon(named):
                    return o, nodes
        if len(regions) == 1:
            return regions[0][0], regions[0][1]
        fit_rank = {"same": 2, "unknown": 1}
        after = _next_ops(node.outputs[0], self.der)

        def key(r: tuple[ir.Value, list[ir.Node], str]) -> tuple[Any, ...]:
            o, nodes, fit = r
            p = o.producer()
            return (
                round(self._weight_score(node, nodes), 3),
                _jaccard(after, {u.op_type for u, _ in self._uses(o) if u.op_type not in _IDENTITY}),
                fit_rank.get(fit, 0),
                p is not None and p.op_type not in _NEUTRAL,
                len(nodes),
                self.ref.pos.get(id(p), 0),
            )

        best = max(regions, key=key)
        return best[0], best[1]

    def _absorb_more(
        self,
        node: ir.Node,
        pick: ir.Node,
        d_ref: set[int],
        names: dict[int, ir.Value],
        floats: list[tuple[ir.Value, _Match | None]],
    ) -> None:
        """A standard op with other weights than its reference counterpart: an optimizer may have folded the
        next ops into it (BatchNormalization into a Conv); take the region's end when the derived graph goes
        on from there."""
        out = node.outputs[0]
        fusion = _ABSORBS[node.op_type]
        nexts = {u.op_type for o in pick.outputs for u, _ in self._uses(o)}
        if not nexts & (fusion.allowed - {node.op_type}):
            return  # nothing it could have absorbed follows the reference node
        regions = self._regions(node, d_ref, fusion, out)
        if len(regions) <= 1:
            return
        named = names.get(id(out))
        o, nodes = self._pick_region(node, regions, named)
        if len(nodes) > 1 and all(n.op_type != node.op_type or n is pick for n in nodes):
            how = "fused " + "+".join(_ops_in_order(self.ref, nodes))
            steps = _cast_steps(self.ref, self.der, o, out) + self._inherited_layout(node, floats, out)
            self.m[id(out)] = _Match(self.ref.canon(o), steps, how)

    def _transparent(self, node: ir.Node, data: list[ir.Value], matched: list[_Match | None]) -> bool:
        op, der = node.op_type, self.der
        if not data or matched[0] is None or not node.outputs or not node.outputs[0].name:
            return False
        mt = matched[0]
        out = node.outputs[0]
        if node.domain in ("", "ai.onnx") and op in _IDENTITY:
            self.m[id(out)] = _Match(mt.ref, mt.steps, mt.how, mt.grid)
            return True
        acc = next((i for i, x in enumerate(mt.steps) if x.kind == "accumulate"), None)
        if op == "Cast":
            if acc is not None:  # int32 sums to float: part of dequantizing them
                self.m[id(out)] = _Match(mt.ref, mt.steps, mt.how)
            else:
                self.m[id(out)] = _Match(
                    mt.ref, (*mt.steps, *_cast_steps(self.ref, der, mt.ref, out)), "cast"
                )
            return True
        if op == "Mul" and acc is not None and all(x.kind == "reshape" for x in mt.steps[acc + 1 :]):
            if any(v is not None and v.name == mt.steps[acc].scale for v in node.inputs):
                steps = mt.steps[:acc] + mt.steps[acc + 1 :]
                self.m[id(out)] = _Match(mt.ref, steps, "dequantized (integer op)")
                return True
        if op in ("QuantizeLinear", "DynamicQuantizeLinear"):
            step = _quant_step(node, der)
            if step is None:
                return False
            self.m[id(out)] = _Match(mt.ref, (*mt.steps, step), "quantized")
            self._absorbed_relu(out)
            return True
        if op == "DequantizeLinear" and mt.steps and mt.steps[-1].kind == "quantize":
            how = mt.how if mt.how != "quantized" else "dequantized"
            self.m[id(out)] = _Match(mt.ref, mt.steps[:-1], how, grid=mt.steps[-1])
            return True
        if node.domain == "com.microsoft.nchwc" and op == "ReorderInput":
            self.m[id(out)] = _Match(mt.ref, (*mt.steps, Step("nchwc")), "layout (NCHWc)")
            return True
        if (
            node.domain == "com.microsoft.nchwc"
            and op == "ReorderOutput"
            and mt.steps
            and mt.steps[-1].kind == "nchwc"
        ):
            self.m[id(out)] = _Match(mt.ref, mt.steps[:-1], mt.how)
            return True
        return False

    def _absorbed_relu(self, out: ir.Value) -> None:
        """A quantizer that clamps negatives after a tensor the reference feeds to a Relu stands for that Relu
        (quantize_static removes the Relu and lets the range clamp), unless the derived graph applies a Relu
        itself."""
        mt = self.m.get(id(out))
        if (
            mt is None
            or not mt.steps
            or mt.steps[-1].kind != "quantize"
            or not _clamps_negatives(mt.steps[-1])
        ):
            return
        users = [u for u, _ in self._uses(mt.ref) if u.op_type not in _IDENTITY]
        if len(users) != 1 or users[0].op_type != "Relu":
            return
        stack, seen = [out], 0
        while (
            stack and seen < 32
        ):  # the derived graph's own Relu after the quantizer keeps the match as it is
            v = stack.pop()
            seen += 1
            for user, _ in v.uses():
                if user.op_type in ("Relu", "Clip"):
                    return
                if user.op_type in ("DequantizeLinear", "QuantizeLinear", "Identity", "Cast"):
                    stack.extend(user.outputs[:1])
        self.m[id(out)] = _Match(
            self.ref.canon(users[0].outputs[0]),
            mt.steps,
            mt.how + " (Relu absorbed by the quantizer's range)",
            mt.grid,
        )


_PASS_ON = frozenset(
    {
        "Identity",
        "Cast",
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "ReorderOutput",
        "ReorderInput",
    }
)


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def _next_ops(v: ir.Value, side: _Side) -> set[str]:
    """The ops that consume ``v``, looking through quantizers, casts and layout reorders."""
    out: set[str] = set()
    stack, seen = [v], 0
    while stack and seen < 64:
        x = stack.pop()
        seen += 1
        for user, _ in x.uses():
            if user.op_type in _PASS_ON:
                stack.extend(user.outputs[:1])
            else:
                out.add(user.op_type)
    return out


def _reads_outer(node: ir.Node, live: set[int]) -> bool:
    """Whether a control-flow node's bodies read a live value of an enclosing graph."""
    for _, sub in subgraphs_of(node):
        for inner in ir.traversal.RecursiveGraphIterator(sub):
            if any(v is not None and id(v) in live for v in inner.inputs):
                return True
    return False


def _dom(node: ir.Node) -> str:
    return "" if node.domain in ("", "ai.onnx") else node.domain


# onnxruntime's NCHWc ops that mean a standard op (on blocked tensors)
_NCHWC_AS = {"Upsample": ("Resize", "Upsample")}


def _same_kind(der: ir.Node, ref: ir.Node) -> bool:
    """Whether a derived node is the same op as a reference node (an NCHWc op counts as the standard one it
    blocks, unless it fused an activation)."""
    if der.domain == "com.microsoft.nchwc":
        if "activation" in der.attributes or der.op_type in ("ReorderInput", "ReorderOutput"):
            return False
        return _dom(ref) == "" and ref.op_type in _NCHWC_AS.get(der.op_type, (der.op_type,))
    return der.op_type == ref.op_type and _dom(der) == _dom(ref)


def _is_float(side: _Side, v: ir.Value) -> bool:
    dt = side.dtype(v)
    return dt is None or dt.startswith(("FLOAT", "DOUBLE", "BFLOAT")) or dt in _QUANT_DTYPES


def _similarity(a: np.ndarray, b: np.ndarray) -> float:
    """|correlation| of two weights of the same size (tried as given and, for matrices, transposed)."""
    x = np.asarray(a, np.float64).ravel()
    best = 0.0
    cands = [np.asarray(b, np.float64).ravel()]
    if b.ndim == 2:
        cands.append(np.asarray(b, np.float64).T.ravel())
    for y in cands:
        xs, ys = x - x.mean(), y - y.mean()
        d = float(np.sqrt((xs @ xs) * (ys @ ys)))
        if d > 0:
            best = max(best, abs(float(xs @ ys)) / d)
    return best


def _ops_in_order(side: _Side, nodes: list[ir.Node]) -> list[str]:
    out: list[str] = []
    for n in sorted(nodes, key=lambda n: side.pos.get(id(n), 0)):
        if n.op_type not in _NEUTRAL and n.op_type not in out:
            out.append(n.op_type)
    return out or [nodes[0].op_type]


def _cast_steps(ref: _Side, der: _Side, r: ir.Value, o: ir.Value) -> tuple[Step, ...]:
    rd, od = ref.dtype(r), der.dtype(o)
    if rd is None or od is None or rd == od or od in _QUANT_DTYPES:
        return ()
    try:
        return (Step("cast", dtype=str(ir.DataType[od].numpy())),)
    except (KeyError, TypeError):
        return ()


def _quant_steps_of(node: ir.Node, der: _Side) -> tuple[Step, ...]:
    if node.op_type in ("MatMulInteger", "ConvInteger"):
        scale = _accumulation_scale(node)
        if scale is None:
            return ()
        return (Step("accumulate", scale=scale, axis=1 if node.op_type == "ConvInteger" else -1),)
    if node.op_type.startswith("QLinear") or node.op_type in ("QGemm", "QuantizeLinear"):
        step = _quant_step(node, der)
        return (step,) if step is not None else ()
    return ()


def _accumulation_scale(node: ir.Node) -> str | None:
    """The tensor that scales an integer op's int32 sums to real values (``Cast → Mul(·, scale)`` after it)."""
    out = node.outputs[0]
    for user, _ in out.uses():
        if user.op_type == "Cast":
            out = user.outputs[0]
            break
    for user, i in out.uses():
        if user.op_type == "Mul" and len(user.inputs) == 2 and user.inputs[1 - i] is not None:
            return user.inputs[1 - i].name
    return None


def _layout_steps(ref: _Side, der: _Side, r: ir.Value, o: ir.Value) -> tuple[Step, ...]:
    fit = _shape_fit(ref.shape(r), der.shape(o))
    if fit == "nchwc":
        return (Step("nchwc"),)
    if fit == "reshape":
        return (Step("reshape"),)
    if fit == "unknown" and o.producer() is not None and o.producer().domain == "com.microsoft.nchwc":
        if o.producer().op_type != "ReorderOutput":
            return (Step("nchwc"),)
    return ()


def _undo_reshapes(steps: tuple[Step, ...]) -> tuple[Step, ...] | None:
    """``steps`` without their trailing reshapes (``None`` if a transpose sits among the shape changes)."""
    out = list(steps)
    while out and out[-1].kind == "reshape":
        out.pop()
    if any(s.kind in ("transpose", "nchwc") for s in out[len(out) :]):
        return None
    return tuple(out)


def _append(steps: tuple[Step, ...], new: tuple[Step, ...]) -> tuple[Step, ...]:
    """``steps`` then ``new``, consecutive reshapes merged (one reshape to the reference's shape undoes both)."""
    out = list(steps)
    for s in new:
        if s.kind == "reshape" and out and out[-1].kind == "reshape":
            continue
        out.append(s)
    return tuple(out)


def _reshape_step(
    node: ir.Node, der: _Side, out: ir.Value, r: ir.Value, ref: _Side
) -> tuple[Step, ...] | None:
    fit = _shape_fit(ref.shape(r), der.shape(out))
    if fit == "same":
        return ()
    if node.op_type == "Transpose":
        perm = attr(node, "perm", None)
        if perm is None:
            return None
        return (Step("transpose", perm=tuple(int(p) for p in perm)),)
    if fit in ("reshape", "unknown"):
        return (Step("reshape"),)
    return None


# ---- the public function ------------------------------------------------------------------------------------


def align(
    a: Graph,
    b: Graph,
    *,
    shapes_a: Mapping[str, tuple[int, ...]] | None = None,
    shapes_b: Mapping[str, tuple[int, ...]] | None = None,
    reference: str | None = None,
) -> Alignment:
    """Pair the tensors of models ``a`` and ``b`` (see the module's description for how).

    Parameters:
        a, b: the two models (:class:`onnxscope.Model`); they may be the same model.
        shapes_a, shapes_b: tensor shapes seen at run time (capture name → shape), to complete what shape
            inference knows (onnxruntime's contrib ops are unknown to it).
        reference: ``"a"`` or ``"b"``: which model the other is derived from (default: the one with fewer
            quantizer, contrib and layout nodes — :func:`derivedness` —, ``a`` on a tie).

    Returns:
        An :class:`Alignment`: pairs in ``a``'s graph order, each saying how it was aligned; the tensors of each
        model that could not be aligned; the aligned fractions.

    Example:
        >>> import onnxscope
        >>> from onnxscope.testing import mlp_model
        >>> al = align(onnxscope.Model(mlp_model()), onnxscope.Model(mlp_model(seed=1)))
        >>> [(p.a, p.how) for p in al.rows()]  # the same op on the same inputs, under the same name
        [('h', 'name'), ('a', 'name'), ('y', 'name')]
    """
    if a is b:
        return _identity(a)
    if reference is None:
        reference = "b" if 4 * derivedness(b) < derivedness(a) else "a"
    if reference not in ("a", "b"):
        from onnxscope.errors import InputError

        raise InputError(f"reference {reference!r}: choose 'a' or 'b'")
    ref_g, der_g = (a, b) if reference == "a" else (b, a)
    ref_shapes, der_shapes = (shapes_a, shapes_b) if reference == "a" else (shapes_b, shapes_a)
    ref, der = _Side(ref_g, ref_shapes), _Side(der_g, der_shapes)
    matcher = _Matcher(ref, der)
    matcher.run()
    derived = "b" if reference == "a" else "a"
    raw: list[tuple[str, str, _Match, ir.Node | None, ir.Node | None]] = []
    for v in der.inputs:
        mt = matcher.m.get(id(v))
        if mt is not None and v.name:
            raw.append((ref.g.tensor_name(mt.ref), v.name, mt, None, None))
    for node in der.nodes:
        for o in node.outputs:
            mt = matcher.m.get(id(o))
            if mt is None or not o.name:
                continue
            rname = ref.g.tensor_name(mt.ref)
            raw.append((rname, der.g.tensor_name(o), mt, mt.ref.producer(), node))
    # aliases of the reference (Identity outputs) carry the same match
    aliases: dict[int, list[ir.Value]] = {}
    for n in ref.nodes:
        if n.op_type in _IDENTITY:
            for o in n.outputs[:1]:
                aliases.setdefault(id(ref.canon(o)), []).append(o)
    extra = []
    for _, dname, mt, _, dnode in raw:
        for al in aliases.get(id(mt.ref), []):
            extra.append(
                (
                    ref.g.tensor_name(al),
                    dname,
                    _Match(al, mt.steps, mt.how + " (alias)", mt.grid),
                    al.producer(),
                    dnode,
                )
            )
    raw += extra
    # subgraph bodies: by capture name
    body_pairs = _body_pairs(ref.g, der.g)
    pairs: list[Pair] = []
    for rname, dname, mt, rnode, dnode in raw:
        a_name, b_name = (rname, dname) if reference == "a" else (dname, rname)
        a_node, b_node = (rnode, dnode) if reference == "a" else (dnode, rnode)
        pairs.append(
            Pair(
                a=a_name,
                b=b_name,
                how=mt.how,
                steps=mt.steps,
                derived=derived,
                node_a=_label(a_node),
                op_a=a_node.op_type if a_node is not None else None,
                node_b=_label(b_node),
                op_b=b_node.op_type if b_node is not None else None,
                grid=mt.grid,
            )
        )
    for rname, dname, rnode, dnode in body_pairs:
        a_name, b_name = (rname, dname) if reference == "a" else (dname, rname)
        a_node, b_node = (rnode, dnode) if reference == "a" else (dnode, rnode)
        pairs.append(
            Pair(
                a_name,
                b_name,
                "name (subgraph)",
                (),
                derived,
                _label(a_node),
                _op(a_node),
                _label(b_node),
                _op(b_node),
            )
        )
    order_a = _order(a)
    order_b = _order(b)
    pairs.sort(key=lambda p: (order_a.get(p.a, -1), order_b.get(p.b, -1)))
    side_a, side_b = (ref, der) if reference == "a" else (der, ref)
    got_a = {p.a for p in pairs}
    got_b = {p.b for p in pairs}
    elig_a = _eligible(side_a)
    elig_b = _eligible(side_b)
    al = Alignment(
        pairs=pairs,
        unaligned_a=[n for n in elig_a if n not in got_a],
        unaligned_b=[n for n in elig_b if n not in got_b],
        eligible_a=len(elig_a),
        eligible_b=len(elig_b),
        reference=reference,
    )
    for p in pairs:
        al.by_b.setdefault(p.b, p)
        al.by_a.setdefault(p.a, []).append(p)
    return al


def _identity(g: Graph) -> Alignment:
    """One model against itself (another runtime configuration): every tensor is its own counterpart."""
    side = _Side(g, None)
    names = _eligible(side)
    pairs = []
    for e in g.entries:
        if e.node.op_type == "Constant":
            continue
        for v in e.node.outputs:
            if v.name and not side.const(v) if not e.scopes else v.name:
                n = g.tensor_name(v)
                lab = _label(e.node)
                pairs.append(Pair(n, n, "name", (), "b", lab, e.node.op_type, lab, e.node.op_type))
    for v in side.inputs:
        if v.name:
            pairs.insert(0, Pair(v.name, v.name, "input", (), "b"))
    al = Alignment(pairs=pairs, unaligned_a=[], unaligned_b=[], eligible_a=len(names), eligible_b=len(names))
    for p in pairs:
        al.by_b.setdefault(p.b, p)
        al.by_a.setdefault(p.a, []).append(p)
    return al


def _label(node: ir.Node | None) -> str | None:
    if node is None:
        return None
    from onnxscope.graph import label

    return label(node)


def _op(node: ir.Node | None) -> str | None:
    return None if node is None else node.op_type


def _order(g: Graph) -> dict[str, int]:
    """Capture name → position in graph order (inputs first, then node outputs, bodies after their node)."""
    out: dict[str, int] = {}
    for v in g.ir.graph.inputs:
        out.setdefault(v.name or "", len(out))
    for e in g.entries:
        for v in e.node.outputs:
            if v.name:
                out.setdefault(g.tensor_name(v), len(out))
    return out


def _eligible(side: _Side) -> list[str]:
    """Activation tensors of the main graph and of bodies, by capture name, in graph order (quantization
    parameters computed at run time — DynamicQuantizeLinear's scale and zero point — left out)."""
    out: list[str] = []
    g = side.g
    for e in g.entries:
        node = e.node
        if node.op_type == "Constant":
            continue
        outs = node.outputs[:1] if node.op_type == "DynamicQuantizeLinear" else node.outputs
        for v in outs:
            if not v.name:
                continue
            if e.scopes:
                dt = g.dtype(v)
                if dt is not None and not (
                    dt.name in _QUANT_DTYPES or dt.name.startswith(("FLOAT", "DOUBLE", "BFLOAT"))
                ):
                    continue
                if is_const(v):
                    continue
                out.append(g.tensor_name(v))
            elif side.eligible(v) and not (side.dtype(v) == "INT32"):
                out.append(g.tensor_name(v))
    return out


def _body_pairs(ref: Graph, der: Graph) -> list[tuple[str, str, ir.Node | None, ir.Node | None]]:
    theirs = {}
    for e in der.entries:
        if e.scopes:
            for v in e.node.outputs:
                if v.name:
                    theirs[der.tensor_name(v)] = e.node
    out = []
    for e in ref.entries:
        if not e.scopes:
            continue
        for v in e.node.outputs:
            name = ref.tensor_name(v) if v.name else None
            if name and name in theirs:
                out.append((name, name, e.node, theirs[name]))
    return out
