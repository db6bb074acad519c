"""Residuals and attention on reference architectures built from transformers configs (random weights, no
download), exported by torch; attention maps against the framework's own attention probabilities."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import onnxscope
from onnxscope.patterns import find_attention, find_residuals

torch = pytest.importorskip("torch")
T = pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")

SMALL = {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 64}


class LastHidden(torch.nn.Module):
    def __init__(self, inner, **kwargs) -> None:
        super().__init__()
        self.inner, self.kwargs = inner, kwargs

    def forward(self, x):
        return self.inner(x, **self.kwargs).last_hidden_state


def _build(name: str, attn: str = "sdpa"):
    torch.manual_seed(0)
    if name == "resnet50":  # ResNet-50's layout (3, 4, 6, 3 bottlenecks) with narrow channels
        cfg = T.ResNetConfig(embedding_size=8, hidden_sizes=[16, 32, 64, 128], depths=[3, 4, 6, 3])
        return LastHidden(T.ResNetModel(cfg)).eval(), torch.randn(1, 3, 64, 64)
    if name == "bert":
        cfg = T.BertConfig(**SMALL, vocab_size=100, attn_implementation=attn)
        return LastHidden(T.BertModel(cfg)).eval(), torch.randint(0, 100, (1, 7))
    if name == "gpt2":
        cfg = T.GPT2Config(
            n_layer=2, n_embd=32, n_head=4, vocab_size=100, use_cache=False, attn_implementation=attn
        )
        return LastHidden(T.GPT2Model(cfg), use_cache=False).eval(), torch.randint(0, 100, (1, 7))
    cfg = T.ViTConfig(**SMALL, image_size=32, patch_size=8, attn_implementation=attn)
    return LastHidden(T.ViTModel(cfg)).eval(), torch.randn(1, 3, 32, 32)


def _export(net, x, path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), str(path), input_names=["x"], **kw)
    return onnxscope.load(path)


@pytest.mark.parametrize("exporter", [{"dynamo": True}, {"dynamo": False}], ids=["dynamo", "torchscript"])
def test_resnet50_has_16_residual_blocks_4_with_projection(tmp_path, exporter):
    net, x = _build("resnet50")
    m = _export(net, x, tmp_path / "resnet.onnx", **exporter)
    found = find_residuals(m)
    assert len(found) == 16
    assert sum(r.projection for r in found) == 4
    assert all(r.kind == "residual" for r in found)
    assert find_attention(m) == []


@pytest.mark.parametrize("opset", [18, 23])
@pytest.mark.parametrize("name", ["bert", "gpt2", "vit"])
def test_transformers_have_one_attention_block_and_two_residuals_per_layer(tmp_path, name, opset):
    net, x = _build(name)
    m = _export(net, x, tmp_path / f"{name}.onnx", dynamo=True, opset_version=opset)
    blocks = find_attention(m)
    assert len(blocks) == 2, blocks
    assert {b.heads for b in blocks} == {4}
    assert {b.causal for b in blocks} == {name == "gpt2"}
    assert {b.fused for b in blocks} == {opset >= 23}
    assert len(find_residuals(m)) == 4
    assert all(b.w_o is not None for b in blocks)
    if opset < 23:
        assert all(b.w_q and b.w_k and b.w_v for b in blocks)


@pytest.mark.parametrize("name", ["bert", "gpt2", "vit"])
def test_attention_maps_equal_output_attentions(tmp_path, name):
    net, x = _build(name, attn="eager")
    with torch.no_grad():
        kwargs = {"use_cache": False} if name == "gpt2" else {}
        expected = [a.numpy() for a in net.inner(x, output_attentions=True, **kwargs).attentions]
    m = _export(net, x, tmp_path / f"{name}.onnx", dynamo=True)
    cap = onnxscope.capture(m, {"x": x.numpy()})
    blocks = find_attention(m)
    assert len(blocks) == len(expected)
    for block, want in zip(blocks, expected, strict=True):
        np.testing.assert_allclose(cap.attention(block), want, atol=1e-5)


def test_fused_attention_maps_equal_torch(tmp_path):
    class SDPA(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv, self.o = torch.nn.Linear(16, 48), torch.nn.Linear(16, 16)

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = self.qkv(x).view(b, t, 3, 4, 4).permute(2, 0, 3, 1, 4)
            y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.o(y.transpose(1, 2).reshape(b, t, 16))

    torch.manual_seed(0)
    net, x = SDPA().eval(), torch.randn(2, 5, 16)
    m = _export(net, x, tmp_path / "sdpa.onnx", dynamo=True, opset_version=23)
    (block,) = find_attention(m)
    assert block.fused and block.heads == 4 and block.causal
    with torch.no_grad():
        q, k, v = net.qkv(x).view(2, 5, 3, 4, 4).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / 2 + torch.triu(torch.full((5, 5), float("-inf")), 1)
        want = torch.softmax(scores, -1).numpy()
    cap = onnxscope.capture(m, {"x": x.numpy()})
    np.testing.assert_allclose(cap.attention(block), want, atol=1e-5)
    np.testing.assert_allclose(cap.outputs[m.ir.graph.outputs[0].name], net(x).detach().numpy(), atol=1e-5)


def test_torch_multihead_attention_maps(tmp_path):
    class MHA(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = torch.nn.MultiheadAttention(16, 4, batch_first=True)

        def forward(self, x):
            return self.attn(x, x, x, need_weights=True, average_attn_weights=False)

    torch.manual_seed(0)
    net, x = MHA().eval(), torch.randn(2, 6, 16)
    with torch.no_grad():
        _, weights = net(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), str(tmp_path / "mha.onnx"), dynamo=True, input_names=["x"])
    m = onnxscope.load(tmp_path / "mha.onnx")
    (block,) = find_attention(m)
    assert block.heads == 4
    cap = onnxscope.capture(m, {"x": x.numpy()})
    np.testing.assert_allclose(cap.attention(block), weights.numpy(), atol=1e-5)
