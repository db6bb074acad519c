"""Rendering: plain-text tables for a terminal, JSON for machines, atomic file writes. No analysis here.

Example:
    >>> print(table([["fc1.weight", (16, 3)]], ["name", "shape"]))
    name        shape
    ----------  -------
    fc1.weight  (16, 3)
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import stat
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from onnxscope._files import kind_of
from onnxscope.errors import InputError, OutputError

__all__ = ["atomic_write", "check_output_path", "fmt_bytes", "fmt_num", "save_npz", "table", "to_json"]


def fmt_num(x: Any) -> str:
    """Compact number formatting for tables.

    Example:
        >>> fmt_num(0.000123456), fmt_num(12), fmt_num(float("nan"))
        ('0.0001235', '12', 'nan')
    """
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        if math.isnan(x) or math.isinf(x):
            return str(float(x))
        return f"{float(x):.4g}"
    return str(x)


def fmt_bytes(n: int) -> str:
    """Human-readable byte count.

    Example:
        >>> fmt_bytes(1536), fmt_bytes(3 * 1024**3)
        ('1.5 KiB', '3.0 GiB')
    """
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> str:
    """Left-aligned columns separated by two spaces, with a rule under the header."""
    cells = [[str(h) for h in headers]] + [[c if isinstance(c, str) else fmt_num(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if isinstance(o, complex):  # complex weights (COMPLEX64/128): [real, imag]
        return [o.real, o.imag]
    raise TypeError(f"not JSON-serializable: {type(o).__name__}")


def _clean(o: Any) -> Any:
    if isinstance(o, float) and (math.isnan(o) or math.isinf(o)):
        return None if math.isnan(o) else ("inf" if o > 0 else "-inf")
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_clean(v) for v in o]
    return o


def to_json(obj: Any) -> str:
    """JSON text for results, numpy values included; NaN becomes ``null`` so any JSON reader accepts it, a complex
    number ``[real, imag]``.

    Example:
        >>> to_json({"a": np.float32(1.5), "b": [float("nan")], "c": np.array([1 + 2j])})
        '{"a": 1.5, "b": [null], "c": [[1.0, 2.0]]}'
    """
    return json.dumps(_clean(json.loads(json.dumps(obj, default=_default, allow_nan=True))))


def check_output_path(path: str | os.PathLike[str]) -> str:
    """The folder a file written to ``path`` will land in; :class:`~onnxscope.errors.OutputError` first if the
    folder is missing or not writable, or ``path`` is a directory, a FIFO or a device (commands call this
    before long work, :func:`atomic_write` again before writing).

    Example:
        >>> check_output_path("/no/such/folder/x.npz")
        Traceback (most recent call last):
        ...
        onnxscope.errors.OutputError: cannot write '/no/such/folder/x.npz': folder '/no/such/folder' does not exist
    """
    path = os.fspath(path)
    if "\0" in path:
        raise OutputError(f"cannot write {path!r}: a path cannot contain a NUL byte")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        what = "is not a folder" if os.path.exists(folder) else "does not exist"
        raise OutputError(f"cannot write {path!r}: folder {folder!r} {what}")
    try:
        st = os.stat(path)
    except OSError:
        pass
    else:
        if stat.S_ISDIR(st.st_mode):
            raise OutputError(f"cannot write {path!r}: it is a directory; give a file name")
        if not stat.S_ISREG(st.st_mode):
            raise OutputError(f"cannot write {path!r}: it is {kind_of(st.st_mode)}, not a regular file")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path!r}: folder {folder!r} is not writable")
    return folder


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], None]) -> str:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``.

    An interrupted or failed run leaves either the old file or none, never half of a new one. The file gets the
    permissions of any new file (``0o666`` less the umask), so a shared folder stays readable. A missing or
    read-only folder, a full disk, or a directory or device at ``path`` raise a one-line
    :class:`~onnxscope.errors.OutputError`.

    Example:
        >>> import tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "x.txt")
        >>> atomic_write(p, lambda t: open(t, "w").write("hi")) == p
        True
        >>> atomic_write(os.path.dirname(p), lambda t: None)
        Traceback (most recent call last):
        ...
        onnxscope.errors.OutputError: cannot write '...': it is a directory; give a file name
    """
    path = os.fspath(path)
    folder = check_output_path(path)
    tmp = os.path.join(folder, f".onnxscope-{secrets.token_hex(6)}{os.path.splitext(path)[1]}")
    try:
        # os.open applies the umask to 0o666, as open() would; mkstemp's 0o600 would hide the file from others
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666))
        write(tmp)
        os.replace(tmp, path)
    except OutputError:
        raise
    except OSError as e:
        reason = e.strerror or str(e) or type(e).__name__
        raise OutputError(f"cannot write {path!r}: {reason}") from e
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return path


def save_npz(path: str | os.PathLike[str], arrays: dict[str, np.ndarray]) -> str:
    """Write ``arrays`` to an ``.npz`` atomically (plain arrays only; nothing is pickled).

    Example:
        >>> import tempfile
        >>> p = save_npz(os.path.join(tempfile.mkdtemp(), "w.npz"), {"a/b": np.ones(2)})
        >>> list(np.load(p, allow_pickle=False))
        ['a/b']
    """
    if not os.fspath(path).endswith(".npz"):
        raise InputError(f"cannot save to {os.fspath(path)!r}: the file name must end in .npz")

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})

    return atomic_write(path, write)
