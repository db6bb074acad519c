"""Argument groups shared by several commands (Polygraphy-style), and the argument types that validate values
as they are parsed, so a malformed one is a one-line usage error (exit 2) instead of a failure deep inside."""

from __future__ import annotations

import argparse
import re
from typing import Any


def non_negative_int(text: str) -> int:
    """An ``int`` >= 0 (``--seed``).

    Example:
        >>> non_negative_int("7")
        7
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def positive_int(text: str) -> int:
    """An ``int`` >= 1 (``--limit``, ``--opset``).

    Example:
        >>> positive_int("3")
        3
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def non_negative_float(text: str) -> float:
    """A finite ``float`` >= 0 (``--rtol``, ``--atol``).

    Example:
        >>> non_negative_float("1e-3")
        0.001
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):  # NaN fails the first test
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number, 0 or more")
    return value


def dim_spec(text: str) -> str:
    """``NAME=SIZE`` with a whole number in ASCII digits (``--dim batch=4``); returned unchanged.

    Example:
        >>> dim_spec("batch=4")
        'batch=4'
    """
    if not re.fullmatch(r"[^=\s][^=]*=[0-9]+", text, flags=re.ASCII):
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=SIZE with a whole number, e.g. batch=4")
    return text


def name_file(text: str) -> str:
    """``NAME=FILE`` (``--input x=x.npy``); returned unchanged.

    Example:
        >>> name_file("x=inputs/x.npy")
        'x=inputs/x.npy'
    """
    name, sep, path = text.partition("=")
    if not (sep and name and path):
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=FILE (a .npy or .pb file)")
    return text


def add_input_args(p: argparse.ArgumentParser) -> None:
    """``--input``, ``--inputs``, ``--random``, ``--seed``, ``--dim``."""
    p.add_argument(
        "--input",
        action="append",
        type=name_file,
        metavar="NAME=FILE",
        help="an input from a .npy or .pb file (repeat)",
    )
    p.add_argument(
        "--inputs", metavar="FILE|DIR", help="an .npz of all inputs, or an ONNX test-data-set folder"
    )
    p.add_argument("--random", action="store_true", help="random data for inputs not given")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed for --random (default 0)")
    p.add_argument(
        "--dim",
        action="append",
        type=dim_spec,
        metavar="NAME=SIZE",
        help="size of a symbolic dimension (repeat)",
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
