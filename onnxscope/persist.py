"""Captures on disk: one ``.npz`` keyed by tensor name, plus one metadata entry; nothing is ever pickled.

``np.load("run.npz")["layer1/relu"]`` works without onnxscope. Recomputed tensors are written out like captured
ones; tensors computed from the weights alone are not (they are the same for every input): reading them back
needs the model (``load_capture(path, model=...)``).

Example:
    >>> import numpy as np, onnxscope, tempfile, os
    >>> from onnxscope.testing import mlp_model
    >>> cap = onnxscope.capture(onnxscope.Model(mlp_model()), {"x": np.ones((2, 3), np.float32)})
    >>> path = save_capture(cap, os.path.join(tempfile.mkdtemp(), "c.npz"))
    >>> bool(np.array_equal(np.load(path)["y"], cap["y"])), bool(np.array_equal(load_capture(path)["y"], cap["y"]))
    (True, True)
"""

from __future__ import annotations

import json
import os

import numpy as np

from onnxscope.errors import ModelLoadError
from onnxscope.expose import TensorMeta
from onnxscope.model import Model, load
from onnxscope.render import save_npz
from onnxscope.result import Capture, Provenance, Storage

__all__ = ["META_KEY", "load_capture", "save_capture"]

META_KEY = "__onnxscope__"
_FORMAT = 2


def save_capture(cap: Capture, path: str | os.PathLike[str]) -> str:
    """Write ``cap`` to one ``.npz`` (atomically): every array under its tensor name, metadata under
    ``__onnxscope__`` (JSON bytes). Recomputed tensors are computed first; folded ones are left to the model.

    Raises:
        InputError: the path does not end in ``.npz`` or its folder does not exist.
    """
    p = cap.provenance
    cap.storage.materialize()
    folded = [k for k, m in p.meta.items() if m.source == "folded"]
    arrays = {k: np.asarray(cap[k]) for k in cap if k not in folded and k != META_KEY}
    meta = {
        "format": _FORMAT,
        "model": p.model_path,
        "optimization": p.optimization,
        "inputs": list(p.inputs),
        "outputs": list(p.outputs),
        "tensors": {k: m.to_dict() for k, m in p.meta.items()},
        "nodes": dict(p.nodes),
        "skipped": dict(p.skipped),
    }
    arrays[META_KEY] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    return save_npz(path, arrays)


def load_capture(
    path: str | os.PathLike[str], model: Model | str | os.PathLike[str] | None = None
) -> Capture:
    """Read a capture written by :meth:`Capture.save`; pass ``model`` to read weights, folded tensors and use
    ``.neuron``.

    Raises:
        ModelLoadError: not a readable onnxscope capture.

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
            if META_KEY not in z.files:
                raise ModelLoadError(f"{p}: not an onnxscope capture (no {META_KEY} entry)")
            meta = json.loads(bytes(z[META_KEY]).decode())
            if meta.get("format", 1) == 1:  # arrays under t0, t1… in the order of "keys"
                arrays = {k: z[f"t{i}"] for i, k in enumerate(meta["keys"])}
                folded = list(meta.get("constants", []))
            else:
                arrays = {k: z[k] for k in z.files if k != META_KEY}
                folded = [k for k, m in meta["tensors"].items() if m.get("source") == "folded"]
            tensors = {k: TensorMeta.from_dict(v) for k, v in meta["tensors"].items()}
            inputs = tuple(meta["inputs"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelLoadError(f"{p}: not a readable onnxscope capture ({e})") from e
    if isinstance(model, (str, os.PathLike)):
        model = load(model)
    provenance = Provenance(
        meta={**{k: TensorMeta(k, k, None, None, source="input") for k in inputs}, **tensors},
        inputs=inputs,
        outputs=tuple(meta["outputs"]),
        nodes=meta.get("nodes", {}),
        skipped=meta.get("skipped", {}),
        model_path=meta.get("model"),
        optimization=meta.get("optimization"),
    )
    storage = Storage(
        arrays=arrays,
        lazy=dict.fromkeys(folded, "folded"),
        order=tuple(provenance.meta),
        model=model,
    )
    return Capture(storage=storage, provenance=provenance, model=model)
