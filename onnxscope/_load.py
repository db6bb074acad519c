"""The loading edge: the only module that touches raw ``onnx`` protobufs.

A model is parsed without its external data; ``onnx_ir`` then memory-maps each external tensor on first use, so
opening a multi-gigabyte model reads only its graph. Before anything is returned, every external-data reference is
checked: its file must exist inside the model's folder (no ``../``, no absolute path, no symlink leading out) and
be long enough for the tensor's offset and length.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError

from onnxscope.errors import ModelLoadError

__all__ = [
    "check_external_data",
    "infer_types",
    "iter_tensors",
    "load_ir",
    "read_tensor_pb",
    "schema_input_names",
    "serialize_with_outputs",
    "value_names",
]


def load_ir(path: str | os.PathLike[str]) -> ir.Model:
    """Parse ``path`` into an ``onnx_ir.Model`` whose external tensors stay on disk until read.

    Raises :class:`ModelLoadError` for a missing, truncated or non-ONNX file and for unsafe or missing external
    data.

    Example:
        >>> import onnx_ir as ir, numpy as np, tempfile, os
        >>> g = ir.Graph([], [], nodes=[], name="g")
        >>> d = tempfile.mkdtemp(); p = os.path.join(d, "m.onnx")
        >>> ir.save(ir.Model(g, ir_version=10), p)
        >>> load_ir(p).graph.name
        'g'
    """
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"{p}: no such file")
    if p.is_dir():
        raise ModelLoadError(f"{p}: is a directory, expected an .onnx file")
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError, OSError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelLoadError(f"{p}: not a readable ONNX model (truncated or not ONNX: {reason})") from e
    if proto.ir_version <= 0 or not proto.HasField("graph"):
        raise ModelLoadError(f"{p}: not an ONNX model (no graph or IR version in the file)")
    try:
        model = ir.serde.deserialize_model(proto)
    except Exception as e:  # onnx_ir raises plain exceptions on malformed graphs
        raise ModelLoadError(f"{p}: malformed ONNX graph: {e}") from e
    ir.external_data.set_base_dir(model.graph, str(p.parent))
    check_external_data(model, p.parent)
    return model


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


def check_external_data(model: ir.Model, folder: str | os.PathLike[str]) -> None:
    """Refuse external data that escapes ``folder``, is missing, or is shorter than the tensor claims.

    Example:
        >>> import onnx_ir as ir
        >>> check_external_data(ir.Model(ir.Graph([], [], nodes=[]), ir_version=10), ".")
    """
    base = os.path.realpath(folder)
    sizes: dict[str, int] = {}
    for name, tensor in iter_tensors(model):
        if not isinstance(tensor, ir.ExternalTensor):
            continue
        loc = os.fspath(tensor.location)
        if os.path.isabs(loc) or loc.startswith(("/", "\\")):
            raise ModelLoadError(
                f"tensor {name!r}: external-data location {loc!r} is an absolute path; "
                "locations must be relative to the model's folder"
            )
        target = os.path.realpath(os.path.join(base, loc))
        if os.path.commonpath([base, target]) != base:
            raise ModelLoadError(
                f"tensor {name!r}: external-data location {loc!r} resolves to {target}, "
                f"outside the model's folder {base}"
            )
        if target not in sizes:
            if not os.path.isfile(target):
                raise ModelLoadError(f"tensor {name!r}: external-data file {loc!r} not found in {base}")
            sizes[target] = os.path.getsize(target)
        offset = tensor.offset or 0
        length = tensor.length if tensor.length is not None else tensor.nbytes
        if offset + length > sizes[target]:
            raise ModelLoadError(
                f"tensor {name!r}: external-data file {loc!r} is truncated "
                f"({sizes[target]} bytes, tensor needs bytes {offset}..{offset + length})"
            )


def schema_input_names(op_type: str, domain: str, opset: int) -> list[str]:
    """The formal input names of an operator from the ONNX schema registry (``[]`` if unknown).

    Example:
        >>> schema_input_names("Conv", "", 17)
        ['X', 'W', 'B']
    """
    try:
        schema = onnx.defs.get_schema(op_type, opset, domain)
    except Exception:  # unknown op or domain: no schema, caller falls back to positions
        return []
    return [i.name for i in schema.inputs]


def read_tensor_pb(path: str | os.PathLike[str]) -> tuple[str, object]:
    """Read a serialized ONNX ``TensorProto`` (the format of onnx's test data sets) as ``(name, ndarray)``.

    Example:
        >>> import numpy as np, tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "input_0.pb")
        >>> _ = open(p, "wb").write(onnx.numpy_helper.from_array(np.ones(2, np.float32), "x").SerializeToString())
        >>> read_tensor_pb(p)
        ('x', array([1., 1.], dtype=float32))
    """
    t = onnx.TensorProto()
    try:
        with open(path, "rb") as f:
            t.ParseFromString(f.read())
        return t.name, onnx.numpy_helper.to_array(t)
    except (DecodeError, ValueError, TypeError) as e:
        raise ModelLoadError(f"{os.fspath(path)}: not a serialized ONNX TensorProto ({e})") from e
    except OSError as e:
        raise ModelLoadError(f"{os.fspath(path)}: cannot read ({e.strerror})") from e


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


def value_names(path: str | os.PathLike[str]) -> set[str]:
    """Names of the main graph's inputs and node outputs in an ONNX file (weights not read).

    Example:
        >>> import onnx_ir as ir, tempfile
        >>> x = ir.Value(name="x", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([2]))
        >>> n = ir.Node("", "Relu", [x], num_outputs=1); n.outputs[0].name = "y"
        >>> p = os.path.join(tempfile.mkdtemp(), "m.onnx")
        >>> ir.save(ir.Model(ir.Graph([x], n.outputs, nodes=[n], opset_imports={"": 17}), ir_version=9), p)
        >>> sorted(value_names(p))
        ['x', 'y']
    """
    proto = onnx.load(os.fspath(path), load_external_data=False)
    names = {i.name for i in proto.graph.input if i.name}
    names.update(o for node in proto.graph.node for o in node.output if o)
    return names


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
    proto = ir.to_proto(model)
    have = {o.name for o in proto.graph.output}
    proto.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in have)
    return proto.SerializeToString()
