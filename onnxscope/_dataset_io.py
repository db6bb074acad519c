"""What a dataset store is made of besides its Zarr arrays, and what a run is checked against before it resumes.

- :class:`Files`: the store's own small files (progress, statistics, shard commit markers), through fsspec so that
  any store URL the installed fsspec understands works; on a local disk every file is replaced atomically.
- :func:`npz_bytes` / :func:`npz_arrays`: ``.npz`` bytes that depend on the arrays only (no timestamps), so two
  runs that computed the same statistics write the same bytes.
- :func:`model_identity`: a hash of the model *and* of every external-data file it reads.
- :func:`folder_entries` / :func:`folder_fingerprint`: the batches of a data folder, and each file's size and mtime.
- :func:`describe_change`: the one-line reason a resume is refused (model weights, data, selection or settings).

Example:
    >>> import numpy as np
    >>> npz_arrays(npz_bytes({"a": np.arange(3)}))["a"].tolist()
    [0, 1, 2]
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from onnxscope.errors import InputError, MissingDependencyError
from onnxscope.model import Model

__all__ = [
    "Files",
    "describe_change",
    "folder_entries",
    "folder_fingerprint",
    "model_identity",
    "npz_arrays",
    "npz_bytes",
    "parse_size",
]

META = "onnxscope"  # the store's own folder (a Zarr group, so that Zarr and xarray see a known node)


def parse_size(text: str | int | None, what: str = "size") -> int | None:
    """``512M`` → bytes (K, M, G: powers of 1024; a plain number is bytes; an int passes through).

    Example:
        >>> parse_size("4M"), parse_size("1.5K"), parse_size(10), parse_size(None)
        (4194304, 1536, 10, None)
    """
    if text is None or isinstance(text, int):
        return text
    from onnxscope.limits import parse_size as parse

    value = parse(text, what)
    if value <= 0:
        raise InputError(f"{what} {text!r}: must be positive")
    return value


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An uncompressed ``.npz`` of ``arrays`` whose bytes depend on the arrays alone (fixed zip timestamps)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, a in arrays.items():
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            with z.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(a), allow_pickle=False)
    return buf.getvalue()


def npz_arrays(data: bytes) -> dict[str, np.ndarray]:
    """The arrays of :func:`npz_bytes` (never unpickles)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


class Files:
    """Small files under ``<store>/onnxscope/``, read and written through fsspec (atomically on a local disk).

    Example:
        >>> import tempfile
        >>> f = Files(os.path.join(tempfile.mkdtemp(), "s.zarr"))
        >>> f.exists(), f.write_json("progress.json", {"shards": 0}), f.read_json("progress.json")
        (False, None, {'shards': 0})
    """

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        try:
            import fsspec
            from fsspec.implementations.local import LocalFileSystem
        except ImportError as e:  # pragma: no cover - fsspec comes with the dataset extra
            raise MissingDependencyError(
                "dataset capture needs fsspec: pip install 'onnxscope[dataset]'"
            ) from e
        self.url = url
        self.fs, self.root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        self.root = self.root.rstrip("/")
        self.local = isinstance(self.fs, LocalFileSystem)

    def path(self, rel: str) -> str:
        """Where ``rel`` (relative to the store's own folder) lives."""
        return f"{self.root}/{META}/{rel}"

    def exists(self) -> bool:
        """Whether anything exists at the store's URL."""
        return bool(self.fs.exists(self.root))

    def is_empty(self) -> bool:
        """Whether the store's URL is an empty folder."""
        return self.fs.isdir(self.root) and not self.fs.ls(self.root, detail=False)

    def read(self, rel: str) -> bytes | None:
        """A file's bytes, or ``None`` when it does not exist."""
        try:
            return self.fs.cat_file(self.path(rel))
        except FileNotFoundError:
            return None

    def write(self, rel: str, data: bytes) -> None:
        """Replace a file: readers see the old bytes or the new ones, never a part (rename on a local disk; one
        upload, which object stores make atomic, elsewhere)."""
        path = self.path(rel)
        if not self.local:
            self.fs.pipe_file(path, data)
            return
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)

    def read_json(self, rel: str) -> Any:
        """A JSON file, or ``None``."""
        data = self.read(rel)
        return None if data is None else json.loads(data)

    def write_json(self, rel: str, value: Any) -> None:
        """Replace a JSON file (keys sorted: equal content, equal bytes)."""
        self.write(rel, json.dumps(value, sort_keys=True).encode())

    def delete(self, rel: str) -> None:
        """Remove a file if it exists."""
        try:
            self.fs.rm_file(self.path(rel))
        except FileNotFoundError:
            pass

    def list(self, rel: str) -> list[str]:
        """File names in a folder (``[]`` when it does not exist)."""
        try:
            return sorted(os.path.basename(p.rstrip("/")) for p in self.fs.ls(self.path(rel), detail=False))
        except FileNotFoundError:
            return []

    def remove_store(self) -> None:
        """Delete the whole store (used only on a store this run created and never committed to)."""
        if self.fs.exists(self.root):
            self.fs.rm(self.root, recursive=True)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def model_identity(model: Model) -> dict[str, Any]:
    """``{"path": …, "files": {name: sha256}}``: the model file and every external-data file it reads (by their
    location relative to the model), or the serialized graph of a model built in memory.

    Example:
        >>> from onnxscope.testing import mlp_model
        >>> ident = model_identity(Model(mlp_model()))
        >>> list(ident["files"]), len(ident["files"]["<in-memory model>"])
        (['<in-memory model>'], 64)
    """
    from onnxscope._ir import ir

    if not model.path:
        data = ir.to_proto(model.ir).SerializeToString()
        return {"path": None, "files": {"<in-memory model>": hashlib.sha256(data).hexdigest()}}
    from onnxscope._load import iter_tensors

    folder = os.path.dirname(os.path.abspath(model.path))
    files = {os.path.basename(model.path): _sha256(model.path)}
    locations = sorted(
        {
            os.path.normpath(os.fspath(t.location))
            for _, t in iter_tensors(model.ir)
            if isinstance(t, ir.ExternalTensor)
        }
    )
    for loc in locations:
        files[loc] = _sha256(os.path.join(folder, loc))
    return {"path": os.path.abspath(model.path), "files": files}


def digest_model(identity: dict[str, Any]) -> str:
    """One short hash of a model identity (a cache key for workers)."""
    return hashlib.sha256(json.dumps(identity["files"], sort_keys=True).encode()).hexdigest()[:20]


def folder_entries(folder: str | os.PathLike[str]) -> tuple[str, list[str]]:
    """``(kind, entries)`` of a data folder: ``"sets"`` (``test_data_set_*`` folders), ``"npz"`` or ``"npy"``
    (one file per batch), entries in sorted order, relative to the folder.

    Raises:
        InputError: not a folder, or none of those entries.
    """
    p = Path(folder)
    if not p.is_dir():
        raise InputError(
            f"dataset {os.fspath(p)!r}: not a folder of .npz/.npy files or test_data_set_* folders"
        )
    sets = sorted(q.name for q in p.iterdir() if q.is_dir() and q.name.startswith("test_data_set"))
    if sets:
        return "sets", sets
    for kind in ("npz", "npy"):
        found = sorted(q.name for q in p.glob(f"*.{kind}") if q.is_file())
        if found:
            return kind, found
    raise InputError(f"dataset {os.fspath(p)!r} has no .npz, .npy or test_data_set_* entries")


def folder_fingerprint(folder: str | os.PathLike[str], entries: list[str]) -> list[list[Any]]:
    """``[relative path, size, mtime_ns]`` of every file the batches are read from."""
    out: list[list[Any]] = []
    for e in entries:
        p = os.path.join(folder, e)
        paths = sorted(os.path.join(e, q) for q in os.listdir(p)) if os.path.isdir(p) else [e]
        for rel in paths:
            st = os.stat(os.path.join(folder, rel))
            out.append([rel, st.st_size, st.st_mtime_ns])
    return out


def _files_change(old: dict[str, str], new: dict[str, str]) -> str:
    parts = []
    added = [k for k in new if k not in old]
    removed = [k for k in old if k not in new]
    changed = [k for k in new if k in old and new[k] != old[k]]
    if changed:
        parts.append(", ".join(f"{k!r} differs" for k in changed[:3]))
    if added:
        parts.append(", ".join(f"{k!r} is new" for k in added[:3]))
    if removed:
        parts.append(", ".join(f"{k!r} is gone" for k in removed[:3]))
    return "; ".join(parts)


def describe_change(kind: str, old: Any, new: Any, main_file: str | None = None) -> str | None:
    """Why ``new`` does not continue ``old`` (``None`` when it does). ``kind``: model, source, selection or
    settings.

    Example:
        >>> describe_change("selection", {"select": None, "exclude": None}, {"select": "op:Relu", "exclude": None})
        "the selection changed since the store was made (select None -> 'op:Relu')"
    """
    if old == new:
        return None
    if kind == "model":
        files_old, files_new = old["files"], new["files"]
        if files_old == files_new:
            return None  # the same bytes, moved elsewhere
        weights = [k for k in {*files_old, *files_new} if k != main_file and k != "<in-memory model>"]
        only_weights = all(
            files_old.get(k) == files_new.get(k)
            for k in files_old.keys() | files_new.keys()
            if k not in weights
        )
        what = "the model's weights (external data)" if weights and only_weights else "the model"
        return f"{what} changed since the store was made ({_files_change(files_old, files_new)})"
    if kind == "source":
        if old.get("kind") != new.get("kind") or old.get("folder") != new.get("folder"):
            return f"the data source changed since the store was made ({_source_label(old)} -> {_source_label(new)})"
        if old.get("kind") == "iterable":
            return (
                f"the data source changed since the store was made (source_id {old.get('id')!r} -> "
                f"{new.get('id')!r})"
            )
        a = {r[0]: r[1:] for r in old.get("files", [])}
        b = {r[0]: r[1:] for r in new.get("files", [])}
        added = [k for k in b if k not in a]
        removed = [k for k in a if k not in b]
        modified = [k for k in b if k in a and a[k] != b[k]]
        counts = ", ".join(
            f"{len(x)} {label}"
            for x, label in ((added, "added"), (removed, "removed"), (modified, "modified"))
            if x
        )
        example = ", ".join(repr(k) for k in (modified + added + removed)[:3])
        return f"the data folder changed since the store was made ({counts} files: {example})"
    diffs = [
        f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted({*old, *new}) if old.get(k) != new.get(k)
    ]
    return f"the {kind} changed since the store was made ({'; '.join(diffs)})"


def _source_label(s: dict[str, Any]) -> str:
    if s.get("kind") == "iterable":
        return f"an iterable (source_id {s.get('id')!r})"
    return f"folder {s.get('folder')!r}"
