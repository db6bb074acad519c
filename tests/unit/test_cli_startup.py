"""The command line starts fast: `onnxscope --help` imports no onnx_ir (and so no sympy), no runtime, no framework.

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
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
