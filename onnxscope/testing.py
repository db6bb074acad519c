"""Small models built in code (with ``onnx_ir``), for doctests, tests and the demo.

Example:
    >>> m = mlp_model(in_features=2, hidden=3, out_features=1)
    >>> [n.op_type for n in m.graph]
    ['Gemm', 'Relu', 'Gemm']
"""

from __future__ import annotations

import os

import numpy as np

from onnxscope._ir import ir

__all__ = ["mlp_model", "save"]


def _init(name: str, array: np.ndarray) -> ir.Value:
    return ir.Value(
        name=name,
        shape=ir.Shape(array.shape),
        type=ir.TensorType(ir.DataType.FLOAT),
        const_value=ir.tensor(array, name=name),
    )


def mlp_model(in_features: int = 3, hidden: int = 16, out_features: int = 4, seed: int = 0) -> ir.Model:
    """``Gemm(fc1) → Relu → Gemm(fc2)`` with torch's ``Linear`` layout (``transB=1``), random weights.

    Example:
        >>> sorted(mlp_model().graph.initializers)
        ['fc1.bias', 'fc1.weight', 'fc2.bias', 'fc2.weight']
    """
    rng = np.random.default_rng(seed)
    x = ir.Value(name="x", shape=ir.Shape(["batch", in_features]), type=ir.TensorType(ir.DataType.FLOAT))
    w1 = _init("fc1.weight", rng.standard_normal((hidden, in_features)).astype(np.float32))
    b1 = _init("fc1.bias", rng.standard_normal(hidden).astype(np.float32))
    w2 = _init("fc2.weight", rng.standard_normal((out_features, hidden)).astype(np.float32))
    b2 = _init("fc2.bias", rng.standard_normal(out_features).astype(np.float32))
    fc1 = ir.Node("", "Gemm", [x, w1, b1], attributes=[ir.AttrInt64("transB", 1)], name="fc1", num_outputs=1)
    fc1.outputs[0].name = "h"
    relu = ir.Node("", "Relu", fc1.outputs, name="relu", num_outputs=1)
    relu.outputs[0].name = "a"
    fc2 = ir.Node(
        "",
        "Gemm",
        [relu.outputs[0], w2, b2],
        attributes=[ir.AttrInt64("transB", 1)],
        name="fc2",
        num_outputs=1,
    )
    y = fc2.outputs[0]
    y.name, y.dtype, y.shape = "y", ir.DataType.FLOAT, ir.Shape(["batch", out_features])
    graph = ir.Graph(
        [x], [y], nodes=[fc1, relu, fc2], initializers=[w1, b1, w2, b2], name="mlp", opset_imports={"": 17}
    )
    return ir.Model(graph, ir_version=9, producer_name="onnxscope.testing")


def save(model: ir.Model, path: str | os.PathLike[str], external_data: str | None = None) -> str:
    """Save ``model`` to ``path`` (weights to ``external_data`` beside it when given); return the path.

    Example:
        >>> import tempfile
        >>> save(mlp_model(), os.path.join(tempfile.mkdtemp(), "m.onnx")).endswith("m.onnx")
        True
    """
    ir.save(model, path, external_data=external_data)
    return os.fspath(path)
