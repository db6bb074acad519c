"""``onnxscope neuron MODEL LAYER INDEX``: one unit's incoming weights and bias and its outgoing weights."""

from __future__ import annotations

import argparse

import numpy as np

from onnxscope.render import fmt_num, table, to_json


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add the ``neuron`` command."""
    p = sub.add_parser("neuron", parents=[common], help="a neuron's incoming and outgoing weights")
    p.add_argument("model", help="path to an .onnx file")
    p.add_argument("layer", help="node name, output tensor, weight name or framework module path")
    p.add_argument("index", type=int, help="the unit (feature or channel) index")
    p.set_defaults(func=run)


def _preview(a: np.ndarray, n: int = 8) -> str:
    flat = np.asarray(a).reshape(-1)
    body = ", ".join(fmt_num(v) for v in flat[:n])
    return f"[{body}{', …' if flat.size > n else ''}]"


def run(args: argparse.Namespace) -> str:
    """Print the neuron ``args.index`` of ``args.layer``."""
    from onnxscope.model import load

    n = load(args.model).neuron(args.layer, args.index)
    if args.json:
        return to_json(n.to_dict())
    lines = [
        f"neuron {n.index} of {n.layer} ({n.op}, {n.units} units)"
        + (f"  module {n.module}" if n.module else ""),
        f"incoming  {n.weight}  shape {list(n.incoming.shape)}  {_preview(n.incoming)}",
        f"          norm {fmt_num(float(np.linalg.norm(n.incoming)))}  mean {fmt_num(float(n.incoming.mean()))}",
        f"bias      {'-' if n.bias is None else fmt_num(float(n.bias))}"
        + (f"  ({n.bias_name})" if n.bias_name else ""),
        f"output    {n.output} (axis {n.axis})",
        "",
    ]
    rows = [
        [
            o.node,
            o.op,
            o.weight,
            str(list(o.weights.shape)),
            _preview(o.weights, 5),
            " → ".join(o.path) or "-",
        ]
        for o in n.outgoing
    ]
    lines.append(
        table(rows, ["outgoing to", "op", "weight", "shape", "values", "via"])
        if rows
        else "no outgoing weights"
    )
    for s in n.stops:
        where = f"{s.op} {s.node!r}" if s.node else f"tensor {s.tensor!r}"
        lines.append(f"not followed: {where}: {s.reason}")
    for note in n.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)
