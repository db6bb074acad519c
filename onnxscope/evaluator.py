"""The ONNX reference evaluator (``onnx.reference.ReferenceEvaluator``) as a second runtime: every tensor of a
model's main graph computed by onnx's own Python implementation of each op — the semantics the specification
gives, without onnxruntime's fusions or kernels. Slow; meant for small models and for checking onnxruntime.

Example:
    >>> import numpy as np
    >>> from onnxscope.testing import mlp_model
    >>> out = evaluate(mlp_model(), {"x": np.ones((1, 3), np.float32)})
    >>> sorted(out)
    ['a', 'h', 'x', 'y']
"""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxscope._ir import ir
from onnxscope.errors import CaptureError, UnsupportedError

__all__ = ["evaluate", "evaluator"]


def evaluator(model: ir.Model, outputs: list[str] | None = None, folder: str | None = None) -> Any:
    """A ``ReferenceEvaluator`` over ``model`` whose outputs are ``outputs`` (default: every tensor the main
    graph's nodes compute). External weights are read from ``folder``.

    Raises:
        UnsupportedError: the evaluator does not implement one of the model's ops (the message names it).
    """
    from onnx.reference import ReferenceEvaluator

    from onnxscope._load import proto_with_outputs

    if outputs is None:
        outputs = [o.name for n in model.graph for o in n.outputs if o.name]
    proto = proto_with_outputs(model, outputs, folder)
    try:
        return ReferenceEvaluator(proto)
    except Exception as e:  # the evaluator raises plain exceptions for ops it lacks
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsupportedError(f"onnx's reference evaluator cannot run this model: {first}") from e


def run(session: Any, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every output of ``session`` (a :func:`evaluator`) by name, on ``feeds``.

    Raises:
        CaptureError: the evaluator failed on these inputs.
    """
    names = list(session.output_names)
    wanted = {i for i in session.input_names}
    try:
        values = session.run(None, {k: v for k, v in feeds.items() if k in wanted})
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CaptureError(f"onnx's reference evaluator failed: {first}") from e
    return {
        k: np.asarray(v) for k, v in zip(names, values, strict=True) if isinstance(v, np.ndarray | np.generic)
    }


def evaluate(
    model: ir.Model, feeds: dict[str, np.ndarray], folder: str | None = None
) -> dict[str, np.ndarray]:
    """Every main-graph tensor of ``model`` computed by the reference evaluator, plus the inputs fed."""
    out = dict(feeds)
    out.update(run(evaluator(model, None, folder), feeds))
    return out
