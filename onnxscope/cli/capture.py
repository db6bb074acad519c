"""``onnxscope capture MODEL``: run once with onnxruntime and show (or save) every intermediate tensor."""

from __future__ import annotations

import argparse

from onnxscope.cli._args import add_input_args, add_selection_args, input_kwargs
from onnxscope.render import check_output_path, fmt_num, table, to_json
from onnxscope.result import Capture
from onnxscope.session import capture


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add the ``capture`` command."""
    p = sub.add_parser("capture", parents=[common], help="run the model and capture every node's outputs")
    p.add_argument("model", help="path to an .onnx file")
    add_input_args(p)
    add_selection_args(p)
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
    if args.out:
        check_output_path(args.out)
    cap = capture(
        args.model,
        select=args.select,
        exclude=args.exclude,
        optimization=args.optimization,
        **input_kwargs(args),
    )
    saved = cap.save(args.out) if args.out else None
    return render(cap, args.json, saved)
