"""Model inputs for a run: read from files, generated from the input signature, and checked before any run.

Every problem is refused before onnxruntime starts, with a one-line :class:`InputError` naming the input, what
the model expects, and what was given.

Example:
    >>> from onnxscope import Model
    >>> from onnxscope.testing import mlp_model
    >>> feeds = prepare_inputs(Model(mlp_model()), random=True, seed=0, dims={"batch": 2})
    >>> feeds["x"].shape, feeds["x"].dtype
    ((2, 3), dtype('float32'))
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir

from onnxscope._files import check_npy_header, check_npz, open_regular
from onnxscope._load import read_tensor_pb
from onnxscope.errors import InputError, OnnxscopeError
from onnxscope.graph import Graph

__all__ = ["InputSpec", "input_specs", "parse_dims", "prepare_inputs", "read_inputs"]


@dataclass(frozen=True)
class InputSpec:
    """What the model expects for one input: dtype and shape (ints, symbolic names, ``None`` = unknown)."""

    name: str
    dtype: np.dtype | None
    shape: tuple[int | str | None, ...] | None
    optional: bool  # has an initializer default
    kind: str = "tensor"  # or "sequence", "optional", "map"…: passed through unchecked

    def describe(self) -> str:
        """E.g. ``float32 [batch, 3]``."""
        dt = "?" if self.dtype is None else str(self.dtype)
        sh = (
            "[?]"
            if self.shape is None
            else "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"
        )
        return f"{dt} {sh}"


def input_specs(graph: Graph) -> list[InputSpec]:
    """The model's inputs (graph inputs that are not plain initializers), in order."""
    g = graph.ir.graph
    out = []
    for v in g.inputs:
        dtype = None
        if v.dtype is not None and v.dtype != ir.DataType.STRING:
            dtype = np.dtype(v.dtype.numpy())
        elif v.dtype == ir.DataType.STRING:
            dtype = np.dtype(object)
        shape = graph.shape(v) if v.shape is not None else None
        kind = "tensor"
        if v.type is not None and not isinstance(v.type, ir.TensorType):
            kind = type(v.type).__name__.replace("Type", "").lower()
        out.append(InputSpec(v.name or "", dtype, shape, v.name in g.initializers, kind))
    return out


def parse_dims(items: list[str] | None) -> dict[str, int]:
    """Parse ``["batch=4", "seq=16"]`` (the CLI's ``--dim``) into a dict.

    Example:
        >>> parse_dims(["batch=4", "seq=16"])
        {'batch': 4, 'seq': 16}
    """
    out: dict[str, int] = {}
    for item in items or []:
        key, sep, val = item.partition("=")
        if not sep or not key or not val.strip().isdigit():
            raise InputError(f"--dim {item!r}: expected NAME=SIZE with a whole number, e.g. batch=4")
        out[key.strip()] = int(val)
    return out


def _read_file(path: str) -> dict[str, np.ndarray] | np.ndarray:
    """One input file: ``.pb`` (ONNX ``TensorProto``), ``.npy`` or ``.npz``. Only regular files are opened (a FIFO
    or device is refused first); array headers are checked against the memory budget before any data is read."""
    label = f"input file {path!r}"
    if Path(path).suffix.lower() == ".pb":
        return read_tensor_pb(path, InputError)[1]  # type: ignore[return-value]
    with open_regular(path, label, InputError) as f:
        try:
            if f.read(4) == b"PK\x03\x04":  # a zip: .npz
                f.seek(0)
                with np.load(f, allow_pickle=False) as z:
                    check_npz(z, label, InputError)
                    return {k: z[k] for k in z.files}
            f.seek(0)
            check_npy_header(f, label, InputError)
            f.seek(0)
            return np.load(f, allow_pickle=False)
        except OnnxscopeError:
            raise
        except (
            Exception
        ) as e:  # zipfile/zlib/numpy on a damaged file: BadZipFile, NotImplementedError, EOFError…
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            if "allow_pickle" in reason:
                reason = "it holds Python objects; pickled data is never loaded"
            raise InputError(f"{label} is not a readable .npy, .npz or .pb file ({reason})") from e


def read_inputs(
    specs: list[str] | None = None, bundle: str | os.PathLike[str] | None = None
) -> dict[str, np.ndarray]:
    """Read inputs given as ``name=file`` (``.npy`` or ONNX ``TensorProto`` ``.pb``) and/or one bundle.

    ``bundle`` is an ``.npz`` (keys are input names) or an ONNX test-data-set folder of ``input_*.pb`` files
    (named by the names stored in them). A ``.pb`` tensor's external data must lie in the ``.pb``'s own folder
    (the rules of :func:`onnxscope._load.resolve_external`); non-regular files are refused before being opened.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp(); np.save(os.path.join(d, "x.npy"), np.zeros(3, np.float32))
        >>> read_inputs([f"x={d}/x.npy"])["x"].shape
        (3,)
    """
    feeds: dict[str, np.ndarray] = {}
    if bundle is not None:
        b = Path(bundle)
        if b.is_dir():
            files = sorted(
                b.glob("input_*.pb"),
                key=lambda q: int(q.stem.split("_")[-1]) if q.stem.split("_")[-1].isdigit() else 0,
            )
            if not files:
                raise InputError(f"input folder {os.fspath(b)!r} has no input_*.pb files")
            for f in files:  # external data of a .pb resolves inside this folder, never the working directory
                name, arr = read_tensor_pb(f, InputError)
                feeds[name or f.stem] = np.asarray(arr)
        else:
            data = _read_file(os.fspath(b))
            if not isinstance(data, dict):
                raise InputError(
                    f"inputs file {os.fspath(b)!r} holds one array; use an .npz with one key per input"
                )
            feeds.update(data)
    for spec in specs or []:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--input {spec!r}: expected NAME=FILE (a .npy or .pb file)")
        data = _read_file(path)
        if isinstance(data, dict):
            if name not in data:
                raise InputError(f"--input {spec!r}: {path} has no array {name!r} (it has {', '.join(data)})")
            data = data[name]
        feeds[name] = np.asarray(data)
    return feeds


def _random(spec: InputSpec, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    dt = spec.dtype if spec.dtype is not None else np.dtype(np.float32)
    if dt.kind == "f":
        return rng.standard_normal(shape).astype(dt)
    if dt.kind in "iu":
        return rng.integers(0, 10, size=shape).astype(dt)  # small ids: valid for embeddings and indices
    if dt.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    raise InputError(
        f"input {spec.name!r} ({spec.describe()}): cannot generate random data of this type; pass a file"
    )


def prepare_inputs(
    graph: Graph,
    given: Mapping[str, np.ndarray] | None = None,
    *,
    random: bool = False,
    seed: int = 0,
    dims: Mapping[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """Check ``given`` against the model's signature and fill missing inputs with random data when asked.

    Symbolic dimensions take their size from ``dims`` or from the arrays given; one symbol must have one size.

    Raises:
        InputError: unknown input name, missing input, wrong dtype, rank or shape, unsettled symbolic dim.
    """
    specs = input_specs(graph)
    by_name = {s.name: s for s in specs}
    given = dict(given or {})
    valid = ", ".join(f"{s.name} ({s.describe()})" for s in specs if not s.optional) or "none"
    for name in given:
        if name not in by_name:
            raise InputError(f"the model has no input {name!r}; its inputs are {valid}")
    sizes: dict[str, int] = dict(dims or {})
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        if spec.name not in given:
            continue
        if spec.kind != "tensor":
            feeds[spec.name] = given[spec.name]  # sequences, optionals, maps: onnxruntime checks them
            continue
        a = np.asarray(given[spec.name])
        if (
            spec.dtype is not None
            and a.dtype != spec.dtype
            and not (spec.dtype.kind == "O" and a.dtype.kind in "OU")
        ):
            raise InputError(
                f"input {spec.name!r}: the model expects {spec.describe()}, got {a.dtype} {list(a.shape)}"
            )
        if spec.shape is not None:
            if a.ndim != len(spec.shape):
                raise InputError(
                    f"input {spec.name!r}: the model expects rank {len(spec.shape)} ({spec.describe()}), "
                    f"got rank {a.ndim} {list(a.shape)}"
                )
            for axis, (want, got) in enumerate(zip(spec.shape, a.shape, strict=True)):
                if isinstance(want, int) and want != got:
                    raise InputError(
                        f"input {spec.name!r}: the model expects {spec.describe()}, got {list(a.shape)} "
                        f"(axis {axis} must be {want})"
                    )
                if isinstance(want, str):
                    if sizes.setdefault(want, got) != got:
                        raise InputError(
                            f"input {spec.name!r}: dimension {want!r} is {sizes[want]} elsewhere but {got} here "
                            f"(axis {axis} of {list(a.shape)})"
                        )
        feeds[spec.name] = a
    rng = np.random.default_rng(seed)
    for spec in specs:
        if spec.name in feeds or spec.optional:
            continue
        if not random:
            raise InputError(
                f"missing input {spec.name!r} ({spec.describe()}); pass it, or ask for random data (--random)"
            )
        if spec.kind != "tensor":
            raise InputError(
                f"input {spec.name!r} is a {spec.kind}; random data is generated only for tensors"
            )
        if spec.shape is None:
            raise InputError(f"input {spec.name!r} has an unknown shape; pass it as a file")
        shape = []
        for axis, d in enumerate(spec.shape):
            if isinstance(d, int):
                shape.append(d)
            elif isinstance(d, str) and d in sizes:
                shape.append(sizes[d])
            else:
                what = (
                    f"symbolic dimension {d!r}" if isinstance(d, str) else f"unknown dimension at axis {axis}"
                )
                hint = f"--dim {d}=N" if isinstance(d, str) else "pass the input as a file"
                raise InputError(f"input {spec.name!r} ({spec.describe()}) has a {what}; set it ({hint})")
        feeds[spec.name] = _random(spec, tuple(shape), rng)
    return feeds
