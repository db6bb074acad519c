"""Structure found in the graph: residual (skip) connections and attention blocks, as small frozen results.

Both searches run on the data-flow view (:func:`onnxscope.paths.data_graph`: tensors computed from another's
*shape* alone do not count as depending on its values), so masks and position indices built from an input's
shape are not mistaken for skip connections.

Example:
    >>> import onnxscope
    >>> from onnxscope.testing import mlp_model
    >>> find_residuals(onnxscope.Model(mlp_model()))
    []
"""

from __future__ import annotations

import heapq
from dataclasses import asdict, dataclass
from typing import Any

import networkx as nx
import numpy as np

from onnxscope._ir import ir
from onnxscope.graph import FUSED_ATTENTION_OPS, Graph, attention_probs_name, attr
from onnxscope.paths import data_graph
from onnxscope.weights import const_array, is_const

__all__ = ["AttentionBlock", "Residual", "find_attention", "find_residuals"]

# Ops that make a branch a "layer" (a residual must skip over at least one of them).
LAYER_OPS = frozenset(
    {
        "Conv",
        "ConvTranspose",
        "Gemm",
        "MatMul",
        "Einsum",
        "ConvInteger",
        "MatMulInteger",
        "QLinearConv",
        "QLinearMatMul",
        "QGemm",
        "Attention",
        "MultiHeadAttention",
        "GroupQueryAttention",
        "LSTM",
        "GRU",
        "RNN",
    }
)
_MERGES = {"Add": "residual", "Sum": "residual", "Concat": "dense"}
# what makes a Concat input "computed from" another for a dense connection: layers, and pooling (SPPF)
_DENSE_OPS = LAYER_OPS | {"MaxPool", "AveragePool", "LpPool"}
_BUDGET = 200_000


@dataclass(frozen=True)
class Residual:
    """A skip connection: ``fork`` feeds both the ``main`` branch and the ``skip`` branch, joined at ``merge``.

    ``skip`` is empty for an identity shortcut; ``projection`` says it holds a layer (e.g. a 1x1 Conv).
    ``kind`` is ``"residual"`` for Add/Sum and ``"dense"`` for Concat. ``inputs`` are the merge's inputs that
    depend on the model's inputs (all of them, for an n-ary Concat); the main branch reported is the longest.
    """

    fork: str
    merge: str
    main: tuple[str, ...]
    skip: tuple[str, ...]
    kind: str
    projection: bool
    inputs: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


class _Index:
    """Topological order and the set of input-dependent tensors of the data-flow view."""

    def __init__(self, graph: Graph) -> None:
        self.g = data_graph(graph)
        # ONNX requires nodes in topological order: number tensors by their producer's position
        position = {e.path: i for i, e in enumerate(graph.entries)}
        self.order = {t: position[d["node"]] if "node" in d else -1 for t, d in self.g.nodes(data=True)}
        if any(self.order[u] >= self.order[v] for u, v in self.g.edges()):  # not sorted after all
            self.order = {t: i for i, t in enumerate(nx.topological_sort(self.g))}
        sources = [n for n, d in self.g.nodes(data=True) if d.get("kind") == "input"]
        self.dynamic: set[str] = set(sources)
        for s in sources:
            self.dynamic |= nx.descendants(self.g, s)

    def lca(self, a: str, b: str) -> str | None:
        """The latest tensor both ``a`` and ``b`` depend on (topological order), or None."""
        if a == b:
            return a
        order, g = self.order, self.g
        side = {a: 1, b: 2}
        heap = [(-order[a], a), (-order[b], b)]
        heapq.heapify(heap)
        count = {1: 1, 2: 1}  # tensors in the heap that carry each side's mark
        budget = _BUDGET
        while heap and count[1] and count[2] and budget:
            _, t = heapq.heappop(heap)
            s = side[t]
            for bit in (1, 2):
                count[bit] -= bool(s & bit)
            if s == 3:
                return t
            for p in g.predecessors(t):
                if p not in self.dynamic:  # weights and constants are no fork
                    continue
                old = side.get(p, 0)
                new = old | s
                if new != old:
                    side[p] = new
                    for bit in (1, 2):
                        count[bit] += bool(new & bit) and not (old & bit)
                    if old == 0:
                        heapq.heappush(heap, (-order[p], p))
            budget -= 1
        return None

    def branch(self, fork: str, end: str) -> list[str]:
        """Tensors on paths from ``fork`` to ``end`` (``end`` included, ``fork`` not), in topological order."""
        if end == fork:
            return []
        lo = self.order[fork]
        back, stack = {end}, [end]
        while stack:
            t = stack.pop()
            for p in self.g.predecessors(t):
                if p not in back and self.order.get(p, -1) > lo:
                    back.add(p)
                    stack.append(p)
        reach, stack = set(), [fork]
        while stack:
            t = stack.pop()
            for s in self.g.successors(t):
                if s in back and s not in reach:
                    reach.add(s)
                    stack.append(s)
        return sorted(reach, key=self.order.__getitem__)


def _nodes_of(g: nx.DiGraph, tensors: list[str]) -> tuple[str, ...]:
    out: list[str] = []
    for t in tensors:
        n = g.nodes[t].get("node")
        if n is not None and n not in out:
            out.append(n)
    return tuple(out)


def find_residuals(graph: Graph) -> list[Residual]:
    """Every skip connection: an Add/Sum (residual) or a Concat (dense) merging a tensor with something computed
    from it through a layer (Conv, MatMul, Gemm, attention, LSTM…; for Concat also pooling, as in SPPF).

    Every input of an n-ary merge is considered. A merge counts when

    - one input is an ancestor of another through a layer op (an *identity* shortcut: ``x + f(x)``, the dense
      ``Concat(x, f(x), g(f(x)))`` of DenseNet and YOLO's C2f), or
    - for Add/Sum only, two inputs meet at a common fork and the main branch holds a layer (a *projection*
      shortcut when the other branch holds one too, as in ResNet's downsampling blocks and FPN merges).

    Not counted: Concats of parallel heads (no input an ancestor of another: detection heads, an LSTM's h and c),
    adds that broadcast one input over the other (attention masks), bias adds, adds of independent inputs, and
    element-wise formulas such as GELU's ``x + 0.044715·x³`` (no layer on the way).

    Example:
        >>> import onnxscope
        >>> from onnxscope.testing import mlp_model
        >>> find_residuals(onnxscope.Model(mlp_model()))
        []
    """
    idx = _Index(graph)
    tg = idx.g
    name = graph.tensor_name
    entries = graph.entries
    op_of = {e.path: e.node.op_type for e in entries}

    def layers(nodes: tuple[str, ...], dense: bool = False) -> int:
        ops = _DENSE_OPS if dense else LAYER_OPS
        return sum(op_of[n] in ops for n in nodes)

    out: list[Residual] = []
    for path, node, *_ in entries:
        kind = _MERGES.get(node.op_type)
        if kind is None or node.domain not in ("", "ai.onnx"):
            continue
        values = {name(v): v for v in node.inputs if v is not None and v.name}
        dyn = [t for t in values if t in idx.dynamic]
        if len(dyn) < 2:
            continue
        if kind == "residual" and _broadcasts(graph, [values[t] for t in dyn]):
            continue
        dyn.sort(key=idx.order.__getitem__)
        best: tuple[int, str, tuple[str, ...]] | None = None
        for i, a in enumerate(dyn):  # an ancestor shortcut: a feeds b through a layer
            for b in dyn[i + 1 :]:
                main = _nodes_of(tg, idx.branch(a, b))
                if main and layers(main, kind == "dense") and (best is None or len(main) > best[0]):
                    best = (len(main), a, main)
        if best is not None:
            _, fork, main = best
            out.append(Residual(fork, path, main, (), kind, False, tuple(dyn)))
            continue
        if kind == "dense":
            continue  # parallel branches concatenated: heads, not a dense connection
        for i, a in enumerate(dyn):
            for b in dyn[i + 1 :]:
                fork = idx.lca(a, b)
                if fork is None:
                    continue
                skip, main = sorted(
                    (_nodes_of(tg, idx.branch(fork, a)), _nodes_of(tg, idx.branch(fork, b))),
                    key=lambda nodes: (layers(nodes), len(nodes)),
                )
                if layers(main) and (best is None or len(main) > best[0]):
                    best = (len(main), fork, main)
                    found = Residual(fork, path, main, skip, kind, layers(skip) > 0, tuple(dyn))
        if best is not None:
            out.append(found)
    return out


def _broadcasts(graph: Graph, values: list[ir.Value]) -> bool:
    """Whether an element-wise merge broadcasts one input over another: ranks differ, or one axis has two known
    sizes (e.g. an attention mask ``[batch, 1, q, k]`` added to scores ``[batch, heads, q, k]``)."""
    shapes = [s for s in (graph.shape(v) for v in values) if s is not None]
    for a in shapes:
        for b in shapes:
            if len(a) != len(b):
                return True
            if any(
                isinstance(x, int) and isinstance(y, int) and x > 0 and y > 0 and x != y
                for x, y in zip(a, b, strict=True)
            ):
                return True
    return False


@dataclass(frozen=True)
class AttentionBlock:
    """One attention block.

    ``query``/``key``/``value`` are the tensors the scores and the weighted sum are computed from (per-head
    layout as the model has them); ``probabilities`` is the softmax output ([batch, heads, query, key] or a
    flattened variant; for fused ops, the output onnxscope's capture adds); ``w_q``… name the projection weights
    when they are initializers.
    """

    name: str
    op: str
    fused: bool
    query: str | None
    key: str | None
    value: str | None
    probabilities: str | None
    scores: str | None
    mask: str | None
    heads: int | None
    causal: bool | None
    w_q: str | None = None
    w_k: str | None = None
    w_v: str | None = None
    w_o: str | None = None
    output: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


_SCORE_OPS = frozenset(
    {
        "Add",
        "Where",
        "Div",
        "Mul",
        "Cast",
        "Reshape",
        "Sub",
        "Identity",
        "Tanh",
        "Squeeze",
        "Unsqueeze",
        "Transpose",
    }
)
_PROB_OPS = frozenset(
    {"Dropout", "Cast", "Identity", "Where", "Reshape", "Squeeze", "Unsqueeze", "Transpose"}
)
# Ops between a projection and the attention MatMuls: layout changes (whose data is input 0) and scalings.
_DATA_FIRST = frozenset(
    {
        "Transpose",
        "Reshape",
        "Cast",
        "Split",
        "Slice",
        "Gather",
        "Squeeze",
        "Unsqueeze",
        "Identity",
        "Expand",
        "SplitToSequence",
        "SequenceAt",
    }
)
_LAYOUT_OPS = _DATA_FIRST | {"Div", "Mul", "Add", "Concat"}
FUSED_ATTENTION = {
    ("", "Attention"),
    ("com.microsoft", "Attention"),
    ("com.microsoft", "MultiHeadAttention"),
    ("com.microsoft", "GroupQueryAttention"),
    ("com.microsoft", "PackedMultiHeadAttention"),
}


def _producer(v: ir.Value | None) -> ir.Node | None:
    return None if v is None else v.producer()


def _dynamic(v: ir.Value | None) -> bool:
    return v is not None and not is_const(v)


def _scores_source(v: ir.Value) -> tuple[ir.Node | None, ir.Value | None]:
    """Walk back from the softmax input to the Q·Kᵀ MatMul/Einsum; also return a mask operand if one is added."""
    mask = None
    for _ in range(8):
        node = _producer(v)
        if node is None:
            return None, mask
        if node.op_type in ("MatMul", "Einsum") and sum(_dynamic(i) for i in node.inputs) >= 2:
            return node, mask
        if node.op_type not in _SCORE_OPS:
            return None, mask
        data = [i for i in node.inputs if _dynamic(i)]
        if node.op_type in ("Add", "Where") and len(data) == 1 and mask is None:
            consts = [i for i in node.inputs if i is not None and not _dynamic(i)]
            if consts and node.op_type == "Add" or len(consts) == 2:
                mask = consts[0]  # a mask the exporter folded into a constant (static sequence length)
        if node.op_type in ("Add", "Where") and len(data) >= 2:
            # the scores continue along the operand that reaches a MatMul; the other is the mask
            ranked = sorted(data, key=lambda i: _reaches_matmul(i))
            mask, v = ranked[0], ranked[-1]
            continue
        if not data:
            return None, mask
        v = data[0] if node.op_type != "Where" else data[-1]
    return None, mask


def _reaches_matmul(v: ir.Value, depth: int = 4) -> bool:
    node = _producer(v)
    if node is None or depth == 0:
        return False
    if node.op_type in ("MatMul", "Einsum"):
        return True
    return any(_reaches_matmul(i, depth - 1) for i in node.inputs if _dynamic(i))


def _probs_sink(v: ir.Value) -> tuple[ir.Node | None, int]:
    for _ in range(6):
        uses = [(u, i) for u, i in v.uses()]
        for u, i in uses:
            if u.op_type in ("MatMul", "Einsum"):
                return u, int(i)
        nxt = [u for u, _ in uses if u.op_type in _PROB_OPS]
        if not nxt:
            return None, -1
        v = nxt[0].outputs[0]
    return None, -1


def _projection(v: ir.Value | None, forward: bool = False) -> str | None:
    """The constant weight of the MatMul/Gemm that computes ``v`` (or, forward, that ``v`` feeds)."""
    frontier = [v]
    seen = 0
    while frontier and seen < 40:
        v = frontier.pop(0)
        seen += 1
        if v is None:
            continue
        nodes = [u for u, _ in v.uses()] if forward else [_producer(v)]
        for node in nodes:
            if node is None:
                continue
            if node.op_type in ("MatMul", "Gemm", "Einsum", "MatMulInteger", "QLinearMatMul", "QGemm"):
                for w in node.inputs:
                    if w is not None and is_const(w) and w.name:
                        return _weight_source(w)
                continue
            if node.op_type not in _LAYOUT_OPS:
                continue
            if forward:
                frontier.append(node.outputs[0])
            elif node.op_type in _DATA_FIRST:
                frontier.extend(node.inputs[:1])
            else:
                frontier.extend(i for i in node.inputs if _dynamic(i))
    return None


def _weight_source(w: ir.Value) -> str:
    """The stored tensor behind a weight: through Transpose, DequantizeLinear, Cast, Reshape and the scale of
    weight-only quantization (``Cast(q) · scale``: the larger operand)."""
    from onnxscope.weights import const_array as fold

    node = _producer(w)
    while node is not None:
        if node.op_type in ("Transpose", "DequantizeLinear", "Cast", "Identity", "Reshape"):
            w = node.inputs[0]
        elif (
            node.op_type in ("Mul", "Div") and len(node.inputs) == 2 and all(is_const(i) for i in node.inputs)
        ):
            found = fold(w)
            if found is None:
                break
            return found[1]
        else:
            break
        node = _producer(w)
    return w.name or ""


def _strip_layout(v: ir.Value | None) -> ir.Value | None:
    node = _producer(v)
    while node is not None and node.op_type == "Transpose" and node.inputs:
        v = node.inputs[0]
        node = _producer(v)
    return v


def _static(v: ir.Value | None) -> tuple[int | str | None, ...] | None:
    """The shape the model carries for ``v`` (no inference run), or a Reshape's constant target."""
    if v is None:
        return None
    if v.shape is not None:
        return tuple(d if isinstance(d, int) else None for d in v.shape)
    node = _producer(v)
    if node is not None and node.op_type == "Reshape" and len(node.inputs) > 1:
        found = const_array(node.inputs[1])
        if found is not None:
            return tuple(int(d) if int(d) > 0 else None for d in np.ravel(found[0]))
    return None


def _heads(graph: Graph, probs: ir.Value, q: ir.Value | None) -> int | None:
    # the exporter's shapes first; ONNX shape inference (once per model) only when the model carries none
    shape = _static(probs) if probs.shape is not None else graph.shape(probs)
    if shape is not None and len(shape) == 4 and isinstance(shape[1], int):
        return shape[1]
    for user, _ in probs.uses():  # [batch*heads, q, k] probabilities viewed as [batch, heads, q, k]
        if user.op_type == "Reshape":
            out = _static(user.outputs[0])
            if out is not None and len(out) == 4 and isinstance(out[1], int):
                return out[1]
    if q is not None and any(u.op_type == "MatMul" for u, _ in q.uses()):  # MatMul takes [batch, heads, s, d]
        replayed = _replayed_heads(graph, q)
        if replayed is not None:
            return replayed
    node = _producer(q)  # Q split into heads as [batch, seq, heads, head_dim] (an Einsum takes it as it is)
    for _ in range(6):
        if node is None:
            return None
        if node.op_type == "Reshape":
            target = _static(node.outputs[0])
            if target is not None and len(target) == 4 and isinstance(target[2], int):
                return target[2]
        node = _producer(
            node.inputs[0]
            if node.op_type in _DATA_FIRST
            else next((i for i in node.inputs if _dynamic(i)), None)
        )
    return None


_SAME_SHAPE = frozenset({"Mul", "Div", "Add", "Sub", "Cast", "Identity", "Dropout", "Sqrt"})


def _reshape_target(graph: Graph, node: ir.Node) -> list[int | None] | None:
    """A Reshape's target, with ``None`` where a size is not a positive constant: a constant, or a Concat of
    pieces that are constants or shape slices of known length (as Paddle and TorchScript exporters write)."""
    found = const_array(node.inputs[1]) if len(node.inputs) > 1 else None
    if found is not None:
        return [int(d) if int(d) > 0 else None for d in np.ravel(found[0])]
    cat = _producer(node.inputs[1] if len(node.inputs) > 1 else None)
    if cat is None or cat.op_type != "Concat":
        return None
    dims: list[int | None] = []
    for piece in cat.inputs:
        c = const_array(piece)
        if c is not None:
            dims += [int(d) if int(d) > 0 else None for d in np.ravel(c[0])]
            continue
        length = _length(graph, piece)
        if length is None:
            return None
        dims += [None] * length
    return dims


def _length(graph: Graph, v: ir.Value | None) -> int | None:
    """The length of a 1-D shape tensor: from its static shape, or a constant Slice of a Shape, or an Unsqueezed
    Gather of one element (looking through Cast)."""
    shape = graph.shape(v) if v is not None else None
    if shape is not None and len(shape) == 1 and isinstance(shape[0], int) and shape[0] >= 0:
        return shape[0]
    node = _producer(v)
    while node is not None and node.op_type in ("Cast", "Identity"):
        node = _producer(node.inputs[0])
    if node is None:
        return None
    if node.op_type == "Unsqueeze":
        inner = _producer(node.inputs[0])
        if inner is not None and inner.op_type == "Gather":
            c = const_array(inner.inputs[1]) if len(inner.inputs) > 1 else None
            return 1 if c is not None and np.ndim(c[0]) == 0 else None
    if node.op_type == "Slice" and len(node.inputs) >= 3:
        bounds = [const_array(i) for i in node.inputs[1:5] if i is not None]
        if len(bounds) < 2 or any(b is None for b in bounds):
            return None
        start, end = int(np.ravel(bounds[0][0])[0]), int(np.ravel(bounds[1][0])[0])  # type: ignore[index]
        step = int(np.ravel(bounds[3][0])[0]) if len(bounds) > 3 else 1  # type: ignore[index]
        if step == 1 and 0 <= start < end < 64:  # a few leading dims of a shape: the rank bounds nothing here
            return end - start
    return None


def _replayed_heads(graph: Graph, q: ir.Value | None) -> int | None:
    """The heads of ``q`` ([batch, heads, seq, head_dim]) from the Reshape that split them off, replayed through
    the layout ops between (Transpose, Gather/Slice/Split of a packed QKV, Squeeze/Unsqueeze, scaling)."""
    chain: list[ir.Node] = []
    node = _producer(q)
    while node is not None and len(chain) < 8 and node.op_type != "Reshape":
        if node.op_type not in _DATA_FIRST | _SAME_SHAPE:
            return None
        chain.append(node)
        node = _producer(
            node.inputs[0]
            if node.op_type in _DATA_FIRST
            else next((i for i in node.inputs if _dynamic(i)), None)
        )
    if node is None or node.op_type != "Reshape":
        return None
    dims = _reshape_target(graph, node)
    if dims is None:
        return None
    for n in reversed(chain):
        op, rank = n.op_type, len(dims)
        if op == "Transpose":
            perm = list(attr(n, "perm", list(range(rank))[::-1]))
            if len(perm) != rank:
                return None
            dims = [dims[p] for p in perm]
        elif op in ("Squeeze", "Unsqueeze"):
            axes = attr(n, "axes", None)
            if axes is None and len(n.inputs) > 1:
                c = const_array(n.inputs[1])
                axes = None if c is None else [int(a) for a in np.ravel(c[0])]
            if axes is None:
                return None
            if op == "Squeeze":
                drop = {int(a) % rank for a in axes}
                dims = [d for i, d in enumerate(dims) if i not in drop]
            else:
                for a in sorted(int(a) % (rank + len(axes)) for a in axes):
                    dims.insert(a, 1)
        elif op == "Gather":
            c = const_array(n.inputs[1]) if len(n.inputs) > 1 else None
            g = int(attr(n, "axis", 0)) % rank
            if c is None or np.ndim(c[0]) > 1:
                return None
            dims = dims[:g] + ([None] if np.ndim(c[0]) == 1 else []) + dims[g + 1 :]
        elif op in ("Slice", "Split"):
            axes = _sliced_axes(n, rank)
            dims = [None if i in axes else d for i, d in enumerate(dims)]
    if len(dims) == 4 and isinstance(dims[1], int):
        return dims[1]
    return None


def _sliced_axes(node: ir.Node, rank: int) -> set[int]:
    if node.op_type == "Split":
        return {int(attr(node, "axis", 0)) % rank}
    c = const_array(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] is not None else None
    if c is not None:
        return {int(a) % rank for a in np.ravel(c[0])}
    axes = attr(node, "axes", None)
    if axes is not None:
        return {int(a) % rank for a in axes}
    starts = const_array(node.inputs[1]) if len(node.inputs) > 1 else None
    return set(range(len(np.ravel(starts[0])))) if starts is not None else set(range(rank))


def _upstream(v: ir.Value | None, limit: int) -> list[ir.Node]:
    """Nodes that ``v`` depends on, nearest first, at most ``limit``."""
    out: list[ir.Node] = []
    seen: set[int] = set()
    frontier = [v]
    while frontier and len(out) < limit:
        node = _producer(frontier.pop(0))
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        out.append(node)
        frontier.extend(node.inputs)
    return out


def _causal(graph: Graph, mask: ir.Value | None) -> bool:
    """A mask is causal when it comes from a Trilu, or from comparing two index ranges (key ≤ query), or
    when it is a constant that keeps exactly the lower triangle."""
    if mask is not None and is_const(mask):
        found = const_array(mask)
        if found is None:
            return False
        a = np.asarray(found[0])
        if a.ndim < 2 or a.shape[-1] < 2:
            return False
        a = a.reshape(-1, *a.shape[-2:])[0]
        keep = a if a.dtype == bool else a > -1e4
        rows, cols = keep.shape
        return bool(np.array_equal(keep, np.tril(np.ones((rows, cols), bool), k=cols - rows)))
    for node in _upstream(mask, 400):
        if node.op_type == "Trilu":
            return True
        if node.op_type in ("Less", "LessOrEqual", "Greater", "GreaterOrEqual") and len(node.inputs) == 2:
            if all(any(n.op_type == "Range" for n in _upstream(i, 60)) for i in node.inputs):
                return True
    return False


def find_attention(graph: Graph) -> list[AttentionBlock]:
    """Every attention block: decomposed ``MatMul(Q, Kᵀ) → [scale] → [mask] → Softmax → [Dropout] →
    MatMul(·, V)`` (MatMul or Einsum, the layouts torch, tf2onnx and transformers produce) and fused ops (ONNX
    ``Attention`` from opset 23; onnxruntime's ``Attention``, ``MultiHeadAttention``, ``GroupQueryAttention``).
    """
    blocks: list[AttentionBlock] = []
    for path, node, prefix, _, scopes, _ in graph.entries:
        key = (node.domain if node.domain != "ai.onnx" else "", node.op_type)
        if key in FUSED_ATTENTION:
            blocks.append(_fused(graph, path, node, bool(scopes)))
            continue
        if node.op_type != "Softmax":
            continue
        qk, mask = _scores_source(node.inputs[0])
        if qk is None:
            continue
        pv, _ = _probs_sink(node.outputs[0])
        if pv is None:
            continue
        q, k = qk.inputs[0], qk.inputs[1]
        v = next((i for i in pv.inputs if i is not None and i is not pv.inputs[0]), None)
        if pv.inputs[0] is not None and _producer(pv.inputs[0]) is not None and pv.inputs[1] is not None:
            v = pv.inputs[1]
        probs = node.outputs[0]
        blocks.append(
            AttentionBlock(
                name=path,
                op="Softmax",
                fused=False,
                query=prefix + (q.name or "") if q is not None else None,
                key=prefix + (k.name or "") if k is not None else None,
                value=prefix + (v.name or "") if v is not None else None,
                probabilities=prefix + (probs.name or ""),
                scores=prefix + (node.inputs[0].name or ""),
                mask=prefix + (mask.name or "") if mask is not None else None,
                heads=_heads(graph, probs, q),
                causal=_causal(graph, mask),
                w_q=_projection(q),
                w_k=_projection(_strip_layout(k)),
                w_v=_projection(v),
                w_o=_projection(pv.outputs[0], forward=True),
                output=prefix + (pv.outputs[0].name or ""),
            )
        )
    return blocks


def _fused(graph: Graph, path: str, node: ir.Node, nested: bool) -> AttentionBlock:
    names = [None if v is None or not v.name else v.name for v in node.inputs] + [None] * 6
    first = node.inputs[0] if node.inputs else None
    out = node.outputs[0] if node.outputs else None
    heads = attr(node, "q_num_heads", None) or attr(node, "num_heads", None)
    if heads is None and first is not None:
        shape = _static(first)
        heads = shape[1] if shape is not None and len(shape) == 4 and isinstance(shape[1], int) else None
    causal = bool(
        attr(node, "is_causal", 0) or attr(node, "unidirectional", 0) or node.op_type == "GroupQueryAttention"
    )
    if not causal and node.op_type == "Attention" and node.domain in ("", "ai.onnx") and len(node.inputs) > 3:
        causal = _causal(graph, node.inputs[3])
    probs = None
    if node.domain in ("", "ai.onnx") and node.op_type == "Attention":
        probs = (
            node.outputs[3].name
            if len(node.outputs) > 3 and node.outputs[3].name
            else attention_probs_name(path)
        )
    elif (node.domain, node.op_type) in FUSED_ATTENTION_OPS and not nested and first is not None:
        probs = attention_probs_name(
            path
        )  # rebuilt on read by a decomposition of the op (onnxscope.recompute)
    packed = node.domain == "com.microsoft" and node.op_type == "Attention"
    return AttentionBlock(
        name=path,
        op=node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}",
        fused=True,
        query=names[0],
        key=None if packed else names[1],
        value=None if packed else names[2],
        probabilities=probs,
        scores=None,
        mask=names[3] if node.op_type == "Attention" and node.domain in ("", "ai.onnx") else None,
        heads=int(heads) if isinstance(heads, int) else None,
        causal=causal,
        w_q=names[1] if packed else _projection(first),
        w_k=names[1] if packed else _projection(node.inputs[1] if len(node.inputs) > 1 else None),
        w_v=names[1] if packed else _projection(node.inputs[2] if len(node.inputs) > 2 else None),
        w_o=_projection(out, forward=True),
        output=None if out is None else out.name,
    )
