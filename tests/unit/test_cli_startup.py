"""The command line starts fast: `onnxscope --help` imports no onnx_ir (and so no sympy), no runtime, no framework;
a capture imports no networkx.

The time itself is measured in benchmarks/capture.py (a benchmark, not a timer in a test)."""

from __future__ import annotations

import json
import subprocess
import sys


def loaded(code: str, modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` a fresh interpreter has imported after running ``code``."""
    probe = f"import json, sys\n{code}\nprint(json.dumps(sorted(m for m in {modules!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_the_cli_parser_imports_nothing_heavy():
    heavy = (
        "onnx_ir",
        "onnx",
        "sympy",
        "onnxruntime",
        "torch",
        "tensorflow",
        "zarr",
        "matplotlib",
        "networkx",
    )
    assert loaded("from onnxscope.cli.main import build_parser; build_parser()", heavy) == []


def test_a_capture_imports_no_graph_library():
    """A capture needs the model and onnxruntime, not the networkx views (15 MB of memory, 0.1 s of import)."""
    code = (
        "import numpy as np, onnxscope; from onnxscope.testing import mlp_model; "
        "c = onnxscope.capture(onnxscope.Model(mlp_model()), {'x': np.ones((1, 3), np.float32)}); c['h']"
    )
    assert loaded(code, ("networkx", "matplotlib", "torch", "tensorflow", "zarr")) == []
