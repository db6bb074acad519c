"""``Model``: a loaded ONNX model with its weights, neurons and summary — the library's entry object.

Example:
    >>> import onnxscope, tempfile, os
    >>> from onnxscope.testing import mlp_model, save
    >>> path = save(mlp_model(), os.path.join(tempfile.mkdtemp(), "mlp.onnx"))
    >>> m = onnxscope.load(path)
    >>> m.summary().parameters, sorted(m.weights)[:2]
    (132, ['fc1.bias', 'fc1.weight'])
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from onnxscope._ir import ir
from onnxscope._load import load_ir
from onnxscope.graph import Graph
from onnxscope.neurons import Neuron, neuron
from onnxscope.weights import Weights

if TYPE_CHECKING:  # networkx loads on the first graph view: a capture never needs it
    import networkx as nx

__all__ = ["Model", "Summary", "TensorInfo", "load"]


@dataclass(frozen=True)
class TensorInfo:
    """Name, element type and shape (ints, symbolic names, or ``None`` for unknown dims) of a graph input/output."""

    name: str
    dtype: str | None
    shape: tuple[int | str | None, ...] | None


@dataclass(frozen=True)
class Summary:
    """What ``onnxscope summary`` prints: provenance, opsets, I/O, op histogram, parameters, external data."""

    path: str | None
    ir_version: int
    producer: str
    opsets: dict[str, int]
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    nodes: int
    ops: dict[str, int]
    weights: int
    parameters: int
    nbytes: int
    external_data: dict[str, int]
    subgraphs: int
    metadata: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        d = asdict(self)
        for key in ("inputs", "outputs"):
            d[key] = [{**t, "shape": None if t["shape"] is None else list(t["shape"])} for t in d[key]]
        return d


def _info(v: ir.Value) -> TensorInfo:
    shape = None
    if v.shape is not None:
        shape = tuple(
            d if isinstance(d, int) else (d.value if isinstance(d, ir.SymbolicDim) else None) for d in v.shape
        )
    dtype = None if v.dtype is None else (str(v.dtype.numpy()) if v.dtype != ir.DataType.STRING else "string")
    return TensorInfo(v.name or "", dtype, shape)


class Model(Graph):
    """A loaded ONNX model. Weight data stays on disk (memory-mapped) until a weight's values are asked for.

    Attributes:
        ir: the ``onnx_ir.Model`` underneath.
        path: the file it was loaded from, if any.
    """

    @cached_property
    def weights(self) -> Weights:
        """Every initializer and Constant tensor by name (see :class:`onnxscope.weights.Weights`)."""
        return Weights(self)

    @property
    def graph(self) -> nx.MultiDiGraph:
        """The networkx view: ONNX nodes as nodes, tensors as keyed edges (see :func:`onnxscope.paths.op_graph`)."""
        from onnxscope.paths import op_graph

        return op_graph(self)

    @property
    def tensor_graph(self) -> nx.DiGraph:
        """The tensor-level networkx view (see :func:`onnxscope.paths.tensor_graph`)."""
        from onnxscope.paths import tensor_graph

        return tensor_graph(self)

    def neuron(self, layer: str, index: int) -> Neuron:
        """Incoming and outgoing weights of unit ``index`` of ``layer`` (see :func:`onnxscope.neurons.neuron`)."""
        return neuron(self, layer, index)

    def summary(self) -> Summary:
        """Provenance, opsets, inputs/outputs, op histogram, parameter count and bytes, external data files."""
        g = self.ir.graph
        ops = Counter(
            (n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}")
            for n in self.all_nodes()
        )
        external: dict[str, int] = {}
        for w in self.weights.values():
            if w.external is not None:
                external[w.external] = external.get(w.external, 0) + w.nbytes
        producer = " ".join(p for p in (self.ir.producer_name, self.ir.producer_version) if p)
        return Summary(
            path=self.path,
            ir_version=int(self.ir.ir_version),
            producer=producer,
            opsets={(k or "ai.onnx"): int(v) for k, v in self.ir.opset_imports.items()},
            inputs=tuple(_info(v) for v in g.inputs if v.name not in g.initializers),
            outputs=tuple(_info(v) for v in g.outputs),
            nodes=sum(ops.values()),
            ops=dict(ops.most_common()),
            weights=len(self.weights),
            parameters=self.weights.parameters,
            nbytes=self.weights.nbytes,
            external_data=external,
            subgraphs=sum(1 for _ in self.ir.graphs()) - 1,
            metadata=dict(self.ir.metadata_props),
        )

    def __repr__(self) -> str:
        where = f" from {self.path!r}" if self.path else ""
        return f"<onnxscope.Model{where}: {len(self.ir.graph)} nodes, {len(self.weights)} weights>"


def load(path: str | os.PathLike[str]) -> Model:
    """Open an ONNX model lazily: only the graph is parsed, external weights are memory-mapped on first use.

    Raises :class:`onnxscope.ModelLoadError` for a missing, truncated or non-ONNX file, a missing external-data
    file, and an external-data location that leaves the model's folder.

    Example:
        >>> import onnxscope, tempfile, os
        >>> from onnxscope.testing import mlp_model, save
        >>> m = onnxscope.load(save(mlp_model(), os.path.join(tempfile.mkdtemp(), "m.onnx")))
        >>> m.weights["fc1.weight"].shape
        (16, 3)
    """
    return Model(load_ir(path), path)
