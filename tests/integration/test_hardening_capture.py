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
