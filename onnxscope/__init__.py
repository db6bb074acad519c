"""onnxscope: the weights, neurons, activations and paths of any neural network, read from its ONNX graph.

Example:
    >>> import onnxscope, tempfile, os
    >>> from onnxscope.testing import mlp_model, save
    >>> m = onnxscope.load(save(mlp_model(), os.path.join(tempfile.mkdtemp(), "m.onnx")))
    >>> n = m.neuron("fc1", 0)
    >>> n.incoming.shape, n.outgoing[0].node
    ((3,), 'fc2')
"""

from typing import TYPE_CHECKING, Any

# Public name -> the module defining it. Nothing is imported until a name is first used, so `import onnxscope` (and
# `onnxscope --help`) stays fast: onnx_ir pulls in sympy, and the run-time part onnxruntime.
_WHERE = {
    "load": "model",
    "Model": "model",
    "Summary": "model",
    "Weight": "weights",
    "Weights": "weights",
    "WeightStats": "weights",
    "Quantization": "weights",
    "Neuron": "neurons",
    "Outgoing": "neurons",
    "Stop": "neurons",
    "capture": "session",
    "CaptureSession": "session",
    "load_capture": "persist",
    "Capture": "result",
    "TensorMeta": "expose",
    "NodeValues": "views",
    "NeuronValues": "views",
    "capture_dataset": "dataset",
    "open_store": "dataset",
    "merge_stats": "dataset",
    "DatasetStore": "dataset",
    "RunningStats": "stats",
    "compare": "comparison",
    "check_kernels": "comparison",
    "Comparison": "comparison",
    "Side": "sides",
    "all_paths": "paths",
    "shortest_path": "paths",
    "ancestors": "paths",
    "descendants": "paths",
    "between": "paths",
    "extract": "paths",
    "Subgraph": "paths",
    "profile": "costs",
    "Profile": "costs",
    "LayerCost": "costs",
    "report": "page",
    "find_residuals": "patterns",
    "find_attention": "patterns",
    "Residual": "patterns",
    "AttentionBlock": "patterns",
    "OnnxscopeError": "errors",
    "ModelLoadError": "errors",
    "NotFoundError": "errors",
    "NoPathError": "errors",
    "InputError": "errors",
    "UnsupportedError": "errors",
    "CaptureError": "errors",
    "ConversionError": "errors",
    "MissingDependencyError": "errors",
    "ResourceError": "errors",
    "OutputError": "errors",
    "InternalError": "errors",
}

if TYPE_CHECKING:  # type checkers and IDEs see the same names, imported eagerly
    from onnxscope.comparison import Comparison, check_kernels, compare
    from onnxscope.costs import LayerCost, Profile, profile
    from onnxscope.dataset import DatasetStore, capture_dataset, merge_stats, open_store
    from onnxscope.errors import (
        CaptureError,
        ConversionError,
        InputError,
        InternalError,
        MissingDependencyError,
        ModelLoadError,
        NoPathError,
        NotFoundError,
        OnnxscopeError,
        OutputError,
        ResourceError,
        UnsupportedError,
    )
    from onnxscope.expose import TensorMeta
    from onnxscope.model import Model, Summary, load
    from onnxscope.neurons import Neuron, Outgoing, Stop
    from onnxscope.page import report
    from onnxscope.paths import Subgraph, all_paths, ancestors, between, descendants, extract, shortest_path
    from onnxscope.patterns import AttentionBlock, Residual, find_attention, find_residuals
    from onnxscope.persist import load_capture
    from onnxscope.result import Capture
    from onnxscope.session import CaptureSession, capture
    from onnxscope.sides import Side
    from onnxscope.stats import RunningStats
    from onnxscope.views import NeuronValues, NodeValues
    from onnxscope.weights import Quantization, Weight, Weights, WeightStats

__version__ = "0.1.0"

__all__ = [
    # loading
    "load",
    "Model",
    "Summary",
    # weights and neurons
    "Weight",
    "Weights",
    "WeightStats",
    "Quantization",
    "Neuron",
    "Outgoing",
    "Stop",
    # run-time capture
    "capture",
    "load_capture",
    "Capture",
    "CaptureSession",
    "TensorMeta",
    "NodeValues",
    "NeuronValues",
    # dataset scale
    "capture_dataset",
    "open_store",
    "merge_stats",
    "DatasetStore",
    "RunningStats",
    # comparing two runs
    "compare",
    "check_kernels",
    "Comparison",
    "Side",
    # paths and patterns
    "all_paths",
    "shortest_path",
    "ancestors",
    "descendants",
    "between",
    "extract",
    "Subgraph",
    "find_residuals",
    "find_attention",
    "Residual",
    "AttentionBlock",
    # cost profile and the audit report
    "profile",
    "Profile",
    "LayerCost",
    "report",
    # errors
    "OnnxscopeError",
    "ModelLoadError",
    "NotFoundError",
    "NoPathError",
    "InputError",
    "UnsupportedError",
    "CaptureError",
    "ConversionError",
    "MissingDependencyError",
    "ResourceError",
    "OutputError",
    "InternalError",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'onnxscope' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"onnxscope.{module}"), name)
    globals()[name] = value  # cached: later look-ups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
