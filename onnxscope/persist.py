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
from typing import Any

import numpy as np

from onnxscope._files import check_npz, open_regular
from onnxscope.errors import ModelLoadError, OnnxscopeError
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


def _is_str_list(x: Any) -> bool:
    return isinstance(x, list) and all(isinstance(v, str) for v in x)


def _check_meta(meta: Any, n_arrays: int) -> str | None:
    """What is wrong with a capture's metadata, or ``None`` (types checked here so that no later read trips)."""
    if not isinstance(meta, dict):
        return "the metadata is not an object"
    if meta.get("format") != _FORMAT:
        return f"format {meta.get('format')!r} (this onnxscope reads format {_FORMAT})"
    if not (meta.get("model") is None or isinstance(meta["model"], str)):
        return "'model' is not a path"
    missing = [k for k in ("tensors", "inputs", "outputs", "keys") if k not in meta]
    if missing:
        return f"no {', '.join(map(repr, missing))}"
    for key in ("inputs", "outputs", "keys", "constants"):
        if not _is_str_list(meta.get(key, [])):
            return f"{key!r} is not a list of names"
    if len(meta.get("keys", [])) != n_arrays:
        return f"{len(meta.get('keys', []))} names for {n_arrays} arrays"
    skipped = meta.get("skipped", {})
    if not (isinstance(skipped, dict) and all(isinstance(v, str) for v in skipped.values())):
        return "'skipped' is not a mapping of names to reasons"
    nodes = meta.get("nodes", {})
    if not isinstance(nodes, dict):
        return "'nodes' is not a mapping"
    for name, n in nodes.items():
        if not (
            isinstance(n, dict)
            and isinstance(n.get("op"), str)
            and all(isinstance(v, (str, type(None))) for v in [*n.get("inputs", [0]), *n.get("outputs", [0])])
        ):
            return f"node {name!r} is malformed"
    tensors = meta.get("tensors")
    if not isinstance(tensors, dict):
        return "'tensors' is not a mapping"
    for name, t in tensors.items():
        ok = (
            isinstance(t, dict)
            and isinstance(t.get("name"), str)
            and isinstance(t.get("tensor"), str)
            and all(isinstance(t.get(k), (str, type(None))) for k in ("node", "op", "module"))
            and isinstance(t.get("scopes"), list)
            and all(isinstance(sc, list) and len(sc) == 3 and _is_str_list(sc) for sc in t["scopes"])
            and isinstance(t.get("conditions"), list)
            and all(isinstance(c, list) and len(c) == 2 and isinstance(c[0], str) for c in t["conditions"])
        )
        if not ok:
            return f"tensor {name!r} is malformed"
    return None


def load_capture(
    path: str | os.PathLike[str], model: Model | str | os.PathLike[str] | None = None
) -> Capture:
    """Read a capture written by :meth:`Capture.save`; pass ``model`` to read weights and use ``.neuron``.

    Raises :class:`ModelLoadError` for a file that is missing, not a regular file, not an ``.npz``, or whose
    metadata is broken; nothing in it is ever unpickled.

    Example:
        >>> import numpy as np, onnxscope, tempfile, os
        >>> from onnxscope.testing import mlp_model
        >>> cap = onnxscope.capture(onnxscope.Model(mlp_model()), {"x": np.ones((2, 3), np.float32)})
        >>> back = load_capture(cap.save(os.path.join(tempfile.mkdtemp(), "c.npz")))
        >>> bool(np.array_equal(back["y"], cap["y"])), back.info("h").op
        (True, 'Gemm')
    """
    p = os.fspath(path)
    label = f"capture file {p!r}"
    with open_regular(p, label, ModelLoadError) as f:
        if f.read(4) != b"PK\x03\x04":
            raise ModelLoadError(f"{p}: not an onnxscope capture (not an .npz file)")
        f.seek(0)
        try:
            with np.load(f, allow_pickle=False) as z:
                if not isinstance(z, np.lib.npyio.NpzFile) or _META_KEY not in z.files:
                    raise ModelLoadError(f"{p}: not an onnxscope capture (no {_META_KEY} entry)")
                check_npz(z, label, ModelLoadError)
                raw = z[_META_KEY]
                if raw.dtype != np.uint8 or raw.ndim != 1:
                    raise ModelLoadError(
                        f"{p}: not a readable onnxscope capture (metadata of type {raw.dtype})"
                    )
                meta = json.loads(bytes(raw).decode())
                stored = [k for k in z.files if k != _META_KEY]
                problem = _check_meta(meta, len(stored))
                if problem:
                    raise ModelLoadError(
                        f"{p}: not a readable onnxscope capture (broken metadata: {problem})"
                    )
                arrays = {k: z[f"t{i}"] for i, k in enumerate(meta["keys"])}
        except OnnxscopeError:
            raise
        except (
            Exception
        ) as e:  # zipfile/zlib/numpy on a damaged file: BadZipFile, NotImplementedError, EOFError…
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ModelLoadError(f"{p}: not a readable onnxscope capture ({reason})") from e
    if isinstance(model, (str, os.PathLike)):
        model = load(model)
    return Capture(
        arrays,
        {k: TensorMeta.from_dict(v) for k, v in meta["tensors"].items()},
        meta["inputs"],
        meta["outputs"],
        meta.get("nodes", {}),
        meta.get("skipped", {}),
        model,
        meta.get("model"),
        meta.get("constants", []),
    )
