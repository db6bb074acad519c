"""Recomputation on read: tensors that onnxruntime's optimizations removed, rebuilt from captured ones.

At the deployed optimization level onnxruntime fuses nodes (a Conv with its activation, a LayerNorm, a GELU, an
attention block, a QDQ pair into an int8 kernel…), and the tensors between the fused nodes never exist. Marking them
as outputs would undo the fusions, so capture does not: it captures what survives and, when one of the others is
read, runs *the original nodes* that compute it — the smallest sub-graph whose inputs are captured tensors, model
inputs or weights — as a small model of its own. Tensors that share nodes are recomputed together (one :class:`Part`).

Fused attention ops that ship in the model (onnxruntime's ``Attention``, ``MultiHeadAttention``,
``GroupQueryAttention``) never expose their probabilities; those are rebuilt by an equivalent decomposed
sub-graph (``softmax(Q·Kᵀ·scale + bias + mask)``) run on the fused node's captured inputs.

This module only plans and builds the sub-models; running them is the run-time part's job.

Example:
    >>> import onnxscope
    >>> from onnxscope.testing import mlp_model
    >>> m = onnxscope.Model(mlp_model())
    >>> r = Recompute(m, [m.value("a")], available=lambda v: v.name in ("x", "h"))
    >>> r.parts[0].outputs, r.parts[0].feeds, [n.op_type for n in r.parts[0].model(m).graph]
    (['a'], ['h'], ['Relu'])
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from onnxscope._ir import ir
from onnxscope.graph import WEIGHTED_OPS, Graph, attr, subgraphs
from onnxscope.weights import const_array, is_const

__all__ = ["Part", "Recompute", "attention_probs_nodes"]


@dataclass
class Part:
    """One recomputation: the original ``nodes`` (all of one graph: the main graph or an If branch) computing
    ``outputs`` from ``feeds`` (tensor names as captures name them).

    ``virtual`` maps an attention-probabilities name to the fused node whose decomposition computes it;
    ``conditions`` are the ``(condition tensor, branch)`` pairs under which the nodes run (If branches): when a
    condition does not hold, the tensors were never computed and are not recomputed either.
    """

    outputs: list[str]
    feeds: list[str]
    nodes: list[ir.Node]
    initializers: list[ir.Value]
    virtual: dict[str, ir.Node] = field(default_factory=dict)
    conditions: tuple[tuple[str, bool], ...] = ()
    targets: list[ir.Value] = field(default_factory=list)  # the values of ``outputs`` (virtual ones excluded)
    feed_values: list[ir.Value] = field(default_factory=list)  # the values of ``feeds``
    heavy: bool = False  # runs a weighted op (Conv, MatMul…) or an attention decomposition
    _model: ir.Model | None = None

    def model(self, graph: Graph, dtypes: Mapping[str, np.dtype] | None = None) -> ir.Model:
        """The sub-model (built once): inputs are the feeds (typed by ``dtypes``, the arrays that will be fed,
        where the model does not say), outputs the recomputed tensors."""
        if self._model is None:
            self._model = _build(graph, self, dtypes or {})
        return self._model


def _nested(node: ir.Node) -> set[int]:
    """``id()`` of every graph inside a control-flow node's bodies, at any depth."""
    out: set[int] = set()
    for _, sub in subgraphs(node):
        out.add(id(sub))
        for inner in ir.traversal.RecursiveGraphIterator(sub):
            for _, deeper in subgraphs(inner):
                out.add(id(deeper))
    return out


def _inputs(node: ir.Node) -> list[ir.Value]:
    """What a node reads: its inputs and, for control flow, the outer values its bodies read."""
    direct = [v for v in node.inputs if v is not None and v.name]
    subs = subgraphs(node)
    if not subs:
        return direct
    inside = _nested(node)
    for _, sub in subs:
        for inner in ir.traversal.RecursiveGraphIterator(sub):
            direct.extend(v for v in inner.inputs if v is not None and v.name and id(v.graph) not in inside)
    return direct


class Recompute:
    """Plan how each value in ``targets`` (of the main graph or of an If branch) is recomputed from values
    ``available`` at run time (captured tensors and model inputs); values of enclosing graphs are read as they
    are captured or recomputed themselves. ``virtual`` adds attention probabilities of fused nodes."""

    def __init__(
        self,
        graph: Graph,
        targets: Sequence[ir.Value],
        available: Callable[[ir.Value], bool],
        virtual: Mapping[str, ir.Node] | None = None,
    ) -> None:
        name_of = graph.tensor_name
        where = {id(e.node): e for e in graph.entries}
        order = {id(e.node): i for i, e in enumerate(graph.entries)}
        part_of_node: dict[tuple[int, int], int] = {}
        parts: list[dict | None] = []
        wanted: list[tuple[str, ir.Node | None, list[ir.Value], ir.Graph | None]] = []
        for v in targets:
            if v.producer() is not None and v.name:
                wanted.append((name_of(v), None, [v], v.graph))
        for name, node in (virtual or {}).items():
            wanted.append((name, node, [i for i in node.inputs if i is not None and i.name], node.graph))
        for name, fused, starts, home in wanted:
            nodes: dict[int, ir.Node] = {}
            feeds: dict[str, ir.Value] = {}
            inits: dict[int, ir.Value] = {}
            stack: list[ir.Value] = []
            for v in starts:
                if fused is None:
                    producer = v.producer()
                    assert producer is not None
                    nodes[id(producer)] = producer
                    stack.extend(_inputs(producer))
                else:
                    stack.append(v)
            while stack:
                v = stack.pop()
                if v.is_initializer() and not (v.is_graph_input() and available(v)):
                    inits[id(v)] = v
                    continue
                producer = v.producer()
                # a constant of an enclosing graph is computed in the sub-model, even where the run has it (at
                # "disable" every main-graph tensor survives, but a Constant node's output is never captured)
                outer_const = v.graph is not home and producer is not None and is_const(v)
                if not outer_const and (v.graph is not home or available(v) or producer is None):
                    feeds[name_of(v)] = v  # captured, a model input, or a value of an enclosing graph
                    continue
                if id(producer) in nodes:
                    continue
                nodes[id(producer)] = producer
                stack.extend(_inputs(producer))
            entry = where.get(id(fused if fused is not None else starts[0].producer()))
            heavy = fused is not None or any(n.op_type in WEIGHTED_OPS for n in nodes.values())
            part = {
                "outputs": [name],
                "targets": [starts[0]] if fused is None else [],
                "feeds": dict(feeds),
                "nodes": dict(nodes),
                "inits": dict(inits),
                "virtual": {name: fused} if fused is not None else {},
                "conditions": entry.conditions if entry is not None else (),
                "heavy": heavy,
            }
            # parts of one graph merge when they share nodes — a light part (dequantizations, activations…) only
            # with light ones, so that reading it never runs a Conv another tensor needs (shared light nodes are
            # then computed twice when both are read, which costs little)
            keys = {(id(home), heavy, k) for k in nodes}
            for i in sorted({part_of_node[k] for k in keys if k in part_of_node}):
                old = parts[i]
                if old is None:
                    continue
                part["outputs"] = old["outputs"] + part["outputs"]
                part["targets"] = old["targets"] + part["targets"]
                for key in ("feeds", "nodes", "inits", "virtual"):
                    part[key].update(old[key])
                parts[i] = None
            parts.append(part)
            for k in part["nodes"]:
                part_of_node[(id(home), heavy, k)] = len(parts) - 1
        self.parts: list[Part] = []
        for p in parts:
            if p is None:
                continue
            nodes = sorted(p["nodes"].values(), key=lambda n: order.get(id(n), -1))
            produced = {id(v) for n in nodes for v in n.outputs}
            feeds = {k: v for k, v in p["feeds"].items() if id(v) not in produced}
            self.parts.append(
                Part(
                    outputs=p["outputs"],
                    feeds=list(feeds),
                    nodes=nodes,
                    initializers=list(p["inits"].values()),
                    virtual=p["virtual"],
                    conditions=p["conditions"],
                    targets=p["targets"],
                    feed_values=list(feeds.values()),
                    heavy=p["heavy"],
                )
            )
        self.part_of = {name: i for i, part in enumerate(self.parts) for name in part.outputs}

    def combined(self, graph: Graph, names: Collection[str] | None = None) -> Part | None:
        """Every part of the main graph that runs unconditionally (or those computing ``names``), as one — to
        recompute them all in one run; ``None`` when there are fewer than two. With ``names``, only those are its
        outputs (the others of their parts are not written, and fusions between them stay). Built once per set."""
        cache = self.__dict__.setdefault("_combined", {})
        chosen = range(len(self.parts)) if names is None else sorted({self.part_of[n] for n in names})
        keep = None if names is None else frozenset(names)
        key = (tuple(chosen), keep)
        if key not in cache and len(cache) >= 8:  # sets asked for once: the oldest goes
            del cache[next(iter(cache))]
        if key not in cache:
            top = graph.ir.graph
            parts = [
                p
                for p in (self.parts[i] for i in chosen)
                if not p.conditions and all(n.graph is top for n in p.nodes)
            ]
            order = {id(e.node): i for i, e in enumerate(graph.entries)}
            combined = None
            if len(parts) > 1:
                unique = {id(n): n for p in parts for n in p.nodes}  # light and heavy parts may share nodes
                nodes = sorted(unique.values(), key=lambda n: order.get(id(n), -1))
                feeds: dict[str, ir.Value] = {}
                for p in parts:
                    feeds.update(zip(p.feeds, p.feed_values, strict=True))
                plain = [
                    (o, t)
                    for p in parts
                    for o, t in zip([o for o in p.outputs if o not in p.virtual], p.targets, strict=True)
                    if keep is None or o in keep
                ]
                virtual = {k: v for p in parts for k, v in p.virtual.items() if keep is None or k in keep}
                combined = Part(
                    outputs=[o for o, _ in plain] + list(virtual),
                    feeds=list(feeds),
                    nodes=nodes,
                    initializers=list({id(v): v for p in parts for v in p.initializers}.values()),
                    virtual=virtual,
                    targets=[t for _, t in plain],
                    feed_values=list(feeds.values()),
                    heavy=any(p.heavy for p in parts),
                )
            cache[key] = combined
        return cache[key]  # type: ignore[no-any-return]

    @property
    def feeds(self) -> set[str]:
        """Every tensor some part reads at run time (each must be captured, recomputed or a model input)."""
        return {f for p in self.parts for f in p.feeds}

    def __contains__(self, name: object) -> bool:
        return name in self.part_of


def _build(graph: Graph, part: Part, dtypes: Mapping[str, np.dtype]) -> ir.Model:
    feeds = part.feed_values
    plain = list(part.targets)
    inside = {id(v) for n in part.nodes for v in n.outputs}
    extra: list[ir.Value] = []  # fused nodes' inputs computed in the sub-model, handed to the decomposition
    for fused in part.virtual.values():
        extra += [v for v in fused.inputs if v is not None and id(v) in inside and v not in plain + extra]
    view = ir.GraphView(
        feeds,
        plain + extra,
        nodes=part.nodes,
        initializers=part.initializers,
        opset_imports=dict(graph.ir.opset_imports),
        name="onnxscope_recompute",
    )
    sub = view.clone()
    for original, v, name in zip(feeds, sub.inputs, part.feeds, strict=True):
        v.name = name  # as captures name it: values of different graphs may share a plain name
        if v.type is None or v.dtype is None:  # onnxruntime wants every input typed
            dt = graph.dtype(original)
            if dt is None and name in dtypes:
                dt = ir.DataType.from_numpy(dtypes[name])
            if dt is not None:
                v.type = ir.TensorType(dt)
        if v.shape is None:  # the rank, at least, tells the decompositions which form an input has
            shape = graph.shape(original)
            if shape is not None:
                v.shape = ir.Shape([d if isinstance(d, int) and d > 0 else None for d in shape])
    plain_names = [o for o in part.outputs if o not in part.virtual]
    for v, name in zip(sub.outputs[: len(plain)], plain_names, strict=True):
        v.name = name
    if part.virtual:
        known = {id(o): c for o, c in zip(feeds, sub.inputs, strict=True)}
        known.update((id(o), c) for o, c in zip(plain + extra, sub.outputs, strict=True))
        inits = {v.name: v for v in sub.initializers.values()}
        del sub.outputs[len(plain) :]
        for name, fused in part.virtual.items():
            inputs: list[ir.Value | None] = []
            for v in fused.inputs:
                if v is None or not v.name:
                    inputs.append(None)
                elif id(v) in known:
                    inputs.append(known[id(v)])
                else:
                    inputs.append(inits.get(v.name))
            nodes, probs = attention_probs_nodes(fused, inputs, name)
            sub.extend(nodes)
            sub.outputs.append(probs)
    return ir.Model(
        sub,
        ir_version=max(int(graph.ir.ir_version), 8),
        producer_name="onnxscope.recompute",
        functions=list(graph.ir.functions.values()),
    )


# ---- fused attention, decomposed --------------------------------------------------------------------------


class _Builder:
    """Appends plain ONNX nodes that mean the same in every opset from 11 on (the sub-model keeps the model's
    opsets, since its original nodes must mean what they meant); names derive from the result's name."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: list[ir.Node] = []

    def _out(self, node: ir.Node, tag: str) -> ir.Value:
        node.outputs[0].name = f"{self.prefix}/{tag}{len(self.nodes)}"
        self.nodes.append(node)
        return node.outputs[0]

    def const(self, array: object, dtype: object = np.int64) -> ir.Value:
        value = ir.AttrTensor("value", ir.tensor(np.asarray(array, dtype=dtype)))
        return self._out(ir.Node("", "Constant", [], attributes=[value], num_outputs=1), "c")

    def op(self, op: str, *inputs: ir.Value | None, **attrs: object) -> ir.Value:
        attributes: list[ir.Attr] = []
        for k, a in attrs.items():
            if isinstance(a, float):
                attributes.append(ir.AttrFloat32(k, a))
            elif isinstance(a, int):
                attributes.append(ir.AttrInt64(k, a))
            else:
                attributes.append(ir.AttrInt64s(k, [int(i) for i in a]))  # type: ignore[attr-defined]
        return self._out(ir.Node("", op, list(inputs), attributes=attributes, num_outputs=1), op.lower())

    def dims(self, x: ir.Value, start: int, end: int) -> ir.Value:
        """``Shape(x)[start:end]`` as a 1-D int64 tensor."""
        return self.op("Slice", self.op("Shape", x), self.const([start]), self.const([end]), self.const([0]))

    def dim(self, x: ir.Value, axis: int) -> ir.Value:
        """``Shape(x)[axis]`` as a 0-D int64 tensor (a negative axis counts from the end)."""
        return self.op("Gather", self.op("Shape", x), self.const(axis), axis=0)

    def heads(self, x: ir.Value, heads: int) -> ir.Value:
        """[B, S, H*d] → [B, H, S, d]."""
        r = self.op("Reshape", x, self.const([0, 0, heads, -1]))
        return self.op("Transpose", r, perm=[0, 2, 1, 3])

    def last(self, x: ir.Value, start: int, end: int) -> ir.Value:
        """``x[..., start:end]``."""
        return self.op("Slice", x, self.const([start]), self.const([end]), self.const([-1]))


def _float_attr(node: ir.Node, name: str) -> float | None:
    a = node.attributes.get(name)
    return None if a is None else float(a.value)


def attention_probs_nodes(
    node: ir.Node, inputs: list[ir.Value | None], name: str
) -> tuple[list[ir.Node], ir.Value]:
    """Plain ONNX nodes computing the attention probabilities ``[batch, heads, query, key]`` of a fused
    onnxruntime attention ``node`` from ``inputs`` (the fused node's inputs, as values of the new graph).

    Covered: ``Attention`` (packed QKV weights and bias, ``qkv_hidden_sizes``, ``mask_index`` as [batch] lengths
    or a [batch, total] 0/1 mask, ``past``, ``attention_bias``, ``unidirectional``, ``scale``),
    ``MultiHeadAttention`` (Q/K/V as [batch, seq, hidden] or K/V as [batch, heads, seq, head_size], packed
    ``bias``, ``key_padding_mask`` as lengths or [batch, total], ``attention_bias``, ``past_key``,
    ``unidirectional``, ``scale``) and ``GroupQueryAttention`` with
    separate Q/K/V and no rotary embedding (causal; past key; KV heads repeated for their query heads).

    Raises:
        UnsupportedError: a form of the op this decomposition does not cover (the message names it).

    Example:
        >>> import onnx_ir as ir
        >>> q, k, v = (ir.Value(name=n) for n in "qkv")
        >>> n = ir.Node("com.microsoft", "MultiHeadAttention", [q, k, v], attributes=[ir.AttrInt64("num_heads", 2)])
        >>> nodes, probs = attention_probs_nodes(n, [q, k, v], "mha/attention_probs")
        >>> probs.name, nodes[-1].op_type
        ('mha/attention_probs', 'Softmax')
    """
    from onnxscope.errors import UnsupportedError

    op, label = node.op_type, f"{node.domain}::{node.op_type} {node.name!r}"
    b = _Builder(name)
    x = list(inputs) + [None] * (12 - len(inputs))
    heads = int(attr(node, "num_heads", 0))
    if heads <= 0:
        raise UnsupportedError(f"{label}: no num_heads attribute, so the heads are unknown")
    scale = _float_attr(node, "scale")
    causal = bool(attr(node, "unidirectional", 0))
    key_mask = bias_add = past_k = None
    kv_heads = heads
    head_dim: int | None = None
    if op == "Attention":
        if x[0] is None or x[1] is None:
            raise UnsupportedError(f"{label}: the input or the packed QKV weights are missing")
        if x[6] is not None or x[7] is not None:
            raise UnsupportedError(f"{label}: past_sequence_length/relative bias inputs are not decomposed")
        sizes = attr(node, "qkv_hidden_sizes", None)
        if sizes is None:
            w = x[1].shape
            if w is None or not isinstance(w[-1], int):
                raise UnsupportedError(f"{label}: the packed weight's shape is unknown")
            sizes = [int(w[-1]) // 3] * 3
        proj = b.op("MatMul", x[0], x[1])
        if x[2] is not None:
            proj = b.op("Add", proj, x[2])
        q = b.heads(b.last(proj, 0, sizes[0]), heads)
        k = b.heads(b.last(proj, sizes[0], sizes[0] + sizes[1]), heads)
        if x[4] is not None:  # past: [2, B, H, P, d]
            past_k = b.op("Gather", x[4], b.const(0), axis=0)
        if x[3] is not None:
            if x[3].shape is not None and len(x[3].shape) > 2:
                raise UnsupportedError(
                    f"{label}: only [batch] lengths or a [batch, total] 0/1 mask_index is decomposed"
                )
            key_mask = x[3]
        bias_add = x[5]
        head_dim = int(sizes[0]) // heads
    elif op in ("MultiHeadAttention", "GroupQueryAttention"):
        q_in, k_in = x[0], x[1]
        if op == "GroupQueryAttention":
            kv_heads = int(attr(node, "kv_num_heads", heads))
            if attr(node, "do_rotary", 0):
                raise UnsupportedError(
                    f"{label}: do_rotary=1 (rotary embedding inside the op) is not decomposed"
                )
            if k_in is None or x[2] is None:
                raise UnsupportedError(f"{label}: packed QKV is not decomposed")
            if attr(node, "local_window_size", -1) not in (-1, None) or _float_attr(node, "softcap"):
                raise UnsupportedError(f"{label}: local_window_size/softcap are not decomposed")
            past_k, causal = x[3], True
        else:
            if k_in is None or x[2] is None:
                raise UnsupportedError(f"{label}: packed QKV is not decomposed")
            if x[3] is not None and q_in is not None:  # bias [3*hidden]: Q's and K's parts
                h = b.op("Reshape", b.dim(q_in, -1), b.const([1]))
                q_in = b.op("Add", q_in, b.op("Slice", x[3], b.const([0]), h, b.const([0])))
                if k_in.shape is None or len(k_in.shape) == 3:
                    two = b.op("Mul", h, b.const([2]))
                    k_in = b.op("Add", k_in, b.op("Slice", x[3], h, two, b.const([0])))
            key_mask, bias_add, past_k = x[4], x[5], x[6]
            if key_mask is not None and key_mask.shape is not None and len(key_mask.shape) > 2:
                raise UnsupportedError(
                    f"{label}: only [batch] lengths or a [batch, total] key_padding_mask is decomposed"
                )
        if q_in is None:
            raise UnsupportedError(f"{label}: no query input")
        if q_in.shape is not None and isinstance(q_in.shape[-1], int):
            head_dim = int(q_in.shape[-1]) // heads
        q = b.heads(q_in, heads)
        k = k_in if k_in.shape is not None and len(k_in.shape) == 4 else b.heads(k_in, kv_heads)
    else:
        raise UnsupportedError(f"{label}: not a fused attention op onnxscope decomposes")
    if past_k is not None:
        k = b.op("Concat", past_k, k, axis=2)
    if kv_heads != heads:  # grouped: each K head serves heads // kv_heads query heads
        five = b.op("Concat", b.dims(k, 0, 2), b.const([1]), b.dims(k, 2, 4), axis=0)  # [B, kvH, 1, T, d]
        wide = b.op("Concat", b.dims(k, 0, 2), b.const([heads // kv_heads]), b.dims(k, 2, 4), axis=0)
        k = b.op("Expand", b.op("Reshape", k, five), wide)
        k = b.op("Reshape", k, b.op("Concat", b.dims(k, 0, 1), b.const([heads]), b.dims(k, 3, 5), axis=0))
    dt = _dtype_of(inputs)
    scores = b.op("MatMul", q, b.op("Transpose", k, perm=[0, 1, 3, 2]))
    if scale:
        factor = b.const(scale, dt)
    elif head_dim is not None:
        factor = b.const(1.0 / np.sqrt(head_dim), dt)
    else:
        d = b.op("Cast", b.dim(q, 3), to=int(ir.DataType.from_numpy(np.dtype(dt))))
        factor = b.op("Reciprocal", b.op("Sqrt", d))
    scores = b.op("Mul", scores, factor)
    if bias_add is not None:
        scores = b.op("Add", scores, bias_add)
    low = b.const(np.finfo(dt).min, dt)
    if (
        key_mask is not None
    ):  # [B, T]: nonzero keeps a key; [B]: each batch's length, keys past it are padding
        rank = len(key_mask.shape) if key_mask.shape is not None else None
        if rank == 1:
            cols = b.op("Reshape", b.op("Range", b.const(0), b.dim(scores, 3), b.const(1)), b.const([1, -1]))
            lengths = b.op("Reshape", b.op("Cast", key_mask, to=int(ir.DataType.INT64)), b.const([-1, 1]))
            keep = b.op("Reshape", b.op("Less", cols, lengths), b.const([0, 1, 1, -1]))
        else:
            m = b.op("Reshape", key_mask, b.op("Concat", b.dims(key_mask, 0, 1), b.const([1, 1, -1]), axis=0))
            keep = b.op("Cast", m, to=int(ir.DataType.BOOL))
        scores = b.op("Where", keep, scores, low)
    if causal:  # query i (of S, the last S of T) sees keys j <= i + T - S
        s_len, t_len = b.dim(scores, 2), b.dim(scores, 3)
        rows = b.op("Reshape", b.op("Range", b.const(0), s_len, b.const(1)), b.const([-1, 1]))
        cols = b.op("Reshape", b.op("Range", b.const(0), t_len, b.const(1)), b.const([1, -1]))
        ahead = b.op("Greater", b.op("Sub", cols, rows), b.op("Sub", t_len, s_len))
        scores = b.op("Where", ahead, low, scores)
    probs = b.op("Softmax", scores, axis=-1)
    probs.name = name
    return b.nodes, probs


def _dtype_of(inputs: list[ir.Value | None]) -> type:
    for v in inputs:
        if v is not None and v.dtype is not None and v.dtype.is_floating_point():
            return v.dtype.numpy().type
    return np.float32


def fold(value: ir.Value) -> np.ndarray | None:
    """A tensor computed from weights alone, folded from the (memory-mapped) weights; ``None`` if it is not."""
    found = const_array(value)
    return None if found is None else np.asarray(found[0])
