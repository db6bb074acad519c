"""The onnx package's own backend node test cases, regenerated from ``onnx.backend.test.case.node``.

For every case that plain onnxruntime (at ORT_ENABLE_ALL, capture's default) passes, capture-all must return the
expected outputs, and every tensor it offers — recomputed ones included — must read; no case may end in
anything but success or an ``OnnxscopeError`` (an op onnxruntime lacks is a CaptureError, not a traceback).
All of them run (about a minute on two cores).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

import onnxscope

ort = pytest.importorskip("onnxruntime")

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from onnx.backend.test.case.node import collect_testcases

    CASES = {c.name: c for c in collect_testcases(None) if c.model is not None}


def _close(got, want, rtol: float, atol: float) -> bool:
    if isinstance(want, np.ndarray):
        if not isinstance(got, np.ndarray) or got.shape != want.shape:
            return False
        if want.dtype.kind in "OUS":
            return bool(np.array_equal(got.astype(str), want.astype(str)))
        try:
            np.testing.assert_allclose(
                got.astype(np.float64) if got.dtype.kind == "b" else got,
                want.astype(np.float64) if want.dtype.kind == "b" else want,
                rtol=rtol,
                atol=atol,
                equal_nan=True,
            )
        except (AssertionError, TypeError, ValueError):
            return False
        return True
    return True  # sequences / optionals are not tensors a capture maps; onnxruntime's own run checks them


def run_case(case, folder: Path) -> str:
    """'pass' / 'plain-ort-fails' when capture behaves; raises AssertionError when it does not."""
    path = folder / f"{case.name}.onnx"
    onnx.save(case.model, path)
    inputs, expected = case.data_sets[0]
    names = [
        i.name for i in case.model.graph.input if i.name not in {t.name for t in case.model.graph.initializer}
    ]
    feeds = dict(zip(names, inputs, strict=False))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 4
    try:
        plain = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, feeds)
        plain_ok = all(_close(g, w, case.rtol, case.atol) for g, w in zip(plain, expected, strict=False))
    except Exception:
        plain_ok = False
    try:
        cap = onnxscope.capture(path, feeds)
    except onnxscope.OnnxscopeError as e:
        assert not plain_ok, (
            f"{case.name}: plain onnxruntime passes but capture raised {type(e).__name__}: {e}"
        )
        assert "\n" not in str(e)
        return "plain-ort-fails"
    for name in cap:  # every tensor, recomputed ones included, reads without error
        assert isinstance(cap[name], np.ndarray), name
    if not plain_ok:
        return "plain-ort-fails"
    outs = [o.name for o in case.model.graph.output]
    for name, want in zip(outs, expected, strict=False):
        if isinstance(want, np.ndarray):
            assert name in cap, f"{case.name}: output {name} missing from the capture"
            assert _close(cap[name], want, case.rtol, case.atol), f"{case.name}: output {name} differs"
    return "pass"


@pytest.mark.parametrize("name", sorted(CASES))
def test_backend_case(name, tmp_path):
    run_case(CASES[name], tmp_path)
