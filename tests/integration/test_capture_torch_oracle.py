"""Capture on torch-exported models against torch forward hooks: the output of each module's last node equals
the hooked output of that module."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import onnxscope

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")


class Residual(torch.nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(c, c, 3, padding=1)
        self.bn1 = torch.nn.BatchNorm2d(c)
        self.act = torch.nn.ReLU()
        self.conv2 = torch.nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.act(self.conv2(self.act(self.bn1(self.conv1(x)))) + x)


class CNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.block1 = Residual(8)
        self.block2 = Residual(8)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.head = torch.nn.Linear(8, 5)

    def forward(self, x):
        return self.head(torch.flatten(self.pool(self.block2(self.block1(self.stem(x)))), 1))


class Attention(torch.nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads, self.d = heads, d
        self.q, self.k, self.v, self.o = (torch.nn.Linear(d, d) for _ in range(4))

    def forward(self, x):
        b, t, _ = x.shape
        split = lambda y: y.view(b, t, self.heads, self.d // self.heads).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        p = torch.softmax(q @ k.transpose(-1, -2) / (self.d // self.heads) ** 0.5, dim=-1)
        return self.o((p @ v).transpose(1, 2).reshape(b, t, self.d))


class EncoderLayer(torch.nn.Module):
    def __init__(self, d: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.ln1 = torch.nn.LayerNorm(d)
        self.attn = Attention(d, heads)
        self.ln2 = torch.nn.LayerNorm(d)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(d, 4 * d), torch.nn.GELU(), torch.nn.Linear(4 * d, d))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class Encoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Linear(8, 16)
        self.layers = torch.nn.Sequential(EncoderLayer(), EncoderLayer())
        self.norm = torch.nn.LayerNorm(16)

    def forward(self, x):
        return self.norm(self.layers(self.embed(x)))


MODELS = {
    "mlp": (
        lambda: torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)),
        (3, 10),
    ),
    "cnn-residual": (CNN, (2, 3, 8, 8)),
    "transformer-encoder": (Encoder, (2, 6, 8)),
}


@pytest.mark.parametrize("name", MODELS)
def test_each_module_output_equals_its_forward_hook(tmp_path, name):
    factory, shape = MODELS[name]
    torch.manual_seed(0)
    net = factory().eval()
    x = torch.randn(*shape)
    hooked: dict[str, np.ndarray] = {}

    def hook(path: str):
        def record(_module, _inputs, out) -> None:  # returns None: the output is not replaced
            hooked[path] = out.detach().numpy().copy()  # a module called twice: its last call ends last

        return record

    for path, module in net.named_modules():
        if path:
            module.register_forward_hook(hook(path))
    with torch.no_grad():
        net(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), str(tmp_path / "m.onnx"), dynamo=True, optimize=False)
    m = onnxscope.load(tmp_path / "m.onnx")
    cap = onnxscope.capture(m, {m.ir.graph.inputs[0].name: x.numpy()})
    checked = []
    for path, expected in hooked.items():
        nodes = m.module_nodes(path)
        if not nodes:
            continue
        last = nodes[-1].outputs[0].name
        np.testing.assert_allclose(
            cap[last], expected, atol=1e-5, rtol=1e-4, err_msg=f"module {path} ({last})"
        )
        checked.append(path)
    # every module of these models is visible in the export and checked
    assert sorted(checked) == sorted(hooked), set(hooked) - set(checked)
