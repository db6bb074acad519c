"""The public face: exactly what __all__ names exists, and importing it pulls in no framework or runtime."""

from __future__ import annotations

import subprocess
import sys

import onnxscope


def test_every_public_name_exists_and_is_documented():
    for name in onnxscope.__all__:
        obj = getattr(onnxscope, name)
        assert obj.__doc__, f"onnxscope.{name} has no docstring"
    assert len(set(onnxscope.__all__)) == len(onnxscope.__all__)


def test_importing_onnxscope_loads_no_framework_runtime_or_store():
    code = "import sys, onnxscope; print(sorted(m for m in ('torch', 'tensorflow', 'onnxruntime', 'zarr') if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"
