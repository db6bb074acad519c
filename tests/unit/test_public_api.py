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


HEAVY = ("torch", "tensorflow", "onnxruntime", "zarr", "sympy", "onnx_ir", "onnx")


def test_importing_onnxscope_loads_no_framework_runtime_store_or_sympy():
    code = f"import sys, onnxscope; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"


def test_public_names_resolve_lazily_to_their_modules():
    code = (
        "import sys, onnxscope; onnxscope.load; print('onnx_ir' in sys.modules, 'onnxruntime' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "True False"  # loading a model needs onnx_ir, not the runtime
    for name in onnxscope.__all__:
        assert getattr(onnxscope, name).__module__.startswith("onnxscope"), name


def test_no_public_name_shares_its_name_with_a_module():
    import importlib.util

    clash = [n for n in onnxscope.__all__ if importlib.util.find_spec(f"onnxscope.{n}") is not None]
    assert clash == []
