"""Capture over a dataset into one Zarr store, in this process or on a Dask cluster, with running statistics.

The store holds one Zarr array per captured tensor, named dimensions first along the samples (``xarray.open_zarr``
and ``dask.array.from_zarr`` read it as it is), and beside them a folder ``onnxscope/``: ``run.json`` (what made
the store: model and external-data hashes, data source fingerprint, selection, settings, the plan),
``progress.json`` and the statistics of the complete part.

The batches are cut into shards — runs of consecutive batches covering whole chunks of every array — and each
shard is captured by one process (this one, or a Dask worker) into its own chunks, then committed by a marker
file written last. Shards are merged in order (statistics with Chan's update), so a run on N workers writes the
same bytes as a run in one process, and a run killed at any point resumes (``resume=True``) to the same store.
Resuming checks the model (weights included), the data and the selection, and refuses any change.

Example:
    >>> import numpy as np, onnxscope, tempfile, os
    >>> from onnxscope.testing import mlp_model
    >>> m = onnxscope.Model(mlp_model())
    >>> batches = [{"x": np.full((2, 3), i, np.float32)} for i in range(3)]
    >>> out = os.path.join(tempfile.mkdtemp(), "run.zarr")
    >>> store = capture_dataset(m, batches, out=out, progress=False)
    >>> store.samples, store["h"].shape, round(store.stats("x").mean, 3)
    (6, (6, 16), 1.0)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from onnxscope._dataset_io import (
    META,
    Files,
    describe_change,
    folder_entries,
    folder_fingerprint,
    model_identity,
    npz_arrays,
    npz_bytes,
    parse_size,
)
from onnxscope._dataset_shard import (
    Context,
    Plan,
    ShardResult,
    ShardTask,
    Spec,
    TensorPlan,
    batch_digest,
    capture_shard,
    iter_items,
    marker_name,
    open_group,
    probe,
    probe_task,
    read_batch,
    shard_digest,
    shard_task,
    spec_token,
    warm_task,
)
from onnxscope.errors import (
    CaptureError,
    InputError,
    MissingDependencyError,
    ModelLoadError,
    NotFoundError,
    closest,
)
from onnxscope.expose import Selection
from onnxscope.inputs import input_specs
from onnxscope.model import Model, load
from onnxscope.render import fmt_bytes
from onnxscope.stats import RunningStats, unit_axis_for

__all__ = ["DatasetStore", "capture_dataset", "iter_batches", "local_client", "merge_stats", "open_store"]

CHUNK_BYTES = 4 << 20  # target chunk size along the samples
ROUND_BYTES = 128 << 20  # at most this in chunk buffers being filled (all tensors together)
SHARD_BYTES = 128 << 20  # target captured bytes per shard
MAX_SHARD_BATCHES = 256
CHECKPOINT_SECONDS = 2.0
FORMAT = 2

RUN = "run.json"
PROGRESS = "progress.json"


# -- sources -------------------------------------------------------------------------------------------------


class _Source:
    """The batches of a run: a folder (read where they are captured) or an iterable (read here)."""

    def __init__(self, batches: Any, model: Model, source_id: str | None) -> None:
        self.input_names = [s.name for s in input_specs(model)]
        if isinstance(batches, (str, os.PathLike)):
            self.folder: str | None = os.path.abspath(os.fspath(batches))
            self.kind, self.entries = folder_entries(self.folder)
            if self.kind == "npy" and len(self.input_names) != 1:
                raise InputError(
                    f"dataset {os.fspath(batches)!r} holds .npy files, but the model has {len(self.input_names)} "
                    f"inputs ({', '.join(self.input_names)}); use one .npz per batch"
                )
            self.iterable: Iterable[Any] | None = None
            self.total: int | None = len(self.entries)
            self.identity = {
                "kind": "folder",
                "folder": self.folder,
                "format": self.kind,
                "files": folder_fingerprint(self.folder, self.entries),
            }
        else:
            self.folder, self.kind, self.entries = None, "iterable", []
            self.iterable = batches
            self.total = len(batches) if hasattr(batches, "__len__") else None  # type: ignore[arg-type]
            self.identity = {"kind": "iterable", "id": source_id}

    def items(self) -> Iterator[Any]:
        """Entry names of the folder, or the iterable's batches."""
        return iter(self.entries) if self.iterable is None else iter(self.iterable)

    def compare(self, stored: dict[str, Any]) -> str | None:
        """Why this source does not continue the stored one (the folder may move; its files may not change)."""
        a = {k: v for k, v in stored.items() if k != "folder"}
        b = {k: v for k, v in self.identity.items() if k != "folder"}
        return describe_change("source", a, b)


def iter_batches(source: Any, model: Model) -> Iterator[dict[str, np.ndarray]]:
    """Batches from an iterable of input dicts, or a folder of ``.npz`` files (one batch each), ``.npy`` files
    (one batch each, for a single-input model) or ONNX test-data-set folders (``test_data_set_*``).

    Example:
        >>> import numpy as np, onnxscope
        >>> from onnxscope.testing import mlp_model
        >>> [b["x"].shape for b in iter_batches([{"x": np.ones((2, 3))}], onnxscope.Model(mlp_model()))]
        [(2, 3)]
    """
    src = _Source(source, model, None)
    for item in src.items():
        yield read_batch(src.kind, src.folder, item, src.input_names)


# -- the store -----------------------------------------------------------------------------------------------


class DatasetStore(Mapping[str, Any]):
    """A store written by :func:`capture_dataset`: tensor name → its complete rows, plus statistics.

    ``store[name]`` reads every complete row into memory; ``store.array(name)`` is the Zarr array (read lazily).
    """

    def __init__(self, path: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> None:
        self.path = os.fspath(path)
        self._storage_options = storage_options
        self._files = Files(self.path, storage_options)
        try:
            info = self._files.read_json(PROGRESS)
            run = self._files.read_json(RUN)
        except (ValueError, UnicodeDecodeError) as e:
            raise ModelLoadError(
                f"{self.path}: a damaged onnxscope dataset store (its own files: {e})"
            ) from e
        except OSError as e:
            raise ModelLoadError(f"{self.path}: cannot read the store ({e.strerror or e})") from e
        if info is None or run is None:
            raise ModelLoadError(f"{self.path}: not an onnxscope dataset store (no {META}/{PROGRESS})")
        try:
            if not isinstance(info, dict) or not isinstance(run, dict):
                raise TypeError("not a JSON object")
            self.run: dict[str, Any] = run
            self.plan = Plan.from_dict(run["plan"]) if run.get("plan") else None
            stored = [] if self.plan is None or run["settings"]["stats_only"] else self.plan.tensors
            self._tensors: dict[str, TensorPlan] = {t.name: t for t in stored}
            self._group: Any = None
            # shards committed after the last checkpoint count too (a killed run leaves them)
            self._later = [] if info["complete"] else _committed_after(self._files, int(info["shards"]))
            self.info: dict[str, Any] = _fold_progress(info, self._later)
            int(self.info["batches"]), int(self.info["samples"])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ModelLoadError(
                f"{self.path}: a damaged onnxscope dataset store ({type(e).__name__}: {e})"
            ) from e

    @property
    def batches(self) -> int:
        """Complete batches."""
        return int(self.info["batches"])

    @property
    def samples(self) -> int:
        """Complete samples."""
        return int(self.info["samples"])

    @property
    def complete(self) -> bool:
        """Whether the run that wrote the store finished."""
        return bool(self.info["complete"])

    def __getitem__(self, name: str) -> np.ndarray:
        """Every complete row of a tensor, read into memory (see :meth:`array` to read parts)."""
        return self.array(name)[: self.rows(name)]

    def array(self, name: str) -> Any:
        """The Zarr array of a tensor, read lazily: ``store.array(name)[:8]`` reads the first chunk only. Rows past
        :meth:`rows` belong to shards that were not committed."""
        if name not in self._tensors:
            raise NotFoundError(f"no tensor {name!r} in {self.path}; {closest(name, self._tensors)}")
        if self._group is None:
            self._group = open_group(self.path, self._storage_options, "r")
        return self._group[self._tensors[name].key]

    def rows(self, name: str) -> int:
        """Complete rows of a tensor (its first axis)."""
        if name not in self._tensors:
            raise NotFoundError(f"no tensor {name!r} in {self.path}; {closest(name, self._tensors)}")
        return int(self.info["rows"].get(self._tensors[name].key, 0))

    def key(self, name: str) -> str:
        """The name of a tensor's array in the store (and its variable in ``xarray.open_zarr``)."""
        if name not in self._tensors:
            raise NotFoundError(f"no tensor {name!r} in {self.path}; {closest(name, self._tensors)}")
        return self._tensors[name].key

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    @property
    def nbytes(self) -> int:
        """Bytes of every complete row, uncompressed."""
        return sum(self.rows(n) * t.batch_bytes // t.rows for n, t in self._tensors.items())

    @property
    def nbytes_stored(self) -> int:
        """Bytes the arrays take in the store (after compression, metadata included)."""
        return sum(int(self.array(n).nbytes_stored()) for n in self._tensors)

    @property
    def compression(self) -> str | None:
        """The compression codec (``None``: uncompressed)."""
        return self.run["settings"].get("compression")

    def all_stats(self) -> dict[str, RunningStats]:
        """Running statistics of every tensor over the complete samples."""
        name = self.info.get("stats")
        data = self._files.read(name) if name else None
        stats = _unpack_stats(data) if data is not None else {}
        for r in self._later:
            for k, s in r.stats.items():
                stats[k] = stats[k].merge(s) if k in stats else s
        return stats

    def stats(self, name: str) -> RunningStats:
        """Running statistics of one tensor."""
        found = self.all_stats()
        if name not in found:
            raise NotFoundError(f"no statistics for {name!r} in {self.path}; {closest(name, found)}")
        return found[name]

    def __repr__(self) -> str:
        state = "complete" if self.complete else "incomplete"
        return f"<onnxscope.DatasetStore {self.path!r}: {len(self)} tensors, {self.samples} samples, {state}>"


def _committed_after(files: Files, merged: int) -> list[ShardResult]:
    """The shards committed (marker written) in order after the first ``merged``, up to the first missing one."""
    out = []
    present = set(files.list("shards"))
    i = merged
    while marker_name(i).split("/")[-1] in present:
        data = files.read(marker_name(i))
        if data is None:
            break
        out.append(ShardResult.from_marker(data))
        i += 1
    return out


def _fold_progress(info: dict[str, Any], results: list[ShardResult]) -> dict[str, Any]:
    """Progress with ``results`` (the next shards, in order) merged in."""
    p = {**info, "rows": dict(info["rows"]), "digests": list(info["digests"])}
    for r in results:
        for key, n in r.rows.items():
            p["rows"][key] = p["rows"].get(key, 0) + n
        p["batches"] += r.batches
        p["samples"] += r.samples
        p["bytes"] += r.nbytes
        p["digests"].append(r.digest)
        p["shards"] += 1
    return p


def open_store(path: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> DatasetStore:
    """Open a store written by :func:`capture_dataset` (complete shards only).

    Example:
        >>> open_store("no-such.zarr")
        Traceback (most recent call last):
        ...
        onnxscope.errors.ModelLoadError: no-such.zarr: not an onnxscope dataset store (no onnxscope/progress.json)
    """
    return DatasetStore(path, storage_options)


def merge_stats(*stores: DatasetStore) -> dict[str, RunningStats]:
    """Statistics of several stores together, as if one run had seen all their batches (merged in the order given).

    Example:
        >>> merge_stats()
        {}
    """
    merged: dict[str, RunningStats] = {}
    for store in stores:
        for name, s in store.all_stats().items():
            merged[name] = merged[name].merge(s) if name in merged else s
    return merged


def _pack_stats(stats: dict[str, RunningStats]) -> bytes:
    arrays: dict[str, np.ndarray] = {"__names__": np.frombuffer(json.dumps(list(stats)).encode(), np.uint8)}
    for i, s in enumerate(stats.values()):
        arrays.update(s.to_arrays(f"{i}/"))
    return npz_bytes(arrays)


def _unpack_stats(data: bytes) -> dict[str, RunningStats]:
    arrays = npz_arrays(data)
    names = json.loads(bytes(arrays.pop("__names__")).decode())
    return {n: RunningStats.from_arrays(arrays, f"{i}/") for i, n in enumerate(names)}


# -- planning ------------------------------------------------------------------------------------------------


def _pow2_floor(x: int) -> int:
    return 1 << (max(x, 1).bit_length() - 1)


def _pow2_ceil(x: int) -> int:
    return 1 << (max(x, 1) - 1).bit_length()


def _array_key(name: str, used: set[str]) -> str:
    """A Zarr node name for a tensor: its name with ``/`` as ``.``, unique, not reserved."""
    key = re.sub(r"[/\\]+", ".", name).strip(". ")
    if len(key.encode()) > 200:
        key = key[:180] + "~" + hashlib.sha256(name.encode()).hexdigest()[:12]
    if not key or key.startswith("__") or key == META:
        key = f"t.{key}"
    base, i = key, 2
    while key in used:
        key, i = f"{base}~{i}", i + 1
    used.add(key)
    return key


def make_plan(
    probed: dict[str, Any], chunk_bytes: int, shard_batches: int | None, total_batches: int | None
) -> Plan:
    """Chunks and shards from the probe of the first batch.

    A tensor's chunk holds the largest power of two of batches within ``chunk_bytes`` (at least one batch), smaller
    when the chunks being filled would together pass 128 MiB; a shard holds ``shard_batches`` batches (by default
    a power of two making about 128 MiB of captures, at most 256, and at most an eighth of the batches when their
    number is known), and every chunk's count of batches divides it.

    Example:
        >>> p = make_plan({"batch_size": 8, "tensors": [{"name": "a/b", "op": "Relu", "dtype": "<f4",
        ...     "shape": [8, 1024], "sample": True}]}, 1 << 20, None, None)
        >>> p.shard_batches, p.tensors[0].key, p.tensors[0].chunk_batches
        (256, 'a.b', 32)
    """
    used: set[str] = set()
    probe_tensors = probed["tensors"]
    sizes = [math.prod(t["shape"]) * np.dtype(t["dtype"]).itemsize for t in probe_tensors]
    if shard_batches is None:
        k = min(_pow2_ceil(math.ceil(SHARD_BYTES / max(sum(sizes), 1))), MAX_SHARD_BATCHES)
        if total_batches:
            k = min(k, _pow2_floor(max(total_batches // 8, 1)))
    else:
        if shard_batches < 1:
            raise InputError(f"shard_batches {shard_batches}: must be at least 1")
        k = shard_batches
    divisors = [d for d in range(1, k + 1) if k % d == 0]
    counts = [max(d for d in divisors if d == 1 or d * size <= chunk_bytes) for size in sizes]
    while sum(m * size for m, size in zip(counts, sizes, strict=True) if m > 1) > ROUND_BYTES:
        i = max((i for i, m in enumerate(counts) if m > 1), key=lambda i: counts[i] * sizes[i])
        counts[i] = max(d for d in divisors if d < counts[i])  # the largest buffer first, a divisor smaller
    tensors = []
    for t, m in zip(probe_tensors, counts, strict=True):
        shape = tuple(t["shape"])
        tensors.append(
            TensorPlan(
                t["name"],
                _array_key(t["name"], used),
                t["op"],
                t["dtype"],
                shape,
                t["sample"],
                m,
                unit_axis_for(shape),
            )
        )
    parts = None if probed.get("parts") is None else tuple(tuple(p) for p in probed["parts"])
    return Plan(int(probed["batch_size"]), k, tuple(tensors), parts, dict(probed.get("skipped") or {}))


def _codecs(compression: str | None) -> list[Any] | None:
    """Zarr codecs for ``compression``: ``None`` or ``"none"``, ``zstd[:LEVEL]``, ``blosc[:LEVEL]``, ``gzip[:LEVEL]``."""
    if compression is None or compression.lower() == "none":
        return None
    name, _, level = compression.lower().partition(":")
    choices = "none, zstd[:LEVEL], blosc[:LEVEL], gzip[:LEVEL]"
    if name not in ("zstd", "blosc", "gzip") or (level and not level.isdigit()):
        raise InputError(f"compression {compression!r}: choose one of {choices}")
    from zarr import codecs

    if name == "zstd":
        return [codecs.ZstdCodec(level=int(level or 3))]
    if name == "gzip":
        return [codecs.GzipCodec(level=int(level or 5))]
    return [codecs.BloscCodec(cname="lz4", clevel=int(level or 5), shuffle="shuffle")]


# -- running shards ------------------------------------------------------------------------------------------


class _Bar:
    """One progress bar (tqdm) over every shard: batches, samples/s, bytes, ETA when the total is known."""

    def __init__(self, enabled: bool, total: int | None, initial: int) -> None:
        from tqdm import tqdm

        self.start = time.perf_counter()
        self.samples = 0
        self.nbytes = 0
        self.bar = tqdm(
            total=total,
            initial=initial,
            unit="batch",
            desc="capture",
            disable=None if enabled else True,  # None: off when stderr is not a terminal
            dynamic_ncols=True,
            leave=True,
        )

    def update(self, batches: int, samples: int, nbytes: int) -> None:
        self.samples += samples
        self.nbytes += nbytes
        rate = self.samples / max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix_str(f"{rate:,.0f} samples/s, {fmt_bytes(self.nbytes)}", refresh=False)
        self.bar.update(batches)

    def close(self) -> None:
        self.bar.close()


class _LocalRunner:
    """Shards one after the other in this process; a shard's commit (its last writes, its marker) overlaps the
    next shard's capture."""

    def __init__(self, spec: Spec, model: Model) -> None:
        self.ctx = Context(spec, model)

    def probe(self, spec: Spec, item: Any) -> dict[str, Any]:
        self.ctx.spec = spec
        return probe(self.ctx, read_batch(spec.source_kind, spec.folder, item, self.ctx.input_names), item)

    def run(self, spec: Spec, tasks: Iterator[ShardTask], bar: _Bar) -> Iterator[ShardResult]:
        from concurrent.futures import ThreadPoolExecutor

        self.ctx.spec = spec
        committer = ThreadPoolExecutor(1, thread_name_prefix="onnxscope-commit")
        pending: list[Any] = []
        try:
            for task in tasks:
                commit = capture_shard(self.ctx, task, on_batch=lambda n, b: bar.update(1, n, b))
                pending.append(committer.submit(commit))
                while len(pending) > 1 or (pending and pending[0].done()):
                    yield pending.pop(0).result()
            while pending:
                yield pending.pop(0).result()
        finally:
            committer.shutdown(wait=True)
            self.ctx.close()


class _DaskRunner:
    """Shards as tasks on a Dask cluster, a bounded number in flight; results come back as they complete."""

    def __init__(self, client: Any) -> None:
        try:
            import distributed
        except ImportError as e:
            raise MissingDependencyError(
                "a Dask cluster needs dask.distributed: pip install 'onnxscope[dataset]'"
            ) from e
        if not isinstance(client, distributed.Client):
            raise InputError(f"client must be a dask.distributed.Client, not {type(client).__name__}")
        self.client = client
        self.distributed = distributed
        self.run_id = uuid.uuid4().hex[:8]

    def window(self) -> int:
        threads = sum(w.get("nthreads", 1) for w in self.client.scheduler_info()["workers"].values())
        return max(2, 2 * threads)

    def probe(self, spec: Spec, item: Any) -> dict[str, Any]:
        probed = self.client.submit(probe_task, spec, item, pure=False)
        # meanwhile every worker opens the model (a no-op where the probe ran), so that all start capturing together
        self._warm = [
            self.client.submit(warm_task, spec, workers=[w], allow_other_workers=True, pure=False)
            for w in self.client.scheduler_info()["workers"]
        ]
        return self._result(probed)

    def _result(self, future: Any) -> Any:
        try:
            return future.result()
        except self.distributed.KilledWorker as e:
            raise CaptureError(
                f"a shard killed {e.args[0] if e.args else 'its'} workers in turn (out of memory?): {e}"
            ) from e

    def run(self, spec: Spec, tasks: Iterator[ShardTask], bar: _Bar) -> Iterator[ShardResult]:
        done = self.distributed.as_completed()
        live: list[Any] = []
        window = self.window()
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*[Ll]arge graph.*")
                for task in tasks:
                    f = self.client.submit(
                        shard_task, spec, task, key=f"onnxscope-shard-{self.run_id}-{task.index}", pure=False
                    )
                    live.append(f)
                    done.add(f)
                    while done.count() >= window:
                        r = self._result(next(done))
                        bar.update(r.batches, r.samples, r.nbytes)
                        yield r
            for f in done:
                r = self._result(f)
                bar.update(r.batches, r.samples, r.nbytes)
                yield r
        finally:
            self.client.cancel([f for f in live if not f.done()])


class _Merger:
    """Folds committed shards into the store's progress and statistics, strictly in shard order."""

    def __init__(
        self, files: Files, progress: dict[str, Any], stats: dict[str, RunningStats], keep_stats: bool
    ):
        self.files = files
        self.progress = progress
        self.stats = stats
        self.keep_stats = keep_stats
        self.pending: dict[int, ShardResult] = {}
        self.merged: list[int] = []  # merged since the last checkpoint (their markers go then)
        self.last = time.perf_counter()

    @property
    def shards(self) -> int:
        return int(self.progress["shards"])

    def add(self, r: ShardResult) -> None:
        self.pending[r.index] = r
        while self.progress["shards"] in self.pending:
            r = self.pending.pop(self.progress["shards"])
            for name, s in r.stats.items():
                self.stats[name] = self.stats[name].merge(s) if name in self.stats else s
            self.progress = _fold_progress(self.progress, [r])
            self.merged.append(r.index)
        if self.merged and time.perf_counter() - self.last >= CHECKPOINT_SECONDS:
            self.checkpoint()

    def checkpoint(self, complete: bool = False) -> None:
        """Statistics of the merged shards, then progress pointing at them, then drop what they replace."""
        p = self.progress
        old = p.get("stats")
        if self.keep_stats:
            p["stats"] = f"stats-{p['shards']}.npz"
            if p["stats"] != old:
                self.files.write(p["stats"], _pack_stats(self.stats))
        p["complete"] = complete
        self.files.write_json(PROGRESS, p)
        if old and old != p.get("stats"):
            self.files.delete(old)
        for i in self.merged:
            self.files.delete(marker_name(i))
        self.merged = []
        self.last = time.perf_counter()


# -- the coordinator -----------------------------------------------------------------------------------------


def _selection_label(sel: Selection) -> Any:
    if sel is None or isinstance(sel, str):
        return sel
    if isinstance(sel, (list, tuple)) and all(isinstance(s, str) for s in sel):
        return list(sel)
    return f"<{type(sel).__name__}>"  # a predicate: the store's tensor list is what a resume checks


def _refuse(url: str, why: str) -> InputError:
    return InputError(f"cannot resume {url!r}: {why}; continue with the same inputs, or choose a new path")


@contextlib.contextmanager
def local_client(workers: int, threads_per_worker: int = 1) -> Iterator[Any]:
    """A Dask ``Client`` on a local cluster of ``workers`` single-threaded worker processes, closed on exit.

    Example (not run: it starts processes):
        >>> with local_client(2) as client:  # doctest: +SKIP
        ...     capture_dataset("model.onnx", "data/", out="run.zarr", client=client)
    """
    try:
        import logging

        from distributed import Client, LocalCluster
    except ImportError as e:
        raise MissingDependencyError(
            "--workers needs dask.distributed: pip install 'onnxscope[dataset]'"
        ) from e
    if workers < 1:
        raise InputError(f"--workers {workers}: must be at least 1")
    import dask

    # Dask starts its workers with MALLOC_TRIM_THRESHOLD_=65536, which also turns off glibc's adaptive mmap
    # threshold: every array over 128 KiB a batch allocates (its inputs, the statistics' temporaries) is then
    # mapped and faulted in afresh — measured on the MLP of benchmarks/dataset.py, 3x the page faults and +1.4 s
    # of system time per worker. A capture's memory is flat by design (its buffers are reused), so this cluster's
    # workers keep glibc's default: the setting is left out of what the nannies set, and out of this process's
    # environment while the cluster lives (a nanny started earlier in this process put it there, and workers,
    # restarted ones too, inherit it).
    key = "MALLOC_TRIM_THRESHOLD_"
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {})
    dasks = environ.pop(key, None)
    saved = os.environ.get(key)
    if dasks is not None and saved == str(dasks):  # Dask's value, not one the user chose
        del os.environ[key]
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=threads_per_worker,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
            cluster.close()
    finally:
        if saved is not None:
            os.environ[key] = saved


def capture_dataset(
    model: Model | str | os.PathLike[str],
    batches: Iterable[Mapping[str, np.ndarray]] | str | os.PathLike[str],
    select: Selection = None,
    exclude: Selection = None,
    *,
    out: str | os.PathLike[str],
    stats: bool = True,
    stats_only: bool = False,
    resume: bool = False,
    progress: bool = True,
    providers: list[str] | None = None,
    threads: int | None = None,
    max_memory: int | None = None,
    client: Any = None,
    source_id: str | None = None,
    compression: str | None = None,
    chunk_size: int | str | None = None,
    shard_batches: int | None = None,
    storage_options: dict[str, Any] | None = None,
    recompute: bool = False,
) -> DatasetStore:
    """Capture every batch into the Zarr store ``out`` (and/or running statistics).

    Parameters:
        model: a :class:`Model` or a path (with a Dask cluster, a path every worker can read).
        batches: input dicts (each batch the same size but the last), or a folder (see :func:`iter_batches`;
            with a Dask cluster, workers read its files themselves). Batches are read ahead (a shard's worth):
            an iterable must yield arrays it does not change afterwards (not one buffer refilled in place).
        select, exclude: what to capture (as :func:`onnxscope.capture`).
        out: the store: a folder, or any URL the installed fsspec supports; it must not exist unless ``resume``.
        stats: keep running statistics per tensor and per unit.
        stats_only: write no tensors, only statistics.
        resume: continue a store that an interrupted run left, after checking that the model (weights too), the
            data and the selection are those it was made with.
        progress: a progress bar on a terminal (batches, samples/s, bytes written, ETA when the total is known).
        providers, threads: onnxruntime execution providers and intra-op threads (on a cluster: per worker,
            default 1).
        max_memory: a budget in bytes for one batch's captured tensors; over it, the tensors are split across
            several runs of the model (each run leaves out only the fusions that would remove its own tensors, so
            values can differ from an unsplit run's within float rounding).
        client: a ``dask.distributed.Client``: shards run on its workers, each writing its own chunks.
        source_id: for an iterable, a name for the data it yields (e.g. ``"imagenet-val@v2"``), recorded and
            checked on resume (the inputs of the batches already captured are checked too).
        compression: ``None`` (default), ``"zstd[:LEVEL]"``, ``"blosc[:LEVEL]"`` or ``"gzip[:LEVEL]"``.
        chunk_size: target bytes per chunk along the samples (default 4M).
        shard_batches: batches per shard (default: about 32 MiB of captures, a power of two up to 64).
        storage_options: fsspec options for a remote store URL.
        recompute: run the model with the fusions that remove some of the selected tensors, and recompute those
            for every batch (see :class:`~onnxscope.session.CaptureSession`): every tensor the deployed session
            computes is then its own value. By default they are computed by the run itself (onnxruntime leaves
            those fusions out; values equal within float rounding, QDQ layers keep their int8 kernels): every
            tensor of every batch is read, so recomputing would repeat their layers' work (twice the
            multiplications of a Gemm → ReLU model).

    Raises:
        InputError: ``out`` exists without ``resume``; on resume, the model, data, selection or settings changed
            (nothing is written then); a batch whose size or tensor shapes differ from the first one's.

    Example:
        >>> import numpy as np, onnxscope, tempfile, os
        >>> from onnxscope.testing import mlp_model
        >>> batches = [{"x": np.ones((4, 3), np.float32)}] * 3 + [{"x": np.ones((1, 3), np.float32)}]
        >>> out = os.path.join(tempfile.mkdtemp(), "run.zarr")
        >>> store = capture_dataset(onnxscope.Model(mlp_model()), batches, out=out, progress=False)
        >>> store.samples, store.array("h").metadata.dimension_names
        (13, ('sample', 'h_1'))
    """
    if not isinstance(recompute, bool):
        raise InputError(f"recompute {recompute!r}: choose True or False")
    url = os.fspath(out)
    chunk_bytes = parse_size(chunk_size, "chunk_size") or CHUNK_BYTES
    codecs = _codecs(compression)
    files = Files(url, storage_options)
    model = model if isinstance(model, Model) else load(model)
    source = _Source(batches, model, source_id)
    if client is not None and threads is None:
        threads = 1
    ident = model_identity(model)
    selection = {"select": _selection_label(select), "exclude": _selection_label(exclude)}
    settings = {"stats": stats, "stats_only": stats_only, "compression": compression, "recompute": recompute}

    run: dict[str, Any] | None = None
    progress_info: dict[str, Any] | None = None
    if files.exists():
        if not resume:
            raise InputError(
                f"store {url!r} exists; pass resume=True (--resume) to continue it, or choose a new path"
            )
        run = files.read_json(RUN)
        if run is None and not files.is_empty():
            raise InputError(f"{url!r} exists but is not an onnxscope dataset store; choose a new path")
    if run is not None:
        if run.get("format") != FORMAT:
            raise _refuse(url, f"it was written by another version of onnxscope (format {run.get('format')})")
        main = os.path.basename(model.path) if model.path else None
        for why in (
            describe_change("model", run["model"], ident, main),
            source.compare(run["source"]),
            describe_change("selection", run["selection"], selection),
            # a store made before the setting existed was made recomputing
            describe_change("settings", {"recompute": True, **run["settings"]}, settings),
        ):
            if why:
                raise _refuse(url, why)
        progress_info = files.read_json(PROGRESS)

    spec = Spec(
        token="",
        model_path=os.path.abspath(model.path) if model.path else None,
        model_proto=None,
        model_files=ident["files"],
        select=select,
        exclude=exclude,
        providers=providers,
        threads=threads,
        max_memory=max_memory,
        url=url,
        storage_options=storage_options,
        stats=stats,
        stats_only=stats_only,
        source_kind=source.kind,
        folder=source.folder,
        recompute=recompute,
    )
    if client is not None and not model.path:
        from onnxscope._ir import ir

        spec = _replace(spec, model_proto=ir.to_proto(model.ir))
    spec = _replace(spec, token=spec_token(spec))
    runner: Any = _DaskRunner(client) if client is not None else _LocalRunner(spec, model)

    if run is not None and progress_info is not None:
        if progress_info.get("complete"):
            return DatasetStore(url, storage_options)
        plan = Plan.from_dict(run["plan"]) if run.get("plan") else None
        items = source.items()
        created = False
    else:
        # a new store (or one that a run left before its first progress record): probe the first batch, and only
        # then create anything
        items = source.items()
        first = next(items, None)
        if first is None:
            plan = None
        else:
            probed = runner.probe(spec, first)
            plan = make_plan(probed, chunk_bytes, shard_batches, source.total)
            items = _chain(first, items)
        if run is not None:  # nothing committed: start the store again
            files.remove_store()
        run = {
            "format": FORMAT,
            "model": ident,
            "source": source.identity,
            "selection": selection,
            "settings": settings,
            "plan": plan.to_dict() if plan is not None else None,
        }
        _create_store(url, storage_options, files, run, plan, codecs, source, stats_only)
        progress_info = _new_progress()
        files.write_json(PROGRESS, progress_info)
        created = True
    if plan is None:
        progress_info["complete"] = True
        files.write_json(PROGRESS, progress_info)
        return DatasetStore(url, storage_options)

    spec = _replace(spec, plan=plan)
    try:
        _run(url, storage_options, files, spec, plan, source, items, runner, progress_info, progress)
    except BaseException:
        if created and (files.read_json(PROGRESS) or {}).get("shards") == 0 and not files.list("shards"):
            files.remove_store()  # nothing committed: leave nothing behind
        raise
    return DatasetStore(url, storage_options)


def _replace(spec: Spec, **kw: Any) -> Spec:
    import dataclasses

    return dataclasses.replace(spec, **kw)


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


def _new_progress() -> dict[str, Any]:
    return {
        "shards": 0,
        "batches": 0,
        "samples": 0,
        "bytes": 0,
        "rows": {},
        "digests": [],
        "stats": None,
        "complete": False,
    }


def _create_store(
    url: str,
    storage_options: dict[str, Any] | None,
    files: Files,
    run: dict[str, Any],
    plan: Plan | None,
    codecs: list[Any] | None,
    source: _Source,
    stats_only: bool,
) -> None:
    """The group (attributes for readers with Zarr alone), one array per tensor sized for the known batches,
    the ``onnxscope`` group and ``run.json``."""
    group = open_group(url, storage_options, "w")
    ident = run["model"]
    group.attrs.update(
        {
            "onnxscope": {
                "model": ident["path"],
                "model_sha256": {k: v[:16] for k, v in ident["files"].items()},
                "select": repr(run["selection"]["select"]),
                "exclude": repr(run["selection"]["exclude"]),
                "inputs": source.input_names,
                "batch_size": None if plan is None else plan.batch_size,
            }
        }
    )
    group.create_group(META)
    if plan is not None and not stats_only:
        k = plan.shard_batches
        capacity = math.ceil(source.total / k) * k if source.total else k
        for t in plan.tensors:
            group.create_array(
                t.key,
                shape=(capacity * t.rows, *t.shape[1:]),
                chunks=(t.chunk_rows, *t.shape[1:]),
                dtype=t.dtype,
                compressors=codecs,
                fill_value=0,
                chunk_key_encoding={"name": "default", "separator": "."},  # c.12.0.0: one file, no folders
                dimension_names=t.dims,
                attributes={"tensor": t.name, "op": t.op, "unit_axis": t.unit_axis},
            )
    files.write_json(RUN, run)


def _shrink(arr: Any, shape: tuple[int, ...]) -> None:
    """Resize to the samples captured; only the metadata changes (nothing was written past them)."""
    try:
        from zarr.core.sync import sync
    except (
        ImportError
    ):  # pragma: no cover - another zarr layout: the plain resize also deletes (absent) chunks
        arr.resize(shape)
        return
    sync(arr.async_array.resize(shape, delete_outside_chunks=False))


def _run(
    url: str,
    storage_options: dict[str, Any] | None,
    files: Files,
    spec: Spec,
    plan: Plan,
    source: _Source,
    items: Iterator[Any],
    runner: Any,
    progress_info: dict[str, Any],
    progress: bool,
) -> None:
    """Submit the shards not yet committed, merge them in order, then size the arrays to the samples."""
    merged = progress_info["shards"]
    stats = _unpack_stats(files.read(progress_info["stats"])) if progress_info.get("stats") else {}
    # shards a killed run committed but did not merge: from their markers
    waiting: dict[int, ShardResult] = {}
    for name in files.list("shards"):
        if not name.endswith(".npz") or not name[:-4].isdigit():
            continue
        i = int(name[:-4])
        if i < merged:
            files.delete(marker_name(i))
            continue
        data = files.read(marker_name(i))
        if data is not None:
            waiting[i] = ShardResult.from_marker(data)
    if (
        source.kind == "iterable"
    ):  # it cannot be re-read: keep only the shards committed in a row from the start
        i = merged
        while i in waiting:
            i += 1
        waiting = {j: r for j, r in waiting.items() if j < i}
    digests = {i: d for i, d in enumerate(progress_info["digests"])}
    digests.update({i: r.digest for i, r in waiting.items()})
    merger = _Merger(files, progress_info, stats, spec.stats)
    for i in sorted(waiting):
        merger.add(waiting[i])

    stored = not spec.stats_only
    group = open_group(url, storage_options, "r+") if stored else None
    if stored and files.local:  # chunk files a killed run was writing
        import glob

        for t in plan.tensors:
            for tmp in glob.glob(os.path.join(glob.escape(os.path.join(files.root, t.key)), "*.partial")):
                os.unlink(tmp)
    k = plan.shard_batches
    arrays = {t.key: group[t.key] for t in plan.tensors} if group is not None else {}
    capacity = [min((arrays[t.key].shape[0] // t.rows for t in plan.tensors if t.key in arrays), default=0)]

    def grow(batches: int) -> int:
        if stored and batches > capacity[0]:
            new = max(batches, 2 * capacity[0])
            for t in plan.tensors:
                arrays[t.key].resize((new * t.rows, *t.shape[1:]))
            capacity[0] = new
        return capacity[0] if stored else batches

    def tasks() -> Iterator[ShardTask]:
        index = first = 0
        shard: list[Any] = []
        for item, last in iter_items(items):
            shard.append(item)
            if len(shard) < k and not last:
                continue
            if index in digests:  # committed: skip it (an iterable's batches must be the ones captured)
                if source.kind == "iterable":
                    found = shard_digest(batch_digest(read_batch("iterable", None, b, [])) for b in shard)
                    if found != digests[index]:
                        raise _refuse(
                            url,
                            f"the data source changed since the store was made (batches {first}..{first + len(shard) - 1} "
                            "differ from those captured)",
                        )
            else:
                yield ShardTask(index, first, shard, last, grow((index + 1) * k))
            index, first, shard = index + 1, first + len(shard), []

    bar = _Bar(
        progress, source.total, int(progress_info["batches"]) + sum(r.batches for r in waiting.values())
    )
    try:
        for result in runner.run(spec, tasks(), bar):
            merger.add(result)
    finally:
        bar.close()
    if merger.pending:  # pragma: no cover - every submitted shard returns or raises
        raise CaptureError(f"shards {sorted(merger.pending)} completed out of order and were never merged")
    for t in plan.tensors if stored else ():
        _shrink(arrays[t.key], (merger.progress["rows"].get(t.key, 0), *t.shape[1:]))
    merger.checkpoint(complete=True)
