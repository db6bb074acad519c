"""Framework → ONNX converters that keep a map from every ONNX node and weight back to the framework's names.

- :func:`from_torch` exports an ``nn.Module`` with torch's dynamo exporter (``optimize=False``: trained weights
  stay as they are, under their parameter names) and stores the layer map in the model's metadata.
- :func:`from_keras` exports a Keras 3 / tf.keras model (Sequential or functional; a ``.keras``/``.h5`` file or a
  SavedModel folder) with tf2onnx, working around the Keras 3 ``KeyError: 'keras_tensor_N'``.
- :func:`check` runs the framework model and the ONNX model on the same inputs and compares every mapped layer.
- :func:`side` makes the framework model one side of :func:`onnxscope.compare` (every metric, introduced error).

torch and tensorflow are imported inside the functions, so ``import converters`` costs nothing; a missing
framework is a :class:`onnxscope.MissingDependencyError` naming the extra to install.

Example:
    >>> import converters
    >>> sorted(n for n in converters.__all__ if not n[0].isupper())
    ['check', 'from_keras', 'from_torch', 'side']
"""

from converters.keras_export import from_keras
from converters.parity import LayerParity, ParityReport, check
from converters.sides import FrameworkSide, side
from converters.torch_export import from_torch

__all__ = ["FrameworkSide", "LayerParity", "ParityReport", "check", "from_keras", "from_torch", "side"]
