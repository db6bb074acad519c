"""What the report says, as plain data: the model card, the weights audit, the structure, activations, comparison.

Every function here returns JSON-ready dicts and lists (summaries, never raw tensors); :mod:`onnxscope.page`
turns them into HTML, tables and charts. Nothing here imports a plotting library or writes a file.

Example:
    >>> import onnxscope
    >>> from onnxscope.costs import profile
    >>> from onnxscope.testing import mlp_model
    >>> m = onnxscope.Model(mlp_model())
    >>> card = model_card(m, profile(m, dims={"batch": 1}))
    >>> card["parameters"], card["quantization"]["format"]
    (132, 'none')
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from onnxscope._ir import ir
from onnxscope.costs import Profile
from onnxscope.discrepancy import REPORT_FIELDS
from onnxscope.errors import InputError
from onnxscope.graph import WEIGHTED_OPS
from onnxscope.model import Model
from onnxscope.patterns import FUSED_ATTENTION, LAYER_OPS, AttentionBlock, find_attention, find_residuals
from onnxscope.stats import SATURATING, RunningStats, unit_axis_for
from onnxscope.weights import Weight, is_const, tensor_stats

__all__ = [
    "COMPARISON_FIELDS",
    "activations_from_capture",
    "activations_from_stats",
    "check_comparison",
    "model_card",
    "structure",
    "weights_audit",
]

_FP16_MAX = 65504.0
_OUTLIER_SIGMA = 6.0
_SUBSAMPLE = 1 << 16  # values per tensor used for quantiles (a fixed stride through the tensor)
QUANTILES = (0.001, 0.01, 0.25, 0.5, 0.75, 0.99, 0.999)
# Ops whose output holds the same values as their input (left out of the activation statistics).
LAYOUT_OPS = frozenset(
    {
        "Reshape",
        "Transpose",
        "Identity",
        "Squeeze",
        "Unsqueeze",
        "Flatten",
        "Expand",
        "Shape",
        "Size",
        "Constant",
        "ConstantOfShape",
        "Range",
        "CastLike",
        "Cast",
    }
)
# Roles of learnable tensors (the others are running statistics, quantization parameters, shapes, masks…).
_PARAM_ROLES = frozenset(
    {
        "weight",
        "quantized weight",
        "bias",
        "quantized bias",
        "scale",
        "embedding",
        "recurrence_weight",
        "slope",
    }
)
_LAYER_ROLES = frozenset({"weight", "quantized weight", "embedding", "recurrence_weight"})
_QUANTIZING_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "QLinearConv",
        "QLinearMatMul",
        "QGemm",
        "MatMulInteger",
        "ConvInteger",
    }
)
# Outputs where a unit that is never above zero is "dead".
RELU_LIKE = frozenset({"Relu", "Clip", "ThresholdedRelu", "Shrink"})

# The comparison rows the report draws (one per aligned pair of tensors), in this order.
COMPARISON_FIELDS = REPORT_FIELDS


def _f(x: Any, digits: int = 6) -> float | None:
    """A float rounded to ``digits`` significant digits (``None`` for NaN; ±inf kept as ±1e308)."""
    if x is None:
        return None
    x = float(x)
    if math.isnan(x):
        return None
    if math.isinf(x):
        return 1e308 if x > 0 else -1e308
    return float(f"{x:.{digits}g}")


def _shape_text(shape: Iterable[Any] | None) -> str:
    return "?" if shape is None else "×".join("?" if d is None else str(d) for d in shape) or "scalar"


def _sample(a: np.ndarray) -> np.ndarray:
    """At most ``_SUBSAMPLE`` finite values of ``a`` taken at a fixed stride, as float64."""
    flat = a.reshape(-1)
    if flat.size > _SUBSAMPLE:
        flat = flat[:: flat.size // _SUBSAMPLE + 1]
    f = flat.astype(np.float64)
    return f[np.isfinite(f)]


def _quantiles(a: np.ndarray) -> list[float | None]:
    s = _sample(a)
    if not s.size:
        return [None] * len(QUANTILES)
    return [_f(q) for q in np.quantile(s, QUANTILES)]


# -- model card ----------------------------------------------------------------------------------------------
def _quantized_type(node: ir.Node) -> str:
    """The element type a QuantizeLinear produces: its zero point's, else its output's, else uint8 (the default)."""
    zp = node.inputs[2] if len(node.inputs) > 2 else None
    if zp is not None and zp.const_value is not None:
        return str(np.dtype(zp.const_value.dtype.numpy()))
    if zp is not None and zp.dtype is not None:
        return str(np.dtype(zp.dtype.numpy()))
    out = node.outputs[0].dtype if node.outputs else None
    return str(np.dtype(out.numpy())) if out is not None else "uint8"


def quantization_format(model: Model) -> dict[str, Any]:
    """How the model is quantized: ``format`` (``QDQ``, ``QOperator``, ``dynamic``, ``weight-only``,
    ``float16`` or ``none``), the stored weight element types and the activation types.

    Example:
        >>> import onnxscope
        >>> from onnxscope.testing import mlp_model
        >>> quantization_format(onnxscope.Model(mlp_model()))["format"]
        'none'
    """
    nodes = [e.node for e in model.entries]
    ops = Counter(n.op_type for n in nodes)
    formats = []
    if ops["QuantizeLinear"] or ops["DequantizeLinear"]:
        formats.append("QDQ")
    if any(ops[o] for o in ("QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd", "QLinearMul")):
        formats.append("QOperator")
    if any(
        ops[o] for o in ("DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul")
    ):
        formats.append("dynamic")
    if ops["MatMulNBits"] or ops["GatherBlockQuantized"]:
        formats.append("weight-only")
    weight_types: Counter[str] = Counter()
    per_channel = per_tensor = 0
    for w in model.weights.values():
        dt = w.tensor.dtype
        if w.role in _LAYER_ROLES:
            weight_types[w.dtype] += math.prod(int(d) for d in w.tensor.shape)
        maybe_quantized = dt != ir.DataType.STRING and (not dt.is_floating_point() or dt.bitwidth <= 8)
        q = w.quantization if formats and maybe_quantized else None
        if q is not None:
            if q.axis is None:
                per_tensor += 1
            else:
                per_channel += 1
    activation_types: Counter[str] = Counter()
    for n in nodes:
        if n.op_type == "QuantizeLinear" and n.inputs and not is_const(n.inputs[0]):
            activation_types[_quantized_type(n)] += 1
    if not formats and any(t in ("float16", "bfloat16") for t in weight_types):
        formats.append("float16" if "float16" in weight_types else "bfloat16")
    return {
        "format": "+".join(formats) or "none",
        "weight_types": dict(weight_types.most_common()),
        "activation_types": dict(activation_types.most_common()),
        "per_channel_weights": per_channel,
        "per_tensor_weights": per_tensor,
    }


def model_card(model: Model, prof: Profile) -> dict[str, Any]:
    """Provenance, opsets, I/O, op histogram, parameters and bytes, external data, quantization, totals."""
    s = model.summary()
    metadata = {
        k: (v if len(v) <= 200 else v[:200] + f"… ({len(v):,} characters)")
        for k, v in s.metadata.items()
        if not k.startswith("pkg.torch.onnx.")
    }
    return {
        "path": s.path,
        "graph": model.ir.graph.name or "",
        "producer": s.producer,
        "ir_version": s.ir_version,
        "opsets": s.opsets,
        "inputs": [{"name": t.name, "dtype": t.dtype, "shape": _shape_text(t.shape)} for t in s.inputs],
        "outputs": [{"name": t.name, "dtype": t.dtype, "shape": _shape_text(t.shape)} for t in s.outputs],
        "nodes": s.nodes,
        "subgraphs": s.subgraphs,
        "ops": s.ops,
        "parameters": prof.params,
        "buffers": prof.buffers,
        "stored_tensors": s.weights,
        "stored_elements": s.parameters,
        "stored_bytes": s.nbytes,
        "external_data": s.external_data,
        "quantization": quantization_format(model),
        "macs": prof.macs,
        "flops": prof.flops,
        "activation_bytes": prof.activation_bytes,
        "dims": dict(prof.dims),
        "unknown_costs": list(prof.unknown),
        "metadata": metadata,
    }


def profile_rows(prof: Profile) -> list[dict[str, Any]]:
    """One row per node (folded constant computations left out): the per-layer profile table."""
    return [
        {
            "node": r.node,
            "op": r.op,
            "module": r.module or "",
            "output": _shape_text(r.output_shape),
            "params": r.params,
            "macs": r.macs,
            "flops": r.flops,
            "activation_bytes": r.activation_bytes,
        }
        for r in prof.layers
        if not r.folded or r.params or r.buffers  # a folded Gather of an embedding still owns the table
    ]


# -- weights -------------------------------------------------------------------------------------------------
_SMALL = 1 << 12  # tensors up to this many elements are audited together, stacked by shape


def _row_ids(rows: np.ndarray) -> np.ndarray:
    """An id per row of a 2-D array, equal exactly when the rows' bytes are equal."""
    rows = np.ascontiguousarray(rows)
    if rows.shape[1] == 0:
        return np.zeros(rows.shape[0], np.int64)
    void = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).reshape(-1)
    return np.unique(void, return_inverse=True)[1].reshape(-1)


def _duplicate_units(a: np.ndarray, axis: int) -> int:
    """How many units (rows along ``axis``) repeat an earlier unit exactly (all-zero units left out)."""
    rows = np.moveaxis(np.asarray(a), axis, 0).reshape(a.shape[axis], -1)
    if rows.shape[0] < 2 or rows.shape[1] == 0:
        return 0
    live = np.any(rows != 0, axis=1)
    ids = _row_ids(rows[live])
    return int(ids.size - np.unique(ids).size)


def _fields(
    mean: float,
    std: float,
    lo: float,
    hi: float,
    zeros: int,
    size: int,
    nan: int,
    inf: int,
    over: int,
    outliers: int,
    dead: int,
    dup: int,
) -> dict[str, Any]:
    finite = not math.isnan(lo)
    return {
        "mean": _f(mean),
        "std": _f(std),
        "min": _f(lo),
        "max": _f(hi),
        "absmax": _f(max(abs(lo), abs(hi))) if finite else None,
        "sparsity": _f(zeros / size if size else 0.0, 4),
        "nan": int(nan),
        "inf": int(inf),
        "fp16_overflow": int(over),
        "outliers": int(outliers),
        "dead_units": int(dead),
        "duplicate_units": int(dup),
    }


def _single(a: np.ndarray, unit_axis: int | None) -> dict[str, Any]:
    """Statistics of one (large) tensor: :func:`~onnxscope.weights.tensor_stats` plus outliers and duplicates."""
    st = tensor_stats(a, unit_axis)
    outliers = 0
    if st.std > 0 and max(st.max - st.mean, st.mean - st.min) > _OUTLIER_SIGMA * st.std:
        flat = a.reshape(-1)
        for s in range(0, flat.size, 1 << 22):
            c = flat[s : s + (1 << 22)].astype(np.float64)
            outliers += int(np.count_nonzero(np.abs(c[np.isfinite(c)] - st.mean) > _OUTLIER_SIGMA * st.std))
    dup = 0
    if unit_axis is not None and a.ndim >= 2 and a.dtype.kind in "fiub":
        dup = _duplicate_units(a, unit_axis)
    size = st.count
    return _fields(
        st.mean,
        st.std,
        st.min,
        st.max,
        round(st.sparsity * size),
        size,
        st.nan,
        st.inf,
        st.fp16_overflow,
        outliers,
        len(st.dead_units),
        dup,
    )


def _stacked(stack: np.ndarray, unit_axis: int | None) -> list[dict[str, Any]]:
    """The statistics of many small tensors of one shape at once (``stack`` is ``[tensors, *shape]``, float64);
    the same numbers :func:`_single` gives for each."""
    n = stack.shape[0]
    flat = stack.reshape(n, -1)
    size = flat.shape[1]
    isnan, isinf = np.isnan(flat), np.isinf(flat)
    nan, inf = isnan.sum(1), isinf.sum(1)
    finite = ~(isnan | isinf)
    if (nan + inf).any():
        ok = np.where(finite, flat, np.nan)
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, std = np.nanmean(ok, 1), np.nanstd(ok, 1)
            lo, hi = np.nanmin(ok, 1), np.nanmax(ok, 1)
    else:
        mean, std, lo, hi = flat.mean(1), flat.std(1), flat.min(1), flat.max(1)
    zeros = (flat == 0).sum(1)
    over = ((np.abs(flat) > _FP16_MAX) & finite).sum(1)
    with np.errstate(invalid="ignore"):
        outliers = (
            (np.abs(flat - mean[:, None]) > _OUTLIER_SIGMA * std[:, None]) & finite & (std[:, None] > 0)
        ).sum(1)
    dead = np.zeros(n, np.int64)
    dup = np.zeros(n, np.int64)
    if unit_axis is not None and stack.ndim >= 3:
        rows = np.moveaxis(stack, 1 + unit_axis, 1).reshape(n, stack.shape[1 + unit_axis], -1)
        live = np.any(rows != 0, axis=2)
        dead = (~live).sum(1)
        units = rows.shape[1]
        if units > 1 and rows.shape[2]:
            ids = _row_ids(rows.reshape(n * units, -1)).reshape(n, units)
            ids = np.sort(np.where(live, ids, -1 - np.arange(units)), axis=1)  # dead units never match
            dup = (ids[:, 1:] == ids[:, :-1]).sum(1)
    return [
        _fields(
            mean[i],
            std[i],
            lo[i],
            hi[i],
            zeros[i],
            size,
            nan[i],
            inf[i],
            over[i],
            outliers[i],
            dead[i],
            dup[i],
        )
        for i in range(n)
    ]


def _same_rows(flat: np.ndarray, names: list[str]) -> list[list[str]]:
    """Groups of names whose rows of ``flat`` hold exactly the same values (two or more per group)."""
    ids = _row_ids(flat)
    groups: dict[int, list[str]] = {}
    for i in np.flatnonzero(np.bincount(ids)[ids] > 1):
        groups.setdefault(int(ids[i]), []).append(names[i])
    return list(groups.values())


def _histogram(a: np.ndarray, lo: float, hi: float, bins: int) -> dict[str, Any]:
    """Counts of the finite values of ``a`` in ``bins`` equal bins over ``[lo, hi]``, read in chunks."""
    least = 1e-4 * max(1.0, abs(lo), abs(hi))  # numpy refuses bins narrower than float32 precision
    if hi - lo < least:
        mid = (lo + hi) / 2
        lo, hi = mid - least, mid + least
    wide = hi - lo > 1e30  # float32 bin edges would overflow
    counts = np.zeros(bins, np.int64)
    flat = a.reshape(-1)
    for s in range(0, flat.size, 1 << 22):
        c = flat[s : s + (1 << 22)]
        if c.dtype.kind != "f" or c.dtype.itemsize < 4 or wide:
            c = c.astype(np.float64 if wide else np.float32)
        counts += np.histogram(c[np.isfinite(c)], bins=bins, range=(lo, hi))[0]
    return {"lo": _f(lo), "hi": _f(hi), "counts": counts.tolist()}


def _base_row(model: Model, w: Weight, shape: tuple[int, ...], unit_axis: int | None) -> dict[str, Any]:
    q = w.quantization
    use = w.uses[0] if w.uses else None
    layer, op = (use.node, use.op) if use else ("", "")
    if use is not None and use.op not in WEIGHTED_OPS and model.has_value(w.name):
        # the layer it feeds, through Transpose/DequantizeLinear/Cast…
        users = model.weighted_users(model.value(w.name))
        if users:
            layer, op = users[0].name or layer, users[0].op_type
    return {
        "name": w.name,
        "role": w.role,
        "layer": layer,
        "op": op,
        "shape": _shape_text(shape),
        "dtype": w.dtype,
        "size": int(math.prod(shape)),
        "bytes": w.nbytes,
        "units": shape[unit_axis] if unit_axis is not None and len(shape) >= 2 else None,
        "quantized": "" if q is None else f"{q.kind}{'' if q.axis is None else f' axis {q.axis}'}",
        "external": w.external or "",
    }


def _quant_rows(model: Model) -> list[dict[str, Any]]:
    """Quantization parameters: one row per quantized weight and per activation QuantizeLinear."""
    from onnxscope.weights import const_array

    rows = []
    ops = {e.node.op_type for e in model.entries}
    if not ops & _QUANTIZING_OPS:
        return rows
    for w in model.weights.values():
        dt = w.tensor.dtype
        if dt.is_floating_point() and dt.bitwidth > 8 or dt == ir.DataType.STRING:
            continue
        q = w.quantization
        if q is None:
            continue
        scale = np.asarray(q.scale, np.float64).reshape(-1)
        zp = None if q.zero_point is None else np.asarray(q.zero_point).astype(np.float64).reshape(-1)
        rows.append(
            {
                "tensor": w.name,
                "kind": "weight",
                "node": q.node,
                "format": q.kind,
                "dtype": w.dtype,
                "axis": q.axis,
                "channels": int(scale.size),
                "scale_min": _f(scale.min()),
                "scale_max": _f(scale.max()),
                "scale_ratio": _f(scale.max() / scale.min()) if scale.min() > 0 else None,
                "zp_min": _f(zp.min()) if zp is not None and zp.size else None,
                "zp_max": _f(zp.max()) if zp is not None and zp.size else None,
            }
        )
    for n in (e.node for e in model.entries):
        if n.op_type != "QuantizeLinear" or not n.inputs or is_const(n.inputs[0]):
            continue
        scale = const_array(n.inputs[1]) if len(n.inputs) > 1 else None
        if scale is None:
            continue
        s = np.asarray(scale[0], np.float64).reshape(-1)
        zpa = const_array(n.inputs[2]) if len(n.inputs) > 2 else None
        zp = None if zpa is None else np.asarray(zpa[0]).astype(np.float64).reshape(-1)
        dtype = _quantized_type(n)
        rows.append(
            {
                "tensor": n.inputs[0].name or "",
                "kind": "activation",
                "node": n.name or "",
                "format": "QDQ",
                "dtype": dtype,
                "axis": None,
                "channels": int(s.size),
                "scale_min": _f(s.min()),
                "scale_max": _f(s.max()),
                "scale_ratio": _f(s.max() / s.min()) if s.size and s.min() > 0 else None,
                "zp_min": _f(zp.min()) if zp is not None and zp.size else None,
                "zp_max": _f(zp.max()) if zp is not None and zp.size else None,
            }
        )
    return rows


def weights_audit(model: Model, bins: int = 64, histograms: int = 24, boxes: int = 160) -> dict[str, Any]:
    """Per-tensor statistics, histograms of the largest (and every flagged) layer weight, duplicates and
    findings (NaN/Inf, fp16 overflow, outliers beyond 6σ, dead and duplicate units), quantization parameters.

    Returns ``{"rows", "histograms", "distribution", "layer_weights", "duplicates", "quantization",
    "findings"}``; ``distribution`` holds quantiles (:data:`QUANTILES`) of at most ``boxes`` layer weights, evenly
    spaced in graph order out of ``layer_weights``. Small tensors are audited together, stacked by shape, so a
    model of 100,000 nodes takes seconds.

    Example:
        >>> import onnxscope
        >>> from onnxscope.testing import mlp_model
        >>> w = weights_audit(onnxscope.Model(mlp_model()))
        >>> [r["name"] for r in w["rows"]][:2], w["findings"]
        (['fc1.weight', 'fc1.bias'], [])
    """
    rows: list[dict[str, Any]] = []
    pending: dict[tuple[Any, ...], list[tuple[int, Weight]]] = {}
    others: dict[tuple[Any, ...], list[Weight]] = {}  # the rest, by element type and shape (for duplicates)
    for w in model.weights.values():
        dt = w.tensor.dtype
        if dt == ir.DataType.STRING:
            continue
        shape = tuple(int(d) for d in w.tensor.shape)
        size = int(math.prod(shape))
        if size == 0:
            continue
        unit_axis = w.unit_axis
        row = _base_row(model, w, shape, unit_axis)
        rows.append(row)
        if size <= _SMALL and dt.is_floating_point() and not row["quantized"]:
            pending.setdefault((shape, unit_axis, dt), []).append((len(rows) - 1, w))
        else:
            row.update(_single(np.asarray(w.values()), unit_axis))
            if size > 1:
                others.setdefault((dt, shape), []).append(w)
    order_of = {r["name"]: i for i, r in enumerate(rows)}
    dups: list[list[str]] = []
    same_shape: dict[tuple[Any, ...], list[tuple[np.ndarray, list[str]]]] = {}
    for key, items in pending.items():
        unit_axis = key[1]
        stack = np.stack([np.asarray(w.numpy()).astype(np.float64) for _, w in items])
        for (i, _), fields in zip(items, _stacked(stack, unit_axis), strict=True):
            rows[i].update(fields)
        if stack[0].size > 1:
            same_shape.setdefault((stack.shape[1:], key[2]), []).append((stack, [w.name for _, w in items]))
    for parts in same_shape.values():  # duplicates among all the small tensors of one shape and type
        flat = np.concatenate([st.reshape(st.shape[0], -1) for st, _ in parts])
        dups.extend(_same_rows(flat, [n for _, names in parts for n in names]))
    for ws in others.values():
        if len(ws) > 1:
            by_digest: dict[str, list[str]] = {}
            for w in ws:
                by_digest.setdefault(w.digest(), []).append(w.name)
            dups.extend(g for g in by_digest.values() if len(g) > 1)
    dups.sort(key=lambda g: order_of[g[0]])

    layer_rows = [r for r in rows if r["role"] in _LAYER_ROLES and r["size"] > 1]
    flagged = [
        r
        for r in layer_rows
        if r["nan"] or r["inf"] or r["fp16_overflow"] or r["dead_units"] or r["duplicate_units"]
    ]
    biggest = sorted(layer_rows, key=lambda r: -r["size"])[:histograms]
    order = order_of
    shown = sorted({r["name"] for r in [*flagged, *biggest]}, key=order.__getitem__)[:histograms]
    hists = {}
    for name in shown:
        r = rows[order[name]]
        if r["min"] is not None:
            hists[name] = {
                **_histogram(np.asarray(model.weights[name].values()), r["min"], r["max"], bins),
                "role": r["role"],
            }
    picked = layer_rows
    if len(layer_rows) > boxes:
        picked = [
            layer_rows[i] for i in np.unique(np.linspace(0, len(layer_rows) - 1, boxes).round().astype(int))
        ]
    distribution = [
        {"name": r["name"], "q": _quantiles(np.asarray(model.weights[r["name"]].values()))} for r in picked
    ]
    return {
        "rows": rows,
        "histograms": hists,
        "distribution": distribution,
        "layer_weights": len(layer_rows),
        "duplicates": dups,
        "quantization": _quant_rows(model),
        "findings": _weight_findings(rows, dups),
    }


def _weight_findings(rows: list[dict[str, Any]], dups: list[list[str]]) -> list[dict[str, str]]:
    findings: list[dict[str, str]] = []
    overflowing_constants: list[str] = []
    for r in rows:
        where = f"{r['name']} ({r['role']} of {r['layer'] or 'nothing'})"
        if r["nan"] or r["inf"]:
            findings.append({"level": "error", "text": f"{where}: {r['nan']} NaN and {r['inf']} Inf values"})
        if r["fp16_overflow"] and r["role"] in _PARAM_ROLES:
            findings.append(
                {"level": "warning", "text": f"{where}: {r['fp16_overflow']} values beyond float16's ±65504"}
            )
        elif r["fp16_overflow"]:
            overflowing_constants.append(r["name"])
        if r["role"] not in _LAYER_ROLES:
            continue
        if r["dead_units"]:
            findings.append(
                {
                    "level": "warning",
                    "text": f"{where}: {r['dead_units']} of {r['units']} units all zero (dead)",
                }
            )
        if r["duplicate_units"]:
            findings.append(
                {
                    "level": "warning",
                    "text": f"{where}: {r['duplicate_units']} of {r['units']} units repeat another unit exactly",
                }
            )
        if r["outliers"]:
            findings.append(
                {
                    "level": "info",
                    "text": f"{where}: {r['outliers']} values beyond {_OUTLIER_SIGMA:g}σ of the mean "
                    f"(|max| {r['absmax']}, σ {r['std']})",
                }
            )
    if overflowing_constants:
        findings.append(
            {
                "level": "info",
                "text": f"{len(overflowing_constants)} constant(s) that are not parameters hold values beyond "
                f"float16's range (e.g. mask fill values; a float16 conversion makes them ±inf): "
                f"{', '.join(overflowing_constants[:5])}",
            }
        )
    for g in dups:
        findings.append(
            {"level": "info", "text": f"identical tensors stored {len(g)} times: {', '.join(g[:6])}"}
        )
    return findings


# -- structure -----------------------------------------------------------------------------------------------
def _chain(ops: Sequence[str], limit: int = 12) -> str:
    """``Conv → BatchNormalization → Relu ×3``-style summary of an op sequence."""
    if not ops:
        return "identity"
    parts: list[tuple[str, int]] = []
    for op in ops:
        if parts and parts[-1][0] == op:
            parts[-1] = (op, parts[-1][1] + 1)
        else:
            parts.append((op, 1))
    text = [f"{op} ×{n}" if n > 1 else op for op, n in parts]
    if len(text) > limit:
        text = [*text[: limit - 1], f"… ({len(text) - limit + 1} more)"]
    return " → ".join(text)


# Ops named in a branch summary (the rest — layout, masks, scalings, Q/DQ — are left out of it).
_CHAIN_OPS = LAYER_OPS | frozenset(
    {
        "BatchNormalization",
        "LayerNormalization",
        "InstanceNormalization",
        "GroupNormalization",
        "RMSNormalization",
        "SimplifiedLayerNormalization",
        "SkipLayerNormalization",
        "SkipSimplifiedLayerNormalization",
        "LpNormalization",
        "Relu",
        "LeakyRelu",
        "PRelu",
        "Sigmoid",
        "Tanh",
        "Gelu",
        "FastGelu",
        "BiasGelu",
        "QuickGelu",
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
        "MaxPool",
        "AveragePool",
        "LpPool",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "Resize",
        "Upsample",
    }
)


def _common_module(mods: Iterable[str | None]) -> str:
    parts = [m.split(".") for m in mods if m]
    if not parts:
        return ""
    out = []
    for items in zip(*parts, strict=False):
        if len(set(items)) != 1:
            break
        out.append(items[0])
    return ".".join(out)


def structure(model: Model, prof: Profile | None = None) -> dict[str, Any]:
    """Residual/dense connections and attention blocks (tables), and the main path as a list of segments.

    A segment is either a residual (or dense) block — its main branch, its skip branch (identity or a
    projection), the attention blocks inside it — or a run of plain layers between blocks.

    Example:
        >>> import onnxscope
        >>> from onnxscope.testing import mlp_model
        >>> s = structure(onnxscope.Model(mlp_model()))
        >>> s["residuals"], [seg["main"] for seg in s["segments"]]
        ([], ['Gemm → Relu → Gemm'])
    """
    entries = model.entries
    top = [(e.path, e.node) for e in entries if not e.prefix]
    pos = {path: i for i, (path, _) in enumerate(top)}
    node_of = {e.path: e.node for e in entries}
    cost = {r.node: r for r in prof.layers} if prof is not None else {}
    residuals = find_residuals(model)
    blocks = find_attention(model)
    attn_at: dict[str, AttentionBlock] = {}
    for b in blocks:
        for t in (b.probabilities, b.output):
            if t and model.has_value(t):
                p = model.value(t).producer()
                if p is not None:
                    attn_at.setdefault(p.name or t, b)

    softmax_of = {b.probabilities: b for b in blocks if b.probabilities}

    def op_label(node: ir.Node) -> str | None:
        op = node.op_type
        if op == "Softmax" and node.outputs and node.outputs[0].name in softmax_of:
            heads = softmax_of[node.outputs[0].name].heads
            return f"Attention ({heads} heads)" if heads else "Attention"
        if op in ("MatMul", "Einsum") and not any(is_const(v) for v in node.inputs):
            return None  # Q·Kᵀ and P·V: shown as the attention they belong to
        if op == "Gather" and node.inputs and is_const(node.inputs[0]):
            return "Embedding"
        if (node.domain, op) in FUSED_ATTENTION or (node.domain == "ai.onnx" and ("", op) in FUSED_ATTENTION):
            return f"{op} (fused attention)"
        return op if op in _CHAIN_OPS else None

    def ops_of(paths: Iterable[str]) -> list[str]:
        out = []
        for p in paths:
            node = node_of.get(p)
            text = op_label(node) if node is not None else None
            if text:
                out.append(text)
        return out

    res_rows = []
    spans = []
    for i, r in enumerate(residuals):
        members = [p for p in (*r.main, *r.skip, r.merge) if p in pos]
        inner_attn = [attn_at[p].name for p in r.main if p in attn_at]
        res_rows.append(
            {
                "merge": r.merge,
                "kind": r.kind,
                "fork": r.fork,
                "main": _chain(ops_of(r.main)),
                "skip": _chain(ops_of(r.skip)),
                "projection": r.projection,
                "main_nodes": len(r.main),
                "attention": ", ".join(dict.fromkeys(inner_attn)),
            }
        )
        if members:
            spans.append((min(pos[p] for p in members), pos.get(r.merge, max(pos[p] for p in members)), i))
    spans.sort()
    kept: list[tuple[int, int, list[int]]] = []
    for lo, hi, i in spans:  # blocks that overlap an earlier block are nested in it
        if kept and lo <= kept[-1][1]:
            klo, khi, idx = kept[-1]
            kept[-1] = (klo, max(khi, hi), [*idx, i])
        else:
            kept.append((lo, hi, [i]))
    segments: list[dict[str, Any]] = []

    def add_plain(lo: int, hi: int) -> None:
        paths = [top[k][0] for k in range(lo, hi)]
        ops = ops_of(paths)
        if not ops:
            return
        segments.append(_segment("layers", paths, ops, "", [], model, node_of, cost, []))

    cursor = 0
    for lo, hi, idx in kept:
        add_plain(cursor, lo)
        paths = [top[k][0] for k in range(lo, hi + 1)]
        outer = residuals[idx[0]]
        for i in idx:
            if len(residuals[i].main) > len(outer.main):
                outer = residuals[i]
        main_paths = [p for p in paths if p not in set(outer.skip)]
        attn = list(dict.fromkeys(attn_at[p].name for p in paths if p in attn_at))
        kind = outer.kind + ("" if len(idx) == 1 else f" ×{len(idx)}")
        segments.append(
            _segment(
                kind, paths, ops_of(main_paths), _chain(ops_of(outer.skip)), attn, model, node_of, cost, idx
            )
        )
        cursor = hi + 1
    add_plain(cursor, len(top))
    attn_rows = [
        {
            "name": b.name,
            "op": b.op,
            "fused": b.fused,
            "heads": b.heads,
            "causal": b.causal,
            "w_q": b.w_q or "",
            "w_k": b.w_k or "",
            "w_v": b.w_v or "",
            "w_o": b.w_o or "",
            "probabilities": b.probabilities or "",
        }
        for b in blocks
    ]
    return {"residuals": res_rows, "attention": attn_rows, "segments": segments}


def _segment(
    kind: str,
    paths: list[str],
    main_ops: list[str],
    skip: str,
    attention: list[str],
    model: Model,
    node_of: dict[str, ir.Node],
    cost: dict[str, Any],
    residual_index: list[int],
) -> dict[str, Any]:
    rows = [cost[p] for p in paths if p in cost]
    if rows:  # the profile already resolved each node's module
        mods = [r.module for r in rows if r.op != "Constant"]
    else:
        mods = [
            model.module_of(node_of[p]) for p in paths if p in node_of and node_of[p].op_type != "Constant"
        ]
    return {
        "kind": kind,
        "module": _common_module(mods),
        "first": paths[0],
        "last": paths[-1],
        "main": _chain(main_ops),
        "skip": skip,
        "attention": ", ".join(attention),
        "nodes": len(paths),
        "params": sum(r.params for r in rows),
        "macs": sum(r.macs or 0 for r in rows),
        "residuals": residual_index,
    }


# -- activations ---------------------------------------------------------------------------------------------
def _order(model: Model | None) -> dict[str, int]:
    if model is None:
        return {}
    out: dict[str, int] = {}
    for i, (path, node, prefix, *_) in enumerate(model.entries):
        for v in node.outputs:
            if v.name:
                out.setdefault(prefix + v.name, i)
        out.setdefault(path, i)
    return out


def _stats_row(name: str, node: str, op: str, module: str, shape: Any, s: RunningStats) -> dict[str, Any]:
    dead = len(s.dead_units) if op in RELU_LIKE else None
    sat = len(s.saturated_units) if op in SATURATING else None
    return {
        "tensor": name,
        "node": node,
        "op": op,
        "module": module,
        "shape": _shape_text(shape),
        "mean": _f(s.mean if s.count else math.nan),
        "std": _f(s.std),
        "min": _f(s.min if s.count else math.nan),
        "max": _f(s.max if s.count else math.nan),
        "zero_fraction": _f(s.zero_fraction, 4),
        "nan": s.nan,
        "inf": s.inf,
        "units": s.units or None,
        "dead_units": dead,
        "saturated_units": sat,
    }


def _findings(rows: list[dict[str, Any]]) -> tuple[list[dict[str, str]], dict[str, Any] | None]:
    findings = []
    first_bad = next((r for r in rows if r["nan"] or r["inf"]), None)
    if first_bad is not None:
        findings.append(
            {
                "level": "error",
                "text": f"NaN/Inf first appear in {first_bad['tensor']} (output of {first_bad['op']} "
                f"{first_bad['node']}): {first_bad['nan']} NaN, {first_bad['inf']} Inf",
            }
        )
    for r in rows:
        if r["dead_units"]:
            findings.append(
                {
                    "level": "warning",
                    "text": f"{r['tensor']} ({r['op']}): {r['dead_units']} of {r['units']} units never above zero (dead)",
                }
            )
        if r["saturated_units"]:
            findings.append(
                {
                    "level": "warning",
                    "text": f"{r['tensor']} ({r['op']}): {r['saturated_units']} of {r['units']} units saturated",
                }
            )
    return findings, first_bad


def activations_from_capture(
    model: Model | None, cap: Any, sample: int = 0, heatmaps: int = 12
) -> dict[str, Any]:
    """Statistics of every captured tensor (layout-only ops left out), in graph order, with quantiles, dead and
    saturated units, the first NaN/Inf, and the attention maps of sample ``sample`` (at most ``heatmaps``
    blocks; each ``[heads, query, key]``, reduced to at most 128×128 by averaging).

    ``cap`` is a :class:`onnxscope.Capture`.
    """
    order = _order(model)
    rows: list[dict[str, Any]] = []
    quant: list[dict[str, Any]] = []
    names = sorted(cap, key=lambda n: order.get(n, -1))
    for name in names:
        info = cap.info(name)
        op = info.op or "input"
        if op in LAYOUT_OPS or (
            model is not None and model.has_value(info.tensor) and is_const(model.value(info.tensor))
        ):
            continue  # same values as its input, or computed from the weights alone
        a = np.asarray(cap[name])
        if a.dtype.kind not in "fiu" or a.dtype.kind in "iu" and op == "input" or a.size == 0:
            continue
        if a.dtype.kind in "iu" and op not in ("QuantizeLinear", "DynamicQuantizeLinear"):
            continue
        s = RunningStats.of(a, unit_axis_for(a.shape), info.op)
        rows.append(_stats_row(name, info.node or "", op, info.module or "", a.shape, s))
        quant.append({"tensor": name, "op": op, "q": _quantiles(a), "min": _f(s.min), "max": _f(s.max)})
    findings, first_bad = _findings(rows)
    maps = []
    blocks = find_attention(model) if model is not None else []
    for b in blocks:
        if len(maps) >= heatmaps:
            break
        if not b.probabilities or b.probabilities not in cap:
            continue
        a = np.asarray(cap.attention(b), np.float32)
        a = a.reshape(-1, *a.shape[-3:])
        if sample >= a.shape[0]:
            raise InputError(f"sample {sample} out of range: the capture holds {a.shape[0]} input(s)")
        m = a[sample]
        maps.append(
            {"block": b.name, "heads": int(m.shape[0]), "shape": list(m.shape[1:]), "map": _pool(m, 128)}
        )
    return {
        "source": "capture",
        "rows": rows,
        "distribution": quant,
        "findings": findings,
        "first_nonfinite": first_bad["tensor"] if first_bad else None,
        "attention": maps,
        "attention_blocks": len([b for b in blocks if b.probabilities]),
        "sample": sample,
        "skipped": dict(cap.skipped),
    }


def _pool(m: np.ndarray, limit: int) -> np.ndarray:
    """Average-pool the last two axes so neither exceeds ``limit``."""
    h, q, k = m.shape
    fq, fk = -(-q // limit), -(-k // limit)
    if fq == 1 and fk == 1:
        return m
    pq, pk = -(-q // fq) * fq, -(-k // fk) * fk
    padded = np.full((h, pq, pk), np.nan, np.float32)
    padded[:, :q, :k] = m
    return np.nanmean(padded.reshape(h, pq // fq, fq, pk // fk, fk), axis=(2, 4))


def activations_from_stats(
    model: Model | None, stats: Mapping[str, RunningStats], samples: int | None = None
) -> dict[str, Any]:
    """The activation summary from a dataset store's running statistics (``store.all_stats()``)."""
    order = _order(model)
    rows = []
    dist = []
    for name in sorted(stats, key=lambda n: order.get(n, -1)):
        s = stats[name]
        node = op = module = ""
        shape = None
        if model is not None and model.has_value(name):
            v = model.value(name)
            p = v.producer()
            if p is not None:
                node, op, module = p.name or "", p.op_type, model.module_of(p) or ""
            else:
                op = "input"
            shape = model.shape(v)
        if op in LAYOUT_OPS:
            continue
        rows.append(_stats_row(name, node, op, module, shape, s))
        dist.append(
            {
                "tensor": name,
                "op": op,
                "mean": _f(s.mean),
                "std": _f(s.std),
                "min": _f(s.min),
                "max": _f(s.max),
            }
        )
    findings, first_bad = _findings(rows)
    return {
        "source": "store",
        "rows": rows,
        "distribution": dist,
        "findings": findings,
        "first_nonfinite": first_bad["tensor"] if first_bad else None,
        "attention": [],
        "attention_blocks": 0,
        "samples": samples,
        "skipped": {},
    }


# -- comparison ----------------------------------------------------------------------------------------------
def check_comparison(data: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a comparison given as plain data and return it normalized.

    ``data`` holds ``rows`` — one mapping per aligned pair of tensors, in graph order of model A, with the keys
    of :data:`COMPARISON_FIELDS` (``a_tensor``, ``b_tensor``, ``node``, ``op``, ``alignment`` — how the pair
    was matched, e.g. ``"name"`` —, ``max_abs``, ``mean_abs``, ``max_rel``, ``cosine``, ``sqnr_db``,
    ``frac_outside_tol``, ``introduced_error``; a missing metric is ``None``) — and optionally
    ``first_divergence`` (the ``a_tensor`` of the first pair out of tolerance, or a row-like mapping), ``a`` and
    ``b`` (labels of the two models) and ``tolerance`` (``{"rtol", "atol"}``).

    Raises:
        InputError: ``rows`` is missing or a row lacks a tensor name.

    Example:
        >>> c = check_comparison({"rows": [{"a_tensor": "h", "sqnr_db": 40.0}], "first_divergence": "h"})
        >>> c["rows"][0]["b_tensor"], c["first_divergence"]
        ('h', 'h')
    """
    if "rows" not in data:
        raise InputError("a comparison needs 'rows': one mapping per aligned pair of tensors")
    rows = []
    for i, r in enumerate(data["rows"]):
        if not r.get("a_tensor"):
            raise InputError(f"comparison row {i} has no 'a_tensor'")
        row = {k: r.get(k) for k in COMPARISON_FIELDS}
        row["b_tensor"] = row["b_tensor"] or row["a_tensor"]
        for k in COMPARISON_FIELDS[5:]:
            row[k] = _f(row[k]) if row[k] is not None else None
        for k in ("node", "op", "alignment"):
            row[k] = row[k] or ""
        rows.append(row)
    first = data.get("first_divergence")
    if isinstance(first, Mapping):
        first = first.get("a_tensor") or first.get("tensor")
    return {
        "a": str(data.get("a", "A")),
        "b": str(data.get("b", "B")),
        "tolerance": dict(data.get("tolerance") or {}),
        "rows": rows,
        "first_divergence": first,
    }
