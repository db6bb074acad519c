"""QDQ models: capture keeps onnxruntime's int8 kernels; dequantized tensors equal what onnxruntime computes when
they are marked as outputs directly."""

from __future__ import annotations

import numpy as np
import pytest

import onnxscope

ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static  # noqa: E402


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8 * 8 * 8, 4)

    def forward(self, x):
        h = torch.relu(self.c1(x))
        return self.fc(torch.flatten(torch.relu(self.c2(h)) + h, 1))


class Reader(CalibrationDataReader):
    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.items = iter([{"input": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(8)])

    def get_next(self):
        return next(self.items, None)


@pytest.fixture(scope="module")
def qdq_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qdq")
    torch.manual_seed(0)
    torch.onnx.export(
        Net().eval(), (torch.randn(1, 3, 8, 8),), str(folder / "f.onnx"), dynamo=False, input_names=["input"]
    )
    quantize_static(
        str(folder / "f.onnx"),
        str(folder / "q.onnx"),
        Reader(),
        quant_format=QuantFormat.QDQ,
        weight_type=QuantType.QInt8,
        activation_type=QuantType.QUInt8,
    )
    return onnxscope.load(folder / "q.onnx")


def test_dequantized_tensors_equal_onnxruntime_marking_them_directly(qdq_model):
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    cap = onnxscope.capture(qdq_model, {"input": x})
    assert cap.derived, "a QDQ model's DequantizeLinear outputs are derived from the int8 tensors"
    marked = onnxscope.capture(qdq_model, {"input": x}, qdq=False)  # every tensor marked, fusions blocked
    for name, source in cap.derived.items():
        assert cap[source].dtype in (np.uint8, np.int8)
        np.testing.assert_array_equal(cap[name], marked[name], err_msg=name)
    assert any("fused int8 kernel" in why for why in cap.skipped.values())
    plain = ort.InferenceSession(str(qdq_model.path), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(next(iter(cap.outputs.values())), plain.run(None, {"input": x})[0])
