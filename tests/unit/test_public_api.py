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


def test_loading_querying_and_capturing_a_model_imports_no_sympy():
    # onnx_ir imports sympy at the top of its core (~0.4 s, ~34 MB of every process); onnxscope._ir defers it.
    code = (
        "import sys, os, tempfile, onnxscope\n"
        "from onnxscope.testing import mlp_model, save\n"
        "m = onnxscope.load(save(mlp_model(), os.path.join(tempfile.mkdtemp(), 'm.onnx')))\n"
        "m.summary(); m.neuron('fc1', 0); onnxscope.find_residuals(m); onnxscope.find_attention(m)\n"
        "c = onnxscope.capture(m, random=True); [c[n] for n in c]\n"
        "print('sympy' in sys.modules, 'onnx_ir' in sys.modules, 'onnxruntime' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True", "True"]


def test_onnx_ir_symbolic_dimensions_still_work_once_onnxscope_has_imported_it():
    # the deferred sympy is imported on first use, and the answers are sympy's
    code = (
        "import sys, onnxscope.model\n"
        "from onnxscope._ir import ir\n"
        "before = 'sympy' in sys.modules\n"
        "d = ir.SymbolicDim('n')\n"
        "print(before, (d * 2 + 1).value, (d + 1).evaluate({'n': 3}), type(sys.modules['sympy']).__name__)\n"
        "import sympy, onnx_ir._symbolic_shapes as s\n"
        "print(isinstance(s.parse_symbolic_expression('n'), sympy.Symbol), sys.modules['sympy'] is sympy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:2] == ["False 2*n + 1 4 module", "True True"]


def test_a_thread_importing_onnx_irs_symbolic_shapes_during_the_first_import_does_not_hang():
    # the helper waits until the stand-in is in sys.modules, then imports the real module through it (a lock held
    # by the stand-in once deadlocked here: the real module reads the sympy stand-in while importing)
    code = (
        "import sys, threading\n"
        "def helper():\n"
        "    while type(sys.modules.get('onnx_ir._symbolic_shapes')).__name__ != '_Deferred':\n"
        "        pass\n"
        "    from onnx_ir._symbolic_shapes import parse_symbolic_expression\n"
        "    print(parse_symbolic_expression('n+1'))\n"
        "t = threading.Thread(target=helper, daemon=True); t.start()\n"
        "import onnxscope.model\n"
        "from onnxscope._ir import ir\n"
        "t.join(10)\n"
        "print(t.is_alive(), (ir.SymbolicDim('n') + 1).value)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    assert out.split("\n")[:2] == ["n + 1", "False n + 1"]
