"""Weights read straight from the graph: initializers and Constant tensors, their roles, dequantization, audits.

Nothing is read from disk until :meth:`Weight.numpy` (or a method built on it) is called; ``shape``, ``dtype``
and ``nbytes`` come from the tensor's header, and external data is memory-mapped by ``onnx_ir``.

Example:
    >>> import onnxscope, numpy as np
    >>> from onnxscope.testing import mlp_model
    >>> m = onnxscope.Model(mlp_model(in_features=4, hidden=3, out_features=2))
    >>> w = m.weights["fc1.weight"]
    >>> w.shape, w.role, w.uses[0].node
    ((3, 4), 'weight', 'fc1')
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from onnxscope._ir import ir
from onnxscope._load import iter_tensors
from onnxscope.errors import InputError, ModelLoadError, NotFoundError, UnsupportedError, closest
from onnxscope.graph import WEIGHT_TRANSFORMS, WEIGHTED_OPS, Graph, attr
from onnxscope.limits import check_array

__all__ = [
    "Quantization",
    "Use",
    "Weight",
    "WeightStats",
    "Weights",
    "const_array",
    "dequantize_linear",
    "is_const",
    "quantize_linear",
]

# Role of each input position, for the ops whose inputs have a meaning beyond "data".
ROLES: dict[str, tuple[str, ...]] = {
    "Conv": ("input", "weight", "bias"),
    "ConvTranspose": ("input", "weight", "bias"),
    "Gemm": ("input", "weight", "bias"),
    "BatchNormalization": ("input", "scale", "bias", "running_mean", "running_var"),
    "InstanceNormalization": ("input", "scale", "bias"),
    "LayerNormalization": ("input", "scale", "bias"),
    "GroupNormalization": ("input", "scale", "bias"),
    "RMSNormalization": ("input", "scale"),
    "SimplifiedLayerNormalization": ("input", "scale"),
    "SkipLayerNormalization": ("input", "skip", "scale", "bias"),
    "QuantizeLinear": ("input", "scale", "zero_point"),
    "DequantizeLinear": ("quantized", "scale", "zero_point"),
    "DynamicQuantizeLinear": ("input",),
    "QLinearConv": (
        "input",
        "input_scale",
        "input_zero_point",
        "weight",
        "weight_scale",
        "weight_zero_point",
        "output_scale",
        "output_zero_point",
        "bias",
    ),
    "QLinearMatMul": (
        "input",
        "input_scale",
        "input_zero_point",
        "weight",
        "weight_scale",
        "weight_zero_point",
        "output_scale",
        "output_zero_point",
    ),
    "QGemm": (
        "input",
        "input_scale",
        "input_zero_point",
        "weight",
        "weight_scale",
        "weight_zero_point",
        "bias",
        "output_scale",
        "output_zero_point",
    ),
    "MatMulInteger": ("input", "weight", "input_zero_point", "weight_zero_point"),
    "ConvInteger": ("input", "weight", "input_zero_point", "weight_zero_point"),
    "PRelu": ("input", "slope"),
    "Gather": ("embedding", "indices"),
    "LSTM": (
        "input",
        "weight",
        "recurrence_weight",
        "bias",
        "sequence_lens",
        "initial_h",
        "initial_c",
        "peephole",
    ),
    "GRU": ("input", "weight", "recurrence_weight", "bias", "sequence_lens", "initial_h"),
    "RNN": ("input", "weight", "recurrence_weight", "bias", "sequence_lens", "initial_h"),
    "Reshape": ("input", "shape"),
    "DynamicQuantizeLSTM": (  # com.microsoft, from onnxruntime's quantize_dynamic
        "input",
        "quantized weight",
        "quantized recurrence_weight",
        "bias",
        "sequence_lens",
        "initial_h",
        "initial_c",
        "peephole",
        "weight_scale",
        "weight_zero_point",
        "recurrence_weight_scale",
        "recurrence_weight_zero_point",
    ),
    "Attention": ("query", "key", "value", "mask", "past_key", "past_value"),
}
_TRANSFORMS = WEIGHT_TRANSFORMS
_FP16_MAX = 65504.0


@dataclass(frozen=True)
class Use:
    """One place a weight is consumed: node name, op type, input position and the input's role."""

    node: str
    op: str
    input: int
    role: str


@dataclass(frozen=True)
class Quantization:
    """How a stored integer tensor maps back to real values: ``(q - zero_point) * scale``.

    ``kind`` is ``"QDQ"`` (a DequantizeLinear node), ``"QOperator"`` (QLinearConv/QLinearMatMul),
    ``"integer"`` (MatMulInteger/ConvInteger with the scale applied by a following Mul) or ``"weight-only"`` (an
    integer weight Cast to float and multiplied by a scale, the model computing in float). ``axis`` is the
    per-channel axis (``None`` for per-tensor); ``block_size`` is non-zero for blocked quantization.
    """

    kind: str
    node: str
    scale: np.ndarray
    zero_point: np.ndarray | None
    axis: int | None
    block_size: int = 0

    def apply(self, q: np.ndarray) -> np.ndarray:
        """Dequantize ``q`` with these parameters (float32 unless the scale is another float type).

        Parameters that do not fit ``q`` come from a malformed model: :class:`ModelLoadError` naming the node.
        """
        try:
            return dequantize_linear(q, self.scale, self.zero_point, self.axis, self.block_size)
        except InputError as e:
            raise ModelLoadError(f"{self.kind} node {self.node!r}: {e}") from None


def _broadcast_param(
    p: np.ndarray, ndim: int, axis: int | None, block_size: int, target: tuple[int, ...]
) -> np.ndarray:
    """A scale or zero point shaped to broadcast against a tensor of shape ``target``; :class:`InputError` when
    its shape does not fit (per tensor: one value; per axis: one per slice of ``axis``; blocked: one per block)."""
    if p.ndim == 0 or p.size == 1:
        return p.reshape(())
    where = f"a quantization parameter of shape {list(p.shape)}"
    if axis is None:  # no axis: the parameter broadcasts (e.g. a [rows, 1] scale of weight-only quantization)
        try:
            np.broadcast_shapes(p.shape, tuple(target))
        except ValueError:
            raise InputError(f"{where} does not broadcast against a tensor of shape {list(target)}") from None
        return p
    if not -ndim <= axis < ndim:
        raise InputError(f"{where}: axis {axis} is out of range for a tensor of shape {list(target)}")
    axis = axis % ndim
    if block_size:
        if block_size < 0:
            raise InputError(f"{where}: block_size {block_size} is negative")
        want = [*target]
        want[axis] = -(-target[axis] // block_size)
        if list(p.shape) != want:
            raise InputError(
                f"{where} does not fit blocks of {block_size} along axis {axis} of a tensor of shape "
                f"{list(target)} (expected {want})"
            )
        p = np.repeat(p, block_size, axis=axis)
        return np.take(p, np.arange(target[axis]), axis=axis)
    if p.ndim > 1:  # e.g. a [1, N] scale multiplied in after MatMulInteger: fine if it broadcasts
        try:
            np.broadcast_shapes(p.shape, tuple(target))
            return p
        except ValueError:
            pass
    if p.ndim != 1 or p.shape[0] != target[axis]:
        raise InputError(
            f"{where} does not fit axis {axis} of a tensor of shape {list(target)} "
            f"(expected {target[axis]} values)"
        )
    shape = [1] * ndim
    shape[axis] = p.shape[0]
    return p.reshape(shape)


def _as_real(a: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iub":
        return a.astype(np.int64)
    if a.dtype.kind == "f" and a.dtype.itemsize >= 4:
        return a
    return a.astype(np.float32)  # float16, bfloat16, float8, int4 (ml_dtypes) …


def dequantize_linear(
    q: np.ndarray,
    scale: np.ndarray,
    zero_point: np.ndarray | None = None,
    axis: int | None = 1,
    block_size: int = 0,
) -> np.ndarray:
    """ONNX ``DequantizeLinear``: ``(q - zero_point) * scale``, per tensor, per axis or per block.

    Example:
        >>> dequantize_linear(np.array([[0, 10], [20, 30]], np.int8), np.array([0.5, 2.0], np.float32), axis=0)
        array([[ 0.,  5.],
               [40., 60.]], dtype=float32)
    """
    scale = np.asarray(scale)
    q = np.asarray(q)
    check_array(
        q.shape, 4 if q.dtype.itemsize <= 2 else 16, f"dequantizing a {q.dtype} tensor {list(q.shape)}"
    )
    if q.dtype.kind in "iu" and q.dtype.itemsize <= 2 and scale.dtype == np.float32:
        # 8- and 16-bit integers are exact in float32: the same arithmetic as DequantizeLinear, without int64
        s = _broadcast_param(scale, q.ndim, axis, block_size, q.shape)
        out = q.astype(np.float32)
        if zero_point is not None:
            out -= _broadcast_param(
                np.asarray(zero_point).astype(np.float32), q.ndim, axis, block_size, q.shape
            )
        out *= s
        return out
    qi = _as_real(q)
    s = _broadcast_param(scale, qi.ndim, axis, block_size, qi.shape)
    if zero_point is not None:
        z = _broadcast_param(_as_real(np.asarray(zero_point)), qi.ndim, axis, block_size, qi.shape)
        qi = qi - z
    out_dtype = scale.dtype if scale.dtype.kind == "f" and scale.dtype.itemsize >= 4 else np.dtype(np.float32)
    return (qi.astype(out_dtype) * s.astype(out_dtype)).astype(out_dtype)


def quantize_linear(
    x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int | None = 1, block_size: int = 0
) -> np.ndarray:
    """ONNX ``QuantizeLinear`` for integer targets: ``saturate(round_half_even(x / scale) + zero_point)``.

    Example:
        >>> quantize_linear(np.array([1.0, -300.0], np.float32), np.float32(0.5), np.int8(0))
        array([   2, -128], dtype=int8)
    """
    dtype = np.asarray(zero_point).dtype if zero_point is not None else np.dtype(np.uint8)
    x = np.asarray(x, dtype=np.float32)
    s = _broadcast_param(np.asarray(scale, np.float32), x.ndim, axis, block_size, x.shape)
    y = np.asarray(np.divide(x, s, dtype=np.float32))  # one array (0-d for a scalar), then worked in place
    np.rint(y, out=y)
    if zero_point is not None:
        y += _broadcast_param(np.asarray(zero_point).astype(np.float32), x.ndim, axis, block_size, x.shape)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        np.clip(y, info.min, info.max, out=y)
    out = y.astype(dtype)
    return out[()] if out.ndim == 0 else out  # a scalar in, a scalar out


_CONSTANT_VALUES = frozenset(
    {"value", "value_float", "value_floats", "value_int", "value_ints", "value_string", "value_strings"}
)


def _constant_node_value(node: ir.Node) -> ir.TensorProtocol | None:
    """The value of a ``Constant`` node: its one value attribute (other attributes ignored, as onnxruntime does);
    ``None`` when it has none, several, or a sparse one."""
    values = [a for k, a in node.attributes.items() if k in _CONSTANT_VALUES]
    if len(values) != 1:
        return None
    if len(node.attributes) != 1:  # onnx_ir's reader wants the value attribute alone
        node = ir.Node("", "Constant", [], attributes=values, num_outputs=1)
    return ir.convenience.get_const_tensor(node.outputs[0])


def _const(value: ir.Value | None) -> np.ndarray | None:
    if value is None:
        return None
    if value.const_value is None and (node := value.producer()) is not None and node.op_type == "Constant":
        t = _constant_node_value(node) if node.domain in ("", "ai.onnx") else None
    else:
        t = ir.convenience.get_const_tensor(value)
    return None if t is None else t.numpy()


def _const_in(node: ir.Node, index: int) -> np.ndarray | None:
    """:func:`_const` of input ``index`` (``None`` when the node has fewer inputs: domains without a schema
    onnxscope checks, such as com.microsoft's quantized ops, may come with too few)."""
    return _const(node.inputs[index]) if index < len(node.inputs) else None


def is_const(value: ir.Value | None) -> bool:
    """Whether :func:`const_array` would fold ``value`` to a constant; reads no tensor data.

    Example:
        >>> import onnx_ir as ir
        >>> is_const(ir.Value(name="w", const_value=ir.tensor(np.zeros(2, np.float32)))), is_const(ir.Value(name="x"))
        (True, False)
    """
    if value is None:
        return False
    if value.const_value is not None:
        return True
    node = value.producer()
    if node is None or node.domain not in ("", "ai.onnx"):
        return False
    if node.op_type == "Constant":
        return len([k for k in node.attributes if k in _CONSTANT_VALUES]) == 1
    if node.op_type in _SCALES:  # weight-only quantization: Cast(int8) · scale
        return len(node.inputs) == 2 and all(is_const(v) for v in node.inputs)
    return node.op_type in _TRANSFORMS and bool(node.inputs) and is_const(node.inputs[0])


def const_array(value: ir.Value | None) -> tuple[np.ndarray, str, tuple[str, ...]] | None:
    """Fold a constant weight through Q/DQ, Cast, Transpose, Reshape, (Un)Squeeze and Identity.

    Returns ``(array, source_tensor_name, transforms)``, or ``None`` when ``value`` is not constant.
    ``transforms`` lists what was applied on the way, e.g. ``("dequantized", "transposed")``.

    Example:
        >>> import onnx_ir as ir
        >>> w = ir.Value(name="w", const_value=ir.tensor(np.arange(6, dtype=np.float32).reshape(2, 3)))
        >>> t = ir.Node("", "Transpose", [w], num_outputs=1)
        >>> a, src, how = const_array(t.outputs[0]); a.shape, src, how
        ((3, 2), 'w', ('transposed',))
    """
    if value is None:
        return None
    direct = _const(value)
    if direct is not None:
        return direct, value.name or "", ()
    node = value.producer()
    if node is None or node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type in _SCALES and len(node.inputs) == 2:
        return _scaled(node)
    if node.op_type not in _TRANSFORMS or not node.inputs:
        return None
    inner = const_array(node.inputs[0])
    if inner is None:
        return None
    arr, src, how = inner
    try:
        return _fold(node, arr, src, how)
    except (
        InputError,
        ValueError,
        TypeError,
        IndexError,
        OverflowError,
    ) as e:  # np.AxisError is a ValueError
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelLoadError(
            f"the model is malformed: the constant {src!r} cannot pass through {node.op_type} "
            f"{(node.name or '')!r} ({reason})"
        ) from e


def _fold(
    node: ir.Node, arr: np.ndarray, src: str, how: tuple[str, ...]
) -> tuple[np.ndarray, str, tuple[str, ...]] | None:
    """One step of :func:`const_array`: ``node`` (a weight transform) applied to the constant ``arr``."""
    op = node.op_type
    if op == "DequantizeLinear":
        q = _dq_params(node)
        if q is None:
            return None
        return q.apply(arr), src, (*how, "dequantized")
    if op == "QuantizeLinear":
        scale, zp = _const(node.inputs[1]), _const(node.inputs[2] if len(node.inputs) > 2 else None)
        if scale is None:
            return None
        axis = int(attr(node, "axis", 1))
        return (
            quantize_linear(arr, scale, zp, axis, int(attr(node, "block_size", 0))),
            src,
            (*how, "quantized"),
        )
    if op == "Transpose":
        perm = attr(node, "perm", None)
        return np.transpose(arr, perm), src, (*how, "transposed")
    if op == "Cast":
        to = np.dtype(ir.DataType(int(attr(node, "to", 1))).numpy())
        check_array(arr.shape, to.itemsize, f"casting {src!r} to {to}")
        return arr.astype(to), src, (*how, "cast")
    if op == "Reshape":
        shape = _const(node.inputs[1])
        if shape is None:
            return None
        shape = [
            arr.shape[i] if (d == 0 and not attr(node, "allowzero", 0)) else int(d)
            for i, d in enumerate(shape)
        ]
        return arr.reshape(shape), src, (*how, "reshaped")
    if op in ("Squeeze", "Unsqueeze"):
        axes = _const(node.inputs[1]) if len(node.inputs) > 1 else attr(node, "axes", None)
        if op == "Squeeze":
            return (
                (np.squeeze(arr) if axes is None else np.squeeze(arr, tuple(int(a) for a in np.ravel(axes)))),
                src,
                how,
            )
        return np.expand_dims(arr, tuple(int(a) for a in np.ravel(axes))), src, how
    return arr, src, how  # Identity


_SCALES = frozenset({"Mul", "Div"})  # ops that rescale a stored weight when both operands are constant


def _scaled(node: ir.Node) -> tuple[np.ndarray, str, tuple[str, ...]] | None:
    """``Mul``/``Div`` of two constants: the larger one is the weight (its name is the source), the other the scale —
    how weight-only int8 models dequantize (``Cast(int8 weight) · scale``)."""
    a, b = const_array(node.inputs[0]), const_array(node.inputs[1])
    if a is None or b is None:
        return None
    (wa, sa, ha), (wb, sb, hb) = a, b
    if np.size(wb) > np.size(wa):
        (wa, sa, ha), (wb, sb, hb) = (wb, sb, hb), (wa, sa, ha)
        if node.op_type == "Div":
            return None  # scale / weight: not a rescaled weight
    out = np.multiply(wa, wb) if node.op_type == "Mul" else np.divide(wa, wb)
    how = "dequantized" if "cast" in ha else "scaled"
    return np.asarray(out), sa, (*(h for h in ha if h != "cast"), how)


def _dq_params(node: ir.Node) -> Quantization | None:
    scale = _const(node.inputs[1])
    if scale is None:
        return None
    zp = _const(node.inputs[2]) if len(node.inputs) > 2 else None
    axis = int(attr(node, "axis", 1)) if scale.size > 1 else None
    return Quantization("QDQ", node.name or "", scale, zp, axis, int(attr(node, "block_size", 0)))


def _integer_op_scale(node: ir.Node) -> np.ndarray | None:
    """The weight scale of MatMulInteger/ConvInteger, applied after it by Cast → Mul(x_scale * w_scale)."""
    out = node.outputs[0]
    for user, _ in out.uses():
        if user.op_type == "Cast":
            out = user.outputs[0]
            break
    for user, idx in out.uses():
        if user.op_type != "Mul":
            continue
        other = user.inputs[1 - idx]
        direct = _const(other)
        if direct is not None:
            return direct
        prod = other.producer() if other is not None else None
        if prod is not None and prod.op_type == "Mul":
            for v in prod.inputs:
                c = _const(v)
                if c is not None:
                    return c
    return None


def quantization_of(node: ir.Node, index: int) -> Quantization | None:
    """How input ``index`` of ``node`` is quantized, if that node dequantizes it (else ``None``).

    Example:
        >>> import onnx_ir as ir
        >>> quantization_of(ir.Node("", "Relu", [None], num_outputs=1), 0) is None
        True
    """
    op, name = node.op_type, node.name or ""
    if op == "DequantizeLinear" and index == 0:
        return _dq_params(node)
    if op == "Cast" and index == 0 and node.inputs[0] is not None and node.inputs[0].dtype is not None:
        if node.inputs[0].dtype.name in ("INT8", "UINT8", "INT4", "UINT4", "INT16", "UINT16"):
            for user, i in node.outputs[0].uses():  # weight-only quantization: Cast(q) · scale
                if user.op_type == "Mul" and len(user.inputs) == 2:
                    scale = _const(user.inputs[1 - int(i)])
                    if scale is not None and np.asarray(scale).dtype.kind == "f":
                        return Quantization("weight-only", user.name or name, np.asarray(scale), None, None)
    if op == "QLinearConv" and index in (3, 8):
        w_scale, w_zp = _const_in(node, 4), _const_in(node, 5)
        if w_scale is None:
            return None
        axis = 0 if w_scale.size > 1 else None
        if index == 3:
            return Quantization("QOperator", name, w_scale, w_zp, axis)
        x_scale = _const_in(node, 1)
        if x_scale is None:
            return None
        return Quantization("QOperator", name, (x_scale * w_scale).astype(np.float32), None, axis)
    if op == "QGemm" and index in (3, 6):
        b_scale, b_zp = _const_in(node, 4), _const_in(node, 5)
        if b_scale is None:
            return None
        axis = (0 if attr(node, "transB", 0) else 1) if b_scale.size > 1 else None
        if index == 3:
            return Quantization("QOperator", name, b_scale, b_zp, axis)
        a_scale = _const_in(node, 1)
        if a_scale is None:
            return None
        return Quantization(
            "QOperator", name, (a_scale * b_scale).astype(np.float32), None, 0 if axis is not None else None
        )
    if op == "QLinearMatMul" and index == 3:
        b_scale, b_zp = _const_in(node, 4), _const_in(node, 5)
        if b_scale is None:
            return None
        return Quantization("QOperator", name, b_scale, b_zp, -1 if b_scale.size > 1 else None)
    if op == "DynamicQuantizeLSTM" and index in (1, 2):  # W and R: [directions, rows, 4*hidden], per channel
        scale = _const(node.inputs[8 + 2 * (index - 1)]) if len(node.inputs) > 8 + 2 * (index - 1) else None
        if scale is None:
            return None
        zp = _const(node.inputs[9 + 2 * (index - 1)]) if len(node.inputs) > 9 + 2 * (index - 1) else None
        shape = (scale.shape[0], 1, -1) if scale.ndim == 2 else (-1, 1, 1)
        return Quantization(
            "integer", name, scale.reshape(shape), None if zp is None else zp.reshape(shape), None
        )
    if op in ("MatMulInteger", "ConvInteger") and index == 1:
        scale = _integer_op_scale(node)
        if scale is None:
            return None
        zp = _const_in(node, 3) if len(node.inputs) > 3 else None
        axis = (-1 if op == "MatMulInteger" else 0) if scale.size > 1 else None
        return Quantization("integer", name, scale, zp, axis)
    return None


def role_of(graph: Graph, node: ir.Node, index: int) -> str:
    """The role of input ``index`` of ``node``: weight, bias, scale, zero_point, running_mean, quantized weight…

    Example:
        >>> import onnx_ir as ir
        >>> from onnxscope.graph import Graph
        >>> role_of(Graph(ir.Model(ir.Graph([], [], nodes=[]), ir_version=10)), ir.Node("", "Conv", [None, None], num_outputs=1), 1)
        'weight'
    """
    op = node.op_type
    if op in _TRANSFORMS and index == 0:
        inner = "weight"
        for user, i in node.outputs[0].uses():
            inner = role_of(graph, user, i)
            break
        if inner.startswith("quantized "):
            inner = inner[len("quantized ") :]
        quantized = op == "DequantizeLinear" or (op == "Cast" and quantization_of(node, 0) is not None)
        return f"quantized {inner}" if quantized else inner
    if op in _SCALES and len(node.inputs) == 2 and all(is_const(v) for v in node.inputs):
        other = node.inputs[1 - index]
        producer = other.producer() if other is not None else None
        if producer is not None and producer.op_type == "Cast" and quantization_of(producer, 0) is not None:
            return "scale"  # weight-only quantization: Cast(q) · scale
        for user, i in node.outputs[0].uses():  # the weight side: its role where the rescaled weight goes
            return role_of(graph, user, i)
    if op == "MatMul":
        return "weight" if is_const(node.inputs[index]) else "input"
    if op in ("Add", "Sub") and is_const(node.inputs[index]):
        other = node.inputs[1 - index] if len(node.inputs) == 2 else None
        prod = other.producer() if other is not None else None
        while prod is not None and prod.op_type in ("Mul", "Cast"):  # integer ops: MatMulInteger → Cast → Mul
            prod = prod.inputs[0].producer() if prod.inputs[0] is not None else None
        return "bias" if prod is not None and prod.op_type in WEIGHTED_OPS else "operand"
    roles = ROLES.get(op)
    if roles and index < len(roles):
        return roles[index]
    from onnxscope._load import schema_input_names

    names = schema_input_names(op, node.domain, graph.opset(node.domain))
    return names[index].lower() if index < len(names) else f"input{index}"


@dataclass(frozen=True)
class WeightStats:
    """The audit of one tensor. Floating statistics ignore NaN/Inf; ``dead_units`` are all-zero rows."""

    count: int
    mean: float
    std: float
    min: float
    max: float
    l2: float
    sparsity: float
    nan: int
    inf: int
    fp16_overflow: int
    unit_axis: int | None = None
    dead_units: tuple[int, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        d = asdict(self)
        d["dead_units"] = list(self.dead_units)
        return d


_CHUNK = 1 << 22


def tensor_stats(a: np.ndarray, unit_axis: int | None = None) -> WeightStats:
    """Audit ``a`` in bounded-memory chunks (float64 accumulators, Chan's parallel variance).

    Example:
        >>> s = tensor_stats(np.array([[1.0, np.nan], [0.0, 0.0]], np.float32), unit_axis=0)
        >>> s.count, s.nan, s.sparsity, s.dead_units
        (4, 1, 0.5, (1,))
    """
    a = np.asarray(a)
    flat = a.reshape(-1)
    n_ok = 0
    mean = m2 = sq = 0.0
    lo, hi = math.inf, -math.inf
    nan = inf = zeros = over = 0
    for start in range(0, flat.size, _CHUNK):
        c = _as_real(flat[start : start + _CHUNK]).astype(np.float64)
        finite = np.isfinite(c)
        nan += int(np.isnan(c).sum())
        inf += int(np.isinf(c).sum())
        zeros += int((c == 0).sum())
        over += int((np.abs(c[finite]) > _FP16_MAX).sum())
        f = c[finite]
        if f.size:
            cm = float(f.mean())
            cm2 = float(((f - cm) ** 2).sum())
            total = n_ok + f.size
            delta = cm - mean
            mean += delta * f.size / total
            m2 += cm2 + delta * delta * n_ok * f.size / total
            n_ok = total
            sq += float((f * f).sum())
            lo, hi = min(lo, float(f.min())), max(hi, float(f.max()))
    dead: tuple[int, ...] = ()
    if unit_axis is not None and a.ndim >= 2:
        rows = np.moveaxis(a, unit_axis, 0)
        n = rows.shape[0]
        step = max(1, _CHUNK // max(1, rows[0].size))
        dead_list: list[int] = []
        for s in range(0, n, step):
            block = _as_real(rows[s : s + step]).reshape(min(step, n - s), -1)
            dead_list.extend(int(i) + s for i in np.flatnonzero(~np.any(block != 0, axis=1)))
        dead = tuple(dead_list)
    return WeightStats(
        count=int(flat.size),
        mean=mean if n_ok else math.nan,
        std=math.sqrt(m2 / n_ok) if n_ok else math.nan,
        min=lo if n_ok else math.nan,
        max=hi if n_ok else math.nan,
        l2=math.sqrt(sq),
        sparsity=zeros / flat.size if flat.size else 0.0,
        nan=nan,
        inf=inf,
        fp16_overflow=over,
        unit_axis=unit_axis,
        dead_units=dead,
    )


def _unit_axis(node: ir.Node, index: int, ndim: int) -> int | None:
    """Axis along which a weight's rows belong to one output unit of ``node``."""
    op = node.op_type
    if ndim < 2:
        return None
    if (op == "Gemm" and index == 1) or (op == "QGemm" and index == 3):
        return 0 if attr(node, "transB", 0) else 1
    if op in ("MatMul", "QLinearMatMul", "MatMulInteger"):
        return ndim - 1 if index in (1, 3) else ndim - 2
    if op in ("Conv", "QLinearConv", "ConvInteger") and index in (1, 3):
        return 0
    if op == "ConvTranspose" and index == 1:
        return 1
    if op in _TRANSFORMS and index == 0 and op not in ("Reshape", "Squeeze", "Unsqueeze"):
        # through the transforms that keep the weight's axes (a reshape loses which axis is which)
        for user, i in node.outputs[0].uses():
            if op == "Transpose":
                perm = list(attr(node, "perm", list(range(ndim))[::-1]))
                inner = _unit_axis(user, i, ndim)
                return None if inner is None or not 0 <= inner < len(perm) else int(perm[inner])
            return _unit_axis(user, i, ndim)
    return None


class Weight:
    """One stored tensor (an initializer or a Constant node's value), read lazily.

    Attributes:
        name: the ONNX tensor name.
        source: ``"initializer"`` or ``"constant"``.
        uses: where it is consumed, with its role in each place.
    """

    __slots__ = ("_dtype", "_graph", "_shape", "_value", "name", "source", "tensor", "uses")

    def __init__(self, graph: Graph, name: str, tensor: ir.TensorProtocol, source: str) -> None:
        self._graph = graph
        self.name = name
        self.tensor = tensor
        self.source = source
        self._value = graph.value(name) if graph.has_value(name) else None
        uses = []
        if self._value is not None:
            for node, i in self._value.uses():
                uses.append(Use(node.name or "", node.op_type, int(i), role_of(graph, node, int(i))))
        self.uses: tuple[Use, ...] = tuple(uses)

    def __repr__(self) -> str:
        return f"Weight({self.name!r}, shape={self.shape}, dtype={self.dtype}, role={self.role!r})"

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape, from the tensor header (no I/O; computed once)."""
        try:
            return self._shape
        except AttributeError:
            self._shape: tuple[int, ...] = tuple(int(d) for d in self.tensor.shape)
            return self._shape

    @property
    def dtype(self) -> str:
        """The element type as a lower-case ONNX name (``float32``, ``int8``, ``bfloat16``…)."""
        try:
            return self._dtype
        except AttributeError:
            t = self.tensor.dtype
            self._dtype: str = "string" if t == ir.DataType.STRING else str(np.dtype(t.numpy()))
            return self._dtype

    @property
    def size(self) -> int:
        """Number of elements (an exact integer: no overflow)."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes the data takes (as stored)."""
        return int(self.tensor.nbytes)

    @property
    def external(self) -> str | None:
        """The external-data file (relative location) holding the data, or ``None`` if stored inline."""
        return str(self.tensor.location) if isinstance(self.tensor, ir.ExternalTensor) else None

    @property
    def role(self) -> str:
        """The role in its first use (``weight``, ``bias``, ``scale``, ``running_mean``…), or ``unused``."""
        return self.uses[0].role if self.uses else "unused"

    def numpy(self) -> np.ndarray:
        """The data as stored (memory-mapped for external data; integers stay integers)."""
        return self.tensor.numpy()

    @property
    def quantization(self) -> Quantization | None:
        """The quantization parameters if a consumer dequantizes this tensor, else ``None``."""
        if self._value is None:
            return None
        for node, i in self._value.uses():
            q = quantization_of(node, int(i))
            if q is not None:
                return q
        return None

    def dequantize(self) -> np.ndarray:
        """Real values of a quantized weight; :class:`UnsupportedError` if nothing dequantizes it.

        Allocates the real values (float32, or the scale's wider type): refused with a
        :class:`~onnxscope.errors.ResourceError` above the memory budget (:mod:`onnxscope.limits`).
        """
        q = self.quantization
        if q is None:
            raise UnsupportedError(
                f"weight {self.name!r} ({self.dtype}) is not quantized: no DequantizeLinear, QLinearConv, "
                "QLinearMatMul, MatMulInteger or ConvInteger dequantizes it"
            )
        itemsize = max(4, np.asarray(q.scale).dtype.itemsize)
        check_array(self.shape, itemsize, f"dequantizing weight {self.name!r} {list(self.shape)}")
        return q.apply(self.numpy())

    def values(self, dequantize: bool = True) -> np.ndarray:
        """Real values: dequantized when quantized (and ``dequantize``), else the stored data."""
        return self.dequantize() if dequantize and self.quantization is not None else self.numpy()

    @property
    def unit_axis(self) -> int | None:
        """The axis that indexes output units (neurons/channels) of the consuming layer, if known."""
        if self._value is None:
            return None
        ndim = len(self.shape)
        for node, i in self._value.uses():
            axis = _unit_axis(node, int(i), ndim)
            if (
                axis is not None and 0 <= axis < ndim
            ):  # a reshaping transform on the way may leave it meaningless
                return axis
        return None

    def stats(self, dequantize: bool = True) -> WeightStats:
        """The audit: count, mean, std, min, max, L2, sparsity, NaN/Inf, fp16 overflow, dead units."""
        if self.tensor.dtype == ir.DataType.STRING:
            raise UnsupportedError(f"weight {self.name!r} holds strings; statistics need numbers")
        return tensor_stats(self.values(dequantize), self.unit_axis)

    def digest(self) -> str:
        """A content hash (dtype, shape and bytes) used to find identical tensors stored twice."""
        h = hashlib.blake2b(digest_size=16)
        h.update(f"{self.dtype}{self.shape}".encode())
        a = np.ascontiguousarray(self.numpy()).reshape(-1)
        for s in range(0, a.size, _CHUNK):
            h.update(a[s : s + _CHUNK].view(np.uint8).tobytes() if a.dtype.itemsize else b"")
        return h.hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready metadata (no values)."""
        q = self.quantization
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "size": self.size,
            "nbytes": self.nbytes,
            "source": self.source,
            "external": self.external,
            "role": self.role,
            "uses": [asdict(u) for u in self.uses],
            "quantization": None if q is None else {"kind": q.kind, "node": q.node, "axis": q.axis},
        }


class Weights(Mapping[str, Weight]):
    """Every stored tensor of a model by name; a read-only mapping with filters and audits.

    Example:
        >>> import onnxscope
        >>> from onnxscope.testing import mlp_model
        >>> ws = onnxscope.Model(mlp_model()).weights
        >>> sorted(ws.select(op="Gemm", name="fc1.*"))
        ['fc1.bias', 'fc1.weight']
    """

    def __init__(self, graph: Graph) -> None:
        self._graph = graph
        self._items: dict[str, Weight] = {}
        for g in graph.ir.graphs():
            for name, value in g.initializers.items():
                if value.const_value is not None:
                    self._items[name] = Weight(graph, name, value.const_value, "initializer")
        for name, tensor in iter_tensors(graph.ir):
            if name not in self._items:
                self._items[name] = Weight(graph, name, tensor, "constant")

    def __getitem__(self, name: str) -> Weight:
        try:
            return self._items[name]
        except KeyError:
            raise NotFoundError(f"no weight {name!r}; {closest(name, self._items)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def select(self, name: str | None = None, op: str | None = None, role: str | None = None) -> Weights:
        """Weights whose name matches the glob ``name``, used by an ``op`` node, in the given ``role``."""
        keep = {
            k: w
            for k, w in self._items.items()
            if (name is None or fnmatch.fnmatchcase(k, name))
            and (op is None or any(u.op == op for u in w.uses))
            and (role is None or any(u.role == role for u in w.uses))
        }
        if not keep and self._items:
            ops = sorted({u.op for w in self._items.values() for u in w.uses})
            what = []
            if name is not None:
                what.append(f"name {name!r} ({closest(name, self._items)})")
            if op is not None:
                what.append(f"op {op!r} (ops using weights: {', '.join(ops)})")
            if role is not None:
                what.append(f"role {role!r}")
            raise InputError("no weight matches " + " and ".join(what))
        view = Weights.__new__(Weights)
        view._graph, view._items = self._graph, keep
        return view

    @property
    def parameters(self) -> int:
        """Total number of elements."""
        return sum(w.size for w in self._items.values())

    @property
    def nbytes(self) -> int:
        """Total bytes as stored."""
        return sum(w.nbytes for w in self._items.values())

    def duplicates(self) -> list[list[str]]:
        """Groups of names that hold identical tensors (same dtype, shape and bytes). Reads every tensor."""
        by_key: dict[tuple[str, tuple[int, ...], int], list[Weight]] = {}
        for w in self._items.values():
            if w.size > 1 and w.tensor.dtype != ir.DataType.STRING:
                by_key.setdefault((w.dtype, w.shape, w.nbytes), []).append(w)
        groups: list[list[str]] = []
        for cands in by_key.values():
            if len(cands) < 2:
                continue
            by_digest: dict[str, list[str]] = {}
            for w in cands:
                by_digest.setdefault(w.digest(), []).append(w.name)
            groups.extend(g for g in by_digest.values() if len(g) > 1)
        return groups
