"""``onnxscope dataset MODEL SOURCE --out run.zarr``: capture a whole dataset into a Zarr store, with statistics,
in this process, on a local Dask cluster (``--workers N``) or on an existing one (``--scheduler ADDRESS``)."""

from __future__ import annotations

import argparse
import contextlib
import os
from typing import Any

from onnxscope.cli._args import add_selection_args, positive_int
from onnxscope.errors import InputError, MissingDependencyError, OutputError
from onnxscope.limits import parse_size as _parse_size
from onnxscope.render import fmt_bytes, to_json


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add the ``dataset`` command."""
    p = sub.add_parser("dataset", parents=[common], help="capture every batch of a dataset into a Zarr store")
    p.add_argument("model", help="path to an .onnx file")
    p.add_argument("source", help="a folder of .npz batches, .npy batches, or test_data_set_* folders")
    p.add_argument(
        "--out",
        required=True,
        metavar="STORE",
        help="the store to write: a folder or an fsspec URL (e.g. run.zarr)",
    )
    add_selection_args(p)
    p.add_argument("--stats-only", action="store_true", help="keep statistics only, write no tensors")
    p.add_argument("--resume", action="store_true", help="continue a store an interrupted run left")
    p.add_argument(
        "--max-memory",
        type=_size,
        metavar="SIZE",
        help="budget for one batch's captures, e.g. 512M or 2G; over it, the tensors are split across several runs",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--workers",
        type=positive_int,
        metavar="N",
        help="run on a local Dask cluster of N single-threaded worker processes",
    )
    where.add_argument(
        "--scheduler", metavar="ADDRESS", help="run on an existing Dask cluster (tcp://host:8786)"
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        metavar="N",
        help="onnxruntime intra-op threads per process (default: 1 per worker)",
    )
    p.add_argument(
        "--compression", metavar="CODEC", help="zstd[:LEVEL], blosc[:LEVEL] or gzip[:LEVEL] (default: none)"
    )
    p.add_argument(
        "--chunk-size", type=_size, metavar="SIZE", help="target chunk size along the samples (default 4M)"
    )
    p.add_argument(
        "--shard-batches", type=positive_int, metavar="N", help="batches per shard (default: automatic)"
    )
    p.add_argument(
        "--recompute",
        action="store_true",
        help="keep the fusions that remove selected tensors and recompute those for each batch (default: the run "
        "computes them, leaving those fusions out)",
    )
    p.set_defaults(func=run)


def _size(text: str) -> int:
    """``512M`` → bytes (K, M, G, T: powers of 1024; a plain number is bytes), as an argparse type."""
    try:
        return _parse_size(text, "size")
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("size ")) from None


def _check_store_path(path: str) -> None:
    """A local store is a folder: its parent must exist, and nothing but a folder (to resume) may be there.
    Other URLs (``memory://``, ``s3://``…) are the store library's to check."""
    if "://" in path and not path.startswith("file://"):
        return
    path = path.removeprefix("file://")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise OutputError(f"cannot write store {path!r}: folder {parent!r} does not exist")
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputError(f"cannot write store {path!r}: it exists and is not a folder")
    if not os.access(path if os.path.isdir(path) else parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write store {path!r}: not writable")


@contextlib.contextmanager
def _client(args: argparse.Namespace) -> Any:
    if args.workers is None and args.scheduler is None:
        yield None
        return
    if args.workers is not None:
        from onnxscope.dataset import local_client

        with local_client(args.workers) as client:
            yield client
        return
    try:
        from distributed import Client
    except ImportError as e:
        raise MissingDependencyError(
            "--scheduler needs dask.distributed: pip install 'onnxscope[dataset]'"
        ) from e
    try:
        client = Client(args.scheduler, timeout="10s")
    except OSError as e:
        raise InputError(f"--scheduler {args.scheduler!r}: cannot connect ({e})") from e
    try:
        yield client
    finally:
        client.close()


def run(args: argparse.Namespace) -> str:
    """Capture the dataset and summarize the store."""
    from onnxscope._dataset_io import parse_size
    from onnxscope.dataset import capture_dataset

    _check_store_path(args.out)
    max_memory = parse_size(args.max_memory, "--max-memory")
    chunk_size = parse_size(args.chunk_size, "--chunk-size")
    with _client(args) as client:
        store = capture_dataset(
            args.model,
            args.source,
            args.select,
            args.exclude,
            out=args.out,
            stats_only=args.stats_only,
            max_memory=max_memory,
            resume=args.resume,
            progress=not args.json,
            threads=args.threads,
            client=client,
            compression=args.compression,
            chunk_size=chunk_size,
            shard_batches=args.shard_batches,
            recompute=args.recompute,
        )
    summary: dict[str, Any] = {
        "store": store.path,
        "batches": store.batches,
        "samples": store.samples,
        "tensors": len(store),
        "stats": len(store.all_stats()),
        "bytes": store.nbytes,
    }
    ratio = ""
    if store.compression and len(store):
        stored = store.nbytes_stored
        summary.update(compression=store.compression, bytes_stored=stored)
        summary["ratio"] = round(store.nbytes / stored, 3) if stored else None
        ratio = f", {store.compression}: {fmt_bytes(stored)} stored, ratio {summary['ratio']:.2f}"
    if args.json:
        return to_json(summary)
    return (
        f"{store.path}: {store.batches} batches, {store.samples} samples, {len(store)} tensors stored "
        f"({fmt_bytes(store.nbytes)}{ratio}), statistics for {summary['stats']} tensors "
        f"(read them with `onnxscope stats {store.path}`)"
    )
