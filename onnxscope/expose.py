"""Graph rewriting that makes intermediate tensors visible to onnxruntime, subgraph bodies included.

Top-level tensors become extra graph outputs. Tensors inside control flow are carried out of their bodies:

- **If**: an extra output on both branches: the tensor (through an ``Identity``) on its own branch, a zero
  placeholder of the same type on the other (shaped like the tensor when its shape is static, else empty);
  which branch ran is read from the captured condition (:meth:`TensorMeta.conditions`).
- **Loop** and **Scan**: an extra scan output, so the capture holds one slice per iteration along a new leading
  axis (nested loops add one axis each, outermost first).

Capture names show the nesting: ``loop/body/h`` is tensor ``h`` of the ``body`` of node ``loop``. The model given is
never modified: a structural clone is rewritten, whose weights are the original tensors (shared, not copied).

Example:
    >>> from onnxscope import Model
    >>> from onnxscope.testing import mlp_model
    >>> plan = expose(Model(mlp_model()))
    >>> sorted(plan.outputs.values())
    ['a', 'h', 'y']
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxscope.errors import InputError, NotFoundError, closest
from onnxscope.graph import Graph, attention_probs_name, label, layer_map_of, module_path_of
from onnxscope.weights import is_const, quantization_of

__all__ = ["Candidate", "Plan", "Scope", "Selection", "TensorMeta", "candidates", "expose"]

Selection = str | Sequence[str] | Callable[["TensorMeta"], bool] | None


@dataclass(frozen=True)
class Scope:
    """One level of nesting: the control-flow node (by capture name), its op, and the graph attribute."""

    node: str
    op: str
    attr: str


@dataclass(frozen=True)
class TensorMeta:
    """Where a captured tensor comes from.

    ``scopes`` lists the enclosing If/Loop/Scan bodies, outermost first; each Loop/Scan scope adds one leading
    iteration axis to the captured array. ``conditions`` are ``(condition tensor, branch)`` pairs: the tensor was
    computed only where every condition equals its branch (``True`` = then_branch).
    """

    name: str
    tensor: str
    node: str | None
    op: str | None
    module: str | None = None
    scopes: tuple[Scope, ...] = ()
    conditions: tuple[tuple[str, bool], ...] = ()

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
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorMeta:
        """Inverse of :meth:`to_dict`."""
        return cls(
            d["name"],
            d["tensor"],
            d["node"],
            d["op"],
            d.get("module"),
            tuple(Scope(*s) for s in d["scopes"]),
            tuple((c, bool(b)) for c, b in d["conditions"]),
        )


@dataclass
class Candidate:
    """A tensor that can be captured, with the value it is in the (cloned) model."""

    meta: TensorMeta
    value: ir.Value


@dataclass
class Plan:
    """A rewritten model ready for onnxruntime, and how to read its outputs back."""

    model: ir.Model
    outputs: dict[str, str]  # graph output name in the rewritten model → capture name
    meta: dict[str, TensorMeta]  # capture name → where it comes from
    real_outputs: list[str]  # the model's own outputs, in order
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)  # node path → op, inputs, outputs
    skipped: dict[str, str] = field(default_factory=dict)  # capture name → why it could not be captured
    constants: list[str] = field(default_factory=list)  # computed from weights alone: folded when read
    # QDQ models: a DequantizeLinear output → (its quantized input, scale, zero point, axis), dequantized on read
    derived: dict[str, tuple[str, Any, Any, int | None]] = field(default_factory=dict)


def _graph_attrs(node: ir.Node) -> list[tuple[str, ir.Graph]]:
    out = []
    for name, attr in node.attributes.items():
        if attr.type == ir.AttributeType.GRAPH:
            out.append((name, attr.value))
        elif attr.type == ir.AttributeType.GRAPHS:
            out.extend((f"{name}.{i}", g) for i, g in enumerate(attr.value))
    return out


def _is_constant(node: ir.Node) -> bool:
    return node.op_type == "Constant" and node.domain in ("", "ai.onnx")


def _walk(
    graph: ir.Graph,
    prefix: str,
    scopes: tuple[Scope, ...],
    conds: tuple[tuple[str, bool], ...],
    out: list[Candidate],
    nodes: dict[str, dict[str, Any]],
    prefixes: dict[int, str],
    node_map: dict[str, str],
) -> None:
    prefixes[id(graph)] = prefix

    def cname(v: ir.Value | None) -> str | None:
        """Capture name of a value used in this graph (outer-scope values keep their own graph's prefix)."""
        if v is None or not v.name:
            return None
        if v.is_initializer():
            return v.name
        return prefixes.get(id(v.graph), prefix) + v.name

    if scopes:
        for v in graph.inputs:
            if v.name:
                out.append(Candidate(TensorMeta(prefix + v.name, v.name, None, None, None, scopes, conds), v))
    for node in graph:
        path = prefix + label(node)
        _expose_attention_probs(node)
        nodes[path] = {
            "op": node.op_type,
            "inputs": [cname(v) for v in node.inputs],
            "outputs": [cname(v) for v in node.outputs],
        }
        if not _is_constant(node):
            module = node_map.get(node.name or "") or module_path_of(node)
            for v in node.outputs:
                if v.name:
                    meta = TensorMeta(prefix + v.name, v.name, path, node.op_type, module, scopes, conds)
                    out.append(Candidate(meta, v))
        for attr_name, sub in _graph_attrs(node):
            c = conds
            if node.op_type == "If" and node.inputs and node.inputs[0] is not None:
                c = (*conds, (cname(node.inputs[0]) or "", attr_name == "then_branch"))
            sub_scopes = (*scopes, Scope(path, node.op_type, attr_name))
            _walk(sub, f"{path}/{attr_name}/", sub_scopes, c, out, nodes, prefixes, node_map)


def _expose_attention_probs(node: ir.Node) -> None:
    """Ask a fused ONNX ``Attention`` (opset 23) for its softmax probabilities: its 4th output, mode 3."""
    if node.op_type != "Attention" or node.domain not in ("", "ai.onnx"):
        return
    if len(node.outputs) > 3 and node.outputs[3].name:
        return
    node.resize_outputs(4)
    for v in node.outputs[1:3]:
        if not v.name:
            v.name = ""  # optional outputs left out
    node.outputs[3].name = attention_probs_name(label(node))
    node.attributes["qk_matmul_output_mode"] = ir.AttrInt64("qk_matmul_output_mode", 3)


def candidates(model: ir.Model) -> tuple[list[Candidate], dict[str, dict[str, Any]]]:
    """Every capturable tensor (node outputs everywhere, subgraph inputs; not Constants) and every node's I/O.

    Example:
        >>> from onnxscope.testing import mlp_model
        >>> [c.meta.name for c in candidates(mlp_model())[0]]
        ['h', 'a', 'y']
    """
    out: list[Candidate] = []
    nodes: dict[str, dict[str, Any]] = {}
    node_map = layer_map_of(model).get("nodes", {})
    _walk(model.graph, "", (), (), out, nodes, {}, node_map)
    return out, nodes


_PREFIXES = ("op:", "node:", "module:", "re:")


def _matcher(pattern: str) -> Callable[[TensorMeta], bool]:
    kind, _, rest = pattern.partition(":")
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


def _select(metas: list[TensorMeta], selection: Selection, what: str) -> set[str]:
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


def _identity(graph: ir.Graph, value: ir.Value, name: str) -> ir.Value:
    node = ir.Node("", "Identity", [value], num_outputs=1, name=f"{name}/identity")
    node.outputs[0].name = name
    if value.type is not None:
        node.outputs[0].type = value.type
        node.outputs[0].shape = value.shape
    graph.append(node)
    return node.outputs[0]


def _placeholder(graph: ir.Graph, like: ir.Value, name: str) -> ir.Value | None:
    if like.dtype is None or like.dtype == ir.DataType.STRING:
        return None
    shape = (0,)
    if like.shape is not None and all(isinstance(d, int) and d >= 0 for d in like.shape):
        shape = tuple(int(d) for d in like.shape)
    array = np.zeros(shape, dtype=like.dtype.numpy())
    node = ir.Node(
        "",
        "Constant",
        [],
        attributes=[ir.AttrTensor("value", ir.tensor(array))],
        num_outputs=1,
        name=f"{name}/placeholder",
    )
    node.outputs[0].name = name
    node.outputs[0].dtype = like.dtype
    graph.append(node)
    return node.outputs[0]


class _Rewriter:
    def __init__(self, chosen: set[int], skipped: dict[str, str], nested: str) -> None:
        self.chosen = chosen  # ids of the values to capture
        self.skipped = skipped
        self.nested = nested  # "all", "static" (only fixed-shape body tensors) or "none"
        self.counter = 0

    def fresh(self) -> str:
        self.counter += 1
        return f"onnxscope::{self.counter}"

    def _take(
        self, v: ir.Value, cands: dict[int, Candidate], nested: bool, out: list[tuple[ir.Value, TensorMeta]]
    ) -> None:
        if id(v) not in self.chosen:
            return
        meta = cands[id(v)].meta
        if nested and v.type is not None and not isinstance(v.type, ir.TensorType):
            self.skipped[meta.name] = (
                f"a {type(v.type).__name__} inside a subgraph; only tensors are carried out"
            )
            return
        if nested and self.nested == "none":
            self.skipped[meta.name] = "inside a subgraph that onnxruntime would not run rewritten"
            return
        static = v.shape is not None and all(isinstance(d, int) and d >= 0 for d in v.shape)
        if nested and self.nested == "static" and not static:
            self.skipped[meta.name] = "inside a subgraph, with a shape that may change between iterations"
            return
        out.append((v, meta))

    def rewrite(
        self, graph: ir.Graph, cands: dict[int, Candidate], nested: bool = False
    ) -> list[tuple[ir.Value, TensorMeta]]:
        exported: list[tuple[ir.Value, TensorMeta]] = []
        for v in graph.inputs:
            self._take(v, cands, nested, exported)
        for node in list(graph):
            for v in node.outputs:
                self._take(v, cands, nested, exported)
            subs = _graph_attrs(node)
            if not subs:
                continue
            inner = {name: self.rewrite(sub, cands, nested=True) for name, sub in subs}
            if not any(inner.values()):
                continue
            if node.op_type == "If" and set(inner) == {"then_branch", "else_branch"}:
                exported.extend(self._if(node, dict(subs), inner))
            elif node.op_type in ("Loop", "Scan") and set(inner) == {"body"}:
                exported.extend(self._loop(node, dict(subs)["body"], inner["body"]))
            else:
                for values in inner.values():
                    for _, meta in values:
                        self.skipped[meta.name] = (
                            f"inside a subgraph of {node.op_type}, which onnxscope cannot rewrite"
                        )
        return exported

    def _add_output(self, node: ir.Node) -> ir.Value:
        node.resize_outputs(len(node.outputs) + 1)
        out = node.outputs[-1]
        out.name = self.fresh()
        return out

    def _if(
        self, node: ir.Node, graphs: dict[str, ir.Graph], inner: dict[str, list[tuple[ir.Value, TensorMeta]]]
    ) -> list[tuple[ir.Value, TensorMeta]]:
        exported = []
        for branch, other in (("then_branch", "else_branch"), ("else_branch", "then_branch")):
            for value, meta in inner[branch]:
                name = self.fresh()
                filler = _placeholder(graphs[other], value, name + "/other")
                if filler is None:
                    self.skipped[meta.name] = "inside an If branch, and its element type is unknown"
                    continue
                graphs[branch].outputs.append(_identity(graphs[branch], value, name))
                graphs[other].outputs.append(filler)
                exported.append((self._add_output(node), meta))
        return exported

    def _loop(
        self, node: ir.Node, body: ir.Graph, inner: list[tuple[ir.Value, TensorMeta]]
    ) -> list[tuple[ir.Value, TensorMeta]]:
        exported = []
        for value, meta in inner:
            body.outputs.append(_identity(body, value, self.fresh()))
            exported.append((self._add_output(node), meta))
        if node.op_type == "Scan":
            for key in ("scan_output_axes", "scan_output_directions"):
                attr = node.attributes.get(key)
                if attr is not None:
                    node.attributes[key] = ir.AttrInt64s(key, [*attr.value, *([0] * len(inner))])
        return exported


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


def _qdq_plan(
    cands: list[Candidate], chosen_names: set[str], real: set[str], skipped: dict[str, str]
) -> dict[str, Any]:
    """Keep onnxruntime's int8 kernels: capture QuantizeLinear outputs and derive their DequantizeLinear outputs;
    leave out the float tensors that a fused kernel never materializes (an op's output read only by a Q)."""
    derived: dict[str, Any] = {}
    for c in cands:
        name, v = c.meta.name, c.value
        if c.meta.scopes or name not in chosen_names or name in real:
            continue
        node = v.producer()
        if node is not None and node.op_type == "DequantizeLinear" and not is_const(node.inputs[0]):
            q = quantization_of(node, 0)
            if q is not None and node.inputs[0].name:
                derived[name] = (node.inputs[0].name, q.scale, q.zero_point, q.axis)
                continue
        users = [u for u, _ in v.uses()]
        if (
            users
            and all(u.op_type == "QuantizeLinear" for u in users)
            and node is not None
            and node.op_type not in ("DequantizeLinear", "QuantizeLinear")
        ):
            skipped[name] = (
                f"inside a fused int8 kernel of onnxruntime (QDQ); its quantized value is captured as "
                f"{users[0].outputs[0].name!r}"
            )
    return derived


def expose(
    graph: Graph, select: Selection = None, exclude: Selection = None, nested: str = "all", qdq: bool = False
) -> Plan:
    """Plan a capture: choose tensors (default: all), rewrite a clone of the model so each is an output.

    Parameters:
        graph: the model.
        select: what to capture — a tensor name, a glob (``"layer1.*"``), ``"re:REGEX"``, ``"op:Conv"``,
            ``"node:NAME"``, ``"module:encoder.layer.0"``, a list of those, or a predicate on :class:`TensorMeta`.
        exclude: the same forms; removed from the selection.
        nested: which selected tensors inside If/Loop/Scan bodies to carry out: ``"all"``, ``"static"`` (only
            those whose shape is known and fixed, so per-iteration slices stack) or ``"none"``.
        qdq: keep onnxruntime's int8 kernels in a QDQ model: DequantizeLinear outputs are derived from the captured
            QuantizeLinear outputs, and float tensors that only a fused kernel sees are left out (see ``skipped``).

    Raises:
        NotFoundError: a literal tensor name that the model does not have (close names are suggested).
        InputError: a pattern that matches nothing.
    """
    model = graph.ir.clone()
    cands, nodes = candidates(model)
    metas = [c.meta for c in cands]
    chosen_names = {m.name for m in metas} if select is None else _select(metas, select, "select")
    chosen_names -= _select(metas, exclude, "exclude")
    # Tensors computed from weights alone (a Transpose or Cast of an initializer…) are the same for every input:
    # they are folded from the (memory-mapped) weights when read instead of being copied out of every run.
    real = {v.name for v in graph.ir.graph.outputs}
    constants = [
        c.meta.name
        for c in cands
        if c.meta.name in chosen_names and not c.meta.scopes and c.meta.name not in real and is_const(c.value)
    ]
    chosen_names -= set(constants)
    skipped: dict[str, str] = {}
    derived: dict[str, Any] = {}
    if qdq:
        derived = _qdq_plan(cands, chosen_names, real, skipped)
        chosen_names -= set(derived) | set(skipped)
        chosen_names |= {src for src, *_ in derived.values()}  # the int8 tensors they come from
    chosen = {id(c.value) for c in cands if c.meta.name in chosen_names}
    if nested != "none" and any(c.meta.scopes and c.meta.name in chosen_names for c in cands):
        _infer_types(model)
    exported = _Rewriter(chosen, skipped, nested).rewrite(model.graph, {id(c.value): c for c in cands})
    outputs: dict[str, str] = {}
    existing = {v.name for v in model.graph.outputs}
    for value, meta in exported:
        if value.name not in existing:
            model.graph.outputs.append(value)
            existing.add(value.name)
        outputs[value.name or ""] = meta.name
    meta = {m.name: m for _, m in exported}
    for c in cands:  # the model's own outputs are always returned: describe them even when not selected
        if (c.meta.name in real and not c.meta.scopes) or c.meta.name in constants or c.meta.name in derived:
            meta.setdefault(c.meta.name, c.meta)
    return Plan(
        model=model,
        outputs=outputs,
        meta=meta,
        real_outputs=[v.name or "" for v in graph.ir.graph.outputs],
        nodes=nodes,
        skipped=skipped,
        constants=constants,
        derived=derived,
    )


def _infer_types(model: ir.Model) -> None:
    """Fill element types of subgraph values (needed for If placeholders); large weights are not loaded."""
    from onnx_ir.passes.common import ShapeInferencePass

    ShapeInferencePass(strict_mode=False)(model)
