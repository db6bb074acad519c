"""Loading: lazy external data, and every bad file refused with a one-line ModelLoadError."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnx_ir as ir
import pytest

import onnxscope
from onnxscope.testing import mlp_model, save


@pytest.fixture
def external_model(tmp_path):
    path = save(mlp_model(hidden=64), tmp_path / "m.onnx", external_data="m.onnx.data")
    return tmp_path, path


def _set_location(path: str, location: str) -> None:
    proto = onnx.load(path, load_external_data=False)
    for t in proto.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    onnx.save(proto, path)


def test_weights_are_not_read_until_asked(external_model):
    _, path = external_model
    m = onnxscope.load(path)
    w = m.weights["fc1.weight"]
    assert isinstance(w.tensor, ir.ExternalTensor)
    assert w.shape == (64, 3) and w.dtype == "float32" and w.nbytes == 64 * 3 * 4
    assert w.tensor.raw is None, "shape, dtype and size must not map the data"
    expected = mlp_model(hidden=64).graph.initializers["fc1.weight"].const_value.numpy()
    np.testing.assert_array_equal(w.numpy(), expected)
    assert w.tensor.raw is not None  # now memory-mapped


def test_a_text_file_is_not_an_onnx_model(tmp_path):
    p = tmp_path / "notes.onnx"
    p.write_text("this is not a model\n" * 20)
    with pytest.raises(onnxscope.ModelLoadError, match=r"notes\.onnx: not"):
        onnxscope.load(p)


def test_an_empty_file_is_refused(tmp_path):
    p = tmp_path / "empty.onnx"
    p.write_bytes(b"")
    with pytest.raises(onnxscope.ModelLoadError, match="not an ONNX model"):
        onnxscope.load(p)


def test_a_truncated_file_is_refused(tmp_path):
    full = save(mlp_model(hidden=64), tmp_path / "full.onnx")
    data = open(full, "rb").read()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(onnxscope.ModelLoadError, match=r"cut\.onnx: not a readable ONNX model"):
        onnxscope.load(cut)


def test_a_missing_model_file_is_named(tmp_path):
    with pytest.raises(onnxscope.ModelLoadError, match="no such file"):
        onnxscope.load(tmp_path / "absent.onnx")


def test_a_missing_external_data_file_is_named(external_model):
    folder, path = external_model
    os.remove(folder / "m.onnx.data")
    with pytest.raises(onnxscope.ModelLoadError, match=r"external-data file 'm\.onnx\.data' not found"):
        onnxscope.load(path)


def test_truncated_external_data_is_refused(external_model):
    folder, path = external_model
    with open(folder / "m.onnx.data", "r+b") as f:
        f.truncate(100)
    with pytest.raises(onnxscope.ModelLoadError, match="is truncated"):
        onnxscope.load(path)


@pytest.mark.parametrize("location", ["../outside.data", "sub/../../outside.data"])
def test_external_data_outside_the_folder_is_refused(external_model, location):
    folder, path = external_model
    sub = folder / "sub"
    sub.mkdir()
    (folder.parent / "outside.data").write_bytes(b"\0" * 4096)
    _set_location(path, location)
    with pytest.raises(onnxscope.ModelLoadError, match="outside the model's folder"):
        onnxscope.load(path)


def test_an_absolute_external_data_path_is_refused(external_model, tmp_path):
    folder, path = external_model
    _set_location(path, str(folder / "m.onnx.data"))
    with pytest.raises(onnxscope.ModelLoadError, match="absolute path"):
        onnxscope.load(path)


def test_a_symlink_leading_out_of_the_folder_is_refused(tmp_path):
    inner = tmp_path / "model"
    inner.mkdir()
    path = save(mlp_model(hidden=64), inner / "m.onnx", external_data="m.onnx.data")
    assert onnxscope.load(path).weights["fc1.weight"].external == "m.onnx.data"
    outside = tmp_path / "secret.data"
    os.replace(inner / "m.onnx.data", outside)
    os.symlink(outside, inner / "m.onnx.data")
    with pytest.raises(onnxscope.ModelLoadError, match="outside the model's folder"):
        onnxscope.load(path)


def test_a_directory_is_not_a_model(tmp_path):
    with pytest.raises(onnxscope.ModelLoadError, match="is a directory"):
        onnxscope.load(tmp_path)


def test_constant_node_tensors_are_weights_too(tmp_path):
    proto = onnx.parser.parse_model(
        """<ir_version: 9, opset_import: ["": 17]>
        g (float[2, 3] x) => (float[2, 4] y) {
            w = Constant <value = float[3, 4] {1,2,3,4,5,6,7,8,9,10,11,12}> ()
            y = MatMul(x, w)
        }"""
    )
    p = tmp_path / "c.onnx"
    onnx.save(proto, p)
    m = onnxscope.load(p)
    assert m.weights["w"].source == "constant"
    np.testing.assert_array_equal(m.weights["w"].numpy(), np.arange(1, 13, dtype=np.float32).reshape(3, 4))
    n = m.neuron("y", 2)
    np.testing.assert_array_equal(n.incoming, [3, 7, 11])
