"""``onnxscope dataset MODEL SOURCE --out run.zarr``: capture a whole dataset into a Zarr store, with statistics."""

from __future__ import annotations

import argparse

from onnxscope.cli._args import add_selection_args
from onnxscope.errors import InputError
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
        metavar="SIZE",
        help="budget for one batch's captures, e.g. 512M or 2G; over it, "
        "the tensors are split across several runs",
    )
    p.set_defaults(func=run)


def _size(text: str | None) -> int | None:
    """``512M`` → bytes (K, M, G: powers of 1024; a plain number is bytes)."""
    if text is None:
        return None
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("B")
    scale = units.get(t[-1:], 1)
    number = t[:-1] if t[-1:] in units else t
    try:
        return int(float(number) * scale)
    except ValueError:
        raise InputError(f"--max-memory {text!r}: expected a size such as 512M or 2G") from None


def run(args: argparse.Namespace) -> str:
    """Capture the dataset and summarize the store."""
    from onnxscope.dataset import capture_dataset

    store = capture_dataset(
        args.model,
        args.source,
        args.select,
        args.exclude,
        out=args.out,
        stats_only=args.stats_only,
        max_memory=_size(args.max_memory),
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
