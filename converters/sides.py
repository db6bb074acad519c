"""A torch or Keras model as one side of :func:`onnxscope.compare`: its layers' outputs under the names of the
ONNX tensors its export computes them in (the layer map :func:`from_torch` / :func:`from_keras` store)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

import onnxscope
from converters.parity import _keras_layers, _torch_layers
from onnxscope.errors import UnsupportedError
from onnxscope.sides import Side


class FrameworkSide(Side):
    """The framework model that was exported to ``model``: a run hands back each mapped layer's output (the
    last call of a module called several times) under the name of the ONNX tensor holding it."""

    rerunnable = False

    def __init__(self, framework_model: Any, model: onnxscope.Model | str, label: str | None = None) -> None:
        super().__init__(model if isinstance(model, onnxscope.Model) else onnxscope.load(model))
        layer_map = self.model.layer_map
        if not layer_map.get("layers"):
            raise UnsupportedError(
                "the ONNX model has no layer map; export it with converters.from_torch/from_keras"
            )
        self.framework_model = framework_model
        self.framework = layer_map.get("framework", "torch")
        self.layers = {k: info["output"] for k, info in layer_map["layers"].items()}
        self.label = label or f"{self.framework} {type(framework_model).__name__}"
        self.notes: list[str] = []

    def tensors(self) -> Collection[str] | None:
        return set(self.layers.values())

    def run(self, feeds: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        arrays = tuple(np.asarray(feeds[n]) for n in self.inputs())
        if self.framework == "torch":
            got, notes = _torch_layers(self.framework_model, arrays, list(self.layers))
            self.notes = list(notes)
        else:
            got = _keras_layers(self.framework_model, arrays, list(self.layers))
        out = {self.layers[k]: v for k, v in got.items()}
        out.update({k: np.asarray(v) for k, v in feeds.items()})
        return out

    def shapes(self, run: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
        return {}  # framework layouts (NHWC) are not the ONNX model's

    def rerun(self, model: Any, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise UnsupportedError("a framework model's layers cannot be re-run one by one")


def side(framework_model: Any, onnx_model: onnxscope.Model | str, label: str | None = None) -> FrameworkSide:
    """The torch ``nn.Module`` or Keras model that was exported to ``onnx_model``, as a side of
    :func:`onnxscope.compare` — ``compare(side(net, m), m, x, rtol=1e-4, atol=1e-4)`` finds the first divergence
    :func:`check` finds, with every metric, and the error each ONNX layer introduces.

    Raises:
        UnsupportedError: ``onnx_model`` has no layer map.

    Example:
        >>> import torch, tempfile, os, numpy as np, onnxscope, converters
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU())
        >>> m = converters.from_torch(net, (torch.randn(1, 3),), os.path.join(tempfile.mkdtemp(), "s.onnx"))
        >>> c = onnxscope.compare(side(net, m), m, {"input": np.ones((1, 3), np.float32)}, rtol=1e-4, atol=1e-4)
        >>> c.first_divergence is None, len(c.rows)
        (True, 2)
    """
    return FrameworkSide(framework_model, onnx_model, label)
