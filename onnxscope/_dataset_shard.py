"""One shard of a dataset capture: consecutive batches captured into their own chunks of the one Zarr store.

This is the part that runs on a Dask worker (or in the calling process, for a run on one machine): the same
function either way, so a run's store does not depend on how many processes made it.

- :class:`Plan` fixes, from a probe of the first batch, each tensor's array: dtype, shape per batch, whether axis 0
  is the sample axis, and its chunk (a power-of-two number of batches, about ``chunk_bytes``). A shard is
  ``shard_batches`` batches — a whole number of chunks of every array — so no two shards ever write one chunk.
- :func:`run_shard` captures a shard: each tensor is copied into its chunk buffer (or, when one batch fills a
  chunk, written straight from onnxruntime's output), full chunks go to a pool of writer threads while the next
  batch runs, statistics are vectorised per chunk, and once every chunk is written a commit marker
  (``onnxscope/shards/NNNNNNNN.npz``: the shard's statistics, rows and input digest) is written last.
- :class:`Context` holds what a process opens once: the model, its capture session(s), the store's arrays; workers
  keep one per run (keyed by model hash and selection).

Example:
    >>> TensorPlan("h", "h", "Gemm", "float32", (8, 16), True, 4, 1).dims
    ('sample', 'h_1')
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from onnxscope._dataset_io import Files, digest_model, model_identity, npz_arrays, npz_bytes
from onnxscope.errors import CaptureError, InputError, MissingDependencyError, OnnxscopeError
from onnxscope.expose import Selection
from onnxscope.inputs import input_specs, read_inputs
from onnxscope.model import Model, load
from onnxscope.session import CaptureSession
from onnxscope.stats import RunningStats

__all__ = ["Context", "Plan", "ShardResult", "ShardTask", "Spec", "TensorPlan", "probe", "run_shard"]

WRITE_THREADS = 4  # statistics and writes of chunks, beside the thread running the model


def zarr_module() -> Any:
    """``zarr``, or a one-line error naming the extra to install."""
    try:
        import zarr
    except ImportError as e:
        raise MissingDependencyError("dataset capture needs zarr: pip install 'onnxscope[dataset]'") from e
    return zarr


def open_group(url: str, storage_options: dict[str, Any] | None, mode: str) -> Any:
    """The store's root Zarr group; a local path or ``file://`` URL through Zarr's local store (atomic writes)."""
    zarr = zarr_module()
    files = Files(url, storage_options)
    if files.local:
        return zarr.open_group(files.root, mode=mode, use_consolidated=False)
    kw = {"storage_options": storage_options} if storage_options else {}
    return zarr.open_group(url, mode=mode, use_consolidated=False, **kw)


@dataclass(frozen=True)
class TensorPlan:
    """How one captured tensor is stored: ``shape`` is its shape in a full batch; ``chunk_batches`` batches make
    one chunk along axis 0; ``sample`` when axis 0 has one row per sample."""

    name: str
    key: str
    op: str | None
    dtype: str
    shape: tuple[int, ...]
    sample: bool
    chunk_batches: int
    unit_axis: int | None

    @property
    def rows(self) -> int:
        """Rows (axis 0) of a full batch."""
        return self.shape[0]

    @property
    def chunk_rows(self) -> int:
        """Rows of one chunk."""
        return self.rows * self.chunk_batches

    @property
    def batch_bytes(self) -> int:
        """Bytes of a full batch."""
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize

    @property
    def dims(self) -> tuple[str, ...]:
        """Dimension names: ``sample`` first when axis 0 is the sample axis, then names private to the array."""
        first = "sample" if self.sample else f"{self.key}_0"
        return (first, *(f"{self.key}_{i}" for i in range(1, len(self.shape))))


@dataclass(frozen=True)
class Plan:
    """What every shard follows: the batch size, batches per shard, the tensors, and (with a memory budget) the
    groups of tensors captured by separate runs of the model."""

    batch_size: int
    shard_batches: int
    tensors: tuple[TensorPlan, ...]
    parts: tuple[tuple[str, ...], ...] | None = None
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (stored in the store's attributes)."""
        d = asdict(self)
        d["tensors"] = [{**asdict(t), "shape": list(t.shape)} for t in self.tensors]
        d["parts"] = None if self.parts is None else [list(p) for p in self.parts]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        """Inverse of :meth:`to_dict`."""
        tensors = tuple(TensorPlan(**{**t, "shape": tuple(t["shape"])}) for t in d["tensors"])
        parts = None if d.get("parts") is None else tuple(tuple(p) for p in d["parts"])
        return cls(d["batch_size"], d["shard_batches"], tensors, parts, dict(d.get("skipped") or {}))


@dataclass(frozen=True)
class Spec:
    """Everything a process needs to capture shards (picklable; sent with each Dask task)."""

    token: str  # model hash + selection + runtime settings: the key of a worker's cached Context
    model_path: str | None
    model_proto: Any  # the serialized graph of a model built in memory (an onnx ModelProto), else None
    model_files: dict[str, str]
    select: Selection
    exclude: Selection
    providers: list[str] | None
    threads: int | None
    max_memory: int | None
    url: str
    storage_options: dict[str, Any] | None
    stats: bool
    stats_only: bool
    source_kind: str  # iterable, npz, npy, sets
    folder: str | None
    plan: Plan | None = None
    recompute: bool = False  # see CaptureSession: keep the fusions and recompute what they remove, per batch


@dataclass(frozen=True)
class ShardTask:
    """Batches ``first …`` of shard ``index``: input dicts, or entry names in the data folder."""

    index: int
    first: int
    items: list[Any]
    final: bool  # holds the dataset's last batch (which alone may be smaller)
    capacity: int  # the arrays hold at least this many batches


@dataclass
class ShardResult:
    """What a committed shard adds: its batches, samples, rows per array, raw bytes, input digest, statistics."""

    index: int
    batches: int
    samples: int
    rows: dict[str, int]
    nbytes: int
    digest: str
    stats: dict[str, RunningStats]

    def marker(self) -> bytes:
        """The commit marker's bytes."""
        info = {k: getattr(self, k) for k in ("index", "batches", "samples", "rows", "nbytes", "digest")}
        arrays: dict[str, np.ndarray] = {
            "__info__": np.frombuffer(json.dumps(info, sort_keys=True).encode(), np.uint8),
            "__names__": np.frombuffer(json.dumps(list(self.stats)).encode(), np.uint8),
        }
        for i, s in enumerate(self.stats.values()):
            arrays.update(s.to_arrays(f"{i}/"))
        return npz_bytes(arrays)

    @classmethod
    def from_marker(cls, data: bytes) -> ShardResult:
        """Inverse of :meth:`marker`."""
        arrays = npz_arrays(data)
        info = json.loads(bytes(arrays.pop("__info__")).decode())
        names = json.loads(bytes(arrays.pop("__names__")).decode())
        stats = {n: RunningStats.from_arrays(arrays, f"{i}/") for i, n in enumerate(names)}
        return cls(stats=stats, **info)


def marker_name(index: int) -> str:
    """The commit marker of shard ``index``, relative to the store's own folder."""
    return f"shards/{index:08d}.npz"


# -- reading batches -----------------------------------------------------------------------------------------


def read_batch(kind: str, folder: str | None, item: Any, input_names: list[str]) -> dict[str, Any]:
    """One batch: the item itself (an input dict) or the file/folder ``item`` of the data folder."""
    if kind == "iterable":
        if not isinstance(item, dict):
            try:
                item = dict(item)
            except (TypeError, ValueError):
                raise InputError(
                    f"a batch must be a mapping from input name to array, not {type(item).__name__}"
                ) from None
        return item
    path = os.path.join(folder or "", item)
    if kind == "npy":
        if len(input_names) != 1:
            raise InputError(
                f"dataset {folder!r} holds .npy files, but the model has {len(input_names)} inputs "
                f"({', '.join(input_names)}); use one .npz per batch"
            )
        return read_inputs([f"{input_names[0]}={path}"])  # a regular .npy file, its header within the budget
    return read_inputs(bundle=path)


def samples_of(feeds: dict[str, Any], input_names: list[str]) -> int:
    """Samples in a batch: axis 0 of the first model input that has one."""
    for name in [*input_names, *feeds]:
        a = feeds.get(name)
        if isinstance(a, np.ndarray) and a.ndim:
            return int(a.shape[0])
    return 1


def batch_digest(feeds: dict[str, Any]) -> bytes:
    """A digest of a batch's inputs (names, dtypes, shapes, bytes)."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(feeds):
        a = np.ascontiguousarray(feeds[name])
        h.update(f"{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.view(np.uint8).reshape(-1) if a.dtype.kind != "O" else repr(a.tolist()).encode())
    return h.digest()


def shard_digest(batch_digests: Iterable[bytes]) -> str:
    """The digest of a shard's batches, in order (``""`` for none: a folder's shards are not digested)."""
    h = hashlib.blake2b(digest_size=16)
    seen = False
    for d in batch_digests:
        h.update(d)
        seen = True
    return h.hexdigest() if seen else ""


# -- a process's cached state ------------------------------------------------------------------------------


class Context:
    """The model, its capture session(s) and the store's arrays, opened once per process and run."""

    def __init__(self, spec: Spec, model: Model | None = None) -> None:
        self.spec = spec
        if model is None:
            if spec.model_path is not None:
                model = load(spec.model_path)
                found = model_identity(model)["files"]
                if found != spec.model_files:
                    raise CaptureError(
                        f"this process reads another model at {spec.model_path!r} than the one the run started "
                        "with (its files differ); every worker must see the same model"
                    )
            else:
                from onnxscope._ir import ir

                model = Model(ir.from_proto(spec.model_proto))
        self.model = model
        self.input_names = [s.name for s in input_specs(model)]
        self._base: CaptureSession | None = None
        self._parts: dict[tuple[str, ...], CaptureSession] = {}
        self._group: Any = None
        self._arrays: dict[str, Any] = {}
        self._layout: list[Any] = []
        self.files = Files(spec.url, spec.storage_options)
        self._pool: ThreadPoolExecutor | None = None
        self.free: dict[Any, list[np.ndarray]] = {}
        self.returned = threading.Condition()
        self.budget = _Budget()
        # (item, capture): the probe's run of the first batch, which the first shard stores instead of running it
        # again (a second run of the same batch would cost its time and, at ORT_ENABLE_ALL, grow onnxruntime's
        # arena by the blocked-layout intermediates of a bound run) — in one process only, whose context lives
        # for one run
        self.primed: tuple[Any, Any] | None = None

    @property
    def pool(self) -> ThreadPoolExecutor:
        """The threads computing statistics and writing chunks (started once per process)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="onnxscope-shard")
        return self._pool

    def close(self) -> None:
        """Stop the threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def base(self) -> CaptureSession:
        """The session capturing the whole selection."""
        if self._base is None:
            s = self.spec
            self._base = CaptureSession(
                self.model, s.select, s.exclude, s.providers, threads=s.threads, recompute=s.recompute
            )
        return self._base

    def part(self, names: tuple[str, ...]) -> CaptureSession:
        """The session capturing only ``names`` (one share of the tensors under a memory budget)."""
        if names not in self._parts:
            s = self.spec
            self._parts[names] = CaptureSession(
                self.model, list(names), None, s.providers, threads=s.threads, recompute=s.recompute
            )
        return self._parts[names]

    def sessions(self, plan: Plan) -> list[tuple[CaptureSession, list[TensorPlan]]]:
        """One session per part of the plan, each with the tensors it stores (the inputs go with the first)."""
        if plan.parts is None:
            return [(self.base(), list(plan.tensors))]
        placed = {n for p in plan.parts for n in p}
        return [
            (self.part(p), [t for t in plan.tensors if t.name in p or (i == 0 and t.name not in placed)])
            for i, p in enumerate(plan.parts)
        ]

    def arrays(self, plan: Plan, capacity: int) -> dict[str, Any]:
        """The store's arrays by key, reopened when the coordinator has grown them past what was opened."""
        need = {t.key: capacity * t.rows for t in plan.tensors}
        layout = [
            (t.key, t.dtype, t.shape, t.chunk_batches) for t in plan.tensors
        ]  # a store made again differs
        if (
            self._group is None
            or layout != self._layout
            or any(self._arrays[k].shape[0] < n for k, n in need.items())
        ):
            self._layout = layout
            self._group = open_group(self.spec.url, self.spec.storage_options, "r+")
            root = self.files.root if self.files.local else None
            self._arrays = {t.key: ChunkTarget(self._group[t.key], root) for t in plan.tensors}
        return self._arrays


def writable(arr: Any) -> Any:
    """``arr`` configured to write every chunk without first comparing it with the fill value."""
    with_config = getattr(arr, "with_config", None)
    return with_config({"write_empty_chunks": True}) if with_config is not None else arr


class ChunkTarget:
    """Where one array's chunks go. An uncompressed array on a local disk gets each chunk as one file written
    directly — the bytes Zarr itself writes (raw little-endian, C order: a test compares the two), renamed into
    place as Zarr's local store does — without Zarr's per-write Python, which would hold the GIL while the model
    runs; any other array (compressed, or in a remote store) is written through Zarr."""

    def __init__(self, arr: Any, local_root: str | None) -> None:
        self.arr = writable(arr)
        self.folder: str | None = None
        md = arr.metadata
        codecs = tuple(getattr(md, "codecs", ()))
        if local_root is not None and len(codecs) == 1 and type(codecs[0]).__name__ == "BytesCodec":
            endian = getattr(codecs[0], "endian", None)
            if endian is None or getattr(endian, "value", endian) == sys.byteorder:
                self.folder = os.path.join(local_root, *arr.path.split("/"))
                self.chunk_rows = md.chunk_grid.chunk_shape[0]
                self.encode = md.encode_chunk_key
                self.rest = (0,) * (arr.ndim - 1)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.arr.shape)

    def write(self, start: int, data: np.ndarray) -> None:
        """Write whole chunks starting at row ``start``."""
        if self.folder is None or data.shape[0] != self.chunk_rows or start % self.chunk_rows:
            self.arr[start : start + data.shape[0]] = data
            return
        key = self.encode((start // self.chunk_rows, *self.rest))
        path = os.path.join(self.folder, *key.split("/"))
        if "/" in key:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}-{threading.get_ident()}.partial"
        write_file(tmp, np.ascontiguousarray(data))
        os.replace(tmp, path)


DIRECT_ALIGN = 4096  # O_DIRECT needs the buffer, the offset and the length aligned to the device's block size
_DIRECT = getattr(os, "O_DIRECT", 0)


def aligned_empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An uninitialised array whose data starts on a :data:`DIRECT_ALIGN` boundary (so that it can be written
    with direct I/O)."""
    dt = np.dtype(dtype)
    nbytes = math.prod(shape) * dt.itemsize
    raw = np.empty(nbytes + DIRECT_ALIGN, np.uint8)
    start = -raw.ctypes.data % DIRECT_ALIGN
    return raw[start : start + nbytes].view(dt).reshape(shape)


def write_file(path: str, data: np.ndarray) -> None:
    """Write the bytes of the C-contiguous ``data`` to a new file ``path``.

    Where the OS offers direct I/O (Linux ``O_DIRECT``) and ``data`` starts on a :data:`DIRECT_ALIGN` boundary, its
    aligned part is written past the page cache: a capture's chunks are written once and not read back by this
    process, and copying them into the page cache is the larger part of a write's CPU cost (measured on the
    development machine: 800 MB of 4 MiB files, 2.2 s of system time buffered, 0.04 s direct). The rest, and any
    file system that refuses direct I/O, goes through the page cache as usual; the bytes are the same either way.
    """
    view = memoryview(data.reshape(-1).view(np.uint8))
    n = len(view)
    aligned = n - n % DIRECT_ALIGN if _DIRECT and data.ctypes.data % DIRECT_ALIGN == 0 else 0
    if aligned:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _DIRECT | os.O_CLOEXEC, 0o666)
        except OSError:  # a file system without direct I/O (tmpfs, some network file systems)
            aligned = 0
        else:
            import fcntl

            try:
                done = 0
                try:
                    while done < aligned:
                        done += os.write(fd, view[done:aligned])
                except OSError:  # accepted at open, refused at write: start again through the page cache
                    os.ftruncate(fd, 0)
                    os.lseek(fd, 0, os.SEEK_SET)
                    done = 0
                fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~_DIRECT)
                while done < n:  # the unaligned tail
                    done += os.write(fd, view[done:])
            finally:
                os.close(fd)
            return
    with open(path, "wb") as f:
        f.write(view)


_CACHE: dict[str, Context] = {}
_CACHE_LOCK = threading.Lock()


def cached_context(spec: Spec) -> Context:
    """This process's :class:`Context` for ``spec`` (one kept: a worker serves one run at a time)."""
    with _CACHE_LOCK:
        ctx = _CACHE.get(spec.token)
        if ctx is None:
            for old in _CACHE.values():
                old.close()
            _CACHE.clear()
            ctx = _CACHE[spec.token] = Context(spec)
        ctx.spec = spec
        return ctx


def spec_token(spec: Spec) -> str:
    """The key under which workers cache a :class:`Context`: model hash, selection, runtime settings."""
    key = json.dumps(
        [
            digest_model({"files": spec.model_files}),
            repr(spec.select),
            repr(spec.exclude),
            spec.providers,
            spec.threads,
            spec.recompute,
            spec.max_memory,
            spec.url,
        ],
        sort_keys=True,
        default=repr,
    )
    return hashlib.sha256(key.encode()).hexdigest()[:20]


# -- the probe -----------------------------------------------------------------------------------------------


def _storable(a: Any) -> str | None:
    """Why ``a`` cannot be stored along samples, or ``None``."""
    if not isinstance(a, np.ndarray):
        return f"not a tensor ({type(a).__name__})"
    if a.ndim == 0:
        return "a scalar: nothing to stack along samples"
    if a.dtype.kind not in "biufc" or a.dtype.str.startswith("|V"):
        return f"element type {a.dtype} has no Zarr equivalent"
    if a.size == 0:
        return "empty in the first batch"
    return None


def _constants(session: CaptureSession) -> set[str]:
    """Tensors the capture folds from the weights on read (the same in every batch: not stored)."""
    return set(session.plan.names("folded"))


def _other_size(feeds: dict[str, Any], n: int) -> tuple[dict[str, Any], int]:
    """The batch cut to one sample (or, for a batch of one, doubled): tells per-sample tensors from the rest."""
    m = 1 if n > 1 else 2
    out = {}
    for k, v in feeds.items():
        if isinstance(v, np.ndarray) and v.ndim and v.shape[0] == n:
            out[k] = v[:1] if m == 1 else np.concatenate([v, v])
        else:
            out[k] = v
    return out, m


def _partition(ctx: Context, feeds: dict[str, Any], n: int, max_memory: int) -> list[list[str]] | None:
    """Groups of tensors each within ``max_memory`` bytes per batch (sizes from a one-sample run)."""
    one = {
        k: (v[:1] if isinstance(v, np.ndarray) and v.ndim and v.shape[0] == n else v)
        for k, v in feeds.items()
    }
    session = ctx.base()
    cap = session.run(one)
    folded = _constants(session)
    sizes = {k: np.asarray(cap[k]).nbytes * n for k in cap if k not in cap.inputs and k not in folded}
    if sum(sizes.values()) <= max_memory:
        return None
    groups: list[list[str]] = [[]]
    used = 0
    for name, size in sizes.items():
        if size > max_memory:
            raise InputError(
                f"tensor {name!r} alone takes {size} bytes per batch, over --max-memory {max_memory}; "
                "raise the budget or use smaller batches"
            )
        if used + size > max_memory and groups[-1]:
            groups.append([])
            used = 0
        groups[-1].append(name)
        used += size
    return groups


def probe(ctx: Context, feeds: dict[str, Any], item: Any = None) -> dict[str, Any]:
    """Run the first batch (and the same batch at another size) and describe every tensor to store. With one
    session (no ``max_memory`` parts), the capture of the first batch is kept in ``ctx.primed`` under ``item``
    for the first shard.

    Returns ``{"batch_size", "tensors": [{name, op, dtype, shape, sample}], "parts", "skipped"}``.
    """
    n = samples_of(feeds, ctx.input_names)
    parts = _partition(ctx, feeds, n, ctx.spec.max_memory) if ctx.spec.max_memory is not None else None
    sessions = [ctx.base()] if parts is None else [ctx.part(tuple(p)) for p in parts]
    alt_feeds, m = _other_size(feeds, n)
    tensors: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    ctx.primed = None
    for session in sessions:
        cap = session.run(feeds)
        if parts is None and item is not None:
            ctx.primed = (item, cap)
        constants = _constants(session)
        shapes = {}
        for name in cap:
            if name in constants:
                skipped[name] = "computed from the weights alone (read it from the model)"
                continue
            a = cap[name]
            why = _storable(a)
            if why:
                skipped[name] = why
                continue
            info = cap.info(name)
            shapes[name] = (tuple(a.shape), np.dtype(a.dtype.str).str, info.op)
        try:
            alt = session.run(alt_feeds)
            alt_shapes = {k: tuple(np.shape(alt[k])) for k in shapes if k in alt}
        except OnnxscopeError:  # a model with a fixed batch size: axis 0 is the sample axis when it equals n
            alt_shapes = None
        for name, (shape, dtype, op) in shapes.items():
            if any(t["name"] == name for t in tensors):
                continue
            if alt_shapes is not None and name in alt_shapes:
                other = alt_shapes[name]
                sample = shape[0] == n and other[0] == m and other[1:] == shape[1:]
            else:
                sample = shape[0] == n
            tensors.append({"name": name, "op": op, "dtype": dtype, "shape": list(shape), "sample": sample})
        del cap
    return {"batch_size": n, "tensors": tensors, "parts": parts, "skipped": skipped}


# -- writing -------------------------------------------------------------------------------------------------


class _Budget:
    """Bytes of chunk buffers handed to the threads and not yet written, across the shards of a process (a shard's
    commit may still be writing while the next one fills): at most ``limit``, or one job when more is asked."""

    def __init__(self) -> None:
        self.limit = 0
        self.used = 0
        self._cv = threading.Condition()

    def acquire(self, n: int) -> None:
        with self._cv:
            while self.used and self.used + n > self.limit:
                self._cv.wait()
            self.used += n

    def release(self, n: int) -> None:
        with self._cv:
            self.used -= n
            self._cv.notify_all()


class _Jobs:
    """Statistics and chunk writes on a pool of threads, while the next batch runs (numpy and file writes release
    the GIL). Jobs on buffers we own run in the background (within the process's byte budget); jobs reading
    onnxruntime's own buffers are waited for before the next run. Statistics come back as pieces folded per tensor
    in the order the jobs were submitted, whatever order they finish in: the result never depends on timing."""

    def __init__(self, pool: ThreadPoolExecutor, budget: _Budget, stats: dict[str, RunningStats]) -> None:
        self._pool = pool
        self._budget = budget
        self._queued: deque[tuple[Future[Any], int, Callable[[], None] | None]] = deque()
        self._direct: list[Future[Any]] = []
        self._pieces: deque[tuple[str, Future[Any]]] = deque()
        self.stats = stats
        self.nbytes = 0

    @staticmethod
    def _job(
        t: TensorPlan,
        data: np.ndarray,
        stats: bool,
        arr: Any,
        start: int,
        padded: np.ndarray | None,
        done: Callable[[], None] | None,
        budget: _Budget | None,
        size: int,
    ) -> RunningStats | None:
        try:
            piece = RunningStats.of(data, t.unit_axis, t.op) if stats else None
            if arr is not None:
                arr.write(start, data if padded is None else padded)
            return piece
        finally:
            if done is not None:
                done()  # even after a failure: the buffer goes back, and the failure is raised by the shard
            if budget is not None:
                budget.release(size)

    def put(
        self,
        t: TensorPlan,
        data: np.ndarray,
        stats: bool,
        arr: Any = None,
        start: int = 0,
        padded: np.ndarray | None = None,
        done: Callable[[], None] | None = None,
        direct: bool = False,
    ) -> None:
        """Statistics of ``data`` (when ``stats``) and its write at row ``start`` of ``arr`` (``padded``: the whole
        chunk, when ``data`` fills only its start); ``done`` runs after both."""
        if not stats and arr is None:
            return
        written = 0 if arr is None else (data if padded is None else padded).nbytes
        self.nbytes += written
        size = max(written, data.nbytes)
        budget = None if direct else self._budget
        if budget is not None:
            budget.acquire(size)
        try:
            fut = self._pool.submit(self._job, t, data, stats, arr, start, padded, done, budget, size)
        except BaseException:
            if budget is not None:
                budget.release(size)
            raise
        if stats:
            self._pieces.append((t.name, fut))
        if direct:
            self._direct.append(fut)
        else:
            self._queued.append((fut, size, done))
            while self._queued and self._queued[0][0].done():
                self._queued.popleft()[0].result()  # raise a failed write now
        self._fold(wait=False)

    def _fold(self, wait: bool) -> None:
        while self._pieces and (wait or self._pieces[0][1].done()):
            name, f = self._pieces.popleft()
            piece = f.result()
            self.stats[name] = self.stats[name].merge(piece) if name in self.stats else piece

    def wait_direct(self) -> None:
        """Wait for the jobs that read onnxruntime's buffers (before the next run overwrites them)."""
        for f in self._direct:
            f.result()
        self._direct.clear()

    def close(self, ok: bool = True) -> None:
        """Wait for every job and fold every piece (raising the first failure); after a failure, cancel what has
        not started and wait for the rest (nothing of this shard runs on)."""
        futures = [*self._direct, *(f for f, _, _ in self._queued), *(f for _, f in self._pieces)]
        if ok:
            self.wait_direct()
            while self._queued:
                self._queued.popleft()[0].result()
            self._fold(wait=True)
            return
        for f in futures:
            f.cancel()
        for f, size, done in self._queued:
            if f.cancelled():  # never ran: its bytes go back to the budget, its buffer to the pool, here
                self._budget.release(size)
                if done is not None:
                    done()
        wait(futures)


class _Chunks:
    """The chunk being filled for each buffered tensor, and its buffers: two per tensor, allocated once per process
    (one filling while the other is written; a tensor whose both are busy waits for one to come back), so memory
    is the same after ten batches as after a million."""

    def __init__(self, free: dict[Any, list[np.ndarray]], returned: threading.Condition) -> None:
        self.current: dict[str, np.ndarray] = {}
        self.free = free  # the process's, shared by its shards
        self.returned = returned

    @staticmethod
    def _slot(t: TensorPlan) -> tuple[Any, ...]:
        return (t.key, t.chunk_rows, t.shape, t.dtype)

    def _new(self, t: TensorPlan) -> np.ndarray:
        buf = aligned_empty((t.chunk_rows, *t.shape[1:]), t.dtype)
        buf.fill(0)  # touched now, not in the middle of the run
        return buf

    def reserve(self, tensors: Iterable[TensorPlan]) -> None:
        """The buffers of every tensor that collects several batches per chunk (once per process and layout)."""
        with self.returned:
            for t in tensors:
                if t.chunk_batches > 1 and self._slot(t) not in self.free:
                    self.free[self._slot(t)] = [self._new(t), self._new(t)]

    def buffer(self, t: TensorPlan) -> np.ndarray:
        buf = self.current.get(t.key)
        if buf is None:
            with self.returned:
                pool = self.free.get(self._slot(t))
                if pool is None:  # one batch per chunk, but a smaller last batch: one buffer, made now
                    pool = self.free[self._slot(t)] = [self._new(t)]
                while not pool:
                    self.returned.wait()
                buf = self.current[t.key] = pool.pop()
        return buf

    def abandon(self, tensors: Iterable[TensorPlan]) -> None:
        """Give back the buffers being filled (a failed shard)."""
        for t in tensors:
            if t.key in self.current:
                self.release(t)()

    def release(self, t: TensorPlan) -> Callable[[], None]:
        buf = self.current.pop(t.key)
        pool = self.free[self._slot(t)]

        def back() -> None:
            with self.returned:
                pool.append(buf)
                self.returned.notify_all()

        return back


def _check(t: TensorPlan, a: np.ndarray, b: int, last: bool) -> None:
    if a.shape[1:] != t.shape[1:] or (a.shape[0] != t.rows and not (last and a.shape[0] < t.rows)):
        raise InputError(
            f"tensor {t.name!r} has shape {list(a.shape)} in batch {b} but {list(t.shape)} in the first; every "
            "batch but the last must have the first one's shapes, and the last may only have fewer samples"
        )
    if np.dtype(a.dtype.str).str != t.dtype:
        raise InputError(f"tensor {t.name!r} is {a.dtype} in batch {b} but {np.dtype(t.dtype)} in the first")


def run_shard(
    ctx: Context,
    task: ShardTask,
    on_batch: Callable[[int, int], None] | None = None,
) -> ShardResult:
    """Capture the batches of ``task`` into their chunks, then write the shard's commit marker.

    ``on_batch(samples, bytes)`` is called after each batch (progress in a single process).
    """
    return capture_shard(ctx, task, on_batch)()


def capture_shard(
    ctx: Context,
    task: ShardTask,
    on_batch: Callable[[int, int], None] | None = None,
) -> Callable[[], ShardResult]:
    """Run the model over the batches of ``task`` and hand their chunks to the threads; return the commit:
    a function that waits for the last chunks, writes the marker and returns the result. A process may start
    the next shard before it commits this one (the threads keep writing meanwhile)."""
    spec = ctx.spec
    plan = spec.plan
    assert plan is not None
    sessions = ctx.sessions(plan)
    store = not spec.stats_only
    arrays = ctx.arrays(plan, task.capacity) if store else {}
    with_stats = {t.name for t in plan.tensors if t.dtype[1] in "biuf"} if spec.stats else set()
    acc: dict[str, RunningStats] = {}
    rows = {t.key: 0 for t in plan.tensors}
    chunks = _Chunks(ctx.free, ctx.returned)
    if store:
        chunks.reserve(plan.tensors)
    # at most one round of chunks (one of each tensor) queued behind the one being filled: memory stays flat
    round_bytes = sum(t.batch_bytes * t.chunk_batches for t in plan.tensors if t.chunk_batches > 1)
    largest = max((t.batch_bytes * t.chunk_batches for t in plan.tensors), default=0)
    ctx.budget.limit = max(8 << 20, round_bytes, largest)
    jobs = _Jobs(ctx.pool, ctx.budget, acc)
    digests: list[bytes] = []
    samples = 0
    primed, ctx.primed = ctx.primed, None  # the probe's capture of the first batch, used here or let go
    if primed is not None and not (
        task.first == 0 and task.items and len(sessions) == 1 and _same_item(primed[0], task.items[0])
    ):
        primed = None
    try:
        for j, item in enumerate(task.items):
            b = task.first + j
            last = task.final and j == len(task.items) - 1
            feeds = read_batch(spec.source_kind, spec.folder, item, ctx.input_names)
            n = samples_of(feeds, ctx.input_names)
            if n != plan.batch_size and not (last and n < plan.batch_size):
                raise InputError(
                    f"batch {b} has {n} samples but the first had {plan.batch_size}: every batch but the last "
                    "must have the same size"
                )
            if spec.source_kind == "iterable":  # a folder is checked by its files' sizes and times
                digests.append(batch_digest(feeds))
            samples += n
            before = jobs.nbytes
            for session, tensors in sessions:
                jobs.wait_direct()  # the last run's arrays are about to be overwritten
                out: dict[str, np.ndarray] = {}
                if store:  # onnxruntime writes each buffered tensor straight into its chunk buffer
                    for t in tensors:
                        if t.chunk_batches > 1:  # (a smaller last batch does not fit: copied as before)
                            slot = (b * t.rows) % t.chunk_rows
                            out[t.name] = chunks.buffer(t)[slot : slot + t.rows]
                if primed is not None:  # (the first batch of the run, one session)
                    cap, primed = primed[1], None
                else:
                    cap = session.run(feeds, out=out)
                for t in tensors:
                    if t.name not in cap:
                        why = cap.skipped.get(t.name, "missing")
                        raise CaptureError(f"tensor {t.name!r} was not captured in batch {b}: {why}")
                    a = cap[t.name]
                    _check(t, a, b, last)
                    rows[t.key] += a.shape[0]
                    stats = t.name in with_stats
                    if not store:
                        jobs.put(t, a, stats, direct=True)
                        continue
                    row = b * t.rows
                    if t.chunk_batches == 1 and a.shape[0] == t.rows:  # one batch is one chunk: no copy
                        jobs.put(t, a, stats, arrays[t.key], row, direct=True)
                        continue
                    start = row - row % t.chunk_rows
                    slot = row - start
                    buf = chunks.buffer(t)
                    if not (t.name in out and np.shares_memory(a, out[t.name])):
                        buf[slot : slot + a.shape[0]] = a
                    filled = slot + a.shape[0]
                    if filled == t.chunk_rows or last:
                        if (
                            filled < t.chunk_rows
                        ):  # the fill value: a partial last chunk is the same every run
                            buf[filled:] = 0
                        jobs.put(t, buf[:filled], stats, arrays[t.key], start, buf, chunks.release(t))
                del cap
            if on_batch is not None:
                on_batch(n, jobs.nbytes - before)
    except BaseException:
        jobs.close(ok=False)
        chunks.abandon(plan.tensors)
        raise

    def commit() -> ShardResult:
        jobs.close()
        result = ShardResult(
            task.index, len(task.items), samples, rows, jobs.nbytes, shard_digest(digests), acc
        )
        ctx.files.write(marker_name(task.index), result.marker())
        return result

    return commit


def shard_task(spec: Spec, task: ShardTask) -> ShardResult:
    """A Dask task: run a shard in this worker's cached :class:`Context`."""
    return run_shard(cached_context(spec), task)


def warm_task(spec: Spec) -> None:
    """A Dask task: open the model and its capture session on this worker (while another probes)."""
    cached_context(spec).base()


def probe_task(spec: Spec, item: Any) -> dict[str, Any]:
    """A Dask task: probe the first batch in this worker's cached :class:`Context`."""
    ctx = cached_context(spec)
    # no capture kept for the first shard here: it may run on another worker, and this worker's cached context
    # outlives the run (a later run's first file may have the same name and other content)
    return probe(ctx, read_batch(spec.source_kind, spec.folder, item, ctx.input_names))


def _same_item(a: Any, b: Any) -> bool:
    """Whether two batch items are the same batch: the same object, or the same file name of a folder."""
    return a is b or (isinstance(a, str) and isinstance(b, str) and a == b)


def iter_items(items: Iterable[Any]) -> Iterator[tuple[Any, bool]]:
    """``(item, is_last)`` pairs (one item of look-ahead)."""
    it = iter(items)
    try:
        prev = next(it)
    except StopIteration:
        return
    for item in it:
        yield prev, False
        prev = item
    yield prev, True
