"""PyTorch → ONNX with the dynamo exporter, keeping trained weights intact and a node ↔ module map."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import onnxscope
from converters._common import require, write_layer_map
from onnxscope.errors import ConversionError
from onnxscope.graph import module_path_of


def from_torch(
    module: Any,
    example_inputs: Any,
    path: str | os.PathLike[str],
    *,
    opset: int | None = None,
    dynamic_shapes: Any = None,
    input_names: Sequence[str] | None = None,
) -> onnxscope.Model:
    """Export ``module`` to ``path`` and return it loaded, with its layer map stored in the model.

    Uses ``torch.onnx.export(dynamo=True, optimize=False)``: BatchNorm is not folded and Linear weights are not
    renamed, so every initializer keeps its parameter name and value. Unused nodes are then removed.

    Example:
        >>> import torch, tempfile, os
        >>> m = from_torch(torch.nn.Linear(3, 2), (torch.randn(1, 3),), os.path.join(tempfile.mkdtemp(), "l.onnx"))
        >>> m.weights["weight"].shape
        (2, 3)
    """
    torch = require("torch", "torch")
    require("onnxscript", "torch")
    path = os.fspath(path)
    if not isinstance(example_inputs, tuple):
        example_inputs = (example_inputs,)
    module = module.eval()
    kwargs: dict[str, Any] = {"dynamo": True, "optimize": False, "verbose": False}
    if opset is not None:
        kwargs["opset_version"] = opset
    if dynamic_shapes is not None:
        kwargs["dynamic_shapes"] = dynamic_shapes
    if input_names is not None:
        kwargs["input_names"] = list(input_names)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, example_inputs, path, **kwargs)
    except Exception as e:  # the exporter raises many types; the first line says what failed
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConversionError(f"torch.onnx.export failed for {type(module).__name__}: {first}") from e
    model = onnxscope.load(path)
    return write_layer_map(path, torch_layer_map(module, model))


def torch_layer_map(module: Any, model: onnxscope.Model) -> dict[str, Any]:
    """Node → module path (from the exporter's scopes), weight → parameter (with shared/tied names)."""
    nodes = {n.name: p for n in model.all_nodes() if n.name and (p := module_path_of(n)) is not None}
    params: dict[int, list[str]] = {}
    for name, p in module.named_parameters(remove_duplicate=False):
        params.setdefault(id(p), []).append(name)
    for name, b in module.named_buffers(remove_duplicate=False):
        params.setdefault(id(b), []).append(name)
    aliases = {names[0]: names[1:] for names in params.values()}
    weights: dict[str, dict[str, Any]] = {}
    for onnx_name in model.weights:
        for first, others in aliases.items():
            if onnx_name == first or onnx_name in others:
                info: dict[str, Any] = {"param": onnx_name, "transform": None}
                if others:
                    info["shared_with"] = [n for n in (first, *others) if n != onnx_name]
                weights[onnx_name] = info
    layers: dict[str, dict[str, Any]] = {}
    for path, _ in module.named_modules():
        members = [n for n in model.module_nodes(path)] if path else []
        if members:
            layers[path] = {"output": members[-1].outputs[0].name, "nodes": [n.name for n in members]}
    return {"framework": "torch", "nodes": nodes, "weights": weights, "layers": layers}
