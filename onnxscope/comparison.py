"""Compare two runs layer by layer: :func:`compare` and the int8-kernel fidelity check :func:`check_kernels`.

Both sides run on the same inputs (one batch, a list of batches, or a folder as :func:`onnxscope.capture_dataset`
reads). Their tensors are paired by :func:`onnxscope.align.align` (names, quantizer renames, structure — fused
and folded nodes, layout changes), and each pair's error metrics are accumulated batch by batch
(:class:`~onnxscope.discrepancy.Discrepancy`: max/mean absolute error, relative error, cosine similarity, SQNR,
the fraction of elements outside ``atol + rtol·|a|``, quantization steps). Side ``a`` is the reference of every
metric; rows come in ``a``'s graph order, and the **first divergence** is the first row with an element outside
the tolerance.

**Introduced vs inherited error**: for each row, the smallest sub-graph of side ``b`` between its tensor and
tensors aligned to other tensors of ``a`` is re-run — the way ``b`` runs — on ``a``'s values of its inputs (in
``b``'s form: quantized with ``b``'s parameters, blocked…). Its distance to ``a``'s value is the error that
sub-graph introduces by itself (``introduced_error``, a relative L2 error); the rest of the total error came from
upstream. Rows are ranked by it.

Example:
    >>> import numpy as np, onnxscope
    >>> from onnxscope.testing import mlp_model
    >>> m = onnxscope.Model(mlp_model())
    >>> c = compare(m, m, {"x": np.ones((2, 3), np.float32)})  # unfused against onnxruntime's ALL level
    >>> c.a, c.b, [r.a_tensor for r in c.rows], c.first_divergence
    ('the model (disable)', 'the model (all)', ['h', 'a', 'y'], None)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnxscope._ir import ir
from onnxscope.align import Alignment, Pair, align
from onnxscope.discrepancy import REPORT_FIELDS, Discrepancy
from onnxscope.errors import InputError, OnnxscopeError
from onnxscope.model import Model
from onnxscope.sides import Side

__all__ = ["Comparison", "Row", "check_kernels", "compare"]

_MAX_REGION = 256  # nodes in one re-run sub-graph
_RECOMPUTE = {  # compare's ``recompute`` choices: what reading a tensor may cost (see Side.cost)
    "all": ("free", "cheap", "expensive"),
    "cheap": ("free", "cheap"),
    "none": ("free",),
}


@dataclass(frozen=True)
class Row:
    """One aligned pair of tensors and its metrics (see :mod:`onnxscope.discrepancy` for each one).

    ``node``/``op`` produce ``a_tensor`` in model ``a``; ``alignment`` says how the pair was found;
    ``transform`` how ``b``'s value was brought to ``a``'s form (or the reverse); ``note`` what kept a metric
    from being computed.
    """

    a_tensor: str
    b_tensor: str
    node: str | None
    op: str | None
    alignment: str
    b_node: str | None = None
    b_op: str | None = None
    transform: str = ""
    shape: tuple[int, ...] | None = None
    max_abs: float | None = None
    mean_abs: float | None = None
    max_rel: float | None = None
    cosine: float | None = None
    sqnr_db: float | None = None
    rel_l2: float | None = None
    frac_outside_tol: float | None = None
    frac_differ: float | None = None
    max_steps: float | None = None
    mean_steps: float | None = None
    introduced_error: float | None = None
    introduced_max_abs: float | None = None
    introduced_max_steps: float | None = None
    introduced_frac_differ: float | None = None
    samples: int = 0
    worst_samples: tuple[tuple[int, float], ...] = ()
    layer: str | None = None
    note: str = ""

    @property
    def diverges(self) -> bool:
        """Whether some element is outside the tolerance."""
        return bool(self.frac_outside_tol)

    def report(self) -> dict[str, Any]:
        """The fields of the report's comparison table (exactly those)."""
        return {k: getattr(self, k) for k in REPORT_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        """Every field (JSON-ready)."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["shape"] = list(self.shape) if self.shape is not None else None
        d["worst_samples"] = [list(w) for w in self.worst_samples]
        return d


@dataclass
class _Plan:
    pair: Pair
    stats: Discrepancy
    shape: tuple[int, ...] | None = None
    note: str = ""
    layer: str | None = None


@dataclass
class Comparison:
    """Two runs compared layer by layer: the rows (one per aligned tensor of ``a``, in ``a``'s graph order),
    the first divergence, the ranking by introduced error, and how the tensors were aligned.

    ``merge`` combines comparisons of the same two sides on other inputs (shards of a dataset); ``arrays``
    gives the aligned arrays of the last batch (the comparison keeps that batch's two runs until it is merged);
    ``to_dict`` the plain data the HTML report takes.
    """

    a: str
    b: str
    rtol: float
    atol: float
    alignment: Alignment
    plans: list[_Plan]
    batches: int = 0
    samples: int = 0
    kind: str = "compare"
    notes: list[str] = field(default_factory=list)
    _last: tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]] | None = None

    @property
    def rows(self) -> list[Row]:
        """One row per aligned tensor of ``a``, in ``a``'s graph order."""
        return [_row(p) for p in self.plans]

    @property
    def first_divergence(self) -> Row | None:
        """The first row (in ``a``'s graph order) with an element outside the tolerance."""
        return next((r for r in self.rows if r.diverges), None)

    @property
    def ranked(self) -> list[Row]:
        """Rows by the error their own sub-graph introduces, largest first (rows not re-run last)."""

        def key(r: Row) -> tuple[bool, float]:
            e = r.introduced_error
            missing = e is None or e != e  # not re-run, or NaN
            return missing, 0.0 if missing else -float(e)  # type: ignore[arg-type]

        return sorted(self.rows, key=key)

    def row(self, a_tensor: str) -> Row:
        """The row of tensor ``a_tensor`` of model ``a``.

        Raises:
            NotFoundError: no row for that tensor (close names are suggested).
        """
        for p in self.plans:
            if p.pair.a == a_tensor:
                return _row(p)
        from onnxscope.errors import NotFoundError, closest

        raise NotFoundError(
            f"no compared tensor {a_tensor!r}; {closest(a_tensor, [p.pair.a for p in self.plans])}"
        )

    def arrays(self, a_tensor: str) -> tuple[np.ndarray, np.ndarray]:
        """The two arrays compared for ``a_tensor`` in the last batch, both in ``a``'s form.

        Raises:
            NotFoundError: no row for that tensor.
            UnsupportedError: a merged comparison (it holds no run), or arrays that do not fit.
        """
        from onnxscope.errors import UnsupportedError

        plan = next((p for p in self.plans if p.pair.a == a_tensor), None)
        if plan is None:
            self.row(a_tensor)  # raises NotFoundError with close names
        if self._last is None:
            raise UnsupportedError("this comparison holds no run: it was merged from others")
        assert plan is not None
        got = _aligned(plan.pair, self._last[0], self._last[1])
        if got is None:
            raise UnsupportedError(f"{a_tensor!r}: the two arrays do not fit ({plan.note})")
        return got[0], got[1]

    def merge(self, other: Comparison) -> Comparison:
        """This comparison and ``other`` (the same sides on other inputs) as one.

        Raises:
            InputError: ``other`` compares other tensors or another tolerance.
        """
        mine = [(p.pair.a, p.pair.b) for p in self.plans]
        theirs = [(p.pair.a, p.pair.b) for p in other.plans]
        if mine != theirs or (self.rtol, self.atol) != (other.rtol, other.atol):
            raise InputError("cannot merge comparisons of other tensors or another tolerance")
        plans = [
            _Plan(p.pair, p.stats.merge(q.stats), p.shape or q.shape, p.note or q.note, p.layer)
            for p, q in zip(self.plans, other.plans, strict=True)
        ]
        return Comparison(
            self.a,
            self.b,
            self.rtol,
            self.atol,
            self.alignment,
            plans,
            self.batches + other.batches,
            self.samples + other.samples,
            self.kind,
            list(dict.fromkeys(self.notes + other.notes)),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data: ``a``, ``b``, ``tolerance``, ``rows`` (the report's fields, ``a``'s graph order) and
        ``first_divergence`` (an ``a_tensor``) — what the HTML report's comparison section takes — plus
        ``details`` (every field of every row), ``ranked`` (``a_tensor`` by introduced error), ``alignment``
        (coverage, how each pair was found, what was not aligned), ``samples``, ``batches``, ``kind``."""
        rows = self.rows
        first = next((r for r in rows if r.diverges), None)
        return {
            "a": self.a,
            "b": self.b,
            "tolerance": {"rtol": self.rtol, "atol": self.atol},
            "rows": [r.report() for r in rows],
            "first_divergence": first.a_tensor if first else None,
            "kind": self.kind,
            "details": [r.to_dict() for r in rows],
            "ranked": [r.a_tensor for r in self.ranked if r.introduced_error is not None],
            "alignment": self.alignment.to_dict(),
            "samples": self.samples,
            "batches": self.batches,
            "notes": list(self.notes),
        }

    def __repr__(self) -> str:
        first = self.first_divergence
        return (
            f"<onnxscope.Comparison {self.a} vs {self.b}: {len(self.plans)} tensors, {self.samples} samples, "
            f"first divergence {first.a_tensor if first else None}>"
        )


def _row(p: _Plan) -> Row:
    s = p.stats
    counted = s.count > 0
    m = s.metrics() if counted else {}
    pair = p.pair
    return Row(
        a_tensor=pair.a,
        b_tensor=pair.b,
        node=pair.node_a,
        op=pair.op_a,
        alignment=pair.how,
        b_node=pair.node_b,
        b_op=pair.op_b,
        transform=pair.transform,
        shape=p.shape,
        max_abs=m.get("max_abs"),
        mean_abs=m.get("mean_abs"),
        max_rel=m.get("max_rel"),
        cosine=m.get("cosine"),
        sqnr_db=m.get("sqnr_db"),
        rel_l2=m.get("rel_l2"),
        frac_outside_tol=m.get("frac_outside_tol"),
        frac_differ=m.get("frac_differ"),
        max_steps=m.get("max_steps"),
        mean_steps=m.get("mean_steps"),
        introduced_error=s.introduced_error,
        introduced_max_abs=s.introduced_max_abs,
        introduced_max_steps=s.introduced_max_steps,
        introduced_frac_differ=s.introduced_frac_differ,
        samples=s.samples,
        worst_samples=tuple((int(i), float(e)) for i, e in s.worst_samples()),
        layer=p.layer,
        note=p.note,
    )


# ---- bringing arrays together -------------------------------------------------------------------------------


def _getter(run: Mapping[str, np.ndarray]) -> Callable[[str], Any]:
    return lambda name: np.asarray(run[name])


def _fit(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, str] | None:
    """``b`` shaped like ``a``: as it is, channels-last ↔ channels-first (Keras vs ONNX), or reshaped."""
    if a.shape == b.shape:
        return b, ""
    if a.size != b.size:
        return None
    if b.ndim == 4:
        for perm, what in (((0, 2, 3, 1), "NCHW as NHWC"), ((0, 3, 1, 2), "NHWC as NCHW")):
            if tuple(b.shape[i] for i in perm) == a.shape:
                return np.transpose(b, perm), f"compared {what}"
    return b.reshape(a.shape), f"reshaped {list(b.shape)} to {list(a.shape)}"


def _aligned(
    pair: Pair, run_a: Mapping[str, np.ndarray], run_b: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, str] | None:
    """Both arrays of ``pair`` in ``a``'s form (the derived side's steps undone), or ``None`` if they do not fit."""
    a, b = np.asarray(run_a[pair.a]), np.asarray(run_b[pair.b])
    if pair.steps:
        if pair.derived == "b":
            b = pair.to_reference(b, a.shape, _getter(run_b))
        else:
            a = pair.to_reference(a, b.shape, _getter(run_a))
    fitted = _fit(a, b)
    if fitted is None:
        return None
    return a, fitted[0], fitted[1]


def _scale(pair: Pair, a: np.ndarray, b_raw: np.ndarray, run: Callable[[str], Any]) -> np.ndarray | None:
    """The quantization step of each element where one side is quantized (``None`` otherwise)."""
    quant = [s for s in pair.steps if s.kind == "quantize"]
    if not quant and pair.grid is not None and all(s.kind == "cast" for s in pair.steps):
        quant = [pair.grid]
    if len(quant) == 1 and all(s.kind in ("quantize", "cast") for s in pair.steps):
        step = quant[0]
        scale = np.asarray(run(step.scale) if step.dynamic else step.scale, np.float64)
        if scale.size > 1 and step.axis is not None:
            shape = [1] * a.ndim
            shape[step.axis % a.ndim] = scale.size
            return scale.reshape(shape) if a.ndim else None
        return scale.reshape(())
    if not pair.steps and b_raw.dtype.kind in "iu" and b_raw.dtype.itemsize <= 2:
        return np.ones(())  # both sides hold the same quantized integers: steps are differences
    return None


# ---- the batches --------------------------------------------------------------------------------------------


def _batches(
    inputs: Any, model: Model, random: bool, seed: int, dims: Mapping[str, int] | None
) -> Iterator[dict[str, np.ndarray] | None]:
    if inputs is None:
        if not random:
            raise InputError("compare needs inputs: pass them, a folder of batches, or random=True")
        yield None
        return
    if isinstance(inputs, Mapping):
        yield dict(inputs)
        return
    from onnxscope.dataset import iter_batches

    yield from iter_batches(inputs, model)


def _feeds_for(side: Side, feeds: Mapping[str, np.ndarray], names_a: list[str]) -> dict[str, np.ndarray]:
    """The feeds of side ``a`` for side ``b``: by name, else by position; cast to the element types ``b``
    declares (an fp16 model without float32 inputs)."""
    mine = side.inputs()
    out: dict[str, np.ndarray] = {}
    for i, name in enumerate(mine):
        if name in feeds:
            value = feeds[name]
        elif len(mine) == len(names_a) and names_a[i] in feeds:
            value = feeds[names_a[i]]
        else:
            continue
        v = side.model.value(name)
        dt = side.model.dtype(v)
        if dt is not None and isinstance(value, np.ndarray):
            try:
                want = dt.numpy()
            except (TypeError, ValueError):
                want = value.dtype
            if value.dtype != want:
                value = value.astype(want)
        out[name] = value
    return out


# ---- re-running b's sub-graphs on a's values ------------------------------------------------------------------


@dataclass
class _Feed:
    value: ir.Value  # the b tensor it stands for
    name: str  # its capture name
    pair: Pair | None  # where a's value comes from (None: b's own value)


@dataclass
class _Region:
    plan: _Plan
    target: ir.Value
    nodes: list[ir.Node]
    feeds: list[_Feed]
    model: ir.Model | None = None  # its own re-run model, once the combined one failed
    failed: bool = False


class _Local:
    """The re-run of ``b``'s sub-graphs: for every row, the ``b`` nodes between its tensor and the tensors
    ``stop`` accepts (aligned to other tensors of ``a``), fed with ``a``'s values — all in one model, run once
    per batch the way ``b`` runs (one model per row if onnxruntime refuses the combined one)."""

    def __init__(
        self, side: Side, alignment: Alignment, plans: list[_Plan], stop: Callable[[ir.Value, Pair], bool]
    ) -> None:
        self.side = side
        self.graph = side.model
        self.regions: list[_Region] = []
        self.notes: list[str] = []
        self.model: ir.Model | None = None
        self.split = False
        g = self.graph.ir.graph
        self._order = {id(n): i for i, n in enumerate(g)}
        for plan in plans:
            pair = plan.pair
            if not self.graph.has_value(pair.b):
                continue
            target = self.graph.value(pair.b)
            if target.graph is not g or target.producer() is None or target.is_graph_input():
                continue
            found = self._region(target, pair, alignment, stop)
            if found is None:
                plan.note = plan.note or "not re-run: its sub-graph is too large or holds control flow"
                continue
            nodes, feeds = found
            if any(f.pair is not None for f in feeds):  # else nothing of a's goes in: b's own computation
                self.regions.append(_Region(plan, target, nodes, feeds))

    def _region(
        self, target: ir.Value, pair: Pair, alignment: Alignment, stop: Callable[[ir.Value, Pair], bool]
    ) -> tuple[list[ir.Node], list[_Feed]] | None:
        from onnxscope.graph import subgraphs

        g = self.graph.ir.graph
        nodes: dict[int, ir.Node] = {}
        feeds: dict[int, _Feed] = {}
        stack = [target.producer()]
        while stack:
            node = stack.pop()
            if node is None or id(node) in nodes:
                continue
            if subgraphs(node) or len(nodes) >= _MAX_REGION:
                return None
            nodes[id(node)] = node
            for v in node.inputs:
                if v is None or id(v) in feeds or _is_weight(v):
                    continue
                name = self.graph.tensor_name(v)
                q = alignment.by_b.get(name)
                if v.is_graph_input() or (q is not None and q.a != pair.a and stop(v, q)):
                    # fed in int8 through b's own DequantizeLinear, so that b's int8 kernel re-runs (unless the
                    # region computes that int8 tensor itself on another path)
                    dq = self._quantized_feed(v, q, alignment)
                    if dq is not None and id(dq[1].producer()) not in nodes:
                        node_dq, x, qx = dq
                        nodes[id(node_dq)] = node_dq
                        feeds[id(x)] = _Feed(x, self.graph.tensor_name(x), qx)
                        continue
                    feeds[id(v)] = _Feed(
                        v, name, q if q is not None and q.a != pair.a or v.is_graph_input() else None
                    )
                elif v.producer() is not None and v.graph is g:
                    stack.append(v.producer())
                else:  # a value of an enclosing graph
                    return None
        order = sorted(nodes.values(), key=lambda n: self._order.get(id(n), 0))
        return order, list(feeds.values())

    def own_feeds(self) -> list[str]:
        """The tensors of ``b``'s own run that the re-run reads."""
        return [f.name for r in self.regions for f in r.feeds if f.pair is None]

    def _quantized_feed(
        self, v: ir.Value, q: Pair, alignment: Alignment
    ) -> tuple[ir.Node, ir.Value, Pair] | None:
        """When ``v`` is the DequantizeLinear of a quantized tensor aligned to the same tensor of ``a``: that
        node, the quantized tensor and its pair — the region then starts from ``a``'s value quantized as ``b``
        quantizes it, so that onnxruntime fuses the DequantizeLinear into the consumer's int8 kernel as in
        ``b``'s own run (fed the dequantized float, it would run the consumer in float instead)."""
        node = v.producer()
        if (
            node is None
            or node.op_type != "DequantizeLinear"
            or node.domain not in ("", "com.microsoft")
            or v.graph is not self.graph.ir.graph
            or not node.inputs
            or node.inputs[0] is None
            or _is_weight(node.inputs[0])
            or not all(i is None or _is_weight(i) for i in node.inputs[1:])
        ):
            return None
        x = node.inputs[0]
        qx = alignment.by_b.get(self.graph.tensor_name(x))
        if qx is None or qx.a != q.a or not _invertible(qx) or x.graph is not v.graph:
            return None
        return node, x, qx

    def _build(self, regions: list[_Region], run_b: Mapping[str, np.ndarray]) -> ir.Model:
        """One model computing the targets of ``regions`` from graph inputs named ``r<k>::<tensor>``."""
        inputs: list[ir.Value] = []
        outputs: list[ir.Value] = []
        nodes_out: list[ir.Node] = []
        inits: dict[int, ir.Value] = {}
        for k, region in enumerate(regions):
            prefix = f"r{k}::"
            new: dict[int, ir.Value] = {}
            for f in region.feeds:
                v = f.value
                dt = self.graph.dtype(v)
                if dt is None:
                    dt = ir.DataType.from_numpy(np.asarray(run_b[f.name]).dtype)
                nv = ir.Value(name=prefix + f.name, type=ir.TensorType(dt))
                new[id(v)] = nv
                inputs.append(nv)
            for j, node in enumerate(region.nodes):
                ins: list[ir.Value | None] = []
                for v in node.inputs:
                    if v is None:
                        ins.append(None)
                    elif id(v) in new:
                        ins.append(new[id(v)])
                    else:  # a weight
                        iv = inits.get(id(v))
                        if iv is None:
                            iv = ir.Value(name=v.name, type=v.type, shape=v.shape, const_value=v.const_value)
                            inits[id(v)] = iv
                        ins.append(iv)
                attrs = [ir.Attr(a.name, a.type, a.value) for a in node.attributes.values()]
                copy = ir.Node(
                    node.domain,
                    node.op_type,
                    ins,
                    attrs,
                    num_outputs=len(node.outputs),
                    version=node.version,
                    name=f"{prefix}{j}:{node.name or node.op_type}",
                )
                for o, co in zip(node.outputs, copy.outputs, strict=True):
                    co.name = f"{prefix}{o.name or j}"
                    co.type, co.shape = o.type, o.shape
                    new[id(o)] = co
                nodes_out.append(copy)
            outputs.append(new[id(region.target)])
        graph = ir.Graph(
            inputs,
            outputs,
            nodes=nodes_out,
            initializers=list(inits.values()),
            opset_imports=dict(self.graph.ir.opset_imports),
            name="onnxscope_rerun",
        )
        return ir.Model(
            graph,
            ir_version=max(int(self.graph.ir.ir_version), 8),
            producer_name="onnxscope.compare",
            functions=list(self.graph.ir.functions.values()),
        )

    def run(self, run_a: Mapping[str, np.ndarray], run_b: Mapping[str, np.ndarray]) -> dict[int, np.ndarray]:
        """id(plan) → the re-run value of its ``b`` tensor (in ``b``'s form)."""
        regions = [r for r in self.regions if not r.failed]
        if not regions:
            return {}
        values: dict[int, list[np.ndarray]] = {}
        usable: list[_Region] = []
        for region in regions:
            try:
                values[id(region)] = [self._value(f, run_a, run_b) for f in region.feeds]
                usable.append(region)
            except (OnnxscopeError, KeyError, ValueError, TypeError) as e:
                region.plan.note = region.plan.note or f"not re-run: {_first(e)}"
        out: dict[int, np.ndarray] = {}
        if not self.split:
            try:
                if self.model is None:
                    self.model = self._build(self.regions, run_b)
                index = {id(r): k for k, r in enumerate(self.regions)}
                feeds = {
                    f"r{index[id(r)]}::{f.name}": v
                    for r in usable
                    for f, v in zip(r.feeds, values[id(r)], strict=True)
                }
                got = self.side.rerun(self.model, feeds)
                for r in usable:
                    name = self.model.graph.outputs[index[id(r)]].name or ""
                    out[id(r.plan)] = np.asarray(got[name])
                return out
            except Exception as e:  # onnxruntime refuses one region: re-run them one by one from now on
                self.split = True
                self.notes.append(f"sub-graphs re-run one by one ({_first(e)})")
        for r in usable:
            try:
                if r.model is None:
                    r.model = self._build([r], run_b)
                feeds = {f"r0::{f.name}": v for f, v in zip(r.feeds, values[id(r)], strict=True)}
                got = self.side.rerun(r.model, feeds)
                out[id(r.plan)] = np.asarray(got[r.model.graph.outputs[0].name or ""])
            except Exception as e:
                r.failed = True
                r.plan.note = r.plan.note or f"not re-run: {_first(e)}"
        return out

    def _value(
        self, f: _Feed, run_a: Mapping[str, np.ndarray], run_b: Mapping[str, np.ndarray]
    ) -> np.ndarray:
        if f.pair is None:
            return np.asarray(run_b[f.name])
        p = f.pair
        a = np.asarray(run_a[p.a])
        shape = None
        if any(s.kind in ("reshape", "nchwc") for s in p.steps):
            shape = tuple(np.shape(run_b[f.name]))
        if p.derived == "b":
            out = p.from_reference(a, shape, _getter(run_b))
        else:
            out = p.to_reference(a, shape, _getter(run_a))
        dt = self.graph.dtype(f.value)
        want = np.dtype(dt.numpy()) if dt is not None else np.asarray(run_b[f.name]).dtype
        if out.dtype != want:
            out = out.astype(want)
        if not p.steps:
            b_shape = np.shape(run_b[f.name]) if f.name in run_b else out.shape
            if tuple(b_shape) != out.shape:
                fitted = _fit(np.empty(b_shape, np.int8), out)
                if fitted is None:
                    raise ValueError(f"{p.a!r} does not fit {f.name!r}")
                out = fitted[0]
        return np.ascontiguousarray(out)


def _is_weight(v: ir.Value) -> bool:
    return v.is_initializer() or (v.const_value is not None and v.producer() is None)


def _first(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


# ---- the public functions ------------------------------------------------------------------------------------


def compare(
    a: Any,
    b: Any,
    inputs: Any = None,
    *,
    random: bool = False,
    seed: int = 0,
    dims: Mapping[str, int] | None = None,
    rtol: float = 1e-3,
    atol: float = 1e-4,
    introduced: bool = True,
    worst: int = 3,
    progress: bool = False,
    reference: str | None = None,
    only: Callable[[Pair], bool] | None = None,
    first_sample: int = 0,
    recompute: str = "all",
) -> Comparison:
    """Run ``a`` and ``b`` on the same inputs and compare them tensor by tensor.

    Parameters:
        a, b: the two sides: paths or :class:`~onnxscope.Model` s — run by onnxruntime, ``a`` with every tensor
            computed by its own node (optimization ``"disable"``: the reference semantics, and the cheapest way to
            have every tensor), ``b`` at the deployed level (``"all"``) —, :class:`~onnxscope.Side` s (any level,
            provider, thread count, or onnx's reference evaluator), :class:`~onnxscope.Capture` s already made, or
            ``converters.side(...)`` for a torch or Keras model. ``a`` is the reference of every metric.
        inputs: one batch (arrays by input name), an iterable of batches, or a folder of ``.npz``/``.npy`` files
            or ``test_data_set_*`` folders (one batch each); ``b`` gets the same arrays (by input name, else by
            position; cast to the element types it declares). Captures compare on the inputs they were made
            with.
        random, seed, dims: random inputs for ``a`` (see :func:`onnxscope.capture`) when ``inputs`` is ``None``.
        rtol, atol: the tolerance of ``frac_outside_tol`` and of the first divergence.
        introduced: re-run ``b``'s sub-graphs on ``a``'s values to measure the error each introduces.
        worst: how many worst samples to keep per tensor.
        progress: show a progress bar over the batches (stderr).
        reference: which model the other is derived from, for alignment (see :func:`onnxscope.align.align`).
        only: keep the pairs this predicate accepts.
        first_sample: the index of the first sample (for shards of a dataset merged later).
        recompute: which tensors that a side's run never produced (onnxruntime's fusions removed them; they are
            recomputed from its captured tensors when read) to compare: ``"all"`` (default), ``"cheap"`` only those
            whose recomputation runs no weighted op (dequantized values, activations: not the float output of a
            Conv a QDQ model runs as one int8 kernel, which takes a second float pass), ``"none"`` none.

    Returns:
        A :class:`Comparison`.

    Raises:
        InputError: no inputs, or inputs that do not fit ``a``.
        CaptureError: a side cannot run.

    Example:
        >>> import numpy as np, onnxscope
        >>> from onnxscope.testing import mlp_model
        >>> c = compare(onnxscope.Model(mlp_model()), onnxscope.Model(mlp_model(seed=1)), random=True)
        >>> c.first_divergence.a_tensor  # fc1's weights differ: its output is the first to diverge
        'h'
        >>> c.ranked[-1].a_tensor, c.ranked[-1].introduced_error  # Relu passes the error on, adds none
        ('a', 0.0)
    """
    if recompute not in _RECOMPUTE:
        raise InputError(f"recompute {recompute!r}: choose one of {', '.join(_RECOMPUTE)}")
    side_a, side_b = Side.of(a, optimization="disable"), Side.of(b)
    if (
        inputs is None and not random and hasattr(side_a, "capture")
    ):  # captures: the inputs they were made with
        inputs = dict(side_a.capture.inputs)

    def setup(
        run_a: Mapping[str, np.ndarray], run_b: Mapping[str, np.ndarray]
    ) -> tuple[Comparison, _Local | None]:
        return _plan(side_a, side_b, run_a, run_b, rtol, atol, worst, introduced, reference, only, recompute)

    return _loop(side_a, side_b, inputs, random, seed, dims, progress, setup, first_sample)


def _loop(
    side_a: Side,
    side_b: Side,
    inputs: Any,
    random: bool,
    seed: int,
    dims: Mapping[str, int] | None,
    progress: bool,
    setup: Callable[[Mapping[str, np.ndarray], Mapping[str, np.ndarray]], tuple[Comparison, _Local | None]],
    first_sample: int = 0,
) -> Comparison:
    """Run both sides batch by batch and accumulate; ``setup`` plans the comparison on the first batch.

    Pipelined over two threads: while one batch's re-runs and metrics are computed on a worker thread, the sides
    run the next batch (onnxruntime and numpy release the GIL) — never more than two batches in flight, and the
    metrics are accumulated batch after batch, in order, by that one worker. Each batch's input arrays are copied
    first: the caller may reuse its buffers for the next batch while the worker still reads this one. (A side's
    ``run`` and its ``rerun`` may therefore run at the same time, on two threads.)"""
    comparison: Comparison | None = None
    local: _Local | None = None
    names_a = side_a.inputs()
    bar = _progress(progress)
    sample = first_sample
    pending: Future[None] | None = None
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxscope-compare")
    try:
        for feeds in _batches(inputs, side_a.model, random, seed, dims):
            if feeds is None or random:
                from onnxscope.inputs import prepare_inputs

                feeds = prepare_inputs(side_a.model, feeds, random=random, seed=seed, dims=dims)
            else:  # the batch's own arrays: the caller may refill its buffers while the worker reads these
                feeds = {k: np.array(v) if isinstance(v, np.ndarray) else v for k, v in feeds.items()}
            run_a = side_a.run(feeds)
            feeds_a = {k: np.asarray(run_a[k]) for k in names_a if k in run_a} or dict(feeds)
            run_b = side_b.run(_feeds_for(side_b, feeds_a, names_a))
            batch = _batch_size(feeds_a)
            if comparison is None:
                comparison, local = setup(run_a, run_b)
            # what takes a Conv to recompute, here; the rest (cheap) on the worker, which has time to spare
            _materialize(comparison, local, run_a, run_b, heavy=(side_a, side_b))
            if pending is not None:
                pending.result()  # the previous batch is done: at most two in flight
                bar.update(1)
            pending = pool.submit(_accumulate, comparison, local, run_a, run_b, sample, batch)
            del run_a, run_b  # the worker holds them until their batch is accumulated
            sample += batch or 1
        if pending is not None:
            pending.result()
            bar.update(1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    if comparison is None:
        raise InputError("the comparison got no batch of inputs")
    if local is not None:
        comparison.notes.extend(n for n in local.notes if n not in comparison.notes)
    for side in (side_a, side_b):
        comparison.notes.extend(n for n in getattr(side, "notes", []) if n not in comparison.notes)
    return comparison


def _batch_size(feeds: Mapping[str, np.ndarray]) -> int | None:
    for v in feeds.values():
        if isinstance(v, np.ndarray) and v.ndim:
            return int(v.shape[0])
    return None


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with the runtime extra
        return _NoBar()
    return tqdm(unit="batch", desc="compare", leave=False)


def _plan(
    side_a: Side,
    side_b: Side,
    run_a: Mapping[str, np.ndarray],
    run_b: Mapping[str, np.ndarray],
    rtol: float,
    atol: float,
    worst: int,
    introduced: bool,
    reference: str | None,
    only: Callable[[Pair], bool] | None,
    recompute: str = "all",
) -> tuple[Comparison, _Local | None]:
    same = side_a.model is side_b.model
    if any(n.domain == "com.microsoft.nchwc" for s in (side_a, side_b) for n in s.model.ir.graph):
        from onnxscope.sides import probe_nchwc_block

        probe_nchwc_block()
    alignment = align(
        side_a.model,
        side_b.model,
        shapes_a=side_a.shapes(run_a),
        shapes_b=side_b.shapes(run_b),
        reference=reference or ("a" if same else None),
    )
    have_a, have_b = side_a.tensors(), side_b.tensors()
    allowed = _RECOMPUTE[recompute]
    chosen: dict[str, Pair] = {}  # per tensor of a: its downstream-most counterpart that is affordable
    for pair in alignment.pairs:
        if pair.how == "input":
            continue
        if have_a is not None and pair.a not in have_a:
            continue
        if have_b is not None and pair.b not in have_b:
            continue
        if pair.a not in run_a or pair.b not in run_b:
            continue
        if only is not None and not only(pair):
            continue
        if side_a.cost(run_a, pair.a) not in allowed or side_b.cost(run_b, pair.b) not in allowed:
            continue
        chosen[pair.a] = pair
    plans = [_Plan(p, Discrepancy(rtol=rtol, atol=atol, keep=worst)) for p in chosen.values()]
    comparison = Comparison(side_a.label, side_b.label, rtol, atol, alignment, plans)
    local = None
    if introduced and getattr(side_b, "rerunnable", True):
        rows = {p.pair.b for p in plans} | set(side_b.inputs())
        local = _Local(side_b, alignment, plans, lambda v, q: _invertible(q) and q.b in rows)
    return comparison, local


def _invertible(pair: Pair) -> bool:
    """Whether ``a``'s value can be put in ``b``'s form (static quantization, layout, casts)."""
    return all(not s.dynamic for s in pair.steps)


def _materialize(
    comparison: Comparison,
    local: _Local | None,
    run_a: Mapping[str, np.ndarray],
    run_b: Mapping[str, np.ndarray],
    heavy: tuple[Side, Side] | None = None,
) -> None:
    """Recompute now, in one run per side, the tensors fusions removed that the comparison reads (with ``heavy``,
    the sides: only those whose recomputation runs a Conv, MatMul…)."""
    for k, (run, names) in enumerate(
        (
            (run_a, [p.pair.a for p in comparison.plans]),
            (run_b, [p.pair.b for p in comparison.plans] + (local.own_feeds() if local is not None else [])),
        )
    ):
        if heavy is not None:
            names = [n for n in names if heavy[k].cost(run, n) == "expensive"]
        if names and hasattr(run, "materialize"):
            try:
                run.materialize(names)
            except OnnxscopeError:  # read one by one later, each failure noted on its row
                pass


def _accumulate(
    comparison: Comparison,
    local: _Local | None,
    run_a: Mapping[str, np.ndarray],
    run_b: Mapping[str, np.ndarray],
    first: int,
    batch: int | None,
) -> None:
    comparison._last = None  # the batch before: let it go (the sides are running the next one meanwhile)
    _materialize(comparison, local, run_a, run_b)
    recomputed = local.run(run_a, run_b) if local is not None else {}
    for plan in comparison.plans:
        pair = plan.pair
        try:
            got = _aligned(pair, run_a, run_b)
        except (OnnxscopeError, KeyError, ValueError) as e:
            plan.note = plan.note or f"not compared: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
            continue
        if got is None:
            shape_a, shape_b = np.shape(run_a[pair.a]), np.shape(run_b[pair.b])
            plan.note = plan.note or f"shapes do not fit: {list(shape_a)} vs {list(shape_b)}"
            continue
        a, b, how = got
        if a.dtype.kind not in "biuf" or b.dtype.kind not in "biuf":
            plan.note = plan.note or f"not numeric ({a.dtype})"
            continue
        if how and not plan.note:
            plan.note = how
        plan.shape = tuple(a.shape)
        raw = np.asarray(run_b[pair.b] if pair.derived == "b" else run_a[pair.a])
        scale = _scale(pair, a, raw, _getter(run_b if pair.derived == "b" else run_a))
        plan.stats.update(a, b, scale=scale, first_sample=first, batch=batch)
        value = recomputed.get(id(plan))
        if value is not None:
            try:
                if pair.derived == "b":
                    loc = pair.to_reference(value, a.shape, _getter(run_b)) if pair.steps else value
                    ref = a
                else:
                    loc = value
                    ref = (
                        pair.to_reference(np.asarray(run_a[pair.a]), value.shape, _getter(run_a))
                        if pair.steps
                        else a
                    )
                fitted = _fit(ref, np.asarray(loc))
                if fitted is not None:
                    plan.stats.introduce(ref, fitted[0], scale=scale)
            except (ValueError, OnnxscopeError) as e:
                plan.note = plan.note or f"not re-run: {e}"
    comparison.batches += 1
    comparison.samples += batch or 1
    comparison._last = (run_a, run_b)


def check_kernels(
    model: Any,
    inputs: Any = None,
    *,
    random: bool = False,
    seed: int = 0,
    dims: Mapping[str, int] | None = None,
    reference: str = "unfused",
    threads: int | None = None,
    progress: bool = False,
) -> Comparison:
    """Which layers of a quantized (QDQ) model this CPU's fused int8 kernels compute differently from the
    model's own QDQ semantics.

    The model runs twice on ``inputs``: with onnxruntime's fused int8 kernels (optimization ``"all"``; the
    QuantizeLinear outputs those kernels produce are captured), and by its reference semantics — the same graph
    with every node computed on its own (``reference="unfused"``: onnxruntime with optimizations disabled) or by
    onnx's reference evaluator (``reference="evaluator"``). One row per captured QuantizeLinear output (``layer``:
    the node it quantizes): ``max_steps``/``mean_steps`` (differences in quantization steps), ``frac_differ`` (the
    share of elements affected) — end to end — and ``introduced_*``: the same for the layer alone, its reference
    nodes re-run on the int8 inputs the fused kernels produced.

    Raises:
        UnsupportedError: the model has no QuantizeLinear output the fused run produces.

    Example:
        >>> import onnxscope
        >>> from onnxscope.testing import mlp_model
        >>> check_kernels(onnxscope.Model(mlp_model()), random=True)
        Traceback (most recent call last):
        ...
        onnxscope.errors.UnsupportedError: the model has no QuantizeLinear output that onnxruntime's fused run produces; check_kernels needs a QDQ model
    """
    from onnxscope.errors import UnsupportedError

    choices = {"unfused": {"optimization": "disable"}, "evaluator": {"engine": "reference"}}
    if reference not in choices:
        raise InputError(f"reference {reference!r}: choose one of {', '.join(choices)}")
    m = model if isinstance(model, Model) else Side.of(model).model
    fused = Side(m, optimization="all", threads=threads, label="fused int8 kernels (all)")
    plain = Side(
        m,
        threads=threads,
        label="QDQ semantics ("
        + ("onnxruntime, unfused" if reference == "unfused" else "reference evaluator")
        + ")",
        **choices[reference],  # type: ignore[arg-type]
    )
    quantizers = [
        m.tensor_name(e.node.outputs[0])
        for e in m.entries
        if e.node.op_type == "QuantizeLinear"
        and not e.scopes
        and not _const_name(m, e.node.outputs[0].name or "")
    ]

    def setup(
        run_a: Mapping[str, np.ndarray], run_b: Mapping[str, np.ndarray]
    ) -> tuple[Comparison, _Local | None]:
        info = getattr(run_a, "info", None)
        produced = {q for q in quantizers if q in run_a and (info is None or info(q).source == "captured")}
        comparison, _ = _plan(
            fused, plain, run_a, run_b, 0.0, 0.0, 3, False, "a", lambda p: p.a in produced, "all"
        )
        if not comparison.plans:
            raise UnsupportedError(
                "the model has no QuantizeLinear output that onnxruntime's fused run produces; "
                "check_kernels needs a QDQ model"
            )
        for p in comparison.plans:
            p.layer = _quantized_layer(m, p.pair.a)
        comparison.kind = "kernels"
        # each layer alone: its reference nodes re-run from the int8 tensors the fused kernels produced
        fed = produced | set(fused.inputs())
        local = _Local(plain, comparison.alignment, comparison.plans, lambda v, q: q.a in fed)
        return comparison, local

    try:
        return _loop(fused, plain, inputs, random, seed, dims, progress, setup)
    finally:
        fused.close()
        plain.close()


def _const_name(m: Model, name: str) -> bool:
    from onnxscope.weights import is_const

    try:
        return is_const(m.value(name))
    except KeyError:
        return True


def _quantized_layer(m: Model, q_name: str) -> str | None:
    """The node whose output a QuantizeLinear quantizes (through Identity/Relu absorbed)."""
    from onnxscope.graph import label

    v = m.value(q_name).producer()
    if v is None or not v.inputs or v.inputs[0] is None:
        return None
    p = v.inputs[0].producer()
    return label(p) if p is not None else v.inputs[0].name
