"""Exported torch models against torch itself: parameters are the oracle for incoming/outgoing weights."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import onnxscope

torch = pytest.importorskip("torch")

EXPORTS = {
    "dynamo-optimized": {"dynamo": True, "optimize": True},
    "dynamo-unoptimized": {"dynamo": True, "optimize": False},
    "torchscript": {"dynamo": False},
}


def _export(module, example, path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), verbose=False, **kw)
    return onnxscope.load(path)


@pytest.fixture(scope="module")
def mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(10, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)).eval()


@pytest.mark.parametrize("export", EXPORTS)
def test_mlp_neuron_weights_equal_the_torch_parameters(mlp, tmp_path, export):
    m = _export(mlp, torch.randn(2, 10), tmp_path / "mlp.onnx", **EXPORTS[export])
    w0, b0, w2 = (p.detach().numpy() for p in (mlp[0].weight, mlp[0].bias, mlp[2].weight))
    for j in (0, 17, 63):
        n = m.neuron("0", j)  # the torch module path
        np.testing.assert_array_equal(n.incoming, w0[j])
        assert float(n.bias) == float(b0[j])
        (out,) = n.outgoing
        np.testing.assert_array_equal(out.weights, w2[:, j])
        assert out.op == "Gemm"


class SmallCNN(torch.nn.Module):
    """Conv → BatchNorm → ReLU → residual block → Flatten → Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x)))
        h = torch.relu(self.bn2(self.conv2(h)) + h)
        return self.fc(torch.flatten(h, 1))


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(1)
    net = SmallCNN().eval()
    with torch.no_grad():
        for bn in (net.bn, net.bn2):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    return net


def _folded(conv, bn):
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
    w = conv.weight.detach() * scale[:, None, None, None]
    b = (conv.bias.detach() - bn.running_mean) * scale + bn.bias.detach()
    return w.numpy(), b.numpy()


@pytest.mark.parametrize("export", EXPORTS)
def test_cnn_neuron_weights_equal_torch_with_batchnorm_folding_said(cnn, tmp_path, export):
    m = _export(cnn, torch.randn(1, 3, 4, 4), tmp_path / "cnn.onnx", **EXPORTS[export])
    folded = not any(n.op_type == "BatchNormalization" for n in m.nodes)
    assert folded == (export != "dynamo-unoptimized")
    conv_node = m.layer("conv") if export != "torchscript" else m.node("/conv/Conv")
    j = 5
    n = m.neuron(conv_node.name, j)
    if folded:
        w, b = _folded(cnn.conv, cnn.bn)
        np.testing.assert_allclose(n.incoming, w[j], rtol=1e-5, atol=1e-6)
        assert float(n.bias) == pytest.approx(float(b[j]), rel=1e-5, abs=1e-6)
        assert any("BatchNorm" in note for note in n.notes)
    else:
        np.testing.assert_array_equal(n.incoming, cnn.conv.weight.detach().numpy()[j])
        assert float(n.bias) == float(cnn.conv.bias.detach()[j])
    # two consumers: conv2 directly, and fc through the residual Add and Flatten
    by_op = {o.op: o for o in n.outgoing}
    assert sorted(by_op) == ["Conv", "Gemm"]
    conv2_w = _folded(cnn.conv2, cnn.bn2)[0] if folded else cnn.conv2.weight.detach().numpy()
    np.testing.assert_allclose(by_op["Conv"].weights, conv2_w[:, j], rtol=1e-5, atol=1e-6)
    fc_w = cnn.fc.weight.detach().numpy()
    np.testing.assert_array_equal(by_op["Gemm"].weights, fc_w[:, j * 16 : (j + 1) * 16])
    assert by_op["Gemm"].inputs == tuple(range(j * 16, (j + 1) * 16))


@pytest.mark.parametrize("export", ["dynamo-optimized", "torchscript"])
def test_a_residual_branch_neuron_reaches_the_next_block(cnn, tmp_path, export):
    m = _export(cnn, torch.randn(1, 3, 4, 4), tmp_path / "cnn.onnx", **EXPORTS[export])
    conv2 = m.layer("conv2") if export != "torchscript" else m.node("/conv2/Conv")
    n = m.neuron(conv2.name, 2)
    (out,) = n.outgoing
    assert out.op == "Gemm"
    np.testing.assert_array_equal(out.weights, cnn.fc.weight.detach().numpy()[:, 32:48])
    assert any("Add" in step or "add" in step for step in out.path)
