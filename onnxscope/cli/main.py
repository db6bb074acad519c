"""Entry point of the ``onnxscope`` command: shared options, error handling, dispatch to one command module.

Every failure ends in one line on stderr and an exit code: a user's mistake (:class:`OnnxscopeError`) with its
own code, a malformed command line with 2 (argparse's usage is not printed), an operating-system refusal
(permission, full disk…) with 1, memory exhausted despite the budget with 9, and a bug of onnxscope's own
(:class:`~onnxscope.errors.InternalError` or any other exception) as an "internal error" with 70. ``--verbose``
adds the traceback. Python warnings and library log messages stay quiet unless ``--verbose`` is given.

Example:
    >>> main(["summary", "no-such-model.onnx"])  # prints the one-line error on stderr
    2
    >>> main(["paths", "m.onnx", "a", "b", "--limit", "-1"])  # a malformed argument: one line, exit 2
    2
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence
from typing import NoReturn

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
from onnxscope.errors import OnnxscopeError, ResourceError

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

# Operating-system refusals a user's environment causes: reported as such in one line, not as a bug.
_USER_ERRNOS = {
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EFBIG,
    errno.ENOENT,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.ELOOP,
    errno.ENAMETOOLONG,
    errno.EMFILE,
    errno.ENFILE,
}


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (no usage block), exit code 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``onnxscope: error: MESSAGE (see 'PROG --help')`` — the prefix of every error — and exit with 2."""
        self.exit(
            2,
            f"onnxscope: error: {message.splitlines()[0] if message else 'bad arguments'} "
            f"(see '{self.prog} --help')\n",
        )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every command registered.

    Example:
        >>> build_parser().parse_args(["summary", "m.onnx", "--json"]).json
        True
    """
    common = Parser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON instead of tables")
    common.add_argument("-v", "--verbose", action="store_true", help="show tracebacks on errors")
    parser = Parser(
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


@contextlib.contextmanager
def _quiet(verbose: bool) -> Iterator[None]:
    """Warnings and library log records only with ``--verbose``: the output of an error is its one line."""
    if verbose:
        logging.basicConfig(level=logging.WARNING)
        yield
        return
    root = logging.getLogger()
    null = logging.NullHandler()
    root.addHandler(null)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.removeHandler(null)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else ""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code (0 on success, the error's code on failure)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a one-line error (2)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    verbose = bool(getattr(args, "verbose", False) or getattr(args, "verbose_top", False))

    def fail(message: str, code: int) -> int:
        if verbose:
            traceback.print_exc()
        print(f"onnxscope: {message}", file=sys.stderr)
        return code

    try:
        with _quiet(verbose):
            text = args.func(args)
    except OnnxscopeError as e:
        return fail(f"error: {e}", e.exit_code)
    except KeyboardInterrupt:
        print("onnxscope: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        return fail(
            "error: out of memory; lower the memory budget (ONNXSCOPE_MAX_BYTES) so that such sizes are refused "
            "up front, or free memory",
            ResourceError.exit_code,
        )
    except OSError as e:
        if e.errno not in _USER_ERRNOS:
            return fail(
                f"internal error: {type(e).__name__}: {_first_line(e)} (run with --verbose for the traceback)",
                70,
            )
        where = f": {e.filename!r}" if e.filename else ""
        return fail(f"error: {e.strerror or _first_line(e)}{where}", 1)
    except Exception as e:  # a bug (InternalError or unexpected): still one line unless asked for more
        return fail(
            f"internal error: {type(e).__name__}: {_first_line(e)} (a bug in onnxscope; run with --verbose "
            "for the traceback)",
            70,
        )
    if text:
        try:
            print(text)
        except BrokenPipeError:  # e.g. piped into `head`
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
