"""onnxscope: the weights, neurons, activations and paths of any neural network, read from its ONNX graph.

Example:
    >>> import onnxscope, tempfile, os
    >>> from onnxscope.testing import mlp_model, save
    >>> m = onnxscope.load(save(mlp_model(), os.path.join(tempfile.mkdtemp(), "m.onnx")))
    >>> n = m.neuron("fc1", 0)
    >>> n.incoming.shape, n.outgoing[0].node
    ((3,), 'fc2')
"""

from onnxscope.capture import Capture, CaptureSession, NeuronValues, NodeValues, capture, load_capture
from onnxscope.dataset import DatasetStore, capture_dataset, merge_stats, open_store
from onnxscope.errors import (
    CaptureError,
    ConversionError,
    InputError,
    MissingDependencyError,
    ModelLoadError,
    NoPathError,
    NotFoundError,
    OnnxscopeError,
    UnsupportedError,
)
from onnxscope.expose import TensorMeta
from onnxscope.model import Model, Summary, load
from onnxscope.neurons import Neuron, Outgoing, Stop
from onnxscope.paths import Subgraph, all_paths, ancestors, between, descendants, extract, shortest_path
from onnxscope.patterns import AttentionBlock, Residual, find_attention, find_residuals
from onnxscope.stats import RunningStats
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
]
