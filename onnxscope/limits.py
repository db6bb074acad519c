"""The memory budget: a ceiling on any allocation onnxscope sizes from a *declared* size.

A model, an input file or a ``--dim`` can declare a tensor of any size; a hostile or broken one declares 2⁶²
elements. Before allocating from such a number — reading a weight payload or dequantizing it, generating random
inputs, preparing output buffers — onnxscope calls :func:`check_alloc`, which raises a one-line
:class:`~onnxscope.errors.ResourceError` above the budget instead of exhausting the machine.

The budget is, in order of precedence: the innermost :func:`memory_budget` context, the value given to
:func:`set_max_bytes`, the environment variable ``ONNXSCOPE_MAX_BYTES`` (bytes, or a size such as ``512M``,
``16G``; ``0``/``none``/``unlimited`` for no limit), else the default: 8 GiB or three quarters of the physical
memory, whichever is smaller.

Example:
    >>> from onnxscope.limits import check_alloc, memory_budget
    >>> with memory_budget("1M"):
    ...     check_alloc(4096, "a small array")
    ...     check_alloc(8 << 20, "random input 'x' float32 [2048, 1024]")
    Traceback (most recent call last):
    ...
    onnxscope.errors.ResourceError: random input 'x' float32 [2048, 1024] needs 8.0 MiB, over the memory budget of 1.0 MiB; raise it with ONNXSCOPE_MAX_BYTES=8M (or onnxscope.limits.memory_budget)
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
import re
from collections.abc import Iterable, Iterator

from onnxscope.errors import InputError, ResourceError

__all__ = ["ENV", "check_alloc", "check_array", "max_bytes", "memory_budget", "parse_size", "set_max_bytes"]

ENV = "ONNXSCOPE_MAX_BYTES"
_DEFAULT_CAP = 8 << 30
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_UNLIMITED = ("0", "none", "unlimited", "inf")

_override: contextvars.ContextVar[int | None] = contextvars.ContextVar("onnxscope_max_bytes", default=None)
_process: int | None = None  # set_max_bytes()


def parse_size(text: str | int, what: str = "size") -> int:
    """Bytes from ``"512M"``, ``"2G"``, ``"1.5GiB"``, ``"4096"`` (K/M/G/T are powers of 1024).

    Raises :class:`InputError` naming ``what`` for anything else (negative, NaN, ``"²"``…).

    Example:
        >>> parse_size("512M"), parse_size("1.5GiB"), parse_size(4096)
        (536870912, 1610612736, 4096)
    """
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise InputError(f"{what} {text}: must not be negative")
        return text
    m = re.fullmatch(
        r"\s*([0-9]+(?:\.[0-9]*)?)\s*([KMGT]?)(?:I?B)?\s*", str(text), flags=re.IGNORECASE | re.ASCII
    )
    if not m:
        raise InputError(f"{what} {text!r}: expected a size such as 4096, 512M or 2G")
    value = float(m.group(1)) * _UNITS[m.group(2).upper()]
    if not math.isfinite(value):
        raise InputError(f"{what} {text!r}: expected a size such as 4096, 512M or 2G")
    return int(value)


def _default() -> int:
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: the fixed cap alone
        return _DEFAULT_CAP
    return min(_DEFAULT_CAP, physical * 3 // 4) if physical > 0 else _DEFAULT_CAP


def max_bytes() -> int | None:
    """The current budget in bytes (``None``: unlimited).

    Example:
        >>> with memory_budget("2G"):
        ...     max_bytes()
        2147483648
    """
    inner = _override.get()
    if inner is not None:
        return inner or None
    if _process is not None:
        return _process or None
    env = os.environ.get(ENV, "").strip()
    if env:
        if env.lower() in _UNLIMITED:
            return None
        return parse_size(env, ENV) or None
    return _default()


def set_max_bytes(limit: int | str | None) -> None:
    """Set the budget for the whole process (``0``: unlimited; ``None``: back to the environment/default).

    Example:
        >>> set_max_bytes("64G"); max_bytes()
        68719476736
        >>> set_max_bytes(None)
    """
    global _process
    _process = None if limit is None else parse_size(limit, "memory budget")


@contextlib.contextmanager
def memory_budget(limit: int | str) -> Iterator[None]:
    """Within the ``with`` block (and this thread or task), the budget is ``limit`` (``0``: unlimited)."""
    token = _override.set(parse_size(limit, "memory budget"))
    try:
        yield
    finally:
        _override.reset(token)


def _fmt(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _suggest(nbytes: int) -> str:
    for unit, scale in (("M", 1 << 20), ("G", 1 << 30), ("T", 1 << 40)):
        if nbytes <= 1024 * scale or unit == "T":
            need = max(1, math.ceil(nbytes / scale))
            return f"{1 << (need - 1).bit_length()}{unit}"
    return str(nbytes)  # pragma: no cover


def check_alloc(nbytes: int, what: str) -> None:
    """Refuse (:class:`ResourceError`) allocating ``nbytes`` for ``what`` when over the budget.

    ``what`` names the thing, e.g. ``"random input 'x' float32 [3000000000, 3]"``.

    Example:
        >>> check_alloc(1 << 20, "a 1 MiB buffer")  # within the default budget: nothing happens
    """
    limit = max_bytes()
    if limit is None or nbytes <= limit:
        return
    raise ResourceError(
        f"{what} needs {_fmt(nbytes)}, over the memory budget of {_fmt(limit)}; "
        f"raise it with {ENV}={_suggest(nbytes)} (or onnxscope.limits.memory_budget)"
    )


def check_array(shape: Iterable[int], itemsize: float, what: str) -> int:
    """:func:`check_alloc` for an array of ``shape`` (exact integer product: no overflow); return its bytes.

    ``itemsize`` may be fractional (0.5 for int4). A negative dimension is an :class:`InputError`.

    Example:
        >>> check_array((2, 3), 4, "x")
        24
        >>> with memory_budget("1G"):
        ...     check_array((3_000_000_000, 3), 4, "random input 'x'")
        Traceback (most recent call last):
        ...
        onnxscope.errors.ResourceError: random input 'x' needs 33.5 GiB, over the memory budget of 1.0 GiB; raise it with ONNXSCOPE_MAX_BYTES=64G (or onnxscope.limits.memory_budget)
    """
    count = 1
    for d in shape:
        d = int(d)
        if d < 0:
            raise InputError(f"{what}: negative dimension {d}")
        count *= d
    nbytes = math.ceil(count * itemsize)
    check_alloc(nbytes, what)
    return nbytes
