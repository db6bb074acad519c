"""The command line starts fast: `onnxscope --help` imports no onnx_ir (and so no sympy), no runtime, no framework;
a capture imports no networkx.

The time itself is measured in benchmarks/capture.py (a benchmark, not a timer in a test)."""

from __future__ import annotations

import subprocess
import sys


def test_the_cli_parser_imports_nothing_heavy():
    code = (
        "import sys; from onnxscope.cli.main import build_parser; build_parser(); "
        "print(sorted(m for m in ('onnx_ir', 'onnx', 'sympy', 'onnxruntime', 'torch', 'tensorflow', 'zarr', "
        "'matplotlib', 'networkx') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"


def test_a_capture_imports_no_graph_library():
    """A capture needs the model and onnxruntime, not the networkx views (15 MB of memory, 0.1 s of import)."""
    code = (
        "import sys, numpy as np, onnxscope; from onnxscope.testing import mlp_model; "
        "c = onnxscope.capture(onnxscope.Model(mlp_model()), {'x': np.ones((1, 3), np.float32)}); c['h']; "
        "print(sorted(m for m in ('networkx', 'matplotlib', 'torch', 'tensorflow', 'zarr') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"
