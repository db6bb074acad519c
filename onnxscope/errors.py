"""The one exception tree of onnxscope.

Every failure a user can cause is an :class:`OnnxscopeError` subclass whose message is one line that names
the offender and, where there are any, the valid alternatives. The CLI prints that line and exits non-zero.
A bug of onnxscope's own is an :class:`InternalError` — deliberately *not* an ``OnnxscopeError``, so that code
catching user errors never swallows it — and the CLI reports it (and any other unexpected exception) as an
"internal error" with exit code 70.

Example:
    >>> from onnxscope.errors import NotFoundError, OnnxscopeError
    >>> issubclass(NotFoundError, (OnnxscopeError, KeyError))
    True
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "CaptureError",
    "ConversionError",
    "InputError",
    "InternalError",
    "MissingDependencyError",
    "ModelLoadError",
    "NoPathError",
    "NotFoundError",
    "OnnxscopeError",
    "OutputError",
    "ResourceError",
    "UnsupportedError",
    "closest",
]


class OnnxscopeError(Exception):
    """Base of every error onnxscope raises on purpose."""

    exit_code: int = 1

    def __str__(self) -> str:  # KeyError would quote the message; keep one plain line everywhere.
        return " ".join(str(a) for a in self.args).replace("\n", " ")


class ModelLoadError(OnnxscopeError):
    """The file is not a readable ONNX model, or its external data is missing, truncated or unsafe."""

    exit_code = 2


class NotFoundError(OnnxscopeError, KeyError):
    """A node, tensor, weight or layer name that the model does not have."""

    exit_code = 3


class NoPathError(NotFoundError):
    """Two tensors or nodes that no path connects."""


class InputError(OnnxscopeError, ValueError):
    """A value the user passed is out of range or of the wrong kind (an index, a filter, an input array)."""

    exit_code = 4


class UnsupportedError(OnnxscopeError):
    """The model is valid but the question cannot be answered for it (e.g. a neuron of a Softmax)."""

    exit_code = 5


class CaptureError(OnnxscopeError):
    """onnxruntime could not run the (rewritten) model."""

    exit_code = 6


class ConversionError(OnnxscopeError):
    """A framework model could not be exported to ONNX."""

    exit_code = 7


class MissingDependencyError(OnnxscopeError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""

    exit_code = 8


class ResourceError(OnnxscopeError):
    """An allocation sized from a declared shape would exceed the memory budget (see :mod:`onnxscope.limits`)."""

    exit_code = 9


class OutputError(OnnxscopeError, OSError):
    """A result could not be written: a missing or read-only folder, a full disk, a directory in the way.

    Also an ``OSError``, so code that already catches I/O errors keeps working. Nothing half-written is left.
    """

    exit_code = 10


class InternalError(Exception):
    """A bug in onnxscope itself (an invariant broken), never caused by the user's files or arguments.

    Not an :class:`OnnxscopeError`: ``except OnnxscopeError`` must not hide it. The CLI exits with 70.
    """

    exit_code = 70


def closest(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """Return a short ``"did you mean …?"`` phrase for ``name`` among ``candidates`` (or a few examples).

    Example:
        >>> closest("fc1.weigth", ["fc1.weight", "fc2.weight", "conv.bias"])
        "did you mean 'fc1.weight', 'fc2.weight'?"
    """
    pool = list(dict.fromkeys(c for c in candidates if c))
    if not pool:
        return "the model has none"
    near = difflib.get_close_matches(name, pool, n=n, cutoff=0.5)
    if not near:
        near = [c for c in pool if name.lower() in c.lower()][:n]
    if near:
        return "did you mean " + ", ".join(repr(c) for c in near) + "?"
    shown = ", ".join(repr(c) for c in pool[:n])
    more = f" and {len(pool) - n} more" if len(pool) > n else ""
    return f"valid names include {shown}{more}"
