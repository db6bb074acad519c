"""Opening files that users name: only regular files, checked before a byte is read, never blocking.

A FIFO given as a model would block ``open()`` forever, a character device such as ``/dev/zero`` would be read
until memory runs out, a directory fails late with a confusing message. Every file onnxscope reads on a user's
behalf (a model, its external data, an input array, a capture) goes through :func:`open_regular`: it ``stat``\\s
the path and refuses anything but a regular file *before* opening it, then opens with ``O_NONBLOCK`` and checks
again on the open descriptor, so a path swapped in between cannot block or escape either.

Example:
    >>> import tempfile, os
    >>> from onnxscope.errors import InputError
    >>> d = tempfile.mkdtemp(); os.mkfifo(os.path.join(d, "pipe"))
    >>> open_regular(os.path.join(d, "pipe"), "input file 'pipe'", InputError)
    Traceback (most recent call last):
    ...
    onnxscope.errors.InputError: input file 'pipe': is a FIFO (named pipe), not a regular file
"""

from __future__ import annotations

import os
import stat
from typing import Any, BinaryIO

import numpy as np

from onnxscope.errors import OnnxscopeError
from onnxscope.limits import check_alloc, check_array

__all__ = ["check_npy_header", "check_npz", "check_regular", "kind_of", "open_regular", "read_regular"]

_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)


def kind_of(mode: int) -> str:
    """What a non-regular file is, in words.

    Example:
        >>> kind_of(os.stat("/dev/null").st_mode)
        'a character device'
    """
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _refuse(label: str, mode: int, error: type[OnnxscopeError]) -> OnnxscopeError:
    kind = kind_of(mode)
    if stat.S_ISDIR(mode):
        return error(f"{label}: is a directory, expected a file")
    return error(f"{label}: is {kind}, not a regular file")


def check_regular(path: str | os.PathLike[str], label: str, error: type[OnnxscopeError]) -> os.stat_result:
    """``stat`` ``path`` (following symlinks); raise ``error`` unless it is a regular file.

    ``label`` starts each message, e.g. ``"model.onnx"`` or ``"input file 'x.npy'"``.

    Example:
        >>> from onnxscope.errors import ModelLoadError
        >>> check_regular("/no/such/model.onnx", "/no/such/model.onnx", ModelLoadError)
        Traceback (most recent call last):
        ...
        onnxscope.errors.ModelLoadError: /no/such/model.onnx: no such file
    """
    p = os.fspath(path)
    if "\0" in p:
        raise error(f"{label}: a path cannot contain a NUL byte")
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise error(f"{label}: no such file") from None
    except NotADirectoryError:
        raise error(f"{label}: no such file (a parent is not a folder)") from None
    except PermissionError:
        raise error(f"{label}: permission denied") from None
    except OSError as e:  # ELOOP (a symlink loop), ENAMETOOLONG…
        raise error(f"{label}: cannot open ({e.strerror or type(e).__name__})") from None
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(label, st.st_mode, error)
    return st


def open_regular(path: str | os.PathLike[str], label: str, error: type[OnnxscopeError]) -> BinaryIO:
    """Open a regular file for reading in binary mode; anything else raises ``error`` before it is opened."""
    check_regular(path, label, error)
    try:
        fd = os.open(os.fspath(path), _FLAGS)
    except PermissionError:
        raise error(f"{label}: permission denied") from None
    except OSError as e:
        raise error(f"{label}: cannot open ({e.strerror or type(e).__name__})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped after the first check
            raise _refuse(label, st.st_mode, error)
        if _FLAGS & getattr(os, "O_NONBLOCK", 0):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike[str], label: str, error: type[OnnxscopeError]) -> bytes:
    """All bytes of a regular file, within the memory budget (:func:`onnxscope.limits.check_alloc`)."""
    with open_regular(path, label, error) as f:
        size = os.fstat(f.fileno()).st_size
        check_alloc(size, f"reading {label}")
        try:
            return f.read()
        except OSError as e:  # EIO, EISDIR on odd file systems
            raise error(f"{label}: cannot read ({e.strerror or type(e).__name__})") from None


def check_npy_header(f: BinaryIO, what: str, error: type[OnnxscopeError]) -> int:
    """Read an ``.npy`` header from ``f``; refuse an array that needs pickle or exceeds the memory budget.
    Return its size in bytes (``f`` is left after the header)."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    except Exception as e:  # numpy parses the header's Python literal: any failure means a bad file
        raise error(
            f"{what}: not a valid .npy header ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        ) from e
    if dtype.hasobject:
        raise error(f"{what} holds Python objects; pickled data is never loaded")
    return check_array(shape, dtype.itemsize, what)


def check_npz(z: Any, what: str, error: type[OnnxscopeError]) -> None:
    """Check every array header of an open ``NpzFile`` (and their total) before any array is read."""
    total = 0
    names = set(z.zip.namelist())
    for key in z.files:
        member = f"{key}.npy" if f"{key}.npy" in names else key
        try:
            with z.zip.open(member) as m:
                total += check_npy_header(m, f"{what}: array {key!r}", error)
        except OnnxscopeError:
            raise
        except Exception as e:  # zipfile on a damaged archive: BadZipFile, NotImplementedError, zlib.error…
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise error(f"{what}: array {key!r} cannot be read ({reason})") from e
    check_alloc(total, f"{what} ({len(z.files)} arrays)")
