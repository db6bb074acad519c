"""Captures on disk: one ``.npz`` per run, arrays plus one metadata entry; nothing is ever pickled.

Example:
    >>> import numpy as np, onnxscope, tempfile, os
    >>> from onnxscope.testing import mlp_model
    >>> cap = onnxscope.capture(onnxscope.Model(mlp_model()), {"x": np.ones((2, 3), np.float32)})
    >>> back = load_capture(save_capture(cap, os.path.join(tempfile.mkdtemp(), "c.npz")))
    >>> bool(np.array_equal(back["y"], cap["y"]))
    True
"""

from __future__ import annotations

import json
import os

import numpy as np

from onnxscope.errors import ModelLoadError
from onnxscope.expose import TensorMeta
from onnxscope.model import Model, load
from onnxscope.render import save_npz
from onnxscope.result import Capture

__all__ = ["load_capture", "save_capture"]

_META_KEY = "__onnxscope__"
_FORMAT = 1


def save_capture(cap: Capture, path: str | os.PathLike[str]) -> str:
    """Write every array and the metadata of ``cap`` to one ``.npz`` (atomically; nothing pickled)."""
    meta = {
        "format": _FORMAT,
        "model": cap.model_path,
        "inputs": cap._inputs,
        "outputs": cap._outputs,
        "tensors": {k: m.to_dict() for k, m in cap._meta.items()},
        "nodes": cap._nodes,
        "skipped": cap.skipped,
        "keys": list(cap._arrays),
        "constants": cap._constants,  # folded from the model's weights when read, not stored
        "derived": cap.derived,
    }
    stored = {**cap._arrays, **{k: cap[k] for k in cap._derived}}  # dequantized ones written out
    meta["keys"] = list(stored)
    arrays = {f"t{i}": a for i, a in enumerate(stored.values())}
    arrays[_META_KEY] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    return save_npz(path, arrays)


def load_capture(
    path: str | os.PathLike[str], model: Model | str | os.PathLike[str] | None = None
) -> Capture:
    """Read a capture written by :meth:`Capture.save`; pass ``model`` to read weights and use ``.neuron``.

    Example:
        >>> import numpy as np, onnxscope, tempfile, os
        >>> from onnxscope.testing import mlp_model
        >>> cap = onnxscope.capture(onnxscope.Model(mlp_model()), {"x": np.ones((2, 3), np.float32)})
        >>> back = load_capture(cap.save(os.path.join(tempfile.mkdtemp(), "c.npz")))
        >>> bool(np.array_equal(back["y"], cap["y"])), back.info("h").op
        (True, 'Gemm')
    """
    p = os.fspath(path)
    if not os.path.exists(p):
        raise ModelLoadError(f"{p}: no such capture file")
    try:
        with np.load(p, allow_pickle=False) as z:
            if _META_KEY not in z.files:
                raise ModelLoadError(f"{p}: not an onnxscope capture (no {_META_KEY} entry)")
            meta = json.loads(bytes(z[_META_KEY]).decode())
            arrays = {k: z[f"t{i}"] for i, k in enumerate(meta["keys"])}
    except (OSError, ValueError, KeyError) as e:
        raise ModelLoadError(f"{p}: not a readable onnxscope capture ({e})") from e
    if isinstance(model, (str, os.PathLike)):
        model = load(model)
    return Capture(
        arrays,
        {k: TensorMeta.from_dict(v) for k, v in meta["tensors"].items()},
        meta["inputs"],
        meta["outputs"],
        meta["nodes"],
        meta["skipped"],
        model,
        meta.get("model"),
        meta.get("constants", []),
    )
