"""``onnxscope dataset MODEL SOURCE --out run.zarr``: capture a whole dataset into a Zarr store, with statistics."""

from __future__ import annotations

import argparse
import os

from onnxscope.cli._args import add_selection_args
from onnxscope.errors import InputError, OutputError
from onnxscope.limits import parse_size
from onnxscope.render import to_json


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add the ``dataset`` command."""
    p = sub.add_parser("dataset", parents=[common], help="capture every batch of a dataset into a Zarr store")
    p.add_argument("model", help="path to an .onnx file")
    p.add_argument("source", help="a folder of .npz batches, .npy batches, or test_data_set_* folders")
    p.add_argument("--out", required=True, metavar="STORE", help="the store folder to write (e.g. run.zarr)")
    add_selection_args(p)
    p.add_argument("--stats-only", action="store_true", help="keep statistics only, write no tensors")
    p.add_argument("--resume", action="store_true", help="continue a store an interrupted run left")
    p.add_argument(
        "--max-memory",
        type=_size,
        metavar="SIZE",
        help="budget for one batch's captures, e.g. 512M or 2G; over it, "
        "the tensors are split across several runs",
    )
    p.set_defaults(func=run)


def _size(text: str) -> int:
    """``512M`` → bytes (K, M, G, T: powers of 1024; a plain number is bytes), as an argparse type."""
    try:
        return parse_size(text, "--max-memory")
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--max-memory ")) from None


def _check_store_path(path: str, resume: bool) -> None:
    """The store is a folder: its parent must exist, and nothing but a folder (to resume) may be there."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise OutputError(f"cannot write store {path!r}: folder {parent!r} does not exist")
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputError(f"cannot write store {path!r}: it exists and is not a folder")
    if not os.access(path if os.path.isdir(path) else parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write store {path!r}: not writable")


def run(args: argparse.Namespace) -> str:
    """Capture the dataset and summarize the store."""
    from onnxscope.dataset import capture_dataset

    _check_store_path(args.out, args.resume)
    store = capture_dataset(
        args.model,
        args.source,
        args.select,
        args.exclude,
        out=args.out,
        stats_only=args.stats_only,
        max_memory=args.max_memory,
        resume=args.resume,
        progress=not args.json,
    )
    summary = {
        "store": store.path,
        "batches": store.batches,
        "samples": store.samples,
        "tensors": len(store),
        "stats": len(store.all_stats()),
    }
    if args.json:
        return to_json(summary)
    return (
        f"{store.path}: {store.batches} batches, {store.samples} samples, {len(store)} tensors stored, "
        f"statistics for {summary['stats']} tensors (read them with `onnxscope stats {store.path}`)"
    )
