"""onnx_ir, imported without sympy: every module of ours takes ``ir`` from here (a ruff rule keeps it so).

onnx_ir 1.x imports sympy at the top of its core module (for the arithmetic of symbolic dimensions, which
onnxscope never does): ~0.4 s and ~34 MB of every process that loads a model — each Dask worker, each CLI call,
and the peak memory a capture is measured by. Here onnx_ir is imported with two stand-ins in ``sys.modules`` —
for ``sympy`` and for ``onnx_ir._symbolic_shapes``, the only module that touches sympy at import time — which
onnx_ir's core binds to its names; the stand-ins are removed from ``sys.modules`` as soon as onnx_ir is in, so
nobody imports them afterwards. The first attribute read through one (``SymbolicDim("n") + 1``) imports the real
module and forwards to it, so onnx_ir behaves as before, only later. Where sympy or onnx_ir is already
imported, or the stand-ins are ever read during the import (a future onnx_ir), nothing is saved and nothing
breaks. One limit: another thread that imports sympy during those ~0.2 s gets the stand-in (every attribute
forwarded; ``importlib.reload`` of it fails).

Example:
    >>> import sys
    >>> from onnxscope._ir import ir
    >>> (ir.SymbolicDim("n") * 2).value, "sympy" in sys.modules  # the real sympy, imported on first use
    ('2*n', True)
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__all__ = ["ir"]

_DEFERRED = ("sympy", "onnx_ir._symbolic_shapes")


class _Deferred(types.ModuleType):
    """A module that imports the real one of its name on its first attribute read, and forwards to it. No lock of
    its own: importlib's per-module locks make concurrent imports of the real module safe (a lock here would
    deadlock when the real ``_symbolic_shapes``, imported through its stand-in, reads the sympy stand-in)."""

    def __getattr__(self, attr: str) -> Any:
        if sys.modules.get(self.__name__) is self:  # only while onnx_ir's import is under way
            sys.modules.pop(self.__name__, None)
        return getattr(importlib.import_module(self.__name__), attr)


def _import_onnx_ir() -> types.ModuleType:
    """Import onnx_ir with sympy deferred (see the module's docstring)."""
    if "onnx_ir" in sys.modules or "sympy" in sys.modules:
        import onnx_ir  # noqa: TID251

        return onnx_ir
    stand_ins = {name: _Deferred(name) for name in _DEFERRED}
    sys.modules.update(stand_ins)
    try:
        import onnx_ir  # noqa: TID251
    finally:
        for name, module in stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
    return onnx_ir


_import_onnx_ir()

import onnx_ir as ir  # noqa: E402, TID251  (already imported above; this names it for type checkers)
