"""converters.from_torch and converters.check against torch itself."""

from __future__ import annotations

import numpy as np
import pytest

import converters
import onnxscope

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def seed_mlp(tmp_path_factory):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(10, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)).eval()
    path = tmp_path_factory.mktemp("mlp") / "mlp.onnx"
    return net, converters.from_torch(net, (torch.randn(3, 10),), path)


def test_seed_example_weights_and_hook_output_equal_onnxscope_for_layer_0(seed_mlp):
    net, m = seed_mlp
    assert m.layer_map["framework"] == "torch"
    np.testing.assert_array_equal(m.weights["0.weight"].numpy(), net[0].weight.detach().numpy())
    np.testing.assert_array_equal(m.weights["0.bias"].numpy(), net[0].bias.detach().numpy())
    n = m.neuron("0", 5)
    np.testing.assert_array_equal(n.incoming, net[0].weight.detach().numpy()[5])
    np.testing.assert_array_equal(n.outgoing[0].weights, net[2].weight.detach().numpy()[:, 5])
    seen = {}

    def hook(_m, _i, out) -> None:
        seen["out"] = out.detach().numpy().copy()

    handle = net[0].register_forward_hook(hook)
    x = torch.randn(3, 10)
    with torch.no_grad():
        net(x)
    handle.remove()  # the module-scoped model is shared with later tests
    cap = onnxscope.capture(m, {m.ir.graph.inputs[0].name: x.numpy()}, select="module:0")
    np.testing.assert_allclose(cap[m.layer_map["layers"]["0"]["output"]], seen["out"], atol=1e-6)


class Block(torch.nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = torch.nn.Conv2d(c, c, 3, padding=1), torch.nn.BatchNorm2d(c)
        self.relu = torch.nn.ReLU(inplace=True)  # in-place: hooks must copy, not alias
        self.conv2, self.bn2 = torch.nn.Conv2d(c, c, 3, padding=1), torch.nn.BatchNorm2d(c)

    def forward(self, x):
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) + x)  # relu called twice


class ResNetLike(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU()
        )
        self.layer1 = torch.nn.Sequential(Block(8), Block(8))
        self.head = torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.head(self.layer1(self.stem(x)).mean((2, 3)))


def _resnet():
    torch.manual_seed(0)
    net = ResNetLike().eval()
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 1.5)
    return net


def test_parity_on_a_resnet_like_cnn_and_a_perturbed_weight_is_found(tmp_path):
    net = _resnet()
    x = torch.randn(2, 3, 8, 8)
    m = converters.from_torch(net, (x,), tmp_path / "resnet.onnx")
    report = converters.check(net, m, x.numpy())
    assert report.ok, [r for r in report.rows if not r.ok]
    assert {"stem.0", "layer1.0.conv1", "layer1.0.bn1", "layer1.0", "layer1.1", "head"} <= {
        r.layer for r in report.rows
    }
    assert all(r.max_abs <= 1e-4 for r in report.rows)
    assert any("called 2 times" in n for n in report.notes)
    # perturb one stored weight in the ONNX file: the first divergence is that layer
    w = m.weights["layer1.1.conv1.weight"]
    arr = np.array(w.numpy())
    arr[0] += 0.5
    import onnx_ir as ir

    bad = ir.load(str(tmp_path / "resnet.onnx"))
    bad.graph.initializers["layer1.1.conv1.weight"].const_value = ir.tensor(arr, name="layer1.1.conv1.weight")
    ir.save(bad, str(tmp_path / "bad.onnx"))
    broken = converters.check(net, onnxscope.load(tmp_path / "bad.onnx"), x.numpy())
    assert broken.first_divergence == "layer1.1.conv1"


class Encoder(torch.nn.Module):
    """A BERT-like encoder layer whose attention module keeps its probabilities."""

    def __init__(self, d: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.heads, self.d = heads, d
        self.q, self.k, self.v, self.o = (torch.nn.Linear(d, d) for _ in range(4))
        self.ln1, self.ln2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
        self.ffn = torch.nn.Sequential(torch.nn.Linear(d, 32), torch.nn.GELU(), torch.nn.Linear(32, d))
        self.stored = None

    def forward(self, x):
        b, t, _ = x.shape
        split = lambda y: y.view(b, t, self.heads, self.d // self.heads).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        p = torch.softmax(q @ k.transpose(-1, -2) / (self.d // self.heads) ** 0.5, dim=-1)
        self.stored = p.detach()
        h = self.ln1(x + self.o((p @ v).transpose(1, 2).reshape(b, t, self.d)))
        return self.ln2(h + self.ffn(h))


def test_bert_like_parity_and_the_stored_attention_map(tmp_path):
    torch.manual_seed(0)
    net = Encoder().eval()
    x = torch.randn(2, 5, 16)
    m = converters.from_torch(net, (x,), tmp_path / "enc.onnx")
    report = converters.check(net, m, x.numpy())
    assert report.ok and len(report.rows) >= 8
    with torch.no_grad():
        net(x)
    (block,) = onnxscope.find_attention(m)
    cap = onnxscope.capture(m, {m.ir.graph.inputs[0].name: x.numpy()})
    np.testing.assert_allclose(cap.attention(block), net.stored.numpy(), atol=1e-6)
    assert block.w_q == "q.weight" and block.w_o == "o.weight"


def test_framework_names_work_in_capture_selection_and_neuron_queries(seed_mlp):
    _, m = seed_mlp
    cap = onnxscope.capture(m, random=True, select="module:2")
    assert m.layer_map["layers"]["2"]["output"] in cap
    assert m.neuron("2.weight", 0).layer == m.layer("2").name
