"""Path questions over the graph, answered with networkx: what lies between this tensor and that one?

Two views of a model, built once and cached on it:

- :func:`op_graph` — a ``networkx.MultiDiGraph`` whose nodes are ONNX nodes (by path: ``loop/body/add`` inside
  subgraphs) and whose edges are tensors (``key`` and ``tensor`` attribute = the tensor's name). A node inside an
  If/Loop/Scan body also has an edge to its control-flow node, so reachability crosses body boundaries.
- :func:`tensor_graph` — a ``networkx.DiGraph`` whose nodes are tensors and whose edges are the ONNX nodes that
  turn one into another (``node`` and ``op`` attributes).

Every function takes a :class:`~onnxscope.graph.Graph` (a :class:`onnxscope.Model`) first, like networkx's.

Example:
    >>> import onnxscope
    >>> from onnxscope.testing import mlp_model
    >>> m = onnxscope.Model(mlp_model())
    >>> shortest_path(m, "x", "y")
    ['x', 'h', 'a', 'y']
    >>> sorted(between(m, ["h"], ["y"]).nodes)
    ['fc2', 'relu']
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import networkx as nx

from onnxscope._ir import ir
from onnxscope.errors import InputError, NoPathError, NotFoundError, closest
from onnxscope.graph import Graph, subgraphs

__all__ = [
    "Subgraph",
    "all_paths",
    "ancestors",
    "between",
    "data_graph",
    "descendants",
    "extract",
    "op_graph",
    "shortest_path",
    "tensor_graph",
    "tensor_name",
]


def _cache(graph: Graph) -> dict[str, object]:
    cache = graph.__dict__.setdefault("_paths_cache", {})
    return cache  # type: ignore[no-any-return]


def op_graph(graph: Graph) -> nx.MultiDiGraph:
    """ONNX nodes as networkx nodes (attributes ``op``, ``domain``, ``module``), tensors as keyed edges.

    Example:
        >>> import onnxscope
        >>> from onnxscope.testing import mlp_model
        >>> g = op_graph(onnxscope.Model(mlp_model()))
        >>> list(g.edges(keys=True))
        [('fc1', 'relu', 'h'), ('relu', 'fc2', 'a')]
    """
    cache = _cache(graph)
    if "op" in cache:
        return cache["op"]  # type: ignore[return-value]
    from onnxscope.graph import module_path_of

    g = nx.MultiDiGraph()
    producer: dict[int, str] = {}
    entries = graph.entries
    for path, node, _, parent, _, _ in entries:
        g.add_node(path, op=node.op_type, domain=node.domain, module=module_path_of(node), parent=parent)
        for v in node.outputs:
            producer[id(v)] = path
    for path, node, _, parent, _, _ in entries:
        for v in node.inputs:
            if v is not None and id(v) in producer:
                g.add_edge(producer[id(v)], path, key=v.name, tensor=v.name)
        if parent is not None:
            for v in node.outputs:
                if v.is_graph_output():
                    g.add_edge(path, parent, key=v.name, tensor=v.name)
    cache["op"] = g
    return g


def tensor_graph(graph: Graph, data_only: bool = False) -> nx.DiGraph:
    """Tensors as networkx nodes; an edge ``a → b`` for each ONNX node reading ``a`` and writing ``b``.

    Each computed tensor has ``node`` and ``op`` attributes naming its producer; the edges of the full view carry
    them too. With ``data_only``, edges out of ``Shape`` and ``Size`` are left out (and edges carry no
    attributes): a tensor computed from another's shape alone does not carry its values — used to tell real data
    flow from mask and index bookkeeping. Tensors inside subgraph bodies are named by path (``loop/body/t``).
    """
    cache = _cache(graph)
    key = "tensor-data" if data_only else "tensor"
    if key in cache:
        return cache[key]  # type: ignore[return-value]
    name = graph.tensor_name
    tensor_nodes: list[tuple[str, dict[str, object]]] = [
        (name(v), {"kind": "input"}) for v in graph.ir.graph.inputs
    ]
    edges: list[tuple] = []
    known: set[str] = {t for t, _ in tensor_nodes}
    for path, node, *_ in graph.entries:
        outs = [name(v) for v in node.outputs if v.name]
        for o in outs:
            tensor_nodes.append((o, {"kind": "tensor", "node": path, "op": node.op_type}))
            known.add(o)
        if data_only and node.op_type in ("Shape", "Size"):
            continue
        attrs = {"node": path, "op": node.op_type}
        for _, body in subgraphs(node):  # a body's outputs flow into its control-flow node's outputs
            for v in body.outputs:
                for o in outs:
                    edges.append((name(v), o) if data_only else (name(v), o, attrs))
        for v in node.inputs:
            if v is None or not v.name:
                continue
            src = name(v)
            if src not in known:
                tensor_nodes.append((src, {"kind": "initializer" if v.is_initializer() else "input"}))
                known.add(src)
            for o in outs:
                edges.append((src, o) if data_only else (src, o, attrs))
    g = nx.DiGraph()
    g.add_nodes_from(tensor_nodes)
    g.add_edges_from(edges)
    cache[key] = g
    return g


def tensor_name(graph: Graph, v: ir.Value) -> str:
    """A tensor's name in the views: its ONNX name at the top level, ``node/attr/name`` inside bodies.

    Example:
        >>> import onnxscope
        >>> from onnxscope.testing import mlp_model
        >>> m = onnxscope.Model(mlp_model())
        >>> tensor_name(m, m.value("h"))
        'h'
    """
    return graph.tensor_name(v)


def data_graph(graph: Graph) -> nx.DiGraph:
    """:func:`tensor_graph` with ``data_only=True``."""
    return tensor_graph(graph, data_only=True)


def _kind(graph: Graph, name: str) -> str:
    if name in tensor_graph(graph):
        return "tensor"
    if name in op_graph(graph):
        return "node"
    pool = [*tensor_graph(graph).nodes, *op_graph(graph).nodes]
    raise NotFoundError(f"no tensor or node {name!r}; {closest(name, pool)}")


def _view(graph: Graph, *names: str) -> tuple[nx.DiGraph | nx.MultiDiGraph, list[str]]:
    kinds = {_kind(graph, n) for n in names}
    if kinds == {"tensor"}:
        return tensor_graph(graph), list(names)
    g = op_graph(graph)
    mapped = []
    for n in names:  # mixed: a tensor stands for its producing node (or, for a graph input, is refused)
        if n in g:
            mapped.append(n)
            continue
        node = tensor_graph(graph).nodes[n].get("node")
        if node is None:
            raise InputError(f"{n!r} is a graph input or weight; pair it with another tensor, not a node")
        mapped.append(node)
    return g, mapped


def all_paths(graph: Graph, source: str, target: str, limit: int | None = 100) -> Iterator[list[str]]:
    """Simple paths from ``source`` to ``target`` (both tensors, or both nodes), shortest first, at most ``limit``.

    Example:
        >>> import onnxscope
        >>> from onnxscope.testing import mlp_model
        >>> list(all_paths(onnxscope.Model(mlp_model()), "fc1", "fc2"))
        [['fc1', 'relu', 'fc2']]
    """
    g, (s, t) = _view(graph, source, target)
    paths = nx.shortest_simple_paths(nx.DiGraph(g), s, t)
    try:
        first = next(paths)
    except nx.NetworkXNoPath:
        raise NoPathError(f"no path from {source!r} to {target!r}") from None
    return itertools.islice(itertools.chain([first], paths), limit)


def shortest_path(graph: Graph, source: str, target: str) -> list[str]:
    """The shortest path from ``source`` to ``target``; :class:`NoPathError` if none."""
    g, (s, t) = _view(graph, source, target)
    try:
        return nx.shortest_path(g, s, t)
    except nx.NetworkXNoPath:
        raise NoPathError(f"no path from {source!r} to {target!r}") from None


def ancestors(graph: Graph, name: str) -> set[str]:
    """Every tensor (for a tensor) or node (for a node) that ``name`` depends on."""
    g, (n,) = _view(graph, name)
    return nx.ancestors(g, n)


def descendants(graph: Graph, name: str) -> set[str]:
    """Every tensor (for a tensor) or node (for a node) that depends on ``name``."""
    g, (n,) = _view(graph, name)
    return nx.descendants(g, n)


@dataclass(frozen=True)
class Subgraph:
    """What lies between some tensors and others: the nodes on any path, and the tensors they compute."""

    nodes: frozenset[str]
    tensors: frozenset[str]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def between(graph: Graph, inputs: Iterable[str], outputs: Iterable[str]) -> Subgraph:
    """The nodes and tensors on paths from any of ``inputs`` to any of ``outputs`` (all tensor names)."""
    g = tensor_graph(graph)
    ins, outs = list(inputs), list(outputs)
    for n in (*ins, *outs):
        if n not in g:
            raise NotFoundError(f"no tensor {n!r}; {closest(n, g.nodes)}")
    down = set(ins).union(*(nx.descendants(g, n) for n in ins))
    up = set(outs).union(*(nx.ancestors(g, n) for n in outs))
    tensors = (down & up) - set(ins)
    if not tensors:
        raise NoPathError(f"nothing lies between {ins} and {outs}: no path connects them")
    nodes = {g.nodes[t]["node"] for t in tensors if "node" in g.nodes[t]}
    return Subgraph(frozenset(nodes), frozenset(tensors), tuple(ins), tuple(outs))


def extract(graph: Graph, inputs: Iterable[str], outputs: Iterable[str], path: str | os.PathLike[str]) -> str:
    """Write the sub-model computing ``outputs`` from ``inputs`` to ``path`` as a runnable ONNX model.

    Weights stay lazy (memory-mapped) until written; they go to ``<path>.data`` beside the model, so models over
    2 GB work (where ``onnx.utils.extract_model`` fails). Returns ``path``.

    Example:
        >>> import onnxscope, tempfile, os
        >>> from onnxscope.testing import mlp_model
        >>> p = extract(onnxscope.Model(mlp_model()), ["h"], ["y"], os.path.join(tempfile.mkdtemp(), "tail.onnx"))
        >>> [n.op_type for n in onnxscope.load(p).nodes]
        ['Relu', 'Gemm']
    """
    from onnxscope.render import atomic_write

    ins, outs = list(inputs), list(outputs)
    for n in (*ins, *outs):
        if not graph.has_value(n):
            raise NotFoundError(f"no tensor {n!r}; {closest(n, tensor_graph(graph).nodes)}")
    try:
        sub = ir.convenience.extract(graph.ir.graph, ins, outs)
    except (ValueError, RuntimeError) as e:  # onnx_ir refuses, e.g., an output that is also an input
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"cannot extract {ins} → {outs}: {reason}") from e
    model = ir.Model(sub, ir_version=graph.ir.ir_version, producer_name="onnxscope.extract")
    target = os.fspath(path)
    data = os.path.basename(target) + ".data"
    folder = os.path.dirname(os.path.abspath(target))

    def write(tmp: str) -> None:
        # both files are written under temporary names, then renamed: weights first, the model last
        staged = tempfile.mkdtemp(dir=folder, prefix=".onnxscope-")
        try:
            ir.save(model, os.path.join(staged, "model.onnx"), external_data=data)
            if os.path.exists(os.path.join(staged, data)):
                os.replace(os.path.join(staged, data), os.path.join(folder, data))
            os.replace(os.path.join(staged, "model.onnx"), tmp)
        finally:
            shutil.rmtree(staged, ignore_errors=True)

    return atomic_write(target, write)
