"""``onnxscope report MODEL -o report.html``: the audit report, one self-contained HTML page.

With ``--capture run.npz`` (or ``--store run.zarr``) it adds the activations; with ``--compare OTHER.onnx`` and
inputs (``--input``/``--inputs``/``--random``) it runs both models on the same inputs and adds a comparison of
their tensors aligned by name.
"""

from __future__ import annotations

import argparse
import os

from onnxscope.cli._args import add_input_args, input_kwargs, non_negative_float, non_negative_int
from onnxscope.errors import InputError
from onnxscope.render import check_output_path, fmt_bytes, to_json


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add the ``report`` command."""
    p = sub.add_parser(
        "report", parents=[common], help="write the audit report: one self-contained HTML page"
    )
    p.add_argument("model", help="path to an .onnx file")
    p.add_argument("-o", "--out", required=True, metavar="FILE.html", help="the page to write")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--capture", metavar="RUN.npz", help="a capture saved by `onnxscope capture --out`")
    src.add_argument("--store", metavar="RUN.zarr", help="a dataset store written by `onnxscope dataset`")
    p.add_argument(
        "--compare",
        metavar="OTHER.onnx",
        help="compare with another model (e.g. its quantized version) on the same inputs",
    )
    add_input_args(p)  # inputs to capture MODEL (and OTHER) with, instead of --capture
    p.add_argument(
        "--rtol",
        type=non_negative_float,
        default=1e-3,
        help="relative tolerance for --compare (default 1e-3)",
    )
    p.add_argument(
        "--atol",
        type=non_negative_float,
        default=1e-4,
        help="absolute tolerance for --compare (default 1e-4)",
    )
    p.add_argument(
        "--sample", type=non_negative_int, default=0, help="which input of the batch the attention maps show"
    )
    p.add_argument("--title", help="the page's title (default: the model's file name)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> str:
    """Write the report; print where, how big, and which sections it has."""
    from onnxscope.inputs import parse_dims
    from onnxscope.model import load
    from onnxscope.page import report

    check_output_path(args.out)
    model = load(args.model)
    dims = parse_dims(args.dim)
    cap = None
    comparison = None
    gave_inputs = bool(args.input or args.inputs or args.random)
    if args.capture:
        if gave_inputs:
            raise InputError("--capture already fixes the inputs; drop --input/--inputs/--random")
        from onnxscope.persist import load_capture

        cap = load_capture(args.capture, model=model)
    elif gave_inputs:
        from onnxscope.session import capture

        cap = capture(model, **input_kwargs(args))
    if args.compare:
        if cap is None:
            raise InputError(
                "--compare needs inputs for both models: --input NAME=FILE, --inputs FILE, --random, "
                "or --capture RUN.npz (its inputs are reused)"
            )
        from onnxscope.comparison import compare

        comparison = compare(
            model, load(args.compare), dict(cap.inputs), rtol=args.rtol, atol=args.atol
        ).to_dict()
        comparison["a"], comparison["b"] = os.path.basename(args.model), os.path.basename(args.compare)
    path = report(
        model,
        args.out,
        capture=cap,
        store=args.store if cap is None else None,
        comparison=comparison,
        dims=dims or None,
        sample=args.sample,
        title=args.title,
    )
    sections = ["model card", "weights", "structure"]
    if cap is not None or args.store:
        sections.append("activations")
    if comparison is not None:
        sections.append("comparison")
    size = os.path.getsize(path)
    if args.json:
        return to_json({"report": path, "bytes": size, "sections": sections})
    return f"wrote {path} ({fmt_bytes(size)}): {', '.join(sections)}"
