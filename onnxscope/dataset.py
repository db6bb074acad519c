"""Capture over a dataset: every batch streamed to a Zarr store with bounded memory, plus running statistics.

The store (a folder) holds one Zarr array per captured tensor, appended along the sample axis, and beside them
``onnxscope-progress.json`` (how many batches and samples are complete) and ``onnxscope-stats-N.npz`` (the running
statistics after batch N). Each batch is committed in order — tensors, then statistics, then progress, each file
replaced atomically — so a run killed at any point leaves a store that opens and holds only complete batches, and
``resume=True`` continues it. Captured arrays are written and released batch by batch.

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

import hashlib
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from onnxscope.errors import InputError, MissingDependencyError, ModelLoadError, NotFoundError, closest
from onnxscope.expose import Selection
from onnxscope.inputs import read_inputs
from onnxscope.model import Model, load
from onnxscope.render import atomic_write
from onnxscope.session import CaptureSession
from onnxscope.stats import RunningStats, unit_axis_for

__all__ = ["DatasetStore", "capture_dataset", "iter_batches", "merge_stats", "open_store"]

PROGRESS = "onnxscope-progress.json"


def _zarr() -> Any:
    try:
        import zarr
    except ImportError as e:
        raise MissingDependencyError("dataset capture needs zarr: pip install 'onnxscope[dataset]'") from e
    return zarr


def iter_batches(source: Any, model: Model) -> Iterator[dict[str, np.ndarray]]:
    """Batches from an iterable of input dicts, or a folder of ``.npz`` files (one batch each), ``.npy`` files
    (one batch each, for a single-input model) or ONNX test-data-set folders (``test_data_set_*``)."""
    if not isinstance(source, (str, os.PathLike)):
        yield from source
        return
    folder = Path(source)
    if not folder.is_dir():
        raise InputError(
            f"dataset {os.fspath(folder)!r}: not a folder of .npz/.npy files or test_data_set_* folders"
        )
    sets = sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("test_data_set"))
    npz = sorted(folder.glob("*.npz"))
    npy = sorted(folder.glob("*.npy"))
    if sets:
        for p in sets:
            yield read_inputs(bundle=p)
    elif npz:
        for p in npz:
            yield read_inputs(bundle=p)
    elif npy:
        names = [v.name for v in model.ir.graph.inputs if v.name not in model.ir.graph.initializers]
        if len(names) != 1:
            raise InputError(
                f"dataset {os.fspath(folder)!r} holds .npy files, but the model has {len(names)} inputs "
                f"({', '.join(names)}); use one .npz per batch"
            )
        for p in npy:
            yield {names[0]: np.load(p, allow_pickle=False)}
    else:
        raise InputError(f"dataset {os.fspath(folder)!r} has no .npz, .npy or test_data_set_* entries")


def _model_hash(model: Model) -> str:
    h = hashlib.sha256()
    if model.path:
        with open(model.path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    else:  # a model built in memory: its serialized graph (such models are small)
        import onnx_ir as ir

        h.update(ir.to_proto(model.ir).SerializeToString())
    return h.hexdigest()[:16]


class DatasetStore(Mapping[str, Any]):
    """A store written by :func:`capture_dataset`: tensor name → Zarr array (complete samples only), plus stats."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        progress = os.path.join(self.path, PROGRESS)
        if not os.path.exists(progress):
            raise ModelLoadError(f"{self.path}: not an onnxscope dataset store (no {PROGRESS})")
        with open(progress) as f:
            self.info: dict[str, Any] = json.load(f)
        self._group = _zarr().open_group(self.path, mode="r+") if self.info["tensors"] else None

    @property
    def batches(self) -> int:
        """Complete batches."""
        return int(self.info["batches"])

    @property
    def samples(self) -> int:
        """Complete samples (rows along axis 0 of every array)."""
        return int(self.info["samples"])

    def __getitem__(self, name: str) -> np.ndarray:
        """Every complete row of a tensor, read into memory (see :meth:`array` to read parts)."""
        return self.array(name)[: self.rows(name)]

    def array(self, name: str) -> Any:
        """The Zarr array of a tensor, read lazily: ``store.array(name)[:8]`` reads the first chunk only. Rows past
        :meth:`rows` belong to a batch that was not committed."""
        keys = self.info["tensors"]
        if name not in keys:
            raise NotFoundError(f"no tensor {name!r} in {self.path}; {closest(name, keys)}")
        return self._group[keys[name]]  # type: ignore[index]

    def rows(self, name: str) -> int:
        """Complete rows of a tensor (its first axis)."""
        self.array(name)
        return int(self.info["rows"][self.info["tensors"][name]])

    def __iter__(self) -> Iterator[str]:
        return iter(self.info["tensors"])

    def __len__(self) -> int:
        return len(self.info["tensors"])

    def all_stats(self) -> dict[str, RunningStats]:
        """Running statistics of every tensor after the last complete batch."""
        path = os.path.join(self.path, f"onnxscope-stats-{self.batches}.npz")
        if not os.path.exists(path):
            return {}
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        names = json.loads(bytes(arrays.pop("__names__")).decode())
        return {n: RunningStats.from_arrays(arrays, f"{i}/") for i, n in enumerate(names)}

    def stats(self, name: str) -> RunningStats:
        """Running statistics of one tensor."""
        found = self.all_stats()
        if name not in found:
            raise NotFoundError(f"no statistics for {name!r} in {self.path}; {closest(name, found)}")
        return found[name]


def open_store(path: str | os.PathLike[str]) -> DatasetStore:
    """Open a store written by :func:`capture_dataset` (complete batches only)."""
    return DatasetStore(path)


def merge_stats(*stores: DatasetStore) -> dict[str, RunningStats]:
    """Statistics of several shard stores together, as if one run had seen all their batches."""
    merged: dict[str, RunningStats] = {}
    for store in stores:
        for name, s in store.all_stats().items():
            merged[name] = merged[name].merge(s) if name in merged else s
    return merged


def _save_stats(folder: str, n: int, stats: dict[str, RunningStats]) -> None:
    arrays: dict[str, np.ndarray] = {"__names__": np.frombuffer(json.dumps(list(stats)).encode(), np.uint8)}
    for i, s in enumerate(stats.values()):
        arrays.update(s.to_arrays(f"{i}/"))

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(os.path.join(folder, f"onnxscope-stats-{n}.npz"), write)


def _save_progress(folder: str, info: dict[str, Any]) -> None:
    atomic_write(os.path.join(folder, PROGRESS), lambda tmp: Path(tmp).write_text(json.dumps(info)))


class _Progress:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.start = time.perf_counter()

    def update(self, batches: int, samples: int, nbytes: int) -> None:
        if not self.enabled:
            return
        dt = max(time.perf_counter() - self.start, 1e-9)
        sys.stderr.write(
            f"\r{batches} batches, {samples} samples, {samples / dt:.1f} samples/s, "
            f"{nbytes / 2**20:.1f} MiB written"
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _append(group: Any, info: dict[str, Any], cap: Any, names: list[str], b: int, n: int) -> int:
    """Append the tensors ``names`` of one batch to their arrays; return the bytes written."""
    written = 0
    for name in names:
        a = np.asarray(cap[name])
        if a.ndim == 0 or a.dtype.kind not in "biufc":
            continue
        a = a.view(np.dtype(a.dtype.str))  # e.g. C "long long" → int64, the type Zarr knows
        key = info["tensors"].get(name)
        if key is None:
            key = f"t{len(info['tensors'])}"
            group.create_array(  # uncompressed: activations barely compress, and writes stay cheap
                key,
                shape=(0, *a.shape[1:]),
                chunks=(max(n, 1), *a.shape[1:]),
                dtype=a.dtype,
                attributes={"tensor": name},
                compressors=None,
            )
            info["tensors"][name] = key
            info["rows"][key] = 0
        arr = group[key]
        if tuple(arr.shape[1:]) != a.shape[1:]:
            raise InputError(
                f"tensor {name!r} has shape {list(a.shape)} in batch {b} but {[None, *arr.shape[1:]]} "
                "before; batches must agree beyond the first axis"
            )
        start = int(info["rows"][key])
        arr.resize((start + a.shape[0], *arr.shape[1:]))
        arr[start:] = a
        info["rows"][key] = start + a.shape[0]
        written += a.nbytes
    return written


def _partition(
    session: CaptureSession,
    feeds: Mapping[str, np.ndarray],
    max_memory: int | None,
    providers: list[str] | None,
    threads: int | None,
) -> list[CaptureSession]:
    """One session, or, when one batch's captures would exceed ``max_memory`` bytes, several that each capture a
    share of the tensors (the model then runs once per share). Sizes come from a probe run on one sample."""
    if max_memory is None:
        return [session]
    one = {k: np.asarray(v)[:1] for k, v in feeds.items()}
    batch = max((np.asarray(v).shape[0] for v in feeds.values() if np.asarray(v).ndim), default=1)
    probe = session.run(one)
    sizes = {k: np.asarray(probe[k]).nbytes * batch for k in probe if k not in probe.inputs}
    del probe
    total = sum(sizes.values())
    if total <= max_memory:
        return [session]
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
    return [CaptureSession(session.model, g, None, providers, threads=threads) for g in groups]


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
) -> DatasetStore:
    """Capture every batch into the Zarr store ``out`` (and/or running statistics), one batch at a time.

    Parameters:
        model: a :class:`Model` or a path.
        batches: input dicts, or a folder (see :func:`iter_batches`).
        select, exclude: what to capture (as :func:`onnxscope.capture`).
        out: the store folder; it must not exist unless ``resume`` is given.
        stats: keep running statistics per tensor and per unit.
        stats_only: write no tensors at all, only statistics.
        resume: continue a store that an interrupted run left, skipping its complete batches.
        progress: a progress line on a terminal (batches, samples/s, bytes written).
        max_memory: a budget in bytes for one batch's captured tensors; when they would exceed it, the tensors
            are split across several runs of the model (each writes and releases its share).

    Raises:
        InputError: ``out`` exists without ``resume``, or resuming a store made for another model or selection.
    """
    model = model if isinstance(model, Model) else load(model)
    folder = os.fspath(out)
    session = CaptureSession(model, select, exclude, providers, threads=threads)
    identity = {
        "model": model.path,
        "model_sha256": _model_hash(model),
        "select": repr(select),
        "exclude": repr(exclude),
        "stats_only": stats_only,
    }
    if os.path.exists(folder) and not resume:
        raise InputError(
            f"store {folder!r} exists; pass resume=True (--resume) to continue it, or choose a new path"
        )
    running: dict[str, RunningStats] = {}
    if resume and os.path.exists(os.path.join(folder, PROGRESS)):
        store = DatasetStore(folder)
        info = store.info
        if {k: info.get(k) for k in identity} != identity:
            raise InputError(f"store {folder!r} was made by another model or selection; choose a new path")
        running = store.all_stats()
        for key in info["tensors"].values():  # drop rows of a batch that was not committed
            arr = store._group[key]  # type: ignore[index]
            if arr.shape[0] > info["rows"][key]:
                arr.resize((info["rows"][key], *arr.shape[1:]))
        group = store._group
    else:
        os.makedirs(folder, exist_ok=resume)
        info = {**identity, "batches": 0, "samples": 0, "inputs": [], "tensors": {}, "rows": {}}
        group = None
    done = int(info["batches"])
    bar = _Progress(progress)
    written = 0
    sessions: list[CaptureSession] | None = None
    for b, feeds in enumerate(iter_batches(batches, model)):
        if b < done:
            continue  # committed by the interrupted run
        if sessions is None:
            sessions = _partition(session, feeds, max_memory, providers, threads)
        n = None
        seen: set[str] = set()
        inputs: list[str] = []
        for (
            part
        ) in sessions:  # each part captures its share of the tensors; every part writes before the next
            cap = part.run(feeds, reuse=True)
            n = n if n is not None else (next(iter(cap.inputs.values())).shape[0] if cap.inputs else 1)
            inputs = sorted(cap.inputs)
            names = [k for k in cap if k not in seen]
            seen.update(names)
            if not stats_only:
                if group is None:
                    group = _zarr().open_group(folder, mode="a")
                    # what made the store, for anyone opening it with Zarr alone
                    group.attrs.update({"onnxscope": {**identity, "inputs": sorted(feeds)}})
                written += _append(group, info, cap, names, b, n)
            if stats:
                for name in names:
                    a = np.asarray(cap[name])
                    if a.dtype.kind not in "biuf" or a.ndim == 0:
                        continue
                    s = RunningStats.of(a, unit_axis_for(a.shape), cap.info(name).op)
                    running[name] = running[name].merge(s) if name in running else s
            del cap
        if stats:
            _save_stats(folder, b + 1, running)
        info.update(batches=b + 1, samples=int(info["samples"]) + (n or 0), inputs=inputs)
        _save_progress(folder, info)
        stale = os.path.join(folder, f"onnxscope-stats-{b}.npz")
        if os.path.exists(stale):
            os.unlink(stale)
        bar.update(b + 1, int(info["samples"]), written)
    bar.close()
    if info["batches"] == 0 and not os.path.exists(os.path.join(folder, PROGRESS)):
        _save_progress(folder, info)
    return DatasetStore(folder)
