"""``onnxscope show CAPTURE [TENSOR]``: read a saved capture back."""

from __future__ import annotations

import argparse

import numpy as np

from onnxscope.cli.capture import render
from onnxscope.render import to_json


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add the ``show`` command."""
    p = sub.add_parser("show", parents=[common], help="read a saved capture (.npz) back")
    p.add_argument("capture", help="a file written by `onnxscope capture --out`")
    p.add_argument("tensor", nargs="?", help="print this tensor's values")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> str:
    """Show the table of a capture, or one tensor."""
    from onnxscope.persist import load_capture

    cap = load_capture(args.capture)
    if args.tensor is None:
        return render(cap, args.json)
    a = cap[args.tensor]
    info = cap.info(args.tensor)
    if args.json:
        return to_json(
            {
                "tensor": args.tensor,
                "info": info.to_dict(),
                "shape": list(a.shape),
                "dtype": str(a.dtype),
                "values": a.tolist(),
            }
        )
    head = f"{args.tensor}  {info.op or 'input'}  shape {list(a.shape)}  {a.dtype}"
    if info.iteration_axes:
        head += f"  (first {info.iteration_axes} axis = iteration)"
    with np.printoptions(threshold=200, edgeitems=4, precision=5):
        return f"{head}\n{a}"
