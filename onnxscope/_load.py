"""The loading edge: the only module that touches raw ``onnx`` protobufs — and the only place a malformed model
can be refused, so that nothing downstream ever sees one.

A model is parsed without its external data; ``onnx_ir`` then memory-maps each external tensor on first use, so
opening a multi-gigabyte model reads only its graph. Before anything is returned, the protobuf is checked and
every defect a user's file can carry becomes a one-line :class:`~onnxscope.errors.ModelLoadError` naming the node,
tensor or value:

- the file itself: a regular file (a FIFO, device or directory is refused before it is opened), within the memory
  budget, a parseable ``ModelProto`` with a graph and an IR version;
- text: every string field valid UTF-8; opset imports with versions >= 1;
- tensors (initializers, Constant values, every attribute tensor): a defined element type, non-negative dims, and
  a payload whose size matches its shape (raw bytes, the typed field of its element type, or external data — not
  several), so no read ever allocates from a declared size or reshapes a short buffer;
- external data: well-formed entries (location without NUL bytes, decimal offset/length, length = the tensor's
  size); the file inside the model's folder (no ``../``, no absolute path, no symlink leading out), a regular file,
  long enough. Hard links are fine (the same containment is checked again when a tensor is first read);
- structure, in every graph and subgraph body: unique tensor producers, no input that nothing defines (graph
  inputs, initializers, any node's output, or a value of an enclosing graph), graph outputs that something
  produces, no cycle; nodes not in topological order are sorted (``onnx_ir``'s stable sort, bodies too);
- nodes of the ONNX domains: input/output counts within the operator's schema, required inputs and attributes
  present, attribute types as the schema declares them, If/Loop/Scan bodies whose inputs and outputs match the
  node; for ops of other domains that onnxscope interprets (QGemm, Attention…), the attributes it reads.

Lenient where real exporters are: unused initializers, initializers shadowing graph inputs (defaults), missing
value_info, unknown attributes, and value types it cannot use (an UNDEFINED element type, a negative dim) become
"unknown" rather than errors.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from onnxscope._files import kind_of, open_regular, read_regular
from onnxscope._ir import ir
from onnxscope.errors import ModelLoadError, OnnxscopeError, UnsupportedError
from onnxscope.limits import check_alloc

__all__ = [
    "check_external_data",
    "check_tensor_proto",
    "graph_contents",
    "infer_types",
    "iter_tensors",
    "load_ir",
    "model_from_proto",
    "proto_with_outputs",
    "read_tensor_pb",
    "resolve_external",
    "schema_input_names",
    "serialize_with_outputs",
    "tensor_nbytes",
]

T = onnx.TensorProto
A = onnx.AttributeProto
_DTYPES = frozenset(d.value for d in ir.DataType if d != ir.DataType.UNDEFINED)
_SCALAR_ATTRS = {A.FLOAT, A.INT, A.STRING}
_ATTR_FIELD = {A.TENSOR: "t", A.GRAPH: "g", A.SPARSE_TENSOR: "sparse_tensor", A.TYPE_PROTO: "tp"}
_VALID_ATTR_TYPES = frozenset(v for v in A.AttributeType.values() if v != A.UNDEFINED)
_ONNX_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training")
_TYPED_FIELDS = ("int32_data", "int64_data", "uint64_data", "float_data", "double_data", "string_data")
_FIELD_OF = {
    T.FLOAT: ("float_data", 1),
    T.COMPLEX64: ("float_data", 2),
    T.DOUBLE: ("double_data", 1),
    T.COMPLEX128: ("double_data", 2),
    T.INT64: ("int64_data", 1),
    T.UINT32: ("uint64_data", 1),
    T.UINT64: ("uint64_data", 1),
    T.STRING: ("string_data", 1),
}
# Attributes onnxscope reads on ops outside the ONNX domains (contrib ops, or a custom-domain op that shares an
# ONNX op's name and is read as that op): their types must be these.
_READ_ATTRS = {
    "transA": A.INT,
    "transB": A.INT,
    "alpha": A.FLOAT,
    "beta": A.FLOAT,
    "group": A.INT,
    "perm": A.INTS,
    "axes": A.INTS,
    "axis": A.INT,
    "keepdims": A.INT,
    "allowzero": A.INT,
    "to": A.INT,
    "block_size": A.INT,
    "num_heads": A.INT,
    "q_num_heads": A.INT,
    "kv_num_heads": A.INT,
    "unidirectional": A.INT,
    "is_causal": A.INT,
    "qk_matmul_output_mode": A.INT,
}
_INTERPRETED = frozenset(
    "Gemm QGemm Conv ConvTranspose ConvInteger QLinearConv QLinearMatMul MatMul MatMulInteger Transpose Reshape "
    "Squeeze Unsqueeze Concat Flatten Cast QuantizeLinear DequantizeLinear Attention MultiHeadAttention "
    "GroupQueryAttention ReduceSum ReduceMean ReduceMax ReduceMin Softmax Identity".split()
)
_DIGITS = re.compile(r"[0-9]+", re.ASCII)


def _q(name: object, limit: int = 60) -> str:
    """``repr`` of a name, shortened: messages stay one readable line whatever the file holds."""
    text = repr(name)
    return text if len(text) <= limit else text[: limit - 4] + "…" + text[-3:]


def _node_label(n: onnx.NodeProto) -> str:
    if n.name:
        return f"node {_q(n.name)} ({n.op_type or '?'})"
    out = next((o for o in n.output if o), None)
    return f"the {n.op_type or '?'} node" + (f" producing {_q(out)}" if out else "")


# ------------------------------------------------------------------------------------------------------------
# Reading the file
# ------------------------------------------------------------------------------------------------------------


def load_ir(path: str | os.PathLike[str]) -> ir.Model:
    """Parse ``path`` into an ``onnx_ir.Model`` whose external tensors stay on disk until read.

    Raises :class:`ModelLoadError` for a missing, non-regular, truncated or non-ONNX file, a malformed graph
    (see the module docstring) and unsafe or missing external data; :class:`~onnxscope.errors.ResourceError`
    for a file over the memory budget.

    Example:
        >>> import onnx_ir as ir, numpy as np, tempfile, os
        >>> g = ir.Graph([], [], nodes=[], name="g")
        >>> d = tempfile.mkdtemp(); p = os.path.join(d, "m.onnx")
        >>> ir.save(ir.Model(g, ir_version=10), p)
        >>> load_ir(p).graph.name
        'g'
    """
    p = Path(path)
    label = str(p)
    data = read_regular(p, label, ModelLoadError)
    proto = _parse(data, label, p.suffix)
    return model_from_proto(proto, p.parent, label)


def _parse(data: bytes, label: str, suffix: str) -> onnx.ModelProto:
    try:
        fmt = onnx.serialization.registry.get_format_from_file_extension(suffix) or "protobuf"
    except Exception:  # an older onnx without the registry: binary protobuf
        fmt = "protobuf"
    try:
        proto = onnx.load_model_from_string(data, format=fmt)
    except Exception as e:  # the loading edge: any parse failure of an untrusted file is the file's fault
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelLoadError(f"{label}: not a readable ONNX model (truncated or not ONNX: {reason})") from e
    if proto.ir_version <= 0 or not proto.HasField("graph"):
        raise ModelLoadError(f"{label}: not an ONNX model (no graph or IR version in the file)")
    return proto


@contextlib.contextmanager
def _quiet(prefix: str = "onnx_ir") -> Iterator[None]:
    """onnx_ir logs a warning per dubious construct; the checks here have already refused or accepted each."""
    names = [prefix, *(n for n in logging.root.manager.loggerDict if n.startswith(prefix + "."))]
    loggers = [logging.getLogger(n) for n in names]
    was = [log.disabled for log in loggers]
    for log in loggers:
        log.disabled = True
    try:
        yield
    finally:
        for log, disabled in zip(loggers, was, strict=True):
            log.disabled = disabled


def model_from_proto(
    proto: onnx.ModelProto, folder: str | os.PathLike[str], label: str = "model"
) -> ir.Model:
    """Check ``proto`` (see the module docstring), convert it to ``onnx_ir`` and sort it; ``folder`` holds its
    external data. ``proto`` may be normalized in place (unusable value types made unknown).

    Example:
        >>> text = '<ir_version: 9, opset_import: ["": 17]> g (float[2] x) => (float[2] y) {y = Relu(x)}'
        >>> [n.op_type for n in model_from_proto(onnx.parser.parse_model(text), ".").graph]
        ['Relu']
        >>> model_from_proto(onnx.parser.parse_model(text.replace("Relu(x)", "Relu(z)")), ".", "m.onnx")
        Traceback (most recent call last):
        ...
        onnxscope.errors.ModelLoadError: m.onnx: the Relu node producing 'y' reads 'z' (input 0), which no graph input, initializer or node output defines
    """
    checked = _check_model(proto, label)
    try:
        with _quiet():
            model = ir.serde.deserialize_model(proto)
    except OnnxscopeError:
        raise
    except Exception as e:  # onnx_ir raises plain exceptions on graphs the checks above let through
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelLoadError(f"{label}: malformed ONNX graph: {first}") from e
    if checked.undefined_types:
        _forget_undefined_types(model)
    _drop_trailing_empty_inputs(model)
    if checked.unsorted:
        _sort(model, label)
    base = os.path.abspath(os.fspath(folder))
    if any(
        t.data_location == T.EXTERNAL for g in _proto_graphs(proto) for t in g.initializer
    ) or _has_external_constant(proto):
        ir.external_data.set_base_dir(model.graph, base)
        tensors = iter_tensors(model)
        for _, tensor in tensors:
            if type(tensor) is ir.ExternalTensor:
                # Same layout, our containment rule at read time: onnx_ir's own check refuses hard links, which
                # are harmless inside the model's folder (and checked below like any other file).
                tensor.__class__ = _ContainedTensor
        check_external_data(model, base, tensors)
    return model


def _drop_trailing_empty_inputs(model: ir.Model) -> None:
    """Drop a LayerNormalization's optional inputs given as ``""`` at the end of its inputs: in ONNX the same as
    leaving them out, and onnxruntime (1.32) crashes optimizing a LayerNormalization whose bias is given that way
    (found by the fuzzer; a segmentation fault at levels extended and all, in plain onnxruntime too). Only there:
    elsewhere an empty input keeps its place, so that code reading a node's inputs by position finds ``None``.

    Example:
        >>> text = '<ir_version: 9, opset_import: ["": 17]> g (float[2] x, float[2] w) => (float[2] y) {y = LayerNormalization(x, w, "")}'
        >>> [len(n.inputs) for n in model_from_proto(onnx.parser.parse_model(text), ".").graph]
        [2]
    """
    for graph in (*model.graphs(), *model.functions.values()):
        for node in graph:
            if node.op_type != "LayerNormalization" or node.domain not in ("", "ai.onnx"):
                continue
            n = len(node.inputs)
            while n > 1 and node.inputs[n - 1] is None:
                n -= 1
            if n != len(node.inputs):
                node.resize_inputs(n)


def _proto_graphs(proto: onnx.ModelProto) -> Iterator[onnx.GraphProto]:
    stack = [proto.graph]
    while stack:
        g = stack.pop()
        yield g
        for n in g.node:
            for a in n.attribute:
                if a.type == A.GRAPH:
                    stack.append(a.g)
                elif a.type == A.GRAPHS:
                    stack.extend(a.graphs)


def _has_external_constant(proto: onnx.ModelProto) -> bool:
    return any(
        a.type == A.TENSOR and a.t.data_location == T.EXTERNAL
        for g in _proto_graphs(proto)
        for n in g.node
        for a in n.attribute
    )


class _ContainedTensor(ir.ExternalTensor):
    """An external tensor that re-applies :func:`resolve_external` each time its file is opened."""

    __slots__ = ()

    def _check_path_containment(self) -> None:
        resolve_external(self.base_dir, self.location, self.name or "?")


def _forget_undefined_types(model: ir.Model) -> None:
    """A value declared with an UNDEFINED element type has, in effect, an unknown type."""
    for g in model.graphs():
        values = [*g.inputs, *g.outputs, *(v for n in g for v in n.outputs)]
        for v in values:
            if v.type is not None and getattr(v.type, "dtype", None) == ir.DataType.UNDEFINED:
                v.type = None


def _sort(model: ir.Model, label: str) -> None:
    try:
        model.graph.sort()
        for f in model.functions.values():
            f.sort()
    except ValueError as e:
        raise ModelLoadError(f"{label}: the graph has a cycle: {_find_cycle(model)}") from e


def _find_cycle(model: ir.Model) -> str:
    import networkx as nx

    g = nx.DiGraph()
    name: dict[int, str] = {}

    def walk(graph: ir.Graph, owner: ir.Node | None) -> None:
        for node in graph:
            name[id(node)] = node.name or node.op_type
            g.add_node(id(node))
            for v in node.inputs:
                prod = v.producer() if v is not None else None
                if prod is not None:
                    g.add_edge(id(prod), id(node))
            if owner is not None:  # a body's nodes run before the node that owns the body finishes
                g.add_edge(id(node), id(owner))
            for attr in node.attributes.values():
                if attr.type == ir.AttributeType.GRAPH:
                    walk(attr.value, node)
                elif attr.type == ir.AttributeType.GRAPHS:
                    for sub in attr.value:
                        walk(sub, node)

    walk(model.graph, None)
    try:
        cycle = nx.find_cycle(g)
    except nx.NetworkXNoCycle:
        return "a node depends on itself"
    names = [name.get(a, "?") for a, _ in cycle]
    return " → ".join(_q(n, 40) for n in [*names[:6], names[0]]) + (" …" if len(names) > 6 else "")


# ------------------------------------------------------------------------------------------------------------
# Checks on the protobuf
# ------------------------------------------------------------------------------------------------------------


_WHAT = {
    onnx.NodeProto: "node",
    onnx.TensorProto: "tensor",
    onnx.GraphProto: "graph",
    onnx.ValueInfoProto: "value",
    onnx.FunctionProto: "function",
    onnx.AttributeProto: "attribute",
    onnx.SparseTensorProto: "sparse tensor",
    onnx.StringStringEntryProto: "metadata entry",
}
_FIELD_KIND: dict[
    Any, int
] = {}  # field descriptor -> 0 other, 1 message, 2 repeated message, 3 string, 4 strings


def _field_kind(fd: Any) -> int:
    kind = _FIELD_KIND.get(fd)
    if kind is None:
        if fd.type == fd.TYPE_MESSAGE:
            kind = 2 if fd.is_repeated else 1
        elif fd.type == fd.TYPE_STRING:
            kind = 4 if fd.is_repeated else 3
        else:
            kind = 0
        _FIELD_KIND[fd] = kind
    return kind


def _check_text(msg: Any, label: str, where: Any = None) -> None:
    """Every string field valid UTF-8 (protobuf hands invalid UTF-8 in proto2 strings back as ``bytes``).

    ``where`` is the nearest enclosing named message, as ``(kind, name)``, formatted only for a message."""
    kind = _WHAT.get(type(msg))
    if kind is not None:
        own = msg.key if kind == "metadata entry" else getattr(msg, "name", None)
        if type(own) is str and own:
            where = (kind, own)
    for fd, value in msg.ListFields():
        k = _FIELD_KIND.get(fd)
        if k is None:
            k = _field_kind(fd)
        if k == 1:
            _check_text(value, label, where)
        elif k == 2:
            for m in value:
                _check_text(m, label, where)
        elif k == 3:
            if type(value) is bytes:
                _bad_text(msg, fd, value, label, where)
        elif k == 4:
            for v in value:
                if type(v) is bytes:
                    _bad_text(msg, fd, v, label, where)


def _bad_text(msg: Any, fd: Any, value: bytes, label: str, where: Any) -> None:
    place = "the model" if where is None else f"{where[0]} {_q(where[1])}"
    field = f"{_WHAT.get(type(msg)) or type(msg).__name__} field {fd.name!r}"
    raise ModelLoadError(f"{label}: {place}: {field} is not valid UTF-8 ({_q(value)})")


def _check_model(proto: onnx.ModelProto, label: str) -> _Checker:
    _check_text(proto, label)
    opsets: dict[str, int] = {}
    for o in proto.opset_import:
        domain = "" if o.domain == "ai.onnx" else o.domain
        if o.version < 1:
            raise ModelLoadError(f"{label}: opset import {_q(o.domain or 'ai.onnx')} has version {o.version}")
        if opsets.get(domain, o.version) != o.version:
            raise ModelLoadError(
                f"{label}: opset {_q(o.domain or 'ai.onnx')} is imported twice ({opsets[domain]} and {o.version})"
            )
        opsets[domain] = o.version
    if proto.graph.sparse_initializer:
        t = proto.graph.sparse_initializer[0]
        raise UnsupportedError(
            f"{label}: sparse initializer {_q(t.values.name)}: sparse tensors are not supported; densify them"
        )
    main = _Checker(label, opsets)
    main.graph(proto.graph, [], "graph")
    seen: set[tuple[str, str, str]] = set()
    for f in proto.functions:
        key = (f.domain, f.name, f.overload)
        if key in seen:
            raise ModelLoadError(f"{label}: function {_q(f.domain + '::' + f.name)} is defined twice")
        seen.add(key)
        own = {
            ("" if o.domain == "ai.onnx" else o.domain): o.version for o in f.opset_import if o.version >= 1
        }
        checker = _Checker(label, {**opsets, **own}, in_function=f"function {_q(f.name)}")
        checker.function(f)
        main.unsorted |= checker.unsorted
    return main


def _origin(where: object) -> str:
    return f"produced by {_node_label(where)}" if isinstance(where, onnx.NodeProto) else str(where)


class _Lazy:
    """A message fragment built only if a message is: most checks pass, and 100,000 labels cost seconds."""

    __slots__ = ("fn",)

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def __str__(self) -> str:
        return str(self.fn())

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


class _Checker:
    def __init__(self, label: str, opsets: dict[str, int], in_function: str | None = None) -> None:
        self.label = label
        self.opsets = opsets
        # no ONNX opset imported: onnxruntime runs the ONNX-domain nodes at its latest, and so are they checked
        self.onnx_opset = opsets.get("", onnx.defs.onnx_opset_version())
        self.in_function = in_function
        self.unsorted = False  # some node reads a tensor produced later in the file: sort after conversion
        self.undefined_types = False  # some value declares an UNDEFINED element type: forget it

    def fail(self, text: str, kind: type[OnnxscopeError] = ModelLoadError) -> OnnxscopeError:
        where = f"{self.in_function}: " if self.in_function else ""
        return kind(f"{self.label}: {where}{text}")

    # -- graphs ---------------------------------------------------------------------------------------------
    def graph(self, g: onnx.GraphProto, scopes: list[set[str]], where: object) -> set[str]:
        """Check one graph (and its bodies); return the names it reads from enclosing graphs."""
        sub = where != "graph"
        ctx = _Lazy(lambda: f"{where}: " if sub else "")
        local: dict[str, object] = {}
        for v in g.input:
            if not v.name:
                raise self.fail(f"{ctx}a graph input has an empty name")
            if v.name in local:
                raise self.fail(f"{ctx}graph input {_q(v.name)} is declared twice")
            local[v.name] = "a graph input"
            if v.HasField("type"):
                self.type(v.type, _Lazy(lambda v=v: f"{ctx}graph input {_q(v.name)}"), not sub)
        inits: set[str] = set()
        for t in g.initializer:
            if not t.name:
                raise self.fail(f"{ctx}an initializer has an empty name")
            if t.name in inits:
                raise self.fail(f"{ctx}initializer {_q(t.name)} is stored twice")
            inits.add(t.name)
            local.setdefault(t.name, "an initializer")
            self.tensor(t, _Lazy(lambda t=t: f"{ctx}initializer {_q(t.name)}"))
        if g.sparse_initializer:
            raise self.fail(f"{ctx}sparse initializers are not supported; densify them", UnsupportedError)
        available = set(local)  # defined so far, in file order: to tell whether the graph needs sorting
        produced: set[str] = set()
        for n in g.node:
            for o in n.output:
                if not o:
                    continue
                if o in local:
                    raise self.fail(
                        f"{ctx}tensor {_q(o)} is {_origin(local[o])} and also produced by {_node_label(n)}"
                    )
                local[o] = n
                produced.add(o)
        for v in (*g.output, *g.value_info):
            if v.HasField("type"):
                self.type(v.type, _Lazy(lambda v=v: f"{ctx}value {_q(v.name)}"), False)
        inner = [*scopes, set(local)]
        free: set[str] = set()
        for n in g.node:
            reads = self.node(n, inner, ctx)
            for name in reads:
                if name in produced:
                    if name not in available:
                        self.unsorted = True
                elif name not in local:
                    free.add(name)
            available.update(n.output)
        for v in g.output:
            if not v.name:
                raise self.fail(f"{ctx}a graph output has an empty name")
            if v.name not in local:
                outer = any(v.name in s for s in scopes)
                raise self.fail(  # ONNX: a graph's outputs are its own values (a body passes an outer one on
                    # through an Identity node); onnx_ir cannot copy a body whose output belongs to its parent
                    f"{ctx}graph output {_q(v.name)} is "
                    + (
                        "a value of the enclosing graph; a body must compute its outputs (an Identity node)"
                        if outer
                        else "produced by no node (nor is it an input or initializer)"
                    )
                )
        return free

    def function(self, f: onnx.FunctionProto) -> None:
        local: dict[str, object] = {}
        for name in f.input:
            if not name or name in local:
                raise self.fail(f"input {_q(name)} is empty or declared twice")
            local[name] = "a function input"
        for n in f.node:
            for o in n.output:
                if o and o in local:
                    raise self.fail(
                        f"tensor {_q(o)} is {_origin(local[o])} and also produced by {_node_label(n)}"
                    )
                if o:
                    local[o] = f"produced by {_node_label(n)}"
        scopes = [set(local)]
        for n in f.node:
            self.node(n, scopes, "")
        for name in f.output:
            if not name or name not in local:
                raise self.fail(f"output {_q(name)} is produced by no node (nor is it an input)")

    # -- values ---------------------------------------------------------------------------------------------
    def type(self, t: onnx.TypeProto, where: object, main_input: bool) -> None:
        which = t.WhichOneof("value")
        if which in ("tensor_type", "sparse_tensor_type"):
            tt = getattr(t, which)
            if tt.elem_type not in _DTYPES:
                if tt.elem_type != 0:
                    raise self.fail(
                        f"{where} declares element type {tt.elem_type}, which ONNX does not define"
                    )
                if main_input:
                    raise self.fail(f"{where} declares no element type (UNDEFINED); the model cannot be fed")
                self.undefined_types = True
            for d in tt.shape.dim:
                if d.dim_value < 0:
                    d.ClearField("dim_value")  # some converters write -1 for "unknown"
        elif which in ("sequence_type", "optional_type"):
            inner = getattr(t, which)
            if inner.HasField("elem_type"):
                self.type(inner.elem_type, where, main_input)
        elif which == "map_type":
            if t.map_type.key_type not in _DTYPES:
                raise self.fail(
                    f"{where} declares a map key type {t.map_type.key_type}, which ONNX does not define"
                )
            if t.map_type.HasField("value_type"):
                self.type(t.map_type.value_type, where, main_input)

    # -- tensors --------------------------------------------------------------------------------------------
    def tensor(self, t: onnx.TensorProto, where: str) -> None:
        try:
            check_tensor_proto(t)
        except ValueError as e:
            raise self.fail(f"{where}: {e}") from None
        if self.in_function and t.data_location == T.EXTERNAL:
            raise self.fail(f"{where}: external data inside a function is not supported", UnsupportedError)

    # -- nodes ----------------------------------------------------------------------------------------------
    def node(self, n: onnx.NodeProto, scopes: list[set[str]], ctx: object) -> set[str]:
        """Check one node (and its bodies); return the names it depends on (inputs and its bodies' free names)."""
        what = _Lazy(lambda: f"{ctx}{_node_label(n)}")
        if not n.op_type:
            raise self.fail(f"{what} has no op_type")
        reads = set(n.input)
        reads.discard("")
        for name in reads:
            if name not in scopes[-1] and not any(name in s for s in scopes):
                k = list(n.input).index(name)
                raise self.fail(
                    f"{what} reads {_q(name)} (input {k}), which no graph input, initializer or node output defines"
                )
        if n.attribute:
            self.attributes(n, in_function=self.in_function is not None, what=what)
        self.schema(n, what)
        for a in n.attribute:
            if a.type == A.GRAPH:
                reads |= self.graph(a.g, scopes, _Lazy(lambda a=a: f"{what} {a.name}"))
            elif a.type == A.GRAPHS:
                for i, g in enumerate(a.graphs):
                    reads |= self.graph(g, scopes, _Lazy(lambda a=a, i=i: f"{what} {a.name}[{i}]"))
        return reads

    def attributes(self, n: onnx.NodeProto, in_function: bool, what: str | None = None) -> None:
        what = what or _node_label(n)
        seen: set[str] = set()
        for a in n.attribute:
            if not a.name:
                raise self.fail(f"{what} has an attribute with an empty name")
            if a.name in seen:
                raise self.fail(f"{what} sets attribute {_q(a.name)} twice")
            seen.add(a.name)
            if a.ref_attr_name:
                if not in_function:
                    raise self.fail(
                        f"{what}: attribute {_q(a.name)} refers to a function attribute outside a function"
                    )
                continue
            if a.type not in _VALID_ATTR_TYPES:
                raise self.fail(f"{what}: attribute {_q(a.name)} has no valid type ({a.type})")
            field = _ATTR_FIELD.get(a.type)
            if field is not None and not a.HasField(field):
                raise self.fail(
                    f"{what}: attribute {_q(a.name)} is declared {A.AttributeType.Name(a.type)} but holds none"
                )
            if a.type == A.TENSOR:
                self.tensor(a.t, f"{what}: attribute {_q(a.name)}")
            elif a.type == A.TENSORS:
                for t in a.tensors:
                    self.tensor(t, f"{what}: attribute {_q(a.name)}")
            elif a.type == A.SPARSE_TENSOR:
                self.sparse(a.sparse_tensor, f"{what}: attribute {_q(a.name)}")
            elif a.type == A.SPARSE_TENSORS:
                for s in a.sparse_tensors:
                    self.sparse(s, f"{what}: attribute {_q(a.name)}")

    def sparse(self, s: onnx.SparseTensorProto, where: str) -> None:
        self.tensor(s.values, f"{where} values")
        self.tensor(s.indices, f"{where} indices")
        if s.values.data_location == T.EXTERNAL or s.indices.data_location == T.EXTERNAL:
            raise self.fail(f"{where}: external sparse tensors are not supported", UnsupportedError)
        if any(d < 0 for d in s.dims):
            raise self.fail(f"{where}: negative dimension in {list(s.dims)}")

    def schema(self, n: onnx.NodeProto, what: object) -> None:
        domain = "" if n.domain == "ai.onnx" else n.domain
        info = None
        version = self.onnx_opset if domain == "" else self.opsets.get(domain)
        if domain in _ONNX_DOMAINS and version is not None:
            # No schema at this opset (an op of a later opset, or one onnxruntime registers in the ONNX domain
            # itself, such as LayerNormalization before opset 17): nothing to check against but what we read.
            info = _signature(n.op_type, domain, version)
        if info is None:
            if n.op_type in _INTERPRETED:
                for a in n.attribute:
                    want = _READ_ATTRS.get(a.name)
                    if want is not None and a.type != want and not a.ref_attr_name:
                        raise self.fail(
                            f"{what}: attribute {_q(a.name)} is {A.AttributeType.Name(a.type)}, onnxscope reads it "
                            f"as {A.AttributeType.Name(want)}"
                        )
            return
        nin, nout = len(n.input), len(n.output)
        if not info.min_input <= nin <= info.max_input:
            raise self.fail(
                f"{what} has {nin} input(s); {n.op_type} takes {_arity(info.min_input, info.max_input)}"
            )
        if not info.min_output <= nout <= info.max_output:
            raise self.fail(
                f"{what} has {nout} output(s); {n.op_type} gives {_arity(info.min_output, info.max_output)}"
            )
        for k, formal in info.required_inputs:
            if k < nin and not n.input[k]:
                raise self.fail(f"{what}: input {k} ({formal}) is required but empty")
        given = {a.name: a for a in n.attribute}
        for name in info.required_attrs:
            if name not in given:
                raise self.fail(f"{what} lacks its required attribute {_q(name)}")
        for name, a in given.items():
            want = info.attr_types.get(name)
            if want is not None and a.type != want and not a.ref_attr_name:
                raise self.fail(
                    f"{what}: attribute {_q(name)} is {A.AttributeType.Name(a.type)}, {n.op_type} takes "
                    f"{A.AttributeType.Name(want)}"
                )
        if domain == "":
            self.body_arity(n, given, what)
            self.values(n, given, what)

    def values(self, n: onnx.NodeProto, given: dict[str, onnx.AttributeProto], what: object) -> None:
        """Attribute values onnxscope computes with (the schema gives types, not ranges)."""
        perm = given.get("perm")
        if n.op_type == "Transpose" and perm is not None and sorted(perm.ints) != list(range(len(perm.ints))):
            raise self.fail(f"{what}: perm {list(perm.ints)[:8]} is not a permutation of the axes")
        group = given.get("group")
        if (
            group is not None
            and n.op_type in ("Conv", "ConvTranspose", "QLinearConv", "ConvInteger")
            and group.i < 1
        ):
            raise self.fail(f"{what}: group is {group.i}; it must be 1 or more")
        block = given.get("block_size")
        if block is not None and block.i < 0:
            raise self.fail(f"{what}: block_size is {block.i}; it must be 0 or more")
        to = given.get("to")
        if n.op_type == "Cast" and to is not None and to.i not in _DTYPES:
            raise self.fail(f"{what}: 'to' is {to.i}, which is no ONNX element type")

    def body_arity(self, n: onnx.NodeProto, given: dict[str, onnx.AttributeProto], what: str) -> None:
        nin, nout = len(n.input), len(n.output)
        if n.op_type == "If":
            for branch in ("then_branch", "else_branch"):
                got = len(given[branch].g.output)
                if got != nout:
                    raise self.fail(f"{what}: {branch} has {got} output(s), the If node {nout}")
        elif n.op_type == "Loop":
            body = given["body"].g
            carried = nin - 2
            if len(body.input) != 2 + carried:
                raise self.fail(
                    f"{what}: the body takes {len(body.input)} input(s); a Loop with {carried} carried value(s) "
                    f"needs {2 + carried}"
                )
            if nout < carried or len(body.output) != 1 + nout:
                raise self.fail(
                    f"{what}: the body gives {len(body.output)} output(s) for a Loop with {carried} carried "
                    f"value(s) and {nout} output(s); it needs {1 + nout}"
                )
        elif (
            n.op_type == "Scan"
            and given["body"].g is not None
            and _schema("Scan", "", self.onnx_opset).since_version >= 9
        ):
            body = given["body"].g
            m = given["num_scan_inputs"].i
            if not 1 <= m <= nin:
                raise self.fail(f"{what}: num_scan_inputs is {m}, the node has {nin} input(s)")
            if len(body.input) != nin:
                raise self.fail(
                    f"{what}: the body takes {len(body.input)} input(s), the Scan node gives {nin}"
                )
            if len(body.output) != nout or nout < nin - m:
                raise self.fail(
                    f"{what}: the body gives {len(body.output)} output(s), the Scan node has {nout}"
                )


@dataclass(frozen=True)
class _Signature:
    """What the checks need from an ``OpSchema``, read once (its pybind properties build new objects per call)."""

    min_input: int
    max_input: int
    min_output: int
    max_output: int
    required_inputs: tuple[tuple[int, str], ...]
    required_attrs: tuple[str, ...]
    attr_types: dict[str, int]
    since_version: int


@functools.lru_cache(maxsize=4096)
def _signature(op_type: str, domain: str, version: int) -> _Signature | None:
    schema = _schema(op_type, domain, version)
    if schema is None:
        return None
    single = onnx.defs.OpSchema.FormalParameterOption.Single
    attrs = schema.attributes
    return _Signature(
        schema.min_input,
        schema.max_input,
        schema.min_output,
        schema.max_output,
        tuple((k, f.name) for k, f in enumerate(schema.inputs) if f.option == single),
        tuple(name for name, a in attrs.items() if a.required),
        {name: int(a.type) for name, a in attrs.items()},
        schema.since_version,
    )


def _arity(lo: int, hi: int) -> str:
    if lo == hi:
        return str(lo)
    return f"{lo} or more" if hi >= 2**31 - 1 else f"{lo} to {hi}"


@functools.lru_cache(maxsize=4096)
def _schema(op_type: str, domain: str, version: int) -> Any:
    try:
        return onnx.defs.get_schema(op_type, version, domain)
    except Exception:  # unknown op, or an opset newer than this onnx: nothing to check against
        return None


def _count(dims: Any) -> int:
    return math.prod(int(d) for d in dims)


def tensor_nbytes(data_type: int, dims: Any) -> int:
    """Bytes a tensor of this ONNX element type and shape takes when packed (sub-byte types packed).

    Example:
        >>> tensor_nbytes(onnx.TensorProto.FLOAT, [2, 3]), tensor_nbytes(onnx.TensorProto.INT4, [3])
        (24, 2)
    """
    return math.ceil(_count(dims) * ir.DataType(data_type).bitwidth / 8)


def check_tensor_proto(t: onnx.TensorProto) -> None:
    """Raise ``ValueError`` (one line) unless ``t`` has a defined type, non-negative dims and a payload whose size
    matches its shape (or well-formed external-data entries of the right length).

    Example:
        >>> import numpy as np
        >>> t = onnx.numpy_helper.from_array(np.zeros(3, np.float32), "w")
        >>> t.raw_data = t.raw_data[:5]
        >>> check_tensor_proto(t)
        Traceback (most recent call last):
        ...
        ValueError: holds 5 payload bytes, its float32 shape [3] needs 12
    """
    if t.data_type not in _DTYPES:
        what = "UNDEFINED" if t.data_type == 0 else f"{t.data_type}, which ONNX does not define"
        raise ValueError(f"element type is {what}")
    if any(d < 0 for d in t.dims):
        raise ValueError(f"negative dimension in {list(t.dims)[:8]}")
    if t.HasField("segment"):
        raise ValueError("segmented tensors are not supported")
    dtype = ir.DataType(t.data_type)
    count = _count(t.dims)
    shape = f"{dtype.name.lower() if dtype != ir.DataType.FLOAT else 'float32'} shape {list(t.dims)[:8]}"
    typed = [f for f in _TYPED_FIELDS if len(getattr(t, f))]
    has_raw = t.HasField("raw_data")
    if t.data_location == T.EXTERNAL:
        if has_raw or typed:
            raise ValueError("holds both inline and external data")
        if dtype == ir.DataType.STRING:
            raise ValueError("a string tensor cannot use external data")
        _check_entries(t, tensor_nbytes(t.data_type, t.dims), shape)
        return
    if len(t.external_data):
        raise ValueError("has external-data entries but is not marked as external data")
    if has_raw + len(typed) > 1:
        raise ValueError(f"holds its data in several fields ({', '.join(['raw_data'] * has_raw + typed)})")
    if dtype == ir.DataType.STRING:
        if has_raw or (typed and typed[0] != "string_data"):
            raise ValueError("a string tensor must hold its data in string_data")
        got = len(t.string_data)
        if got != count:
            raise ValueError(f"holds {got} strings, its shape {list(t.dims)[:8]} needs {count}")
        return
    if has_raw:
        need = tensor_nbytes(t.data_type, t.dims)
        if len(t.raw_data) != need:
            raise ValueError(f"holds {len(t.raw_data)} payload bytes, its {shape} needs {need}")
        if dtype.bitwidth == 6:
            _float6(t)
        return
    if not typed:
        if count:
            raise ValueError(f"holds no data, its {shape} needs {count} element(s)")
        return
    field, per = _FIELD_OF.get(t.data_type, ("int32_data", 1))
    if typed[0] != field:
        raise ValueError(f"holds its data in {typed[0]}, a {dtype.name} tensor uses {field}")
    bits = dtype.bitwidth
    need = count * per if field != "int32_data" or bits >= 6 else math.ceil(count * bits / 8)
    got = len(getattr(t, field))
    if got != need:
        raise ValueError(f"holds {got} values in {field}, its {shape} needs {need}")
    if bits == 6:
        _float6(t)


def _float6(t: onnx.TensorProto) -> None:
    try:
        ir.serde.TensorProtoTensor(t).numpy()  # rare and small: let onnx_ir validate the packed values
    except Exception as e:
        raise ValueError(
            f"invalid {ir.DataType(t.data_type).name} data ({str(e).splitlines()[0] if str(e) else e})"
        ) from None


def _check_entries(t: onnx.TensorProto, need: int, shape: str) -> None:
    entries: dict[str, str] = {}
    for e in t.external_data:
        if e.key in entries and e.key in ("location", "offset", "length"):
            raise ValueError(f"external-data entry {e.key!r} is given twice")
        entries[e.key] = e.value
    loc = entries.get("location")
    if not loc:
        raise ValueError("is marked as external data but names no location")
    if "\0" in loc:
        raise ValueError(f"external-data location {_q(loc)} contains a NUL byte")
    for key in ("offset", "length"):
        value = entries.get(key)
        if value is not None and not _DIGITS.fullmatch(value):
            raise ValueError(f"external-data {key} {_q(value)} is not a non-negative whole number")
    length = entries.get("length")
    if length is not None and int(length) != need:
        raise ValueError(f"external-data length is {length} bytes, its {shape} needs {need}")


# ------------------------------------------------------------------------------------------------------------
# External data and tensors
# ------------------------------------------------------------------------------------------------------------


def iter_tensors(model: ir.Model) -> list[tuple[str, ir.TensorProtocol]]:
    """Every initializer and Constant-node tensor of every graph (subgraphs too), as ``(name, tensor)``.

    Example:
        >>> import onnx_ir as ir, numpy as np
        >>> v = ir.Value(name="w", const_value=ir.tensor(np.zeros(2, np.float32)))
        >>> g = ir.Graph([], [], nodes=[], initializers=[v])
        >>> [n for n, _ in iter_tensors(ir.Model(g, ir_version=10))]
        ['w']
    """
    out: list[tuple[str, ir.TensorProtocol]] = []
    for graph in model.graphs():
        for name, value in graph.initializers.items():
            if value.const_value is not None:
                out.append((name, value.const_value))
        for node in graph:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                attr = node.attributes.get("value")
                if attr is not None and attr.value is not None and node.outputs:
                    out.append((node.outputs[0].name or node.name or "", attr.value))
    return out


def resolve_external(
    folder: str | os.PathLike[str],
    location: str | os.PathLike[str],
    name: str,
    owner: str = "the model's folder",
) -> tuple[str, int]:
    """The real path and size of external data ``location`` of tensor ``name``, if it is a regular file inside
    ``folder``; :class:`ModelLoadError` otherwise (NUL byte, absolute path, ``../`` or a symlink leading out, missing,
    a FIFO, device or directory). Nothing is opened.

    Example:
        >>> resolve_external("/tmp", "../etc/passwd", "w")
        Traceback (most recent call last):
        ...
        onnxscope.errors.ModelLoadError: tensor 'w': external-data location '../etc/passwd' resolves to /etc/passwd, outside the model's folder /tmp
    """
    loc = os.fspath(location)
    if "\0" in loc:
        raise ModelLoadError(f"tensor {_q(name)}: external-data location {_q(loc)} contains a NUL byte")
    if os.path.isabs(loc) or loc.startswith(("/", "\\")):
        raise ModelLoadError(
            f"tensor {_q(name)}: external-data location {_q(loc)} is an absolute path; "
            "locations must be relative to the model's folder"
        )
    base = os.path.realpath(folder)
    target = os.path.realpath(os.path.join(base, loc))
    if os.path.commonpath([base, target]) != base or target == base:
        where = f"is {owner} itself" if target == base else f"resolves to {target}, outside {owner} {base}"
        raise ModelLoadError(f"tensor {_q(name)}: external-data location {_q(loc)} {where}")
    try:
        st = os.stat(target)
    except OSError:
        raise ModelLoadError(f"tensor {_q(name)}: external-data file {_q(loc)} not found in {base}") from None
    import stat as _stat

    if not _stat.S_ISREG(st.st_mode):
        raise ModelLoadError(
            f"tensor {_q(name)}: external-data file {_q(loc)} is {kind_of(st.st_mode)}, not a regular file"
        )
    return target, st.st_size


def check_external_data(
    model: ir.Model,
    folder: str | os.PathLike[str],
    tensors: list[tuple[str, ir.TensorProtocol]] | None = None,
) -> None:
    """Refuse external data that escapes ``folder``, is missing, not a regular file, or shorter than the tensor
    claims.

    Example:
        >>> import onnx_ir as ir
        >>> check_external_data(ir.Model(ir.Graph([], [], nodes=[]), ir_version=10), ".")
    """
    sizes: dict[str, int] = {}
    for name, tensor in iter_tensors(model) if tensors is None else tensors:
        if not isinstance(tensor, ir.ExternalTensor):
            continue
        target, size = resolve_external(folder, tensor.location, name)
        sizes.setdefault(target, size)
        offset = tensor.offset or 0
        length = tensor.length if tensor.length is not None else tensor.nbytes
        if offset + length > sizes[target]:
            raise ModelLoadError(
                f"tensor {_q(name)}: external-data file {_q(os.fspath(tensor.location))} is truncated "
                f"({sizes[target]} bytes, tensor needs bytes {offset}..{offset + length})"
            )


def schema_input_names(op_type: str, domain: str, opset: int) -> list[str]:
    """The formal input names of an operator from the ONNX schema registry (``[]`` if unknown).

    Example:
        >>> schema_input_names("Conv", "", 17)
        ['X', 'W', 'B']
    """
    schema = _schema(op_type, domain, opset)
    return [] if schema is None else [i.name for i in schema.inputs]


def read_tensor_pb(
    path: str | os.PathLike[str], error: type[OnnxscopeError] = ModelLoadError
) -> tuple[str, object]:
    """Read a serialized ONNX ``TensorProto`` (the format of onnx's test data sets) as ``(name, ndarray)``.

    The tensor is checked like a model's (defined type, payload matching its shape); external data resolves
    inside the ``.pb`` file's own folder under the same rules as a model's (:func:`resolve_external`) — never
    against the working directory. Failures raise ``error`` (:class:`ModelLoadError` unless given).

    Example:
        >>> import numpy as np, tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "input_0.pb")
        >>> _ = open(p, "wb").write(onnx.numpy_helper.from_array(np.ones(2, np.float32), "x").SerializeToString())
        >>> read_tensor_pb(p)
        ('x', array([1., 1.], dtype=float32))
    """
    label = os.fspath(path)
    data = read_regular(path, label, error)
    t = onnx.TensorProto()
    try:
        t.ParseFromString(data)
        _check_text(t, label)
        check_tensor_proto(t)
    except ModelLoadError as e:
        raise error(str(e)) from None
    except Exception as e:  # DecodeError, or a check above
        raise error(
            f"{label}: not a valid serialized ONNX TensorProto ({str(e).splitlines()[0] if str(e) else e})"
        ) from e
    nbytes = 0 if t.data_type == T.STRING else tensor_nbytes(t.data_type, t.dims)
    check_alloc(max(nbytes, len(data)), f"tensor {_q(t.name)} of {label}")
    if t.data_location == T.EXTERNAL:
        _inline_external(t, Path(path).parent, nbytes, error, label)
    try:
        return t.name, onnx.numpy_helper.to_array(t)
    except Exception as e:  # a payload numpy cannot interpret despite the checks
        raise error(
            f"{label}: cannot decode tensor {_q(t.name)} ({str(e).splitlines()[0] if str(e) else e})"
        ) from e


def _inline_external(
    t: onnx.TensorProto, folder: Path, nbytes: int, error: type[OnnxscopeError], label: str
) -> None:
    entries = {e.key: e.value for e in t.external_data}
    try:
        target, size = resolve_external(
            folder, entries["location"], t.name or label, "the tensor file's folder"
        )
    except ModelLoadError as e:
        raise error(f"{label}: {e}") from None
    offset = int(entries.get("offset", 0))
    if offset + nbytes > size:
        raise error(
            f"{label}: external-data file {_q(entries['location'])} is truncated "
            f"({size} bytes, tensor needs bytes {offset}..{offset + nbytes})"
        )
    with open_regular(target, f"{label}: external-data file {_q(entries['location'])}", error) as f:
        f.seek(offset)
        raw = f.read(nbytes)
    if len(raw) != nbytes:
        raise error(f"{label}: external-data file {_q(entries['location'])} changed while being read")
    t.raw_data = raw
    t.data_location = T.DEFAULT
    del t.external_data[:]


_INFER_INLINE_LIMIT = (
    1024  # initializers larger than this are handed to inference as typed inputs, without data
)


def infer_types(model: ir.Model) -> ir.Model | None:
    """ONNX type and shape inference (data propagation first, then without) on a copy of ``model``; returns the
    inferred copy (same structure, every graph in the same order), or ``None`` when inference fails.

    ``model`` is never changed; large initializers are passed as typed inputs without their data, so models over
    2 GB and external data cost nothing here.

    Example:
        >>> import onnx_ir as ir
        >>> x = ir.Value(name="x", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([2]))
        >>> n = ir.Node("", "Relu", [x], num_outputs=1); n.outputs[0].name = "y"
        >>> m = ir.Model(ir.Graph([x], n.outputs, nodes=[n], opset_imports={"": 17}), ir_version=9)
        >>> out = infer_types(m); out.graph.node(0).outputs[0].shape, n.outputs[0].shape is None
        (Shape([2]), True)
    """
    clone = model.clone()
    g = clone.graph
    for value in list(g.initializers.values()):
        tensor = value.const_value
        if tensor is None:
            continue
        if value.shape is None:
            value.shape = ir.Shape(tensor.shape)
        if value.dtype is None:
            value.dtype = tensor.dtype
        if tensor.nbytes > _INFER_INLINE_LIMIT or isinstance(tensor, ir.ExternalTensor):
            g.initializers.pop(value.name)
            value.const_value = None
            if not value.is_graph_input():
                g.inputs.append(value)
    try:
        proto = ir.serde.serialize_model(clone)
    except Exception:  # a graph onnx_ir cannot write back: no inferred types
        return None
    for data_prop in (True, False):
        try:
            inferred = onnx.shape_inference.infer_shapes(
                proto, check_type=False, strict_mode=False, data_prop=data_prop
            )
            return ir.serde.deserialize_model(inferred)
        except Exception:  # onnx's inference raises many kinds; without it we know less, nothing more
            continue
    return None


def graph_contents(path: str | os.PathLike[str]) -> tuple[set[str], collections.Counter[tuple[str, str]]]:
    """Names of the main graph's inputs and node outputs in an ONNX file (weights not read), and how many nodes
    of each ``(domain, op_type)`` it holds.

    Example:
        >>> import onnx_ir as ir, tempfile
        >>> x = ir.Value(name="x", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([2]))
        >>> n = ir.Node("", "Relu", [x], num_outputs=1); n.outputs[0].name = "y"
        >>> p = os.path.join(tempfile.mkdtemp(), "m.onnx")
        >>> ir.save(ir.Model(ir.Graph([x], n.outputs, nodes=[n], opset_imports={"": 17}), ir_version=9), p)
        >>> names, ops = graph_contents(p)
        >>> sorted(names), ops
        (['x', 'y'], Counter({('', 'Relu'): 1}))
    """
    label = os.fspath(path)
    proto = _parse(read_regular(path, label, ModelLoadError), label, Path(path).suffix)
    names = {i.name for i in proto.graph.input if i.name}
    names.update(o for node in proto.graph.node for o in node.output if o)
    ops = collections.Counter((node.domain or "", node.op_type) for node in proto.graph.node)
    return names, ops


def serialize_with_outputs(model: ir.Model, names: list[str]) -> bytes:
    """The model's bytes with main-graph tensors ``names`` appended as (untyped) graph outputs; the model itself
    is not changed, and no copy of its graph is made (external weights stay references to their files).

    Example:
        >>> import onnx_ir as ir
        >>> x = ir.Value(name="x", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([2]))
        >>> n = ir.Node("", "Relu", [x], num_outputs=1); n.outputs[0].name = "y"
        >>> r = ir.Node("", "Neg", n.outputs, num_outputs=1); r.outputs[0].name = "z"
        >>> m = ir.Model(ir.Graph([x], r.outputs, nodes=[n, r], opset_imports={"": 17}), ir_version=9)
        >>> [o.name for o in onnx.load_from_string(serialize_with_outputs(m, ["y"])).graph.output], len(m.graph.outputs)
        (['z', 'y'], 1)
    """
    return proto_with_outputs(model, names).SerializeToString()


def proto_with_outputs(model: ir.Model, names: list[str], folder: str | None = None) -> onnx.ModelProto:
    """A protobuf of ``model`` with main-graph tensors ``names`` appended as (untyped) graph outputs, for a
    consumer that takes only protobufs (onnx's reference evaluator); with ``folder``, external weights are read
    into it from there. The model itself is not changed.

    Example:
        >>> from onnxscope.testing import mlp_model
        >>> [o.name for o in proto_with_outputs(mlp_model(), ["h", "y"]).graph.output]
        ['y', 'h']
    """
    proto = ir.to_proto(model)
    if folder is not None:
        onnx.external_data_helper.load_external_data_for_model(proto, folder)
    have = {o.name for o in proto.graph.output}
    proto.graph.output.extend(onnx.ValueInfoProto(name=n) for n in dict.fromkeys(names) if n not in have)
    return proto
