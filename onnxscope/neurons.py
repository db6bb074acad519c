"""Per-neuron weights: what one output unit of a layer receives, and where its output goes.

A *layer* is a weighted node (Gemm, MatMul, Conv, ConvTranspose and their quantized forms); a *neuron* is one
of its output units (a feature of a Gemm/MatMul, a channel of a Conv). :func:`neuron` returns its incoming
weights and bias, then follows its output through element-wise and per-channel ops, Flatten/Reshape, Transpose,
pooling, Concat and Q/DQ pairs into every layer that consumes it, and gives each consumer's slice of weights.
Where a path cannot be followed (Softmax, Gather, LayerNormalization…) it says so in :attr:`Neuron.stops`
rather than guessing.

Example:
    >>> import onnxscope
    >>> from onnxscope.testing import mlp_model
    >>> m = onnxscope.Model(mlp_model(in_features=4, hidden=3, out_features=2))
    >>> n = m.neuron("fc1", 1)
    >>> n.incoming.shape, [o.node for o in n.outgoing], n.outgoing[0].weights.shape
    ((4,), ['fc2'], (2,))
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnxscope._ir import ir
from onnxscope.errors import InputError, UnsupportedError
from onnxscope.graph import WEIGHTED_OPS, Graph, attr, label, module_path_of
from onnxscope.weights import const_array, is_const, quantization_of

__all__ = ["Neuron", "Outgoing", "Stop", "neuron"]


@dataclass(frozen=True)
class Outgoing:
    """The neuron's outgoing weights into one consuming layer.

    ``weights`` has the consumer's output units first: ``[out_features]`` for a Gemm/MatMul when the neuron
    lands on one input feature, ``[out_features, k]`` when it lands on ``k`` (e.g. a conv channel flattened
    into ``k = H*W`` features), ``[out_channels, kh, kw]`` for a Conv. ``inputs`` are the positions on the
    consumer's input axis where the neuron lands; ``targets`` the consumer's output units that receive it
    (``None`` = all of them; a subset for grouped/depthwise convolutions).
    """

    node: str
    op: str
    weight: str
    weights: np.ndarray
    inputs: tuple[int, ...]
    targets: tuple[int, ...] | None
    path: tuple[str, ...]
    transforms: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (weights as nested lists)."""
        return {
            "node": self.node,
            "op": self.op,
            "weight": self.weight,
            "shape": list(self.weights.shape),
            "weights": self.weights.tolist(),
            "inputs": list(self.inputs),
            "targets": None if self.targets is None else list(self.targets),
            "path": list(self.path),
            "transforms": list(self.transforms),
        }


@dataclass(frozen=True)
class Stop:
    """A place where the neuron's output could not be followed, and why."""

    tensor: str
    node: str | None
    op: str | None
    reason: str
    path: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "tensor": self.tensor,
            "node": self.node,
            "op": self.op,
            "reason": self.reason,
            "path": list(self.path),
        }


@dataclass(frozen=True)
class Neuron:
    """One output unit of a layer: incoming weights and bias, outgoing weights per consumer.

    ``incoming`` is ``[in_features]`` for Gemm/MatMul and ``[in_channels/group, *kernel]`` for Conv and
    ConvTranspose. ``output``/``axis`` name the tensor that carries the neuron after its bias and the (negative)
    axis of that tensor indexing it. ``notes`` says what the exporter did to the weights (folded BatchNorm,
    transposed, dequantized…).
    """

    layer: str
    op: str
    index: int
    units: int
    weight: str
    incoming: np.ndarray
    bias: np.ndarray | None
    bias_name: str | None
    output: str
    axis: int
    outgoing: tuple[Outgoing, ...]
    stops: tuple[Stop, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)
    module: str | None = None
    input_channels: tuple[int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (arrays as nested lists)."""
        return {
            "layer": self.layer,
            "op": self.op,
            "module": self.module,
            "index": self.index,
            "units": self.units,
            "weight": self.weight,
            "incoming_shape": list(self.incoming.shape),
            "incoming": self.incoming.tolist(),
            "input_channels": None if self.input_channels is None else list(self.input_channels),
            "bias_name": self.bias_name,
            "bias": None if self.bias is None else self.bias.tolist(),
            "output": self.output,
            "axis": self.axis,
            "outgoing": [o.to_dict() for o in self.outgoing],
            "stops": [s.to_dict() for s in self.stops],
            "notes": list(self.notes),
        }


# Index of the weight input of each weighted op.
_WEIGHT_INDEX = {
    "Gemm": 1,
    "QGemm": 3,
    "Conv": 1,
    "ConvTranspose": 1,
    "QLinearConv": 3,
    "QLinearMatMul": 3,
    "MatMulInteger": 1,
    "ConvInteger": 1,
}
_CONV_OPS = ("Conv", "QLinearConv", "ConvInteger")
_MATMUL_OPS = ("MatMul", "QLinearMatMul", "MatMulInteger")


def _weight(node: ir.Node, index: int) -> tuple[np.ndarray, str, tuple[str, ...]] | None:
    """Real-valued weight at input ``index`` of ``node`` (dequantized by the node itself when it does that)."""
    if index >= len(node.inputs) or node.inputs[index] is None:
        return None
    found = const_array(node.inputs[index])
    if found is None:
        return None
    arr, src, how = found
    q = quantization_of(node, index)
    if q is not None:
        return q.apply(arr), src, (*how, "dequantized")
    return np.asarray(arr), src, how


def _matmul_weight_side(node: ir.Node) -> int | None:
    if node.op_type == "MatMul":
        for i in (1, 0):
            if i < len(node.inputs) and is_const(node.inputs[i]):
                return i
        return None
    return 1 if node.op_type == "MatMulInteger" else 3


def _bias_entry(c: np.ndarray, units: int, index: int) -> np.ndarray | None:
    c = np.asarray(c)
    if c.size == units:
        return np.asarray(c.reshape(-1)[index])
    if c.size == 1:
        return np.asarray(c.reshape(()))
    return None


def _follow_tail(
    value: ir.Value, units: int, index: int, integer_op: bool
) -> tuple[ir.Value, np.ndarray | None, str | None, str | None]:
    """Absorb what belongs to the layer after its main node: Cast → Mul(scale) of integer ops, then a bias Add."""
    if integer_op:
        for op in ("Cast", "Mul"):
            uses = list(value.uses())
            if len(uses) == 1 and uses[0][0].op_type == op:
                value = uses[0][0].outputs[0]
    uses = list(value.uses())
    if len(uses) == 1 and uses[0][0].op_type == "Add" and not value.is_graph_output():
        add, i = uses[0]
        other = add.inputs[1 - int(i)]
        found = const_array(other)
        if found is not None:
            b = _bias_entry(found[0], units, index)
            if b is not None:
                return add.outputs[0], b, found[1], add.name
    return value, None, None, None


def _bn_folded(node: ir.Node) -> bool:
    classes = node.metadata_props.get("pkg.torch.onnx.class_hierarchy", "")
    scopes = node.metadata_props.get("pkg.torch.onnx.name_scopes", "")
    return node.op_type in ("Conv", "Gemm", "ConvTranspose") and (
        "BatchNorm" in classes or "batch_norm" in scopes
    )


def _fold_notes(node: ir.Node, weight_name: str, how: tuple[str, ...]) -> list[str]:
    notes = []
    if _bn_folded(node):
        notes.append(
            f"BatchNorm {module_path_of(node)!r} was folded into this {node.op_type} by the exporter: incoming "
            f"weights and bias are the folded values, stored under {weight_name!r}"
        )
    elif weight_name.startswith("onnx::"):
        notes.append(
            f"weight {weight_name!r} was created by the exporter's constant folding (its framework name is lost); "
            "it may include a folded BatchNormalization"
        )
    if how:
        notes.append(f"weight {weight_name!r} was {', '.join(how)} on its way to the layer")
    return notes


def neuron(graph: Graph, layer: str, index: int) -> Neuron:
    """Incoming and outgoing weights of output unit ``index`` of ``layer``.

    Parameters:
        graph: the model (an :class:`onnxscope.Model`).
        layer: a node name, an output tensor name, a weight name, or a framework module path.
        index: the unit (feature or channel), ``0 <= index < units``.

    Returns:
        A :class:`Neuron`.

    Raises:
        NotFoundError: no such layer (the message lists close names).
        UnsupportedError: the node is not a weighted layer, or its weight is not constant.
        InputError: ``index`` is out of range.

    Example:
        >>> import onnxscope
        >>> from onnxscope.testing import mlp_model
        >>> n = neuron(onnxscope.Model(mlp_model(in_features=4, hidden=3)), "fc1.weight", 2)
        >>> n.layer, n.units, n.bias_name
        ('fc1', 3, 'fc1.bias')
    """
    node = graph.layer(layer)
    op = node.op_type
    if op not in WEIGHTED_OPS:
        raise UnsupportedError(
            f"layer {label(node)!r} is a {op}: neuron queries need a weighted layer, one of {', '.join(WEIGHTED_OPS)}"
        )
    if op in _MATMUL_OPS:
        wi = _matmul_weight_side(node)
    else:
        wi = _WEIGHT_INDEX[op]
    found = _weight(node, wi) if wi is not None else None
    if found is None:
        raise UnsupportedError(
            f"layer {label(node)!r} ({op}) has no constant weight (both operands are computed, e.g. attention "
            "scores); neuron queries need a weight initializer"
        )
    w, wname, how = found
    bias = None
    bias_name = None
    input_channels = None
    out = node.outputs[0]
    if op in ("Gemm", "QGemm"):
        if w.ndim != 2:
            raise UnsupportedError(f"layer {label(node)!r} ({op}) has a {w.ndim}-D weight; Gemm's is 2-D")
        wc = w if attr(node, "transB", 0) else w.T
        alpha, beta = float(attr(node, "alpha", 1.0)), float(attr(node, "beta", 1.0))
        units = wc.shape[0]
        _check_index(node, index, units)
        incoming = alpha * wc[index] if alpha != 1.0 else wc[index]
        axis = -1
        c = _weight(node, 2 if op == "Gemm" else 6)
        if c is not None:
            bias = _bias_entry(c[0], units, index)
            bias_name = c[1]
            if bias is not None and beta != 1.0:
                bias = beta * bias
    elif op in _MATMUL_OPS:
        if w.ndim != 2:
            raise UnsupportedError(
                f"layer {label(node)!r} ({op}) has a {w.ndim}-D weight; neuron queries need 2-D"
            )
        if wi == 0:  # W @ x: units are W's rows, on the output's second-to-last axis
            wc, axis = w, -2
        else:  # x @ W: units are W's columns
            wc, axis = w.T, -1
        units = wc.shape[0]
        _check_index(node, index, units)
        incoming = wc[index]
    else:  # convolutions
        group = int(attr(node, "group", 1))
        if w.ndim < 3:
            raise UnsupportedError(
                f"layer {label(node)!r} ({op}) has a {w.ndim}-D weight; a convolution's is [out, in/group, *kernel]"
            )
        if (
            group < 1
            or (op != "ConvTranspose" and w.shape[0] % group)
            or (op == "ConvTranspose" and w.shape[0] % group)
        ):
            raise UnsupportedError(
                f"layer {label(node)!r} ({op}): group={group} does not divide its {w.shape[0]} weight rows"
            )
        axis = -(w.ndim - 1)
        if op == "ConvTranspose":
            c_in, per_group = w.shape[0], w.shape[1]
            units = per_group * group
            _check_index(node, index, units)
            g = index // per_group
            lo, hi = g * c_in // group, (g + 1) * c_in // group
            incoming = w[lo:hi, index % per_group]
        else:
            units = w.shape[0]
            _check_index(node, index, units)
            incoming = w[index]
            per_in = w.shape[1]
            g = index // (units // group)
            lo, hi = g * per_in, (g + 1) * per_in
        input_channels = (lo, hi)
        bi = 8 if op == "QLinearConv" else 2
        c = _weight(node, bi) if op in ("Conv", "ConvTranspose", "QLinearConv") else None
        if c is not None:
            bias, bias_name = _bias_entry(c[0], units, index), c[1]
    notes = _fold_notes(node, wname, how)
    bias_node = None
    if bias is None:
        out, bias, bias_name, bias_node = _follow_tail(
            out, units, index, op in ("MatMulInteger", "ConvInteger")
        )
        if bias_node:
            notes.append(f"bias {bias_name!r} is added by the following node {bias_node!r}")
    elif op in ("QLinearConv", "QGemm"):
        notes.append(f"bias {bias_name!r} was dequantized with input_scale × weight_scale")
    if op in ("QLinearConv", "QLinearMatMul", "QGemm"):
        notes.append("the layer's output is quantized; outgoing weights are followed through it")
    outgoing, stops = _follow(graph, out, axis, np.array([index]))
    return Neuron(
        layer=label(node),
        op=op,
        index=int(index),
        units=int(units),
        weight=wname,
        incoming=np.asarray(incoming),
        bias=None if bias is None else np.asarray(bias),
        bias_name=bias_name,
        output=out.name or "",
        axis=axis,
        outgoing=tuple(outgoing),
        stops=tuple(stops),
        notes=tuple(notes),
        module=wname.rsplit(".", 1)[0] if _bn_folded(node) and "." in wname else graph.module_of(node),
        input_channels=input_channels,
    )


def _check_index(node: ir.Node, index: int, units: int) -> None:
    if not (0 <= index < units):
        raise InputError(
            f"neuron index {index} is out of range for layer {label(node)!r} ({node.op_type} with {units} units: "
            f"valid indices 0..{units - 1})"
        )


# ---- following the neuron's output -------------------------------------------------------------------------

_ELEMENTWISE = frozenset(
    {
        "Relu",
        "LeakyRelu",
        "PRelu",
        "Sigmoid",
        "Tanh",
        "Gelu",
        "Elu",
        "Selu",
        "Celu",
        "Softplus",
        "Softsign",
        "HardSigmoid",
        "HardSwish",
        "Mish",
        "Swish",
        "Clip",
        "Erf",
        "Exp",
        "Log",
        "Abs",
        "Neg",
        "Sqrt",
        "Reciprocal",
        "Identity",
        "Dropout",
        "Cast",
        "CastLike",
        "ThresholdedRelu",
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "Floor",
        "Ceil",
        "Round",
        "Sign",
        "Sin",
        "Cos",
        "BatchNormalization",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Max",
        "Min",
        "Sum",
        "Mean",
        "Pow",
        "Where",
        "QuickGelu",
        "FastGelu",
        "BiasGelu",
    }
)
_DATA_INPUTS = {
    "Pow": (0,),
    "Where": (1, 2),
    "Clip": (0,),
    "QuantizeLinear": (0,),
    "DequantizeLinear": (0,),
    "PRelu": (0,),
    "BatchNormalization": (0,),
    "CastLike": (0,),
}
_CHANNEL_OPS = frozenset(
    {
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "LpPool",
        "GlobalLpPool",
        "InstanceNormalization",
        "Resize",
        "Upsample",
        "QLinearAveragePool",
        "QLinearGlobalAveragePool",
    }
)
_REDUCE_OPS = frozenset(
    {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceL1"}
)
_RESHAPE_OPS = frozenset({"Flatten", "Reshape", "Squeeze", "Unsqueeze"})
_MIXING_REASONS = {
    "Softmax": "Softmax mixes every unit of its axis",
    "LogSoftmax": "LogSoftmax mixes every unit of its axis",
    "LayerNormalization": "LayerNormalization mixes the units it normalizes over",
    "GatherElements": "GatherElements selects by a runtime index",
}

_Item = tuple[ir.Value, int, np.ndarray, tuple[str, ...]]


def _follow(graph: Graph, start: ir.Value, axis: int, idx: np.ndarray) -> tuple[list[Outgoing], list[Stop]]:
    outgoing: list[Outgoing] = []
    stops: list[Stop] = []
    queue: list[_Item] = [(start, axis, idx, ())]
    seen: set[tuple[int, int, bytes]] = set()
    while queue:
        value, axis, idx, path = queue.pop(0)
        key = (id(value), axis, idx.tobytes())
        if key in seen:
            continue
        seen.add(key)
        if value.is_graph_output():
            stops.append(Stop(value.name or "", None, None, "graph output", path))
        for user, i in value.uses():
            i = int(i)
            step = _step(graph, user, i, value, axis, idx, path)
            if isinstance(step, Outgoing):
                outgoing.append(step)
            elif isinstance(step, str):
                stops.append(Stop(value.name or "", label(user), user.op_type, step, path))
            else:
                queue.extend(step)
    return outgoing, stops


def _rank(graph: Graph, value: ir.Value) -> int | None:
    shape = graph.shape(value)
    return None if shape is None else len(shape)


def _step(
    graph: Graph, node: ir.Node, i: int, value: ir.Value, axis: int, idx: np.ndarray, path: tuple[str, ...]
) -> Outgoing | str | list[_Item]:
    op = node.op_type
    here = (*path, label(node))
    if op in WEIGHTED_OPS:
        return _consume(graph, node, i, value, axis, idx, path)
    if op in _ELEMENTWISE:
        if i not in _DATA_INPUTS.get(op, range(len(node.inputs))):
            return f"the neuron feeds {op}'s parameter input {i}, not its data"
        return [(node.outputs[0], axis, idx, here)]
    rank = _rank(graph, value)
    if op in _CHANNEL_OPS:
        if rank is None or rank + axis != 1 or i != 0:
            return f"{op} is followed only for a neuron on the channel axis 1"
        return [(node.outputs[0], axis, idx, here)]
    if op in _REDUCE_OPS:
        return _reduce(graph, node, rank, axis, idx, here)
    if op == "Transpose":
        if rank is None:
            return "Transpose input has an unknown rank"
        perm = list(attr(node, "perm", list(range(rank))[::-1]))
        return [(node.outputs[0], perm.index(rank + axis) - rank, idx, here)]
    if op in _RESHAPE_OPS and i == 0:
        moved = _reshape(graph, node, value, axis, idx)
        if isinstance(moved, str):
            return moved
        return [(node.outputs[0], moved[0], moved[1], here)]
    if op == "Concat":
        return _concat(graph, node, i, rank, axis, idx, here)
    if op in ("Split", "Slice", "Gather") and i == 0:
        if rank is None:
            return f"{op} input has an unknown rank"
        return {"Split": _split, "Slice": _slice, "Gather": _gather}[op](
            graph, node, value, rank, axis, idx, here
        )
    if op in ("Split", "Slice", "Gather"):
        return f"the neuron feeds {op}'s input {i}, not its data"
    reason = _MIXING_REASONS.get(op)
    if reason is None:
        reason = (
            f"{op} is not followed (followed: element-wise ops, BatchNormalization, pooling, Reduce*, Transpose, "
            "Flatten/Reshape/(Un)Squeeze, Concat, Split, Slice, Gather with constant indices, Q/DQ)"
        )
    return reason


def _ints(node: ir.Node, index: int, name: str) -> list[int] | None:
    """A node's integer parameter: a constant input at ``index`` (newer opsets), else the attribute ``name``."""
    if index < len(node.inputs) and node.inputs[index] is not None:
        c = const_array(node.inputs[index])
        return None if c is None else [int(v) for v in np.ravel(c[0])]
    a = attr(node, name, None)
    return None if a is None else [int(v) for v in np.ravel(a)]


def _split(
    graph: Graph, node: ir.Node, value: ir.Value, rank: int, axis: int, idx: np.ndarray, here: tuple[str, ...]
) -> str | list[_Item]:
    pos = rank + axis
    cut = int(attr(node, "axis", 0)) % rank
    outs = [v for v in node.outputs]
    if cut != pos:  # split along another axis: every part carries the neuron
        return [(v, axis, idx, here) for v in outs if v.name]
    sizes = _ints(node, 1, "split")
    if sizes is None:
        if len(node.inputs) > 1 and node.inputs[1] is not None:
            return "Split sizes are computed at run time"
        shape = graph.shape(value)
        total = shape[pos] if shape is not None else None
        if not isinstance(total, int):
            return "Split along the neuron's axis of unknown size"
        n = len(outs)
        step = -(-total // n)  # equal parts, the last one smaller (opset 18's num_outputs rule)
        sizes = [min(step, total - k * step) for k in range(n)]
    items: list[_Item] = []
    lo = 0
    for v, size in zip(outs, sizes, strict=False):
        hit = idx[(idx >= lo) & (idx < lo + size)]
        if hit.size and v.name:
            items.append((v, axis, hit - lo, here))
        lo += size
    return items or "the neuron falls outside every part of the Split"


def _slice(
    graph: Graph, node: ir.Node, value: ir.Value, rank: int, axis: int, idx: np.ndarray, here: tuple[str, ...]
) -> str | list[_Item]:
    pos = rank + axis
    starts, ends = _ints(node, 1, "starts"), _ints(node, 2, "ends")
    if starts is None or ends is None:
        return "Slice bounds are computed at run time"
    axes = _ints(node, 3, "axes") if len(node.inputs) > 3 or attr(node, "axes", None) is not None else None
    axes = list(range(len(starts))) if axes is None else [a % rank for a in axes]
    steps = _ints(node, 4, "steps") if len(node.inputs) > 4 else None
    steps = steps or [1] * len(starts)
    if pos not in axes:
        return [(node.outputs[0], axis, idx, here)]
    k = axes.index(pos)
    shape = graph.shape(value)
    size = shape[pos] if shape is not None else None
    if not isinstance(size, int):
        return "Slice along the neuron's axis of unknown size"
    kept = list(range(*slice(starts[k], ends[k], steps[k]).indices(size)))
    where = {p: j for j, p in enumerate(kept)}
    new = np.array([where[int(p)] for p in idx if int(p) in where], dtype=np.int64)
    if new.size == 0:
        return "Slice drops the neuron"
    return [(node.outputs[0], axis, new, here)]


def _gather(
    graph: Graph, node: ir.Node, value: ir.Value, rank: int, axis: int, idx: np.ndarray, here: tuple[str, ...]
) -> str | list[_Item]:
    found = const_array(node.inputs[1]) if len(node.inputs) > 1 else None
    if found is None:
        return "Gather selects by a runtime index"
    indices = np.asarray(found[0]).astype(np.int64)
    pos = rank + axis
    g = int(attr(node, "axis", 0)) % rank
    out_rank = rank - 1 + indices.ndim
    if g != pos:  # gathering along another axis: the neuron's axis moves by the index's rank
        new_pos = pos if pos < g else pos - 1 + indices.ndim
        return [(node.outputs[0], new_pos - out_rank, idx, here)]
    shape = graph.shape(value)
    size = shape[pos] if shape is not None else None
    if isinstance(size, int):
        indices = np.where(indices < 0, indices + size, indices)
    if indices.ndim == 0:
        if int(indices) in set(idx.tolist()):
            return "Gather keeps only this unit and removes its axis"
        return "Gather drops the neuron"
    if indices.ndim != 1:
        return "Gather with multi-dimensional indices on the neuron's axis"
    new = np.flatnonzero(np.isin(indices, idx))
    if new.size == 0:
        return "Gather drops the neuron"
    return [(node.outputs[0], axis, new, here)]


def _reduce(
    graph: Graph, node: ir.Node, rank: int | None, axis: int, idx: np.ndarray, here: tuple[str, ...]
) -> str | list[_Item]:
    if rank is None:
        return f"{node.op_type} input has an unknown rank"
    axes = attr(node, "axes", None)
    if axes is None and len(node.inputs) > 1:
        c = const_array(node.inputs[1])
        axes = None if c is None else c[0].reshape(-1).tolist()
    if axes is None or len(axes) == 0:
        return f"{node.op_type} reduces over every axis"
    axes = sorted(int(a) % rank for a in axes)
    pos = rank + axis
    if pos in axes:
        return f"{node.op_type} reduces over the neuron's axis"
    keep = int(attr(node, "keepdims", 1))
    new_rank = rank if keep else rank - len(axes)
    new_pos = pos if keep else pos - sum(a < pos for a in axes)
    return [(node.outputs[0], new_pos - new_rank, idx, here)]


def _concat(
    graph: Graph, node: ir.Node, i: int, rank: int | None, axis: int, idx: np.ndarray, here: tuple[str, ...]
) -> str | list[_Item]:
    if rank is None:
        return "Concat input has an unknown rank"
    cat = int(attr(node, "axis", 0)) % rank
    if cat != rank + axis:
        return [(node.outputs[0], axis, idx, here)]
    offset = 0
    for v in node.inputs[:i]:
        s = graph.shape(v) if v is not None else None
        if s is None or not isinstance(s[cat], int):
            return "Concat along the neuron's axis with an input of unknown size"
        offset += s[cat]
    return [(node.outputs[0], axis, idx + offset, here)]


def _target_shape(graph: Graph, node: ir.Node, in_shape: tuple[Any, ...]) -> tuple[Any, ...] | None:
    out_shape = graph.shape(node.outputs[0])
    if out_shape is not None and all(isinstance(d, int) for d in out_shape[1:]):
        return out_shape
    if node.op_type == "Flatten":
        k = int(attr(node, "axis", 1)) % max(len(in_shape), 1)
        head, tail = in_shape[:k], in_shape[k:]
        ht = int(np.prod(head)) if all(isinstance(d, int) for d in head) else None
        tt = int(np.prod(tail)) if all(isinstance(d, int) for d in tail) else None
        return (ht, tt)
    if node.op_type == "Reshape":
        c = const_array(node.inputs[1])
        if c is None:
            return out_shape
        dims = [
            in_shape[j] if (int(d) == 0 and not attr(node, "allowzero", 0) and j < len(in_shape)) else int(d)
            for j, d in enumerate(c[0].reshape(-1))
        ]
        if -1 in dims:
            known = [d for d in dims if isinstance(d, int) and d != -1]
            if all(isinstance(d, int) for d in in_shape):
                dims[dims.index(-1)] = int(np.prod(in_shape)) // int(np.prod(known))
            else:
                dims[dims.index(-1)] = None
        return tuple(dims)
    return out_shape


def _reshape(
    graph: Graph, node: ir.Node, value: ir.Value, axis: int, idx: np.ndarray
) -> tuple[int, np.ndarray] | str:
    in_shape = graph.shape(value)
    if in_shape is None:
        return f"{node.op_type} input shape is unknown"
    out_shape = _target_shape(graph, node, in_shape)
    if out_shape is None:
        return f"{node.op_type} output shape is unknown"
    pos = len(in_shape) + axis
    p = 0
    while p < min(len(in_shape), len(out_shape), pos):
        a, b = in_shape[p], out_shape[p]
        if a == b or (not isinstance(a, int) and not isinstance(b, int)):
            p += 1
        else:
            break
    tail_in, tail_out = in_shape[p:], out_shape[p:]
    if not all(isinstance(d, int) and d > 0 for d in (*tail_in, *tail_out)):
        return f"{node.op_type} changes dimensions whose sizes are unknown ({in_shape} → {out_shape})"
    size = math.prod(tail_in)  # Python integers: declared shapes may be absurd, nothing overflows
    if size != math.prod(tail_out) or size > 50_000_000:
        return f"{node.op_type} moves the neuron across the batch axis ({in_shape} → {out_shape})"
    if not 0 <= pos - p < len(tail_in) or int(idx.max(initial=0)) >= tail_in[pos - p]:
        return f"{node.op_type}: the neuron's index lies outside the declared shape {in_shape}"
    mask = np.zeros(tail_in, dtype=bool)
    mask[(slice(None),) * (pos - p) + (idx,)] = True
    moved = mask.reshape(tail_out)
    for b in range(len(tail_out)):
        others = tuple(k for k in range(len(tail_out)) if k != b)
        sel = moved.any(axis=others) if others else moved
        shape = [1] * len(tail_out)
        shape[b] = -1
        if np.array_equal(np.broadcast_to(sel.reshape(shape), moved.shape), moved):
            return (p + b) - len(out_shape), np.flatnonzero(sel)
    return f"{node.op_type} splits the neuron across several axes ({in_shape} → {out_shape}), e.g. into heads"


def _consume(
    graph: Graph, node: ir.Node, i: int, value: ir.Value, axis: int, idx: np.ndarray, path: tuple[str, ...]
) -> Outgoing | str:
    op = node.op_type
    if op == "MatMul":
        wi = 1 - i
    else:
        wi = _WEIGHT_INDEX[op]
        if i != 0:
            return f"the neuron feeds {op}'s input {i}, not its data input"
    found = _weight(node, wi)
    if found is None:
        return (
            f"{op} {label(node)!r} multiplies by another computed tensor (no constant weight), e.g. attention"
        )
    w, wname, how = found
    rank = _rank(graph, value)
    targets: tuple[int, ...] | None = None
    if op in ("Gemm", "QGemm") or op in _MATMUL_OPS:
        if op in ("Gemm", "QGemm"):
            wc = w if attr(node, "transB", 0) else w.T  # [N, K]
            contraction = -2 if attr(node, "transA", 0) else -1
        elif wi == 0:  # W @ x: contracts x's second-to-last axis; wc rows are W's rows already [M, K]
            wc, contraction = w, -2
        else:
            wc, contraction = w.T, -1
        if wc.ndim != 2:
            return f"{op} {label(node)!r} has a {wc.ndim}-D weight"
        if axis != contraction:
            return f"the neuron lies on a non-contracted axis of {op} {label(node)!r}"
        if int(idx.max(initial=0)) >= wc.shape[1]:
            return f"{op} {label(node)!r}: the neuron lies outside its weight ({wc.shape[1]} inputs)"
        weights = wc[:, idx]
    elif op in _CONV_OPS or op == "ConvTranspose":
        group = int(attr(node, "group", 1))
        if w.ndim < 3 or group < 1 or w.shape[0] % group or not w.shape[1]:
            return (
                f"{op} {label(node)!r} has a weight of shape {list(w.shape)} that does not fit group={group}"
            )
        if op == "ConvTranspose":
            return _consume_transposed(node, w, rank, axis, idx, group, path, wname, how)
        if rank is not None and rank + axis != 1 or rank is None and axis != -(w.ndim - 1):
            return f"{op} {label(node)!r} takes the neuron on a non-channel axis"
        per_in, m = w.shape[1], w.shape[0]
        if int(idx.max(initial=0)) >= per_in * group:
            return f"{op} {label(node)!r}: the neuron's channel lies outside its weight"
        groups = set((idx // per_in).tolist())
        if len(groups) > 1:
            return f"the neuron spans several groups of grouped {op} {label(node)!r}"
        g = groups.pop()
        lo, hi = g * (m // group), (g + 1) * (m // group)
        weights = w[lo:hi][:, idx % per_in]
        targets = tuple(range(lo, hi)) if group > 1 else None
    else:
        return f"{op} {label(node)!r} is not followed"
    if weights.ndim >= 2 and weights.shape[1] == 1:
        weights = weights[:, 0]
    return Outgoing(
        node=label(node),
        op=op,
        weight=wname,
        weights=np.asarray(weights),
        inputs=tuple(int(k) for k in idx),
        targets=targets,
        path=path,
        transforms=how,
    )


def _consume_transposed(
    node: ir.Node,
    w: np.ndarray,
    rank: int | None,
    axis: int,
    idx: np.ndarray,
    group: int,
    path: tuple[str, ...],
    wname: str,
    how: tuple[str, ...],
) -> Outgoing | str:
    """ConvTranspose takes the neuron as an input channel: W [C, M/group, k...]."""
    op = node.op_type
    if rank is not None and rank + axis != 1:
        return f"{op} {label(node)!r} takes the neuron on a non-channel axis"
    per_in, per_out = w.shape[0] // group, w.shape[1]
    if int(idx.max(initial=0)) >= w.shape[0]:
        return f"{op} {label(node)!r}: the neuron's channel lies outside its weight"
    groups = set((idx // per_in).tolist())
    if len(groups) > 1:
        return f"the neuron spans several groups of grouped {op} {label(node)!r}"
    g = groups.pop()
    weights = np.moveaxis(w[idx], 0, 1)
    if weights.ndim >= 2 and weights.shape[1] == 1:
        weights = weights[:, 0]
    return Outgoing(
        node=label(node),
        op=op,
        weight=wname,
        weights=np.asarray(weights),
        inputs=tuple(int(k) for k in idx),
        targets=tuple(range(g * per_out, (g + 1) * per_out)) if group > 1 else None,
        path=path,
        transforms=how,
    )
