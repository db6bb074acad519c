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

from onnxscope._files import check_npy_header, check_npz, open_regular
from onnxscope._ir import ir
from onnxscope._load import read_tensor_pb
from onnxscope.errors import InputError, OnnxscopeError
from onnxscope.graph import Graph, dim_of
from onnxscope.graph import attr as graph_attr

__all__ = [
    "InputSpec",
    "input_specs",
    "is_free",
    "parse_dims",
    "prepare_inputs",
    "read_inputs",
    "resolve_dims",
]


FREE_NAMES = frozenset({"", "?"})  # dim_param values that name nothing: free like -1, 0 and unnamed dims


def is_free(d: int | str | None) -> bool:
    """Whether a declared dimension is free: ``-1``, ``0``, an empty or ``?`` name, or no value at all (every
    free dimension is independent of the others; a named one must have one size everywhere).

    Example:
        >>> [is_free(d) for d in (-1, 0, None, "", "?", 3, "batch")]
        [True, True, True, True, True, False, False]
    """
    return d is None or (isinstance(d, int) and d <= 0) or (isinstance(d, str) and d.strip() in FREE_NAMES)


@dataclass(frozen=True)
class InputSpec:
    """What the model expects for one input: dtype and shape (ints, symbolic names, ``None`` = unknown; ``-1``
    and ``0`` as declared — see :func:`is_free`)."""

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
            else "[" + ", ".join("?" if d is None or d == "" else str(d) for d in self.shape) + "]"
        )
        return f"{dt} {sh}"


def input_specs(graph: Graph) -> list[InputSpec]:
    """The model's inputs (graph inputs that are not plain initializers), in order, with shapes as declared.

    Example:
        >>> from onnxscope import Model
        >>> from onnxscope.testing import mlp_model
        >>> input_specs(Model(mlp_model()))[0].describe()
        'float32 [batch, 3]'
    """
    g = graph.ir.graph
    out = []
    for v in g.inputs:
        dtype = None
        if v.dtype is not None and v.dtype != ir.DataType.STRING:
            try:
                dtype = np.dtype(v.dtype.numpy())
            except (TypeError, ValueError):
                dtype = None
        elif v.dtype == ir.DataType.STRING:
            dtype = np.dtype(object)
        shape = None if v.shape is None else tuple(dim_of(d) for d in v.shape)
        kind = "tensor"
        if v.type is not None and not isinstance(v.type, ir.TensorType):
            kind = type(v.type).__name__.replace("Type", "").lower()
        out.append(InputSpec(v.name or "", dtype, shape, v.name in g.initializers, kind))
    return out


def parse_dims(items: list[str] | None) -> dict[str, int]:
    """Parse ``["batch=4", "x:2=48"]`` (the CLI's ``--dim``) into a dict: a dimension by name, or by
    ``input:axis`` (any dimension, free ones included).

    Example:
        >>> parse_dims(["batch=4", "x:2=48"])
        {'batch': 4, 'x:2': 48}
    """
    out: dict[str, int] = {}
    for item in items or []:
        key, sep, val = item.partition("=")
        val = val.strip()
        if not sep or not key.strip() or not (val.isascii() and val.isdigit()) or int(val) < 1:
            raise InputError(
                f"--dim {item!r}: expected NAME=SIZE or INPUT:AXIS=SIZE with a positive whole number, "
                "e.g. batch=4 or x:2=48"
            )
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
        except Exception as e:  # zipfile, zlib, numpy on a damaged file: BadZipFile, EOFError…
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


def _index_bound(graph: Graph, name: str) -> int | None:
    """The number of rows of the constant tables an integer input indexes (through Cast/Unsqueeze/Reshape…), so
    that random ids stay valid (token ids below the vocabulary size, token types 0 or 1); ``None`` if none."""
    from onnxscope.weights import is_const

    value = graph.value(name)
    bounds: list[int] = []
    stack, seen = [value], set()
    while stack:
        v = stack.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        for user, i in v.uses():
            if user.op_type in ("Gather", "GatherElements") and int(i) == 1 and is_const(user.inputs[0]):
                shape = graph.shape(user.inputs[0])
                axis = int(graph_attr(user, "axis", 0))
                if shape and isinstance(shape[axis], int):
                    bounds.append(int(shape[axis]))
            elif (
                user.op_type in ("Cast", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Identity")
                and int(i) == 0
            ):
                stack.extend(user.outputs)
    return min(bounds) if bounds else None


def _random(graph: Graph, spec: InputSpec, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    from onnxscope.limits import check_array

    dt = spec.dtype if spec.dtype is not None else np.dtype(np.float32)
    if dt.kind not in "fiub":
        raise InputError(
            f"input {spec.name!r} ({spec.describe()}): cannot generate random data of this type; pass a file"
        )
    check_array(shape, max(dt.itemsize, 4), f"random input {spec.name!r} {dt} {list(shape)}")
    if dt.kind == "f":
        if dt in (np.float32, np.float64):
            return rng.standard_normal(shape, dtype=dt.type)
        return rng.standard_normal(shape, dtype=np.float32).astype(dt)
    if dt.kind in "iu":
        if "mask" in spec.name.lower():
            return np.ones(shape, dt)  # an attention mask that keeps every position
        bound = _index_bound(graph, spec.name) or 10  # small ids: valid for embeddings and indices
        return rng.integers(0, bound, size=shape, dtype=np.int64).astype(dt, copy=False)
    return rng.integers(0, 2, size=shape).astype(bool)


def _default_size(spec: InputSpec, axis: int) -> int:
    """A sensible size for a dimension nobody set: 1 for the batch axis, 224 for the spatial axes of an image-like
    input (rank 4 or more), 16 otherwise (sequence lengths, features)."""
    assert spec.shape is not None
    if axis == 0:
        return 1
    if len(spec.shape) >= 4 and axis >= 2:
        return 224
    return 16


def resolve_dims(
    graph: Graph, given: Mapping[str, np.ndarray] | None = None, dims: Mapping[str, int] | None = None
) -> dict[str, int]:
    """The size every non-fixed dimension of every input takes: from ``dims`` (by name or ``input:axis``), from
    the arrays ``given``, or a sensible default (see :func:`prepare_inputs`). Keys are dimension names, and
    ``input:axis`` for free dimensions.

    Raises:
        InputError: ``dims`` names a dimension the model does not have (the message lists those it has).

    Example:
        >>> from onnxscope import Model
        >>> from onnxscope.testing import mlp_model
        >>> resolve_dims(Model(mlp_model())), resolve_dims(Model(mlp_model()), dims={"x:0": 3})
        ({'batch': 1}, {'batch': 3})
    """
    specs = [s for s in input_specs(graph) if s.kind == "tensor" and s.shape is not None]
    dims = dict(dims or {})
    given = given or {}
    names = {d for s in specs for d in s.shape if isinstance(d, str) and not is_free(d)}  # type: ignore[union-attr]
    axes = {
        f"{s.name}:{a}": d for s in specs for a, d in enumerate(s.shape) if not isinstance(d, int) or d <= 0
    }  # type: ignore[arg-type]
    for key in dims:
        if key not in names and key not in axes:
            if ":" in key and key.split(":")[0] in {s.name for s in specs}:
                continue  # a fixed axis named by position: checked against the model when arrays are made
            valid = sorted(names) + sorted(axes)
            raise InputError(
                f"--dim {key!r}: the model has no such dimension; its non-fixed dimensions are "
                f"{', '.join(valid) or 'none'} (name one, or INPUT:AXIS)"
            )
    sizes: dict[str, int] = {}
    for s in specs:
        for a, d in enumerate(s.shape):  # type: ignore[arg-type]
            key = f"{s.name}:{a}"
            if isinstance(d, int) and d > 0:
                continue
            named = isinstance(d, str) and not is_free(d)
            slot = d if named else key
            if key in dims:
                sizes[slot] = dims[key]  # type: ignore[index]
            elif named and d in dims:
                sizes[slot] = dims[d]  # type: ignore[index]
            elif s.name in given and np.asarray(given[s.name]).ndim == len(s.shape):  # type: ignore[arg-type]
                sizes.setdefault(slot, int(np.asarray(given[s.name]).shape[a]))  # type: ignore[arg-type]
            else:
                sizes.setdefault(slot, _default_size(s, a))  # type: ignore[arg-type]
    return sizes


def prepare_inputs(
    graph: Graph,
    given: Mapping[str, np.ndarray] | None = None,
    *,
    random: bool = False,
    seed: int = 0,
    dims: Mapping[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """Check ``given`` against the model's signature and fill missing inputs with random data when asked.

    A dimension declared as a number must match; a named one (``batch``) must have one size in every input;
    free ones (``-1``, ``0``, unnamed, ``?``) take any size, each independently. Random data takes each
    non-fixed size from ``dims`` (``{"batch": 4, "x:2": 48}``), else from the arrays given, else a sensible
    default (1 for the batch axis, 224 for image axes, 16 otherwise — :func:`resolve_dims` tells which);
    integer inputs that index a table (token ids) stay within it, and ``*mask*`` inputs are all ones.

    Raises:
        InputError: unknown input name, missing input, wrong dtype, rank or shape, a named dimension with two
            sizes.
    """
    specs = input_specs(graph)
    by_name = {s.name: s for s in specs}
    given = dict(given or {})
    valid = ", ".join(f"{s.name} ({s.describe()})" for s in specs if not s.optional) or "none"
    for name in given:
        if name not in by_name:
            raise InputError(f"the model has no input {name!r}; its inputs are {valid}")
    seen: dict[str, tuple[str, int]] = {}
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
                if isinstance(want, int) and want > 0 and want != got:
                    raise InputError(
                        f"input {spec.name!r}: the model expects {spec.describe()}, got {list(a.shape)} "
                        f"(axis {axis} must be {want})"
                    )
                if isinstance(want, str) and not is_free(want):
                    where, size = seen.setdefault(want, (spec.name, got))
                    if size != got:
                        raise InputError(
                            f"input {spec.name!r}: dimension {want!r} is {size} in input {where!r} but {got} here "
                            f"(axis {axis} of {list(a.shape)})"
                        )
        feeds[spec.name] = a
    missing = [s for s in specs if s.name not in feeds and not s.optional]
    if not missing:
        return feeds
    if not random:
        s = missing[0]
        raise InputError(
            f"missing input {s.name!r} ({s.describe()}); pass it, or ask for random data (--random)"
        )
    sizes = resolve_dims(graph, given, dims)
    rng = np.random.default_rng(seed)
    for spec in missing:
        if spec.kind != "tensor":
            raise InputError(
                f"input {spec.name!r} is a {spec.kind}; random data is generated only for tensors"
            )
        if spec.shape is None:
            raise InputError(f"input {spec.name!r} has an unknown rank; pass it as a file")
        shape = []
        for axis, d in enumerate(spec.shape):
            key = f"{spec.name}:{axis}"
            if isinstance(d, int) and d > 0:
                if dims and key in dims and dims[key] != d:
                    raise InputError(f"--dim {key}={dims[key]}: axis {axis} of {spec.name!r} is fixed at {d}")
                shape.append(d)
            else:
                shape.append(sizes[d if isinstance(d, str) and not is_free(d) else key])
        feeds[spec.name] = _random(graph, spec, tuple(shape), rng)
    return feeds
