"""What both converters share: importing a framework with a clear error, and writing the layer map."""

from __future__ import annotations

import importlib
import json
import os
from typing import Any

import onnx_ir as ir
import onnx_ir.passes.common

import onnxscope
from onnxscope.errors import ConversionError, MissingDependencyError
from onnxscope.graph import LAYER_MAP_KEY


def require(module: str, extra: str) -> Any:
    """Import ``module`` or raise a one-line MissingDependencyError naming the extra.

    Example:
        >>> require("json", "none").__name__
        'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(
            f"{module} is not installed; install the converter's extra: pip install 'onnxscope[{extra}]'"
        ) from e


def write_layer_map(path: str, layer_map: dict[str, Any]) -> onnxscope.Model:
    """Store ``layer_map`` in the model's metadata and drop unused nodes (the .onnx is rewritten atomically;
    external weights keep their file)."""
    model = ir.load(path)
    # safe clean-up only: drop nodes whose outputs nothing uses (values and weights are left as they are)
    ir.passes.common.RemoveUnusedNodesPass()(model)
    model.metadata_props[LAYER_MAP_KEY] = json.dumps(layer_map)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp")
    try:  # external weights keep their file and offsets; only the graph is rewritten (atomically)
        with open(tmp, "wb") as f:
            f.write(ir.to_proto(model).SerializeToString())
        os.replace(tmp, path)
    except Exception as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise ConversionError(f"cannot write the layer map into {path}: {e}") from e
    return onnxscope.load(path)
