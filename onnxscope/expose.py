"""Planning a capture: which tensors onnxruntime hands over, which are recomputed on read, which are folded.

A capture runs the model at the deployed optimization level. What onnxruntime keeps after its optimizations (the
*survivors*, found by asking onnxruntime itself) is marked as an output of a rewritten clone of the model and
captured from the run; marking them costs no fusion, since the fusions that happened did not remove them. The
rest is one of:

- **recomputed** on read from the nearest captured tensors by the original nodes (see
  :mod:`onnxscope.recompute`) — the inside of a fused Conv+activation, LayerNorm, GELU, attention or int8 kernel;
- **folded** from the weights on read — tensors computed from weights alone (a Transpose or DequantizeLinear of an
  initializer…), the same for every input.

Tensors inside If branches are recomputed on read by the branch's nodes when the branch ran (which branch ran is
read from the condition, :meth:`TensorMeta.conditions`); a tensor of an enclosing branch that such a recomputation
reads is recomputed the same way, so nothing is carried out of the If. Tensors inside Loop and Scan bodies are
carried out of their bodies (bodies are small; their fusions are not kept):

- **If** (on the way out of a loop body, or a branch tensor that a recomputation reads and that is not selected):
  an extra output on both branches: the tensor (through an ``Identity``) on its own branch, a zero placeholder of
  the same type on the other (shaped like the tensor when its shape is static, else empty).
- **Loop** and **Scan**: an extra scan output, so the capture holds one slice per iteration along a new leading
  axis (nested loops add one axis each, outermost first).

Capture names are :meth:`onnxscope.graph.Graph.tensor_name`: ``loop/body/h`` is tensor ``h`` of the ``body`` of
node ``loop``. The model given is never modified: a structural clone is rewritten, whose weights are the original
tensors (shared, not copied).

Example:
    >>> from onnxscope import Model
    >>> from onnxscope.testing import mlp_model
    >>> plan = expose(Model(mlp_model()), survivors={"x", "a", "y"})
    >>> sorted(plan.outputs.values()), plan.meta["h"].source
    (['a', 'y'], 'recomputed')
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from onnxscope._ir import ir
from onnxscope.errors import InputError, NotFoundError, closest
from onnxscope.graph import FUSED_ATTENTION_OPS, Graph, Scope, attention_probs_name, subgraphs
from onnxscope.recompute import Recompute
from onnxscope.weights import is_const

__all__ = ["Candidate", "Plan", "Scope", "Selection", "TensorMeta", "candidates", "expose", "is_qdq"]

Selection = str | Sequence[str] | Callable[["TensorMeta"], bool] | None

SOURCES = ("input", "captured", "recomputed", "folded")


@dataclass(frozen=True)
class TensorMeta:
    """Where a captured tensor comes from, and how the capture obtained it.

    ``scopes`` lists the enclosing If/Loop/Scan bodies, outermost first; each Loop/Scan scope adds one leading
    iteration axis to the captured array. ``conditions`` are ``(condition tensor, branch)`` pairs: the tensor was
    computed only where every condition equals its branch (``True`` = then_branch). ``source`` is ``"captured"``
    (handed over by onnxruntime's run), ``"recomputed"`` (rebuilt on read from captured tensors by the original
    nodes, because onnxruntime's optimizations removed it), ``"folded"`` (computed from the weights alone) or
    ``"input"``.
    """

    name: str
    tensor: str
    node: str | None
    op: str | None
    module: str | None = None
    scopes: tuple[Scope, ...] = ()
    conditions: tuple[tuple[str, bool], ...] = ()
    source: str = "captured"

    @property
    def iteration_axes(self) -> int:
        """How many leading axes of the captured array index Loop/Scan iterations."""
        return sum(s.op in ("Loop", "Scan") for s in self.scopes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "name": self.name,
            "tensor": self.tensor,
            "node": self.node,
            "op": self.op,
            "module": self.module,
            "scopes": [[s.node, s.op, s.attr] for s in self.scopes],
            "conditions": [[c, b] for c, b in self.conditions],
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorMeta:
        """Inverse of :meth:`to_dict`."""
        return cls(
            name=d["name"],
            tensor=d["tensor"],
            node=d["node"],
            op=d["op"],
            module=d.get("module"),
            scopes=tuple(Scope(*s) for s in d["scopes"]),
            conditions=tuple((c, bool(b)) for c, b in d["conditions"]),
            source=d.get("source", "captured"),
        )


@dataclass
class Candidate:
    """A tensor that can be captured, with its value in the model (``None`` for attention probabilities that
    only a rewritten or decomposed node produces) and the fused node that produces those."""

    meta: TensorMeta
    value: ir.Value | None
    fused: ir.Node | None = None


@dataclass
class Plan:
    """How onnxruntime is to run the model, and how to read its outputs back.

    ``model`` is a rewritten clone when bodies or nodes had to change; otherwise ``None``, and :meth:`serialize`
    writes the model itself with the ``marked`` tensors as extra outputs (no clone of a large graph).
    """

    model: ir.Model | None
    outputs: dict[str, str]  # graph output name in the rewritten model → capture name
    meta: dict[str, TensorMeta]  # capture name → where it comes from, for everything the capture offers
    real_outputs: list[str]  # the model's own outputs, in order
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)  # node path → op, inputs, outputs
    skipped: dict[str, str] = field(default_factory=dict)  # capture name → why it cannot be had
    recompute: Recompute | None = None
    hidden: set[str] = field(default_factory=set)  # captured only to feed recomputation (not selected)
    marked: list[str] = field(default_factory=list)  # main-graph tensors to mark when ``model`` is None

    def serialize(self, graph: Graph) -> bytes:
        """The bytes onnxruntime runs (external weights stay references to their files)."""
        if self.model is not None:
            return ir.to_proto(self.model).SerializeToString()
        from onnxscope._load import serialize_with_outputs

        return serialize_with_outputs(graph.ir, self.marked)

    def names(self, source: str) -> list[str]:
        """The tensors the capture obtains this way (``"captured"``, ``"recomputed"``, ``"folded"``)."""
        return [k for k, m in self.meta.items() if m.source == source]


def candidates(graph: Graph) -> tuple[list[Candidate], dict[str, dict[str, Any]]]:
    """Every capturable tensor (node outputs everywhere, body inputs, attention probabilities of fused attention;
    not Constants), in graph order, and every node's inputs and outputs by tensor name.

    Example:
        >>> from onnxscope import Model
        >>> from onnxscope.testing import mlp_model
        >>> [c.meta.name for c in candidates(Model(mlp_model()))[0]]
        ['h', 'a', 'y']
    """
    out: list[Candidate] = []
    nodes: dict[str, dict[str, Any]] = {}
    name = graph.tensor_name
    for e in graph.entries:
        node = e.node
        nodes[e.path] = {
            "op": node.op_type,
            "inputs": [name(v) if v is not None and v.name else None for v in node.inputs],
            "outputs": [name(v) if v.name else None for v in node.outputs],
        }
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            continue
        module = graph.module_of(node)
        for v in node.outputs:
            if v.name:
                meta = TensorMeta(name(v), v.name, e.path, node.op_type, module, e.scopes, e.conditions)
                out.append(Candidate(meta, v))
        domain = node.domain if node.domain != "ai.onnx" else ""
        if (domain, node.op_type) == ("", "Attention") and not (
            len(node.outputs) > 3 and node.outputs[3].name
        ):
            probs = attention_probs_name(e.path)
            meta = TensorMeta(probs, probs, e.path, node.op_type, module, e.scopes, e.conditions)
            out.append(Candidate(meta, None, node))
            nodes[e.path]["outputs"].append(probs)
        elif (domain, node.op_type) in FUSED_ATTENTION_OPS:
            probs = attention_probs_name(e.path)
            meta = TensorMeta(
                probs, probs, e.path, node.op_type, module, e.scopes, e.conditions, "recomputed"
            )
            out.append(Candidate(meta, None, node))
        for tag, sub in subgraphs(node):
            prefix = f"{e.path}/{tag}/"
            conds = e.conditions
            if node.op_type == "If" and node.inputs and node.inputs[0] is not None:
                conds = (*conds, (name(node.inputs[0]), tag == "then_branch"))
            scopes = (*e.scopes, Scope(e.path, node.op_type, tag))
            for v in sub.inputs:
                if v.name:
                    out.append(
                        Candidate(TensorMeta(prefix + v.name, v.name, None, None, None, scopes, conds), v)
                    )
    return out, nodes


_PREFIXES = ("op:", "node:", "module:", "re:")


def _matcher(pattern: str) -> Callable[[TensorMeta], bool]:
    _, _, rest = pattern.partition(":")
    if pattern.startswith("op:"):
        return lambda m: m.op == rest
    if pattern.startswith("node:"):
        return lambda m: m.node is not None and fnmatch.fnmatchcase(m.node, rest)
    if pattern.startswith("module:"):
        return lambda m: m.module is not None and (m.module == rest or m.module.startswith(rest + "."))
    if pattern.startswith("re:"):
        try:
            rx = re.compile(rest)
        except re.error as e:
            raise InputError(f"selection {pattern!r}: invalid regular expression ({e})") from e
        return lambda m: rx.search(m.name) is not None
    return lambda m: fnmatch.fnmatchcase(m.name, pattern) or fnmatch.fnmatchcase(m.tensor, pattern)


def select(metas: Sequence[TensorMeta], selection: Selection, what: str = "select") -> set[str]:
    """The names ``selection`` chooses among ``metas`` (see :func:`expose` for the forms it takes).

    Raises:
        NotFoundError: a literal tensor name that does not exist (close names are suggested).
        InputError: a pattern that matches nothing, or an invalid regular expression.

    Example:
        >>> from onnxscope import Model
        >>> from onnxscope.testing import mlp_model
        >>> metas = [c.meta for c in candidates(Model(mlp_model()))[0]]
        >>> sorted(select(metas, "op:Gemm"))
        ['h', 'y']
    """
    if selection is None:
        return set()
    if callable(selection):
        return {m.name for m in metas if selection(m)}
    patterns = [selection] if isinstance(selection, str) else list(selection)
    chosen: set[str] = set()
    names = [m.name for m in metas]
    for pattern in patterns:
        hit = {m.name for m in metas if _matcher(pattern)(m)}
        if not hit:
            literal = not pattern.startswith(_PREFIXES) and not any(ch in pattern for ch in "*?[")
            if literal:
                raise NotFoundError(f"{what} {pattern!r}: no such tensor; {closest(pattern, names)}")
            if pattern.startswith("op:"):
                ops = sorted({m.op for m in metas if m.op})
                raise InputError(f"{what} {pattern!r} matches no tensor; ops in the model: {', '.join(ops)}")
            raise InputError(
                f"{what} {pattern!r} matches no tensor; {closest(pattern.split(':')[-1], names)}"
            )
        chosen |= hit
    return chosen


def is_qdq(model: ir.Model) -> bool:
    """Whether a model is in the QDQ format: activations pass through QuantizeLinear → DequantizeLinear pairs.

    Example:
        >>> from onnxscope.testing import mlp_model
        >>> is_qdq(mlp_model())
        False
    """
    for node in model.graph:
        if node.op_type == "DequantizeLinear" and not is_const(node.inputs[0]):
            producer = node.inputs[0].producer()
            if producer is not None and producer.op_type == "QuantizeLinear":
                return True
    return False


# ---- rewriting the clone ---------------------------------------------------------------------------------


def _identity(graph: ir.Graph, value: ir.Value, name: str) -> ir.Value:
    node = ir.Node("", "Identity", [value], num_outputs=1, name=f"{name}/identity")
    node.outputs[0].name = name
    if value.type is not None:
        node.outputs[0].type = value.type
        node.outputs[0].shape = value.shape
    graph.append(node)
    return node.outputs[0]


def _placeholder(
    graph: ir.Graph, dtype: ir.DataType | None, shape: tuple[Any, ...] | None, name: str, in_loop: bool
) -> ir.Value | None:
    if dtype is None or dtype == ir.DataType.STRING or dtype == ir.DataType.UNDEFINED:
        return None
    dims = (0,) if shape is None or len(shape) == 0 else (0,) * len(shape)  # empty: nothing to copy each run
    if in_loop and shape is not None and all(isinstance(d, int) and d >= 0 for d in shape):
        dims = tuple(int(d) for d in shape)  # inside a Loop/Scan every iteration's slice must have one shape
    try:
        array = np.zeros(dims, dtype=dtype.numpy())
    except (TypeError, ValueError):
        return None
    node = ir.Node(
        "",
        "Constant",
        [],
        attributes=[ir.AttrTensor("value", ir.tensor(array))],
        num_outputs=1,
        name=f"{name}/placeholder",
    )
    node.outputs[0].name = name
    node.outputs[0].dtype = dtype
    graph.append(node)
    return node.outputs[0]


@dataclass
class _Want:
    meta: TensorMeta
    dtype: ir.DataType | None
    shape: tuple[Any, ...] | None


class _Rewriter:
    def __init__(self, chosen: dict[int, _Want], skipped: dict[str, str], nested: str) -> None:
        self.chosen = chosen  # id(value in the clone) → what it is
        self.skipped = skipped
        self.nested = nested  # "all", "static" (only fixed-shape body tensors) or "none"
        self.counter = 0

    def fresh(self) -> str:
        self.counter += 1
        return f"onnxscope::{self.counter}"

    def _take(self, v: ir.Value, nested: bool, out: list[tuple[ir.Value, _Want]]) -> None:
        want = self.chosen.get(id(v))
        if want is None:
            return
        name = want.meta.name
        if nested and v.type is not None and not isinstance(v.type, ir.TensorType):
            self.skipped[name] = f"a {type(v.type).__name__} inside a subgraph; only tensors are carried out"
            return
        if nested and self.nested == "none":
            self.skipped[name] = "inside a subgraph that onnxruntime would not run rewritten"
            return
        static = want.shape is not None and all(isinstance(d, int) and d >= 0 for d in want.shape)
        if nested and self.nested == "static" and not static:
            self.skipped[name] = "inside a subgraph, with a shape that may change between iterations"
            return
        out.append((v, want))

    def rewrite(self, graph: ir.Graph, nested: bool = False) -> list[tuple[ir.Value, _Want]]:
        exported: list[tuple[ir.Value, _Want]] = []
        for v in graph.inputs:
            if nested:
                self._take(v, nested, exported)
        for node in list(graph):
            for v in node.outputs:
                self._take(v, nested, exported)
            subs = subgraphs(node)
            if not subs:
                continue
            inner = {tag: self.rewrite(sub, nested=True) for tag, sub in subs}
            if not any(inner.values()):
                continue
            if node.op_type == "If" and set(inner) == {"then_branch", "else_branch"}:
                exported.extend(self._if(node, dict(subs), inner))
            elif node.op_type in ("Loop", "Scan") and set(inner) == {"body"}:
                exported.extend(self._loop(node, dict(subs)["body"], inner["body"]))
            else:
                for values in inner.values():
                    for _, want in values:
                        self.skipped[want.meta.name] = (
                            f"inside a subgraph of {node.op_type}, which onnxscope cannot rewrite"
                        )
        return exported

    def _add_output(self, node: ir.Node) -> ir.Value:
        node.resize_outputs(len(node.outputs) + 1)
        out = node.outputs[-1]
        out.name = self.fresh()
        return out

    def _if(
        self, node: ir.Node, graphs: dict[str, ir.Graph], inner: dict[str, list[tuple[ir.Value, _Want]]]
    ) -> list[tuple[ir.Value, _Want]]:
        exported = []
        for branch, other in (("then_branch", "else_branch"), ("else_branch", "then_branch")):
            for value, want in inner[branch]:
                name = self.fresh()
                in_loop = any(sc.op in ("Loop", "Scan") for sc in want.meta.scopes)
                filler = _placeholder(graphs[other], want.dtype, want.shape, name + "/other", in_loop)
                if filler is None:
                    self.skipped[want.meta.name] = (
                        "inside an If branch, and neither the model nor ONNX type inference gives its element type"
                    )
                    continue
                graphs[branch].outputs.append(_identity(graphs[branch], value, name))
                graphs[other].outputs.append(filler)
                exported.append((self._add_output(node), want))
        return exported

    def _loop(
        self, node: ir.Node, body: ir.Graph, inner: list[tuple[ir.Value, _Want]]
    ) -> list[tuple[ir.Value, _Want]]:
        exported = []
        for value, want in inner:
            body.outputs.append(_identity(body, value, self.fresh()))
            exported.append((self._add_output(node), want))
        if node.op_type == "Scan":
            for key in ("scan_output_axes", "scan_output_directions"):
                a = node.attributes.get(key)
                if a is not None:
                    node.attributes[key] = ir.AttrInt64s(key, [*a.value, *([0] * len(inner))])
        return exported


def _expose_attention_probs(node: ir.Node, name: str) -> ir.Value:
    """Ask a fused ONNX ``Attention`` (opset 23) for its softmax probabilities: its 4th output, mode 3."""
    node.resize_outputs(4)
    for v in node.outputs[1:3]:
        if not v.name:
            v.name = ""  # optional outputs left out
    node.outputs[3].name = name
    node.attributes["qk_matmul_output_mode"] = ir.AttrInt64("qk_matmul_output_mode", 3)
    return node.outputs[3]


def expose(
    graph: Graph,
    select_: Selection = None,
    exclude: Selection = None,
    *,
    survivors: Collection[str] | None = None,
    nested: str = "all",
) -> Plan:
    """Plan a capture: choose tensors (default: all), decide how each is obtained, rewrite a clone of the model
    so that onnxruntime hands over the ones it keeps.

    Parameters:
        graph: the model.
        select_: what to capture — a tensor name, a glob (``"layer1.*"``), ``"re:REGEX"``, ``"op:Conv"``,
            ``"node:NAME"``, ``"module:encoder.layer.0"``, a list of those, or a predicate on :class:`TensorMeta`.
        exclude: the same forms; removed from the selection (but a selected branch tensor keeps the If conditions
            that say whether it ran).
        survivors: names of main-graph tensors that onnxruntime keeps at the optimization level of the run
            (``None``: all of them, as with optimizations disabled). The others are recomputed on read.
        nested: which selected tensors inside If/Loop/Scan bodies to carry out: ``"all"``, ``"static"`` (only
            those whose shape is known and fixed, so per-iteration slices stack) or ``"none"``.

    Raises:
        NotFoundError: a literal tensor name that the model does not have (close names are suggested).
        InputError: a pattern that matches nothing.
    """
    cands, nodes = candidates(graph)
    metas = [c.meta for c in cands]
    chosen = {m.name for m in metas} if select_ is None else select(metas, select_, "select")
    chosen -= select(metas, exclude, "exclude")
    # a tensor of an If branch can only be read once its conditions are known: they (small scalars) go with it
    by_meta = {m.name: m for m in metas}
    pending = list(chosen) if select_ is not None or exclude is not None else []  # else every one is chosen
    while pending:
        found = by_meta.get(pending.pop())
        for cond, _ in found.conditions if found is not None else ():
            if cond not in chosen and cond in by_meta:
                chosen.add(cond)
                pending.append(cond)
    top = graph.ir.graph
    real = [v.name or "" for v in top.outputs]
    inputs = {v.name for v in top.inputs}

    def survives(v: ir.Value) -> bool:
        return (
            v.name in inputs or v.is_graph_output() or survivors is None or v.name in survivors
        ) and v.graph is top

    meta: dict[str, TensorMeta] = {}
    mark: dict[str, Candidate] = {}  # capture name → candidate marked as an output
    targets: list[ir.Value] = []
    virtual: dict[str, ir.Node] = {}
    by_name = {c.meta.name: c for c in cands}
    for c in cands:
        name, v = c.meta.name, c.value
        if name not in chosen and not (v is not None and v.is_graph_output() and v.graph is top):
            continue
        if c.fused is not None:  # attention probabilities
            if c.meta.source == "recomputed":
                if c.meta.scopes:
                    continue  # a fused op inside a body: not decomposed (listed as skipped below)
                virtual[name] = c.fused
                meta[name] = c.meta
            else:
                mark[name] = c
                meta[name] = c.meta
            continue
        assert v is not None
        if graph.kind(v) != "tensor":
            continue  # a sequence, optional or map: not captured (listed as skipped below)
        if not c.meta.scopes and not v.is_graph_output() and is_const(v):
            meta[name] = replace(c.meta, source="folded")  # the same for every input: read from the weights
        elif c.meta.scopes and all(sc.op == "If" for sc in c.meta.scopes) and v.producer() is not None:
            targets.append(v)  # inside If branches: recomputed on read from the branch's nodes, if it ran
            meta[name] = replace(c.meta, source="recomputed")
        elif c.meta.scopes or survives(v):
            mark[name] = c
            meta[name] = c.meta
        else:
            targets.append(v)
            meta[name] = replace(c.meta, source="recomputed")
    skipped: dict[str, str] = {}
    for c in cands:
        v = c.value
        if (
            v is not None
            and c.meta.name in chosen
            and v.type is not None
            and not isinstance(v.type, ir.TensorType)
        ):
            skipped[c.meta.name] = f"a {type(v.type).__name__.removesuffix('Type').lower()}, not a tensor"
        if c.fused is not None and c.meta.source == "recomputed" and c.meta.scopes and c.meta.name in chosen:
            skipped[c.meta.name] = (
                "a fused attention op inside a subgraph body; its probabilities are not rebuilt"
            )
    recompute = None
    hidden: set[str] = set()
    if targets or virtual:
        recompute = Recompute(graph, targets, survives, virtual)
        for f in recompute.feeds:
            if f in mark or f in inputs or f not in by_name:
                continue
            m = meta.get(f)
            if (
                m is not None
                and m.source == "recomputed"
                and m.scopes
                and f in recompute
                and f not in skipped
            ):
                continue  # a tensor of an enclosing If branch, recomputed itself when read: not carried out
            mark[f] = by_name[f]
            hidden.add(f)
    for name in skipped:
        meta.pop(name, None)
    final_meta = {k: m for k, m in meta.items() if k not in hidden or k in chosen}
    if not any(
        c.meta.scopes or c.fused is not None for c in mark.values()
    ):  # only main-graph tensors to mark
        marked = [c.meta.name for c in mark.values() if c.value is not None and not c.value.is_graph_output()]
        outputs = {v.name or "": v.name or "" for v in top.outputs} | {n: n for n in marked}
        return Plan(
            model=None,
            outputs=outputs,
            meta=final_meta,
            real_outputs=real,
            nodes=nodes,
            skipped=skipped,
            recompute=recompute,
            hidden=hidden - chosen,
            marked=marked,
        )
    # rewrite a clone: find the clone's value for each marked one (the walkers visit both in the same order)
    model = graph.ir.clone()
    wanted = {id(c.value): c for c in mark.values() if c.value is not None}
    fused = {id(c.fused): c for c in mark.values() if c.fused is not None}
    chosen_ids: dict[int, _Want] = {}
    clone_view = Graph(model)
    for e, ce in zip(graph.entries, clone_view.entries, strict=True):
        for v, cv in zip(e.node.outputs, ce.node.outputs, strict=True):
            c = wanted.get(id(v))
            if c is not None:
                chosen_ids[id(cv)] = _Want(c.meta, graph.dtype(v), graph.shape(v))
        for (_, sub), (_, csub) in zip(subgraphs(e.node), subgraphs(ce.node), strict=True):
            for v, cv in zip(sub.inputs, csub.inputs, strict=True):
                c = wanted.get(id(v))
                if c is not None:
                    chosen_ids[id(cv)] = _Want(c.meta, graph.dtype(v), graph.shape(v))
        c = fused.get(id(e.node))
        if c is not None:
            probs = _expose_attention_probs(ce.node, c.meta.tensor)
            chosen_ids[id(probs)] = _Want(c.meta, graph.dtype(e.node.inputs[0]), None)
    exported = _Rewriter(chosen_ids, skipped, nested).rewrite(model.graph)
    outputs: dict[str, str] = {}
    existing = {v.name for v in model.graph.outputs}
    for value, want in exported:
        if value.name not in existing:
            model.graph.outputs.append(value)
            existing.add(value.name)
        outputs[value.name or ""] = want.meta.name
    return Plan(
        model=model,
        outputs=outputs,
        meta=final_meta,
        real_outputs=real,
        nodes=nodes,
        skipped=skipped,
        recompute=recompute,
        hidden=hidden - chosen,
    )
