"""On an AVX2-only CPU, emulated: the int8 tests hold there too, and ``check_kernels`` finds the layer whose fused
kernel saturates.

Whatever CPU runs the suite, ``qemu-x86_64 -cpu EPYC-Rome`` (an AVX2-only AMD CPU, the one onnxruntime's fused
u8s8 kernels saturate on for lack of VNNI) runs Python and onnxruntime with that CPU's instruction set, so
onnxruntime picks its AVX2 kernels. The oracle is arithmetic: a uint8 × int8 product whose pairs of terms exceed
int16 (255 · 127 · 2 = 64,770 > 32,767) is what the AVX2 kernel's ``vpmaddubsw`` saturates; the model's own QDQ
semantics give 255 · 127 · 64 exactly. ``make test`` installs ``qemu-user`` (Debian) when it can;
``ONNXSCOPE_REQUIRE_QEMU=1`` makes its absence a failure instead of a skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

QEMU = shutil.which("qemu-x86_64")
if QEMU is None:
    if os.environ.get("ONNXSCOPE_REQUIRE_QEMU") == "1":
        pytest.fail("qemu-x86_64 is missing (apt-get install qemu-user)", pytrace=False)
    pytest.skip("qemu-x86_64 is missing (apt-get install qemu-user)", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
K = 64  # 32 pairs of u8·s8 products per output


def _saturating_model(path: Path) -> Path:
    """x (uint8 255 after quantization) @ W (int8 127): every output is 255 · 127 · 64 = 2,072,640."""
    init = [
        numpy_helper.from_array(np.float32(1.0), "xs"),
        numpy_helper.from_array(np.uint8(0), "xz"),
        numpy_helper.from_array(np.full((K, 16), 127, np.int8), "wq"),
        numpy_helper.from_array(np.float32(1.0), "ws"),
        numpy_helper.from_array(np.int8(0), "wz"),
        numpy_helper.from_array(np.float32(10000.0), "ys"),
        numpy_helper.from_array(np.uint8(0), "yz"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"]),
        helper.make_node("MatMul", ["xd", "wd"], ["y"], name="matmul"),
        helper.make_node("QuantizeLinear", ["y", "ys", "yz"], ["yq"], name="quantize_y"),
        helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "saturating",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, K])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [4, 16])],
        init,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9), path)
    return path


def _emulated(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [QEMU, "-cpu", "EPYC-Rome", sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


RUN = """
    import json, numpy as np, onnxscope
    x = {"x": np.full((4, 64), 255, np.float32)}
    c = onnxscope.check_kernels("m.onnx", x)
    cap = onnxscope.capture("m.onnx", x)
    print(json.dumps({"rows": [r.to_dict() for r in c.rows], "out": cap.outputs["out"].tolist(),
                      "yq": cap["yq"].tolist(), "source": cap.info("yq").source}))
"""


def test_check_kernels_finds_the_saturating_layer_on_an_avx2_only_cpu(tmp_path):
    _saturating_model(tmp_path / "m.onnx")
    done = _emulated(RUN, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    exact = 255 * 127 * K  # the model's QDQ semantics: 2,072,640 → quantized 207 at scale 10,000
    saturated = 32767 * (K // 2)  # every pair clipped to int16 by vpmaddubsw: 1,048,544 → 105
    assert result["source"] == "captured"  # the fused kernel's own int8 output, as onnxruntime produced it
    assert np.all(np.array(result["yq"]) == round(saturated / 10000))
    assert np.all(np.array(result["out"]) == round(saturated / 10000) * 10000.0)
    (row,) = [r for r in result["rows"] if r["a_tensor"] == "yq"]
    assert row["max_steps"] == round(exact / 10000) - round(saturated / 10000) == 102
    assert row["frac_differ"] == 1.0 and row["introduced_max_steps"] == 102 and row["layer"] == "matmul"


def test_the_int8_capture_tests_pass_on_an_avx2_only_cpu(tmp_path):
    """The QDQ capture oracle (onnxruntime with the QuantizeLinear outputs marked, fusions intact) holds whatever
    kernels the CPU runs: issue 9's failing test, run on the CPU it failed on."""
    done = subprocess.run(
        [
            QEMU,
            "-cpu",
            "EPYC-Rome",
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(ROOT / "tests" / "integration" / "test_capture_qdq.py"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert " passed" in done.stdout and "failed" not in done.stdout
