"""``onnxscope residuals MODEL``: every skip connection — fork, merge, main and skip branch."""

from __future__ import annotations

import argparse

from onnxscope.render import table, to_json


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add the ``residuals`` command."""
    p = sub.add_parser("residuals", parents=[common], help="residual (skip) and dense connections")
    p.add_argument("model", help="path to an .onnx file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> str:
    """Print the residual connections of ``args.model``."""
    from onnxscope.model import load
    from onnxscope.patterns import find_residuals

    found = find_residuals(load(args.model))
    if args.json:
        return to_json({"residuals": [r.to_dict() for r in found]})
    rows = [
        [
            r.merge,
            r.kind,
            r.fork,
            len(r.main),
            "identity" if not r.skip else ("projection: " if r.projection else "") + ", ".join(r.skip),
        ]
        for r in found
    ]
    summary = (
        f"{len(found)} residual connection(s), {sum(r.projection for r in found)} with a projection shortcut"
    )
    return (
        table(rows, ["merge", "kind", "fork", "main nodes", "shortcut"]) + "\n\n" if rows else ""
    ) + summary
