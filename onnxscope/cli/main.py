"""Entry point of the ``onnxscope`` command: shared options, error handling, dispatch to one command module.

Example:
    >>> main(["summary", "no-such-model.onnx"])  # prints the one-line error on stderr
    2
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from onnxscope.cli import (
    attention,
    capture,
    compare,
    dataset,
    export,
    neuron,
    paths,
    report,
    residuals,
    show,
    stats,
    summary,
    weights,
)
from onnxscope.errors import OnnxscopeError

COMMANDS = (
    summary,
    weights,
    neuron,
    capture,
    show,
    dataset,
    stats,
    compare,
    paths,
    residuals,
    attention,
    report,
    export,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every command registered.

    Example:
        >>> build_parser().parse_args(["summary", "m.onnx", "--json"]).json
        True
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON instead of tables")
    common.add_argument("-v", "--verbose", action="store_true", help="show tracebacks on errors")
    parser = argparse.ArgumentParser(
        prog="onnxscope",
        description="Weights, neurons, activations and paths of any neural network, read from its ONNX graph.",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", dest="verbose_top", help="show tracebacks on errors"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code (0 on success, the error's code on failure)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose = bool(getattr(args, "verbose", False) or getattr(args, "verbose_top", False))
    try:
        text = args.func(args)
    except OnnxscopeError as e:
        if verbose:
            traceback.print_exc()
        print(f"onnxscope: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("onnxscope: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: still one line unless asked for more
        if verbose:
            traceback.print_exc()
        first = str(e).splitlines()[0] if str(e) else ""
        print(
            f"onnxscope: internal error: {type(e).__name__}: {first} (run with --verbose for the traceback)",
            file=sys.stderr,
        )
        return 70
    if text:
        try:
            print(text)
        except BrokenPipeError:  # e.g. piped into `head`
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
