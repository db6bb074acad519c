"""``onnxscope summary MODEL``: provenance, opsets, inputs/outputs, op histogram, parameters, external data."""

from __future__ import annotations

import argparse

from onnxscope.render import fmt_bytes, table, to_json


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add the ``summary`` command."""
    p = sub.add_parser(
        "summary", parents=[common], help="what a model is: I/O, ops, parameters, external data"
    )
    p.add_argument("model", help="path to an .onnx file")
    p.set_defaults(func=run)


def _shape(shape: tuple | None) -> str:
    return "?" if shape is None else "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def run(args: argparse.Namespace) -> str:
    """Print the summary of ``args.model``."""
    from onnxscope.model import load

    s = load(args.model).summary()
    if args.json:
        return to_json(s.to_dict())
    lines = [
        f"model      {s.path}",
        f"producer   {s.producer or '-'}   IR {s.ir_version}   opsets "
        + ", ".join(f"{d} {v}" for d, v in s.opsets.items()),
        f"nodes      {s.nodes}" + (f" ({s.subgraphs} subgraphs)" if s.subgraphs else ""),
        f"weights    {s.weights} tensors, {s.parameters:,} parameters, {fmt_bytes(s.nbytes)}",
    ]
    if s.external_data:
        lines.append("external   " + ", ".join(f"{k} ({fmt_bytes(v)})" for k, v in s.external_data.items()))
    lines += [
        "",
        table(
            [["input", t.name, t.dtype or "?", _shape(t.shape)] for t in s.inputs]
            + [["output", t.name, t.dtype or "?", _shape(t.shape)] for t in s.outputs],
            ["", "name", "dtype", "shape"],
        ),
    ]
    lines += ["", table(list(s.ops.items()), ["op", "count"])]
    return "\n".join(lines)
