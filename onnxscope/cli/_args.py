"""Argument groups shared by several commands (Polygraphy-style): the model's inputs for a run."""

from __future__ import annotations

import argparse
from typing import Any


def add_input_args(p: argparse.ArgumentParser) -> None:
    """``--input``, ``--inputs``, ``--random``, ``--seed``, ``--dim``."""
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


def add_selection_args(p: argparse.ArgumentParser) -> None:
    """``--select`` and ``--exclude`` (the forms :func:`onnxscope.capture` takes)."""
    p.add_argument(
        "--select",
        action="append",
        metavar="PATTERN",
        help="tensor name or glob, re:REGEX, op:TYPE, node:NAME, module:PATH (repeat; default all)",
    )
    p.add_argument("--exclude", action="append", metavar="PATTERN", help="same forms as --select (repeat)")


def input_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`onnxscope.capture` that :func:`add_input_args` parsed."""
    from onnxscope.inputs import parse_dims, read_inputs

    return {
        "inputs": read_inputs(args.input, args.inputs),
        "random": args.random,
        "seed": args.seed,
        "dims": parse_dims(args.dim),
    }
