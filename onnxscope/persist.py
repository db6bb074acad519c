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
from typing import Any

import numpy as np

from onnxscope._files import check_npz, open_regular
from onnxscope.errors import ModelLoadError, OnnxscopeError
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
    arrays = {k: _storable(np.asarray(cap[k])) for k in cap if k not in folded and k != META_KEY}
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


def _is_str_list(x: Any) -> bool:
    return isinstance(x, list) and all(isinstance(v, str) for v in x)


def _check_meta(meta: Any, names: list[str]) -> str | None:
    """What is wrong with a capture's metadata, or ``None``: types are checked here so that no later read trips
    on a hand-edited or damaged file (``names`` are the file's array entries)."""
    if not isinstance(meta, dict):
        return "the metadata is not an object"
    fmt = meta.get("format", 1)
    if fmt not in (1, _FORMAT):
        return f"format {fmt!r} (this onnxscope reads formats 1 and {_FORMAT})"
    missing = [k for k in ("tensors", "inputs", "outputs", *(["keys"] if fmt == 1 else [])) if k not in meta]
    if missing:
        return f"no {', '.join(map(repr, missing))}"
    if not (meta.get("model") is None or isinstance(meta["model"], str)):
        return "'model' is not a path"
    if not (meta.get("optimization") is None or isinstance(meta["optimization"], str)):
        return "'optimization' is not a level"
    for key in ("inputs", "outputs", "keys", "constants"):
        if not _is_str_list(meta.get(key, [])):
            return f"{key!r} is not a list of names"
    if fmt == 1 and len(meta["keys"]) != len(names):
        return f"{len(meta['keys'])} names for {len(names)} arrays"
    skipped = meta.get("skipped", {})
    if not (isinstance(skipped, dict) and all(isinstance(v, str) for v in skipped.values())):
        return "'skipped' is not a mapping of names to reasons"
    nodes = meta.get("nodes", {})
    if not isinstance(nodes, dict):
        return "'nodes' is not a mapping"
    for name, n in nodes.items():
        ios = [*n.get("inputs", []), *n.get("outputs", [])] if isinstance(n, dict) else [0]
        if not (
            isinstance(n, dict)
            and isinstance(n.get("op"), str)
            and all(isinstance(v, (str, type(None))) for v in ios)
        ):
            return f"node {name!r} is malformed"
    tensors = meta["tensors"]
    if not isinstance(tensors, dict):
        return "'tensors' is not a mapping"
    for name, t in tensors.items():
        ok = (
            isinstance(t, dict)
            and isinstance(t.get("name"), str)
            and isinstance(t.get("tensor"), str)
            and all(isinstance(t.get(k), (str, type(None))) for k in ("node", "op", "module", "source"))
            and isinstance(t.get("scopes"), list)
            and all(isinstance(sc, list) and len(sc) == 3 and _is_str_list(sc) for sc in t["scopes"])
            and isinstance(t.get("conditions"), list)
            and all(isinstance(c, list) and len(c) == 2 and isinstance(c[0], str) for c in t["conditions"])
        )
        if not ok:
            return f"tensor {name!r} is malformed"
    return None


def _storable(a: np.ndarray) -> np.ndarray:
    """String tensors as fixed-width text (``np.savez`` would pickle object arrays, which are never read back)."""
    if a.dtype != object:
        return a
    if all(isinstance(x, bytes) for x in a.flat):
        return a.astype(np.bytes_)
    return a.astype(np.str_)


def load_capture(
    path: str | os.PathLike[str], model: Model | str | os.PathLike[str] | None = None
) -> Capture:
    """Read a capture written by :meth:`Capture.save`; pass ``model`` to read weights, folded tensors and use
    ``.neuron``.

    Only a regular file is opened (a FIFO or device is refused first); every array header is checked against the
    memory budget and the metadata's types before anything is read; nothing is ever unpickled.

    Raises:
        ModelLoadError: not a readable onnxscope capture (missing, not a regular file, not an ``.npz``, damaged,
            or with broken metadata).

    Example:
        >>> import numpy as np, onnxscope, tempfile, os
        >>> from onnxscope.testing import mlp_model
        >>> cap = onnxscope.capture(onnxscope.Model(mlp_model()), {"x": np.ones((2, 3), np.float32)})
        >>> back = load_capture(cap.save(os.path.join(tempfile.mkdtemp(), "c.npz")))
        >>> bool(np.array_equal(back["y"], cap["y"])), back.info("h").op
        (True, 'Gemm')
    """
    p = os.fspath(path)
    if not os.path.lexists(p):
        raise ModelLoadError(f"{p}: no such capture file")
    with open_regular(p, f"capture file {p!r}", ModelLoadError) as f:
        if f.read(4) != b"PK\x03\x04":
            raise ModelLoadError(f"{p}: not an onnxscope capture (not an .npz file)")
        f.seek(0)
        try:
            with np.load(f, allow_pickle=False) as z:
                if META_KEY not in z.files:
                    raise ModelLoadError(f"{p}: not an onnxscope capture (no {META_KEY} entry)")
                check_npz(z, f"capture file {p!r}", ModelLoadError)
                raw = z[META_KEY]
                if raw.dtype != np.uint8 or raw.ndim != 1:
                    raise ModelLoadError(
                        f"{p}: not a readable onnxscope capture (metadata of type {raw.dtype})"
                    )
                meta = json.loads(bytes(raw).decode())
                names = [k for k in z.files if k != META_KEY]
                problem = _check_meta(meta, names)
                if problem:
                    raise ModelLoadError(
                        f"{p}: not a readable onnxscope capture (broken metadata: {problem})"
                    )
                if meta.get("format", 1) == 1:  # arrays under t0, t1… in the order of "keys"
                    arrays = {k: z[f"t{i}"] for i, k in enumerate(meta["keys"])}
                    folded = list(meta.get("constants", []))
                else:
                    arrays = {k: z[k] for k in names}
                    folded = [k for k, m in meta["tensors"].items() if m.get("source") == "folded"]
                tensors = {k: TensorMeta.from_dict(v) for k, v in meta["tensors"].items()}
                inputs = tuple(meta["inputs"])
        except OnnxscopeError:
            raise
        except Exception as e:  # zipfile, zlib, numpy, json on a damaged file: BadZipFile, EOFError…
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ModelLoadError(f"{p}: not a readable onnxscope capture ({reason})") from e
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
