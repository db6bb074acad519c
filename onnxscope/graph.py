"""An indexed, read-only view of an ONNX model: nodes, tensors, producers, consumers, shapes, framework names.

:class:`Graph` wraps an ``onnx_ir.Model`` (the ONNX project's in-memory model, whose external tensors stay
memory-mapped on disk) and adds the look-ups every analysis needs. It never reads weight data.

Example:
    >>> import onnx_ir as ir, numpy as np
    >>> x = ir.Value(name="x", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([1, 2]))
    >>> w = ir.Value(name="w", const_value=ir.tensor(np.ones((3, 2), np.float32), name="w"))
    >>> n = ir.Node("", "Gemm", [x, w], attributes=[ir.AttrInt64("transB", 1)], name="fc", num_outputs=1)
    >>> n.outputs[0].name = "y"
    >>> g = Graph(ir.Model(ir.Graph([x], n.outputs, nodes=[n], initializers=[w]), ir_version=10))
    >>> g.node("fc").op_type, g.value("y").producer().name
    ('Gemm', 'fc')
"""

from __future__ import annotations

import ast
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple

from onnxscope._ir import ir
from onnxscope.errors import NotFoundError, closest

__all__ = [
    "WEIGHTED_OPS",
    "Entry",
    "Graph",
    "Scope",
    "attention_probs_name",
    "attr",
    "dim_of",
    "label",
    "layer_map_of",
    "module_path_of",
    "subgraphs",
]

# Operators whose output units (neurons / channels) own a row of incoming weights.
# fused onnxruntime attention whose probabilities capture rebuilds by a decomposition (onnxscope.recompute)
FUSED_ATTENTION_OPS = frozenset(
    {
        ("com.microsoft", "Attention"),
        ("com.microsoft", "MultiHeadAttention"),
        ("com.microsoft", "GroupQueryAttention"),
    }
)
WEIGHTED_OPS = (
    "Gemm",
    "MatMul",
    "Conv",
    "ConvTranspose",
    "QLinearConv",
    "QLinearMatMul",
    "MatMulInteger",
    "ConvInteger",
    "QGemm",  # com.microsoft, from onnxruntime's QOperator quantization
)

_SCOPES_KEY = "pkg.torch.onnx.name_scopes"
LAYER_MAP_KEY = "onnxscope.layer_map"  # written by converters/: node → layer, weight → parameter (JSON)
_CLASSES_KEY = "pkg.torch.onnx.class_hierarchy"


def _literal_list(text: str | None) -> list[str]:
    if not text:
        return []
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return []
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else []


def attr(node: ir.Node, name: str, default: Any) -> Any:
    """A node attribute's value, or ``default`` when the node does not set it.

    Example:
        >>> import onnx_ir as ir
        >>> attr(ir.Node("", "Gemm", [], attributes=[ir.AttrInt64("transB", 1)]), "transB", 0)
        1
    """
    a = node.attributes.get(name)
    return default if a is None else a.value


def layer_map_of(model: ir.Model) -> dict[str, Any]:
    """The converters' layer map stored in a model's metadata (``{}`` when there is none or it is unreadable).

    Example:
        >>> import onnx_ir as ir
        >>> layer_map_of(ir.Model(ir.Graph([], [], nodes=[]), ir_version=10))
        {}
    """
    text = model.metadata_props.get(LAYER_MAP_KEY)
    if not text:
        return {}
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    if not isinstance(value, dict):
        return {}
    out: dict[str, Any] = {k: v for k, v in value.items() if k not in ("nodes", "weights", "layers")}
    nodes = value.get("nodes")  # node name → framework layer (strings only: anything else is not a map)
    out["nodes"] = {k: v for k, v in nodes.items() if isinstance(v, str)} if isinstance(nodes, dict) else {}
    weights = value.get("weights")  # ONNX weight → {"param": framework parameter name, …}
    out["weights"] = (
        {k: v for k, v in weights.items() if isinstance(v, dict) and isinstance(v.get("param", ""), str)}
        if isinstance(weights, dict)
        else {}
    )
    layers = value.get("layers")
    out["layers"] = layers if isinstance(layers, dict) else {}
    return out


def label(node: ir.Node) -> str:
    """A node's name, or its first output's name when the node is unnamed (as onnx.parser leaves them).

    Example:
        >>> import onnx_ir as ir
        >>> n = ir.Node("", "Relu", [], num_outputs=1); n.outputs[0].name = "r"
        >>> label(n)
        'r'
    """
    if node.name:
        return node.name
    return next((v.name for v in node.outputs if v.name), node.op_type)


def attention_probs_name(node_label: str) -> str:
    """The tensor name capture gives the probabilities it asks a fused ONNX ``Attention`` node to output.

    Example:
        >>> attention_probs_name("layer0/attn")
        'layer0/attn/attention_probs'
    """
    return f"{node_label}/attention_probs"


def module_path_of(node: ir.Node) -> str | None:
    """The framework module path a node came from, or ``None`` when the exporter left no trace.

    Reads the dynamo exporter's ``pkg.torch.onnx.name_scopes`` metadata, else TorchScript-style node names
    (``/layer1/layer1.0/conv1/Conv`` → ``layer1.0.conv1``), else tf2onnx scopes (``model/dense/MatMul`` →
    ``model/dense``).

    Example:
        >>> import onnx_ir as ir
        >>> module_path_of(ir.Node("", "Conv", [], name="/layer1/layer1.0/conv1/Conv"))
        'layer1.0.conv1'
    """
    scopes = _literal_list(node.metadata_props.get(_SCOPES_KEY))
    if len(scopes) >= 2:
        return scopes[-2]
    name = node.name or ""
    if name.startswith("/"):
        path = ""
        for part in name.strip("/").split("/")[:-1]:
            path = part if (not path or part.startswith(path + ".")) else f"{path}.{part}"
        return path
    if "/" in name:
        return name.rsplit("/", 1)[0]
    return None


def subgraphs(node: ir.Node) -> list[tuple[str, ir.Graph]]:
    """The bodies of a control-flow node as ``(tag, graph)``: ``then_branch``, ``body``, ``branches.0``…

    The one place that enumerates bodies; the tag is the middle part of a body tensor's name.

    Example:
        >>> import onnx_ir as ir
        >>> body = ir.Graph([], [], nodes=[])
        >>> [t for t, _ in subgraphs(ir.Node("", "Loop", [], attributes=[ir.AttrGraph("body", body)]))]
        ['body']
    """
    out: list[tuple[str, ir.Graph]] = []
    for name, a in node.attributes.items():
        if a.type == ir.AttributeType.GRAPH:
            out.append((name, a.value))
        elif a.type == ir.AttributeType.GRAPHS:
            out.extend((f"{name}.{i}", g) for i, g in enumerate(a.value))
    return out


@dataclass(frozen=True)
class Scope:
    """One level of nesting: the control-flow node (by path), its op, and the body's tag (``then_branch``…)."""

    node: str
    op: str
    attr: str


class Entry(NamedTuple):
    """One node of the model as the walker meets it (graph order, bodies right after their node).

    ``path`` names the node (``loop/body/add`` inside bodies), ``prefix`` is what the names of tensors of its
    graph start with, ``parent`` the path of the enclosing control-flow node, ``scopes`` the enclosing bodies
    (outermost first) and ``conditions`` the ``(condition tensor, branch)`` pairs under which an If branch runs.
    """

    path: str
    node: ir.Node
    prefix: str
    parent: str | None
    scopes: tuple[Scope, ...]
    conditions: tuple[tuple[str, bool], ...]


def dim_of(d: Any) -> int | str | None:
    """One dimension as onnxscope shows it: an int (``-1``/``0`` stay as declared), a symbolic name, or ``None``.

    Example:
        >>> import onnx_ir as ir
        >>> [dim_of(d) for d in ir.Shape([2, "batch", None])]
        [2, 'batch', None]
    """
    if isinstance(d, int):
        return d
    if isinstance(d, ir.SymbolicDim):
        return d.value or None
    return None


class Graph:
    """Look-ups over an ``onnx_ir.Model``; the base of :class:`onnxscope.Model`.

    Names are ONNX node and tensor names; :meth:`layer` also accepts a weight name or a framework module path.
    """

    def __init__(self, model: ir.Model, path: str | os.PathLike[str] | None = None) -> None:
        if not _sorted(model):  # graphs as some converters write them: put the node lists in order, once
            try:
                model.graph.sort()  # subgraphs too; nothing but the order of the node lists changes
            except ValueError as e:
                from onnxscope.errors import ModelLoadError

                raise ModelLoadError(f"the graph has a cycle, so no node order can compute it: {e}") from e
        self.ir = model
        self.path = os.fspath(path) if path is not None else None
        # analysis results kept beside the model, never written into it (keyed by id() of onnx_ir objects)
        self._types: dict[int, tuple[ir.DataType | None, tuple[int | str | None, ...] | None]] | None = None
        self._kinds: dict[int, str] = {}  # values that are sequences, optionals, maps (not tensors)

    # -- the walker and the names -----------------------------------------------------------------------
    @cached_property
    def entries(self) -> list[Entry]:
        """Every node, subgraph bodies included, in graph order (see :class:`Entry`); built once."""
        out: list[Entry] = []
        prefixes: dict[int, str] = {id(self.ir.graph): ""}

        def walk(
            graph: ir.Graph,
            prefix: str,
            parent: str | None,
            scopes: tuple[Scope, ...],
            conds: tuple[tuple[str, bool], ...],
        ) -> None:
            prefixes[id(graph)] = prefix
            for node in graph:
                path = prefix + label(node)
                out.append(Entry(path, node, prefix, parent, scopes, conds))
                for tag, sub in subgraphs(node):
                    c = conds
                    if node.op_type == "If" and node.inputs and node.inputs[0] is not None:
                        c = (*conds, (self._name(node.inputs[0], prefixes), tag == "then_branch"))
                    walk(sub, f"{path}/{tag}/", path, (*scopes, Scope(path, node.op_type, tag)), c)

        walk(self.ir.graph, "", None, (), ())
        self.__dict__["_prefixes"] = prefixes
        return out

    @property
    def prefixes(self) -> dict[int, str]:
        """``id(body graph)`` → the prefix of its tensors' names (``""`` for the main graph)."""
        if "_prefixes" not in self.__dict__:
            _ = self.entries
        return self.__dict__["_prefixes"]  # type: ignore[no-any-return]

    @staticmethod
    def _name(v: ir.Value, prefixes: dict[int, str]) -> str:
        if v.graph is None or v.is_initializer():
            return v.name or ""
        return prefixes.get(id(v.graph), "") + (v.name or "")

    def tensor_name(self, v: ir.Value) -> str:
        """A tensor's name everywhere in onnxscope (views, captures, stores): its ONNX name at the top level,
        ``node/tag/name`` inside a body (``loop/body/h``). Initializers keep their own name.

        Example:
            >>> import onnxscope
            >>> from onnxscope.testing import mlp_model
            >>> m = onnxscope.Model(mlp_model())
            >>> m.tensor_name(m.value("h"))
            'h'
        """
        return self._name(v, self.prefixes)

    # -- nodes and values -------------------------------------------------------------------------------
    @property
    def nodes(self) -> list[ir.Node]:
        """The top-level graph's nodes in order."""
        return list(self.ir.graph)

    def all_nodes(self) -> Iterator[ir.Node]:
        """Every node, subgraph bodies (If/Loop/Scan) included."""
        return iter(ir.traversal.RecursiveGraphIterator(self.ir.graph))

    @cached_property
    def _nodes_by_name(self) -> dict[str, ir.Node]:
        return {n.name: n for n in self.all_nodes() if n.name}

    @cached_property
    def _values_by_name(self) -> dict[str, ir.Value]:
        out: dict[str, ir.Value] = {}
        for g in self.ir.graphs():
            for v in (*g.inputs, *g.initializers.values()):
                if v.name:
                    out.setdefault(v.name, v)
            for n in g:
                for v in n.outputs:
                    if v.name:
                        out.setdefault(v.name, v)
        return out

    def node(self, name: str) -> ir.Node:
        """The node called ``name``; :class:`NotFoundError` names close matches otherwise."""
        try:
            return self._nodes_by_name[name]
        except KeyError:
            raise NotFoundError(f"no node {name!r}; {closest(name, self._nodes_by_name)}") from None

    def value(self, name: str) -> ir.Value:
        """The tensor (graph input, initializer or node output) called ``name``."""
        try:
            return self._values_by_name[name]
        except KeyError:
            raise NotFoundError(f"no tensor {name!r}; {closest(name, self._values_by_name)}") from None

    def has_value(self, name: str) -> bool:
        """Whether a tensor called ``name`` exists anywhere in the model."""
        return name in self._values_by_name

    def opset(self, domain: str = "") -> int:
        """The imported opset version of ``domain`` (the default ONNX domain unless given)."""
        return int(self.ir.opset_imports.get(domain, self.ir.opset_imports.get("ai.onnx", 0)))

    # -- shapes -----------------------------------------------------------------------------------------
    def _inferred(self) -> dict[int, tuple[ir.DataType | None, tuple[int | str | None, ...] | None]]:
        """Element types and shapes from ONNX shape inference (with data propagation), run once on a copy so
        the model itself is never changed; keyed by ``id()`` of this model's values."""
        if self._types is not None:
            return self._types
        from onnxscope._load import infer_types

        types: dict[int, tuple[ir.DataType | None, tuple[int | str | None, ...] | None]] = {}
        inferred = infer_types(self.ir) if _sorted(self.ir) else None
        if inferred is not None:
            for og, cg in zip(self.ir.graphs(), inferred.graphs(), strict=False):
                known = {v.name: v for v in (*cg.inputs, *cg.initializers.values())}
                for node in cg:
                    known.update((v.name, v) for v in node.outputs)
                values = [*og.inputs, *og.initializers.values(), *(v for n in og for v in n.outputs)]
                for ov in values:
                    cv = known.get(ov.name)
                    if cv is None:
                        continue
                    shape = None if cv.shape is None else tuple(dim_of(d) for d in cv.shape)
                    types[id(ov)] = (cv.dtype, shape)
                    if cv.type is not None and not isinstance(cv.type, ir.TensorType):
                        self._kinds[id(ov)] = type(cv.type).__name__.removesuffix("Type").lower()
        self._types = types
        return types

    def shape(self, value: ir.Value) -> tuple[int | str | None, ...] | None:
        """The static shape of ``value`` (ints, symbolic names, ``None`` for unknown dims), or ``None``.

        The shape the model carries first; where it is missing or less precise, what ONNX shape inference finds
        (run once, on demand, on a clone: the model is never changed, so answers do not depend on query order).

        Example:
            >>> import onnxscope
            >>> from onnxscope.testing import mlp_model
            >>> m = onnxscope.Model(mlp_model())
            >>> m.shape(m.value("h")), m.ir.graph.node(0).outputs[0].shape is None
            (('batch', 16), True)
        """
        if value.const_value is not None:
            return tuple(int(d) for d in value.const_value.shape)
        carried = None if value.shape is None else tuple(dim_of(d) for d in value.shape)
        if carried is not None and all(isinstance(d, int) and d > 0 for d in carried):
            return carried
        inferred = self._inferred().get(id(value), (None, None))[1]
        if carried is None or inferred is None or len(inferred) != len(carried):
            return inferred if carried is None else carried
        return tuple(_better(c, i) for c, i in zip(carried, inferred, strict=True))

    def dtype(self, value: ir.Value) -> ir.DataType | None:
        """The element type of ``value``: declared, else from ONNX type inference (on a clone, as :meth:`shape`).

        Example:
            >>> import onnxscope
            >>> from onnxscope.testing import mlp_model
            >>> m = onnxscope.Model(mlp_model())
            >>> m.dtype(m.value("a")).name
            'FLOAT'
        """
        if value.dtype is not None:
            return value.dtype
        if value.const_value is not None:
            return value.const_value.dtype
        return self._inferred().get(id(value), (None, None))[0]

    def kind(self, value: ir.Value) -> str:
        """``"tensor"``, or what else the value is (``"sequence"``, ``"optional"``, ``"map"``…), declared or inferred.

        Example:
            >>> import onnxscope
            >>> from onnxscope.testing import mlp_model
            >>> m = onnxscope.Model(mlp_model())
            >>> m.kind(m.value("a"))
            'tensor'
        """
        if value.type is not None:
            if isinstance(value.type, ir.TensorType):
                return "tensor"
            return type(value.type).__name__.removesuffix("Type").lower()
        if not self._has_non_tensors:
            return "tensor"  # no op of the model makes anything else: no inference needed to know
        self._inferred()
        return self._kinds.get(id(value), "tensor")

    @cached_property
    def _has_non_tensors(self) -> bool:
        """Whether some node makes a sequence, optional or map (or calls a function, which might)."""
        return any(
            e.node.op_type in _NON_TENSOR_OPS or e.node.domain not in ("", "ai.onnx", "com.microsoft")
            for e in self.entries
        ) or bool(self.ir.functions)

    def set_types(
        self, found: dict[int, tuple[ir.DataType | None, tuple[int | str | None, ...] | None]]
    ) -> None:
        """Add element types and shapes learned elsewhere (e.g. from onnxruntime) to the analysis cache."""
        types = self._inferred()
        for key, (dt, shape) in found.items():
            old_dt, old_shape = types.get(key, (None, None))
            types[key] = (old_dt or dt, old_shape if old_shape is not None else shape)

    # -- framework names --------------------------------------------------------------------------------
    @cached_property
    def layer_map(self) -> dict[str, Any]:
        """The converters' map stored in the model (``{"framework", "nodes", "weights", "layers"}``), or ``{}``."""
        return layer_map_of(self.ir)

    def module_of(self, node: ir.Node) -> str | None:
        """The framework layer a node came from: the stored layer map first, else the exporter's names."""
        mapped = self.layer_map.get("nodes", {}).get(node.name or "")
        return mapped if mapped is not None else module_path_of(node)

    @cached_property
    def module_paths(self) -> dict[str, list[ir.Node]]:
        """Framework module path → the nodes exported from it (empty when the exporter left no names)."""
        out: dict[str, list[ir.Node]] = {}
        for n in self.all_nodes():
            path = self.module_of(n)
            if path:
                out.setdefault(path, []).append(n)
        return out

    def module_nodes(self, path: str) -> list[ir.Node]:
        """The nodes exported from framework module ``path`` or its sub-modules, in graph order (no Constants).

        Example:
            >>> import onnx_ir as ir
            >>> n = ir.Node("", "Conv", [], name="/layer1/layer1.0/conv1/Conv")
            >>> g = Graph(ir.Model(ir.Graph([], [], nodes=[n]), ir_version=10))
            >>> [x.name for x in g.module_nodes("layer1.0")]
            ['/layer1/layer1.0/conv1/Conv']
        """
        out = []
        for n in self.all_nodes():
            p = self.module_of(n)
            if p is not None and (p == path or p.startswith(path + ".")) and n.op_type != "Constant":
                out.append(n)
        return out

    def layer(self, name: str) -> ir.Node:
        """Resolve a layer name to its weighted node.

        ``name`` may be a node name, an output tensor name, a weight (initializer) name, or a framework module
        path such as ``"0"`` or ``"layer1.0.conv1"``. Raises :class:`NotFoundError` listing close names.
        """
        if name in self._nodes_by_name:
            return self._nodes_by_name[name]
        for onnx_name, info in self.layer_map.get("weights", {}).items():  # a framework parameter name
            if info.get("param") == name and onnx_name in self._values_by_name:
                name = onnx_name
                break
        value = self._values_by_name.get(name)
        if value is not None:
            if value.producer() is not None and value.producer().op_type != "Constant":
                return value.producer()
            users = self.weighted_users(value)
            if len(users) == 1:
                return users[0]
            if len(users) > 1:
                names = ", ".join(repr(u.name) for u in users)
                raise NotFoundError(
                    f"weight {name!r} is shared by several layers ({names}); name one of them"
                )
        nodes = [n for n in self.module_paths.get(name, []) if n.op_type in WEIGHTED_OPS]
        if not nodes:  # a module path whose weight name tells it, e.g. "fc" for "fc.weight" on a folded node
            nodes = [
                n
                for n in self.all_nodes()
                if n.op_type in WEIGHTED_OPS
                and any(v is not None and (v.name or "").startswith(name + ".") for v in n.inputs[1:])
            ]
        if len(nodes) == 1:
            return nodes[0]
        if len(nodes) > 1:
            names = ", ".join(repr(n.name) for n in nodes)
            raise NotFoundError(f"module {name!r} has several weighted nodes ({names}); name one of them")
        weighted = [n for n in self.all_nodes() if n.op_type in WEIGHTED_OPS]
        inits = (k for g in self.ir.graphs() for k in g.initializers)
        pool = [*(label(n) for n in weighted), *self._nodes_by_name, *self.module_paths, *inits]
        raise NotFoundError(f"no layer {name!r}; {closest(name, pool)}")

    def weighted_users(self, value: ir.Value) -> list[ir.Node]:
        """The weighted nodes (Gemm, Conv, …) that consume ``value``, looking through Q/DQ, Cast, Transpose…"""
        seen: list[ir.Node] = []
        stack = [value]
        while stack:
            v = stack.pop()
            for user, _ in v.uses():
                if user.op_type in WEIGHTED_OPS:
                    if user not in seen:
                        seen.append(user)
                elif user.op_type in WEIGHT_TRANSFORMS:
                    stack.extend(user.outputs)
        return seen


_NON_TENSOR_OPS = frozenset(
    {
        "SequenceConstruct",
        "SequenceEmpty",
        "SequenceInsert",
        "SequenceErase",
        "SplitToSequence",
        "SequenceMap",
        "Optional",
        "OptionalGetElement",
        "Loop",
        "Scan",
        "If",
        "ZipMap",
        "CastMap",
        "DictVectorizer",
    }
)


def _sorted(model: ir.Model) -> bool:
    """Whether every graph lists a node after the nodes it reads from (what onnx_ir's clone needs)."""
    for g in model.graphs():
        seen: set[int] = set()
        for node in g:
            for v in node.inputs:
                if (
                    v is not None
                    and v.graph is g
                    and v.producer() is not None
                    and id(v.producer()) not in seen
                ):
                    return False
            seen.add(id(node))
    return True


def _better(carried: int | str | None, inferred: int | str | None) -> int | str | None:
    """Per dimension: a known size beats a name, a name beats nothing (declared ``-1``/``0`` count as unknown)."""
    if isinstance(carried, int) and carried > 0:
        return carried
    if isinstance(inferred, int) and inferred > 0:
        return inferred
    if isinstance(carried, str):
        return carried
    return inferred if inferred is not None else carried


# Ops that only re-encode a constant weight on its way to the layer that uses it.
WEIGHT_TRANSFORMS = frozenset(
    {"DequantizeLinear", "QuantizeLinear", "Identity", "Cast", "Transpose", "Reshape", "Squeeze", "Unsqueeze"}
)
