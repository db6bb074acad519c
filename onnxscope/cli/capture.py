"""``onnxscope capture MODEL``: run once with onnxruntime and show (or save) every intermediate tensor."""

from __future__ import annotations

import argparse

from onnxscope.capture import Capture, capture
from onnxscope.inputs import parse_dims, read_inputs
from onnxscope.report import fmt_num, table, to_json


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add the ``capture`` command."""
    p = sub.add_parser("capture", parents=[common], help="run the model and capture every node's outputs")
    p.add_argument("model", help="path to an .onnx file")
    p.add_argument(
        "--input", action="append", metavar="NAME=FILE", help="an input from a .npy or .pb file (repeat)"
    )
    p.add_argument(
        "--inputs", metavar="FILE|DIR", help="an .npz of all inputs, or an ONNX test-data-set folder"
    )
    p.add_argument("--random", action="store_true", help="random data for inputs not given")
    p.add_argument("--seed", type=int, default=0, help="seed for --random (default 0)")
    p.add_argument(
        "--dim", action="append", metavar="NAME=SIZE", help="size of a symbolic dimension (repeat)"
    )
    p.add_argument(
        "--select",
        action="append",
        metavar="PATTERN",
        help="tensor name or glob, re:REGEX, op:TYPE, node:NAME, module:PATH (repeat; default all)",
    )
    p.add_argument("--exclude", action="append", metavar="PATTERN", help="same forms as --select (repeat)")
    p.add_argument(
        "--optimization",
        default="basic",
        choices=["disable", "basic", "extended", "all"],
        help="onnxruntime graph optimization level (default basic)",
    )
    p.add_argument("--out", metavar="FILE.npz", help="save the capture (read it back with `onnxscope show`)")
    p.set_defaults(func=run)


def render(cap: Capture, as_json: bool, saved: str | None = None) -> str:
    """The per-tensor table (or JSON) shared by ``capture`` and ``show``."""
    rows = cap.stats_table()
    if as_json:
        return to_json(
            {"tensors": rows, "outputs": list(cap.outputs), "skipped": cap.skipped, "saved": saved}
        )
    body = table(
        [
            [
                r["tensor"],
                r["op"] or "-",
                "x".join(map(str, r["shape"])) or "scalar",
                r["dtype"],
                fmt_num(r["min"]) if r["min"] is not None else "-",
                fmt_num(r["mean"]) if r["mean"] is not None else "-",
                fmt_num(r["max"]) if r["max"] is not None else "-",
                r["nan"],
                r["inf"],
            ]
            for r in rows
        ],
        ["tensor", "op", "shape", "dtype", "min", "mean", "max", "nan", "inf"],
    )
    lines = [body, "", f"{len(rows)} tensors; outputs: {', '.join(cap.outputs)}"]
    lines += [f"not captured: {k}: {why}" for k, why in cap.skipped.items()]
    if saved:
        lines.append(f"saved to {saved}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> str:
    """Capture ``args.model`` on the given inputs."""
    feeds = read_inputs(args.input, args.inputs)
    cap = capture(
        args.model,
        feeds,
        select=args.select,
        exclude=args.exclude,
        random=args.random,
        seed=args.seed,
        dims=parse_dims(args.dim),
        optimization=args.optimization,
    )
    saved = cap.save(args.out) if args.out else None
    return render(cap, args.json, saved)
