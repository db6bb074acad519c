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
from functools import cached_property
from typing import Any

import onnx_ir as ir

from onnxscope.errors import NotFoundError, closest

__all__ = ["WEIGHTED_OPS", "Graph", "attention_probs_name", "attr", "label", "layer_map_of", "module_path_of"]

# Operators whose output units (neurons / channels) own a row of incoming weights.
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
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


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


class Graph:
    """Look-ups over an ``onnx_ir.Model``; the base of :class:`onnxscope.Model`.

    Names are ONNX node and tensor names; :meth:`layer` also accepts a weight name or a framework module path.
    """

    def __init__(self, model: ir.Model, path: str | os.PathLike[str] | None = None) -> None:
        self.ir = model
        self.path = os.fspath(path) if path is not None else None
        self._shapes_inferred = False

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
    def shape(self, value: ir.Value) -> tuple[int | str | None, ...] | None:
        """The static shape of ``value`` (ints, symbolic names, ``None`` for unknown dims), or ``None``.

        Runs ONNX shape inference once, on demand, if the model carries no shape for the value; inference
        works on models over 2 GB because ``onnx_ir`` strips large initializers before calling it.
        """
        if value.shape is None and value.const_value is not None:
            return tuple(int(d) for d in value.const_value.shape)
        if value.shape is None and not self._shapes_inferred:
            self._shapes_inferred = True
            from onnx_ir.passes.common import ShapeInferencePass

            ShapeInferencePass(strict_mode=False)(self.ir)
        if value.shape is None:
            return None
        return tuple(
            d if isinstance(d, int) else (d.value if isinstance(d, ir.SymbolicDim) else None)
            for d in value.shape
        )

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


# Ops that only re-encode a constant weight on its way to the layer that uses it.
WEIGHT_TRANSFORMS = frozenset(
    {"DequantizeLinear", "QuantizeLinear", "Identity", "Cast", "Transpose", "Reshape", "Squeeze", "Unsqueeze"}
)
