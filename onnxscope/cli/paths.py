"""``onnxscope paths MODEL A B``: paths between two tensors (or two nodes) and what lies between them."""

from __future__ import annotations

import argparse

from onnxscope.cli._args import positive_int
from onnxscope.render import check_output_path, to_json


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add the ``paths`` command."""
    p = sub.add_parser("paths", parents=[common], help="paths from one tensor (or node) to another")
    p.add_argument("model", help="path to an .onnx file")
    p.add_argument("source", help="tensor or node name")
    p.add_argument("target", help="tensor or node name")
    p.add_argument(
        "--limit", type=positive_int, default=10, help="at most this many paths, shortest first (default 10)"
    )
    p.add_argument(
        "--extract", metavar="OUT.onnx", help="also write the sub-model from SOURCE to TARGET (tensors)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> str:
    """Print the paths (and, for tensors, the nodes between them)."""
    if args.extract:
        check_output_path(args.extract)
    from onnxscope.model import load
    from onnxscope.paths import all_paths, between

    model = load(args.model)
    paths = list(all_paths(model, args.source, args.target, limit=args.limit))
    inside = None
    if model.has_value(args.source) and model.has_value(args.target):
        inside = between(model, [args.source], [args.target])
    saved = None
    if args.extract:
        from onnxscope.paths import extract

        saved = extract(model, [args.source], [args.target], args.extract)
    if args.json:
        return to_json(
            {"paths": paths, "between": None if inside is None else sorted(inside.nodes), "extracted": saved}
        )
    lines = [
        f"{len(paths)} path(s) from {args.source} to {args.target} (shortest first, at most {args.limit}):"
    ]
    lines += [f"  {i + 1}. " + " → ".join(p) for i, p in enumerate(paths)]
    if inside is not None:
        lines.append(f"{len(inside.nodes)} node(s) lie between them")
    if saved:
        lines.append(f"sub-model written to {saved}")
    return "\n".join(lines)
