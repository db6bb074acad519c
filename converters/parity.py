"""Layer-by-layer parity: the framework model against its ONNX export, on the same inputs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

import onnxscope
from converters._common import require
from onnxscope.errors import InputError, UnsupportedError


@dataclass(frozen=True)
class LayerParity:
    """One mapped layer: the ONNX tensor holding its output and how far it is from the framework's."""

    layer: str
    tensor: str
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    ok: bool
    note: str = ""


@dataclass(frozen=True)
class ParityReport:
    """Every mapped layer in graph order, and the first one that diverges beyond ``tolerance`` (or ``None``)."""

    rows: tuple[LayerParity, ...]
    tolerance: float
    first_divergence: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """Whether every layer is within tolerance."""
        return self.first_divergence is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "ok": self.ok,
            "tolerance": self.tolerance,
            "first_divergence": self.first_divergence,
            "layers": [asdict(r) for r in self.rows],
            "notes": list(self.notes),
        }


def _compare(layer: str, tensor: str, got: np.ndarray, want: np.ndarray, tol: float) -> LayerParity:
    note = ""
    if got.shape != want.shape and got.ndim == 4 and got.transpose(0, 2, 3, 1).shape == want.shape:
        got, note = got.transpose(0, 2, 3, 1), "compared NCHW as NHWC"
    if got.shape != want.shape:
        return LayerParity(
            layer,
            tensor,
            tuple(got.shape),
            float("inf"),
            float("inf"),
            False,
            f"shape {list(got.shape)} vs framework {list(want.shape)}",
        )
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = float((diff / (np.abs(want.astype(np.float64)) + 1e-12)).max()) if diff.size else 0.0
    ok = bool(np.allclose(got, want, rtol=tol, atol=tol))
    return LayerParity(layer, tensor, tuple(got.shape), max_abs, max_rel, ok, note)


def _torch_layers(
    module: Any, inputs: tuple[Any, ...], names: list[str]
) -> tuple[dict[str, np.ndarray], list[str]]:
    torch = require("torch", "torch")
    outputs: dict[str, list[np.ndarray]] = {}
    handles = []
    modules = dict(module.named_modules())

    def hook(name: str) -> Any:
        def record(_m: Any, _i: Any, out: Any) -> None:
            if isinstance(
                out, torch.Tensor
            ):  # cloned now: a later in-place op (ReLU(inplace=True)) cannot alter it
                outputs.setdefault(name, []).append(out.detach().clone().numpy())

        return record

    for name in names:
        if name in modules:
            handles.append(modules[name].register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            module.eval()(*[torch.as_tensor(x) for x in inputs])
    finally:
        for h in handles:
            h.remove()
    notes = [
        f"module {k!r} was called {len(v)} times; compared its last call"
        for k, v in outputs.items()
        if len(v) > 1
    ]
    return {k: v[-1] for k, v in outputs.items()}, notes


def _keras_layers(model: Any, inputs: tuple[Any, ...], names: list[str]) -> dict[str, np.ndarray]:
    tf = require("tensorflow", "tf")
    wanted = [n for n in names if n in {layer.name for layer in model.layers}]
    probe = tf.keras.Model(model.inputs, [model.get_layer(n).output for n in wanted])
    values = probe(list(inputs) if len(inputs) > 1 else inputs[0], training=False)
    if len(wanted) == 1:
        values = [values]
    return {n: np.asarray(v) for n, v in zip(wanted, values, strict=True)}


def check(
    framework_model: Any,
    onnx_model: onnxscope.Model | str,
    inputs: Any,
    tolerance: float = 1e-4,
) -> ParityReport:
    """Run both models on ``inputs`` and compare the output of every layer in the ONNX model's layer map.

    Parameters:
        framework_model: the torch ``nn.Module`` or Keras model that was exported.
        onnx_model: the exported model (from :func:`from_torch` / :func:`from_keras`, which store the map).
        inputs: one array or a tuple of arrays, in the model's input order.
        tolerance: ``rtol`` and ``atol`` of the comparison.

    Returns:
        A :class:`ParityReport`; ``first_divergence`` names the earliest layer (in graph order) beyond tolerance.
    """
    model = onnx_model if isinstance(onnx_model, onnxscope.Model) else onnxscope.load(onnx_model)
    layer_map = model.layer_map
    if not layer_map.get("layers"):
        raise UnsupportedError(
            "the ONNX model has no layer map; export it with converters.from_torch/from_keras"
        )
    arrays = tuple(
        np.asarray(x.numpy() if hasattr(x, "numpy") else x)
        for x in (inputs if isinstance(inputs, (tuple, list)) else (inputs,))
    )
    names = [v.name for v in model.ir.graph.inputs if v.name not in model.ir.graph.initializers]
    if len(arrays) != len(names):
        raise InputError(f"the model takes {len(names)} input(s) ({', '.join(names)}); {len(arrays)} given")
    layers = layer_map["layers"]
    if layer_map.get("framework") == "torch":
        expected, notes = _torch_layers(framework_model, arrays, list(layers))
    else:
        expected, notes = _keras_layers(framework_model, arrays, list(layers)), []
    cap = onnxscope.capture(
        model,
        dict(zip(names, arrays, strict=True)),
        select=[info["output"] for k, info in layers.items() if k in expected],
    )
    position = {n.outputs[0].name: i for i, n in enumerate(model.all_nodes()) if n.outputs}
    rows = sorted(
        (
            _compare(k, info["output"], cap[info["output"]], expected[k], tolerance)
            for k, info in layers.items()
            if k in expected
        ),
        key=lambda r: position.get(r.tensor, 0),
    )
    first = next((r.layer for r in rows if not r.ok), None)
    return ParityReport(tuple(rows), tolerance, first, tuple(notes))
