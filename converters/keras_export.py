"""Keras / TensorFlow → ONNX with tf2onnx, and a map from ONNX nodes and weights back to Keras layers."""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

import onnxscope
from converters._common import require, write_layer_map
from onnxscope.errors import ConversionError, InputError

_SUFFIX = re.compile(r"_\d+$")


def _load_keras(source: Any) -> Any:
    tf = require("tensorflow", "tf")
    if not isinstance(source, (str, os.PathLike)):
        return source
    p = os.fspath(source)
    if not os.path.exists(p):
        raise InputError(f"Keras model {p!r} not found (a .keras or .h5 file, or a SavedModel folder)")
    if os.path.isdir(p):
        return p  # a SavedModel folder: converted from its graph
    try:
        return tf.keras.models.load_model(p, compile=False)
    except Exception as e:
        raise ConversionError(f"cannot load Keras model {p}: {str(e).splitlines()[0]}") from e


def from_keras(
    model: Any,
    path: str | os.PathLike[str],
    *,
    opset: int = 17,
    batch: int | None = None,
) -> onnxscope.Model:
    """Export a Keras model (object, ``.keras``/``.h5`` file, or SavedModel folder) to ``path`` with tf2onnx.

    The batch dimension stays dynamic unless ``batch`` is given. For Keras models, the layer map (node → layer
    name, weight → ``layer/variable``) is stored in the model; SavedModel folders are mapped by their scopes.

    Example:
        >>> import tensorflow as tf, tempfile, os
        >>> k = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(2, name="fc")])
        >>> from_keras(k, os.path.join(tempfile.mkdtemp(), "k.onnx")).layer("fc").op_type
        'MatMul'
    """
    tf = require("tensorflow", "tf")
    tf2onnx = require("tf2onnx", "tf")
    path = os.fspath(path)
    model = _load_keras(model)
    try:
        if isinstance(model, str):
            from tf2onnx import tf_loader

            graph_def, inputs, outputs = tf_loader.from_saved_model(model, None, None)
            tf2onnx.convert.from_graph_def(
                graph_def, input_names=inputs, output_names=outputs, opset=opset, output_path=path
            )
            return onnxscope.load(path)
        spec = tuple(
            tf.TensorSpec((batch, *t.shape[1:]), t.dtype, name=_input_name(t, i))
            for i, t in enumerate(model.inputs)
        )
        if not getattr(model, "output_names", None) or any(
            n.startswith("keras_tensor") for n in model.output_names
        ):
            # Keras 3 models name outputs keras_tensor_N, which tf2onnx cannot find (KeyError): name them
            model.output_names = [
                f"output_{i}" if len(model.outputs) > 1 else "output" for i in range(len(model.outputs))
            ]
        tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset, output_path=path)
    except (InputError, ConversionError):
        raise
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConversionError(
            f"tf2onnx failed for {getattr(model, 'name', model)!r}: {type(e).__name__}: {first}"
        ) from e
    return write_layer_map(path, keras_layer_map(model, onnxscope.load(path)))


def _input_name(t: Any, i: int) -> str:
    name = getattr(t, "name", None) or f"input_{i}"
    return name.split(":")[0]


def _layer_of_scope(node_name: str, layers: set[str]) -> str | None:
    """``model_1/dense_1/MatMul`` → ``dense`` (tf name scopes carry a uniquifying ``_N`` per trace)."""
    parts = node_name.split("/")
    if len(parts) < 3:
        return None
    scope = parts[1]
    stripped = _SUFFIX.sub("", scope)
    if stripped in layers:
        return stripped
    return scope if scope in layers else None


def keras_layer_map(model: Any, onnx_model: onnxscope.Model) -> dict[str, Any]:
    """Node → Keras layer (from tf2onnx scopes), weight → ``layer/variable`` (matched by value)."""
    layers = {layer.name for layer in model.layers}
    nodes = {
        n.name: layer for n in onnx_model.all_nodes() if n.name and (layer := _layer_of_scope(n.name, layers))
    }
    weights: dict[str, dict[str, Any]] = {}
    dropped: list[str] = []
    arrays = {k: w for k, w in onnx_model.weights.items() if w.dtype.startswith("float")}
    for layer in model.layers:
        for var in layer.weights:
            value = np.asarray(var.numpy())
            param = f"{layer.name}/{var.name.split('/')[-1].split(':')[0]}"
            before = len(weights)
            for k, w in arrays.items():
                if k in weights or w.size != value.size:
                    continue
                stored = w.numpy()
                if stored.shape == value.shape and np.array_equal(stored, value):
                    weights[k] = {"param": param, "transform": None}
                    break
                if value.ndim >= 2 and stored.shape == value.T.shape and np.array_equal(stored, value.T):
                    weights[k] = {"param": param, "transform": "transposed"}
                    break
                if (
                    value.ndim == 4
                    and stored.shape == value.transpose(3, 2, 0, 1).shape
                    and np.array_equal(stored, value.transpose(3, 2, 0, 1))
                ):
                    weights[k] = {"param": param, "transform": "transposed HWIO→OIHW"}
                    break
            if len(weights) == before and not np.any(value):
                dropped.append(param)  # tf2onnx leaves all-zero biases out of the graph
    by_layer: dict[str, list[str]] = {}
    for n in onnx_model.all_nodes():
        if n.name in nodes:
            by_layer.setdefault(nodes[n.name], []).append(n.name)
    layer_outputs = {
        name: {"output": onnx_model.node(ns[-1]).outputs[0].name, "nodes": ns}
        for name, ns in by_layer.items()
    }
    return {
        "framework": "keras",
        "nodes": nodes,
        "weights": weights,
        "layers": layer_outputs,
        "dropped": dropped,
    }
