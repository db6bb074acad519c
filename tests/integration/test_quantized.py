"""Models quantized by onnxruntime: dequantized weights equal the float originals within one quantization step."""

from __future__ import annotations

import numpy as np
import pytest

import onnxscope

ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
from onnxruntime.quantization import (  # noqa: E402
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc1 = torch.nn.Linear(8 * 6 * 6, 32)
        self.fc2 = torch.nn.Linear(32, 4)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        return self.fc2(torch.relu(self.fc1(torch.flatten(h, 1))))


class Reader(CalibrationDataReader):
    def __init__(self, name: str) -> None:
        rng = np.random.default_rng(0)
        self.items = iter([{name: rng.standard_normal((1, 3, 6, 6)).astype(np.float32)} for _ in range(8)])

    def get_next(self):
        return next(self.items, None)


@pytest.fixture(scope="module")
def float_model(tmp_path_factory):
    torch.manual_seed(0)
    net = Net().eval()
    path = tmp_path_factory.mktemp("q") / "float.onnx"
    torch.onnx.export(net, (torch.randn(1, 3, 6, 6),), str(path), dynamo=False, input_names=["input"])
    return net, path


def _float_weights(net):
    return {
        "conv": net.conv.weight.detach().numpy(),
        "fc1": net.fc1.weight.detach().numpy(),
        "fc2": net.fc2.weight.detach().numpy(),
    }


def _check_layers(m: onnxscope.Model, net, ops: tuple[str, ...]):
    """Every weighted layer's dequantized weights match the float parameters within one step."""
    floats = _float_weights(net)
    checked = 0
    for node in m.nodes:
        if node.op_type not in ops:
            continue
        module = onnxscope.graph.module_path_of(node) or ""
        key = next(k for k in floats if k in module or k in (node.name or ""))
        w = floats[key]
        n = m.neuron(node.name, 1)
        weight = m.weights[n.weight]
        assert weight.quantization is not None, f"{weight.name} should be quantized"
        real = weight.dequantize()
        step = np.asarray(weight.quantization.scale)
        expected = w if real.shape == w.shape else w.T
        axis = weight.quantization.axis
        if step.size > 1:
            shape = [1] * real.ndim
            shape[axis % real.ndim] = -1
            step = step.reshape(shape)
        assert np.all(np.abs(real - expected) <= step * 1.0001), f"{key}: off by more than one step"
        # the neuron view sees the same dequantized values
        np.testing.assert_allclose(
            n.incoming, (expected if key == "conv" else w)[1], atol=float(np.max(step)) * 1.0001
        )
        checked += 1
    assert checked == 3


def test_quantize_dynamic_integer_ops(float_model, tmp_path):
    net, path = float_model
    out = tmp_path / "dyn.onnx"
    quantize_dynamic(str(path), str(out), weight_type=QuantType.QInt8, per_channel=True)
    m = onnxscope.load(out)
    assert {"MatMulInteger", "ConvInteger"} <= {n.op_type for n in m.nodes}
    _check_layers(m, net, ("MatMulInteger", "ConvInteger"))


@pytest.mark.parametrize("per_channel", [False, True])
def test_quantize_static_qdq(float_model, tmp_path, per_channel):
    net, path = float_model
    out = tmp_path / "qdq.onnx"
    quantize_static(
        str(path),
        str(out),
        Reader("input"),
        quant_format=QuantFormat.QDQ,
        per_channel=per_channel,
        weight_type=QuantType.QInt8,
    )
    m = onnxscope.load(out)
    assert "DequantizeLinear" in {n.op_type for n in m.nodes}
    _check_layers(m, net, ("Conv", "Gemm", "MatMul"))


def test_quantize_static_qoperator(float_model, tmp_path):
    net, path = float_model
    out = tmp_path / "qop.onnx"
    quantize_static(
        str(path),
        str(out),
        Reader("input"),
        quant_format=QuantFormat.QOperator,
        per_channel=True,
        weight_type=QuantType.QInt8,
    )
    m = onnxscope.load(out)
    ops = {n.op_type for n in m.nodes}
    assert {"QLinearConv", "QGemm"} <= ops
    _check_layers(m, net, ("QLinearConv", "QGemm"))
