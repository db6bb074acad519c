"""Hostile files at run time: test-data tensors whose external data points at the working directory, hard-linked
weights, an input that is a FIFO — through ``onnxscope capture`` as a user types it, with onnxruntime as oracle."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import onnxscope
from onnxscope.cli.main import main
from onnxscope.testing import mlp_model, save

ort = pytest.importorskip("onnxruntime")

CANARY = (np.arange(6, dtype=np.float32) + 1234.5).reshape(2, 3)


def _external_pb(folder: Path, location: str, shape: tuple[int, ...]) -> None:
    t = numpy_helper.from_array(np.zeros(shape, np.float32), "x")
    t.ClearField("raw_data")
    t.data_location = onnx.TensorProto.EXTERNAL
    t.external_data.add(key="location", value=location)
    (folder / "input_0.pb").write_bytes(t.SerializeToString())


def test_capture_never_reads_a_test_data_tensor_from_the_working_directory(tmp_path, monkeypatch, capsys):
    model = save(mlp_model(), tmp_path / "m.onnx")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "secret.bin").write_bytes(CANARY.tobytes())  # what an attacker wants to see come back as "x"
    monkeypatch.chdir(cwd)
    data = tmp_path / "test_data_set_0"
    data.mkdir()
    _external_pb(data, "secret.bin", (2, 3))
    code = main(["capture", str(model), "--inputs", str(data), "--json"])
    out, err = capsys.readouterr()
    assert code == 4 and "1234.5" not in out
    assert err.count("\n") == 1 and "external-data file 'secret.bin' not found in" in err


def test_capture_reads_test_data_external_data_from_its_own_folder(tmp_path, monkeypatch):
    model = save(mlp_model(), tmp_path / "m.onnx")
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "test_data_set_0"
    data.mkdir()
    (data / "x.bin").write_bytes(CANARY.tobytes())
    _external_pb(data, "x.bin", (2, 3))
    from onnxscope.inputs import read_inputs

    cap = onnxscope.capture(model, read_inputs(bundle=data))
    np.testing.assert_array_equal(cap["x"], CANARY)
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(cap["y"], sess.run(["y"], {"x": CANARY})[0], rtol=1e-6)


def test_hard_linked_external_data_captures_like_a_plain_file(tmp_path):
    plain = tmp_path / "plain"
    linked = tmp_path / "linked"
    for folder in (plain, linked):
        folder.mkdir()
        save(mlp_model(hidden=64), folder / "m.onnx", external_data="m.onnx.data")
    os.replace(linked / "m.onnx.data", linked / "blob")
    os.link(linked / "blob", linked / "m.onnx.data")
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    a = onnxscope.capture(plain / "m.onnx", {"x": x})
    b = onnxscope.capture(linked / "m.onnx", {"x": x})
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert onnxscope.load(linked / "m.onnx").weights["fc1.weight"].stats().count == 64 * 3


def test_a_fifo_given_as_an_input_never_blocks_the_cli(tmp_path, capsys):
    model = save(mlp_model(), tmp_path / "m.onnx")
    os.mkfifo(tmp_path / "x.npy")
    result: dict[str, int] = {}
    t = threading.Thread(
        target=lambda: result.update(
            code=main(["capture", str(model), "--input", f"x={tmp_path / 'x.npy'}"])
        ),
        daemon=True,
    )
    t.start()
    t.join(20)
    if t.is_alive():
        os.close(os.open(tmp_path / "x.npy", os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("capture blocked on a FIFO")
    assert result["code"] == 4 and "is a FIFO" in capsys.readouterr().err


def test_a_model_copied_with_its_weights_under_a_symlinked_folder_still_loads(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    save(mlp_model(hidden=64), real / "m.onnx", external_data="m.onnx.data")
    shutil.copytree(real, tmp_path / "copy")
    os.symlink(tmp_path / "copy", tmp_path / "via-link")
    cap = onnxscope.capture(tmp_path / "via-link" / "m.onnx", {"x": np.ones((1, 3), np.float32)})
    assert cap["y"].shape == (1, 4)


def _parsed(text: str, path: Path, **inits: np.ndarray) -> Path:
    proto = onnx.parser.parse_model('<ir_version: 9, opset_import: ["": 17]>\n' + text)
    proto.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in inits.items())
    onnx.save(proto, path)
    return path


def test_a_layer_norm_whose_bias_is_given_empty_captures_at_every_level(tmp_path):
    """Found by the fuzzer: onnxruntime (1.32) itself crashes (SIGSEGV) optimizing ``LayerNormalization(x, w, "")``
    at levels extended and all; the empty trailing input is dropped at loading (in ONNX the same as omitted), so
    onnxscope hands onnxruntime a model it runs. Oracle: numpy's layer norm."""
    path = _parsed(
        """g (float[2, 8] x) => (float[2, 8] y) {
            n = LayerNormalization <axis = -1> (x, w, "")
            y = Add(n, c)
        }""",
        tmp_path / "ln.onnx",
        w=np.linspace(0.5, 1.5, 8).astype(np.float32),
        c=np.ones(8, np.float32),
    )
    x = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    expected = (x - mean) / np.sqrt(var + 1e-5) * np.linspace(0.5, 1.5, 8).astype(np.float32)
    for level in ("all", "extended", "basic", "disable"):
        cap = onnxscope.capture(path, {"x": x}, optimization=level)
        np.testing.assert_allclose(cap["n"], expected, rtol=1e-5, atol=1e-5, err_msg=level)
        np.testing.assert_allclose(cap.outputs["y"], expected + 1, rtol=1e-5, atol=1e-5, err_msg=level)


def test_a_constant_with_an_attribute_it_does_not_take_is_read_as_onnxruntime_reads_it(tmp_path):
    """Found by the fuzzer: a Constant with an extra attribute (onnxruntime runs it, ignoring the attribute) broke
    folding its value when a capture was saved. Its one value attribute is its value; with two, it is no constant
    onnxscope folds (onnxruntime computes it)."""
    proto = onnx.parser.parse_model(
        """<ir_version: 9, opset_import: ["": 17]>
        g (float[2] x) => (float[2] y) {
            c = Constant <value_floats = [1.0, 2.0]> ()
            y = Add(x, c)
        }"""
    )
    proto.graph.node[0].attribute.append(onnx.helper.make_attribute("to", 1.0))
    onnx.save(proto, tmp_path / "c.onnx")
    x = np.array([1.0, 1.0], np.float32)
    cap = onnxscope.capture(tmp_path / "c.onnx", {"x": x})
    np.testing.assert_array_equal(cap.outputs["y"], [2.0, 3.0])
    cap.save(tmp_path / "c.npz")
    np.testing.assert_array_equal(np.load(tmp_path / "c.npz")["y"], [2.0, 3.0])
    from onnxscope.weights import const_array, is_const

    m = onnxscope.load(tmp_path / "c.onnx")
    c = m.value("c")
    assert is_const(c) and const_array(c)[0].tolist() == [1.0, 2.0]
    proto.graph.node[0].attribute.append(onnx.helper.make_attribute("value_int", 3))
    onnx.save(proto, tmp_path / "two.onnx")
    two = onnxscope.load(tmp_path / "two.onnx").value("c")
    assert not is_const(two) and const_array(two) is None


def test_a_quantized_gemm_with_too_few_inputs_is_no_quantization_onnxscope_reads():
    """Found by the fuzzer: com.microsoft's QGemm has no schema onnxscope checks, and one with four inputs made
    ``quantization_of`` index past them."""
    import onnx_ir as ir

    from onnxscope.weights import quantization_of

    ins = [ir.Value(name=n) for n in "abcd"]
    assert quantization_of(ir.Node("com.microsoft", "QGemm", ins, num_outputs=1), 3) is None
