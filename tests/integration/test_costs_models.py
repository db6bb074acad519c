"""Acceptance: the per-layer profile of the real ResNet-50 (224×224) and BERT-base (128 tokens), exported by torch
from transformers configs with random weights, against closed-form MAC counts written here and torch's own
parameter counts (which are the published 25,557,032 and 109,482,240)."""

from __future__ import annotations

import warnings
from collections import defaultdict

import pytest

import onnxscope
from onnxscope.audit import model_card
from onnxscope.costs import profile

torch = pytest.importorskip("torch")
T = pytest.importorskip("transformers")


class Wrap(torch.nn.Module):
    def __init__(self, inner, pick) -> None:
        super().__init__()
        self.inner, self.pick = inner, pick

    def forward(self, x):
        return self.pick(self.inner(x))


def _export(net, x, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), str(path), dynamo=True, optimize=False, input_names=["x"])
    return onnxscope.load(path)


@pytest.fixture(scope="module")
def resnet50(tmp_path_factory):
    torch.manual_seed(0)
    net = T.ResNetForImageClassification(T.ResNetConfig(num_labels=1000)).eval()
    m = _export(
        Wrap(net, lambda o: o.logits), torch.randn(1, 3, 224, 224), tmp_path_factory.mktemp("r") / "r.onnx"
    )
    return net, m


@pytest.fixture(scope="module")
def bert_base(tmp_path_factory):
    torch.manual_seed(0)
    net = T.BertModel(T.BertConfig()).eval()
    pick = lambda o: (o.last_hidden_state, o.pooler_output)  # noqa: E731 - both outputs: every weight is used
    m = _export(Wrap(net, pick), torch.randint(0, 1000, (1, 128)), tmp_path_factory.mktemp("b") / "b.onnx")
    return net, m


def _by_module(prof):
    macs, params, buffers = defaultdict(int), defaultdict(int), defaultdict(int)
    for r in prof.layers:
        key = (r.module or "").removeprefix("inner.")
        macs[key] += r.macs or 0
        params[key] += r.params
        buffers[key] += r.buffers
    return macs, params, buffers


def resnet50_closed_form() -> dict[str, int]:
    """MACs of every convolution and the classifier of ResNet-50 v1.5 (stride on the 3×3 conv) at 224×224."""
    out = {"resnet.embedder.embedder.convolution": 64 * 3 * 7 * 7 * 112 * 112}
    widths, depths = (256, 512, 1024, 2048), (3, 4, 6, 3)
    channels, size = 64, 56  # after the stem's max-pool
    for s, (width, depth) in enumerate(zip(widths, depths, strict=True)):
        mid = width // 4
        for layer in range(depth):
            stride = 2 if (s > 0 and layer == 0) else 1
            out_size = size // stride
            base = f"resnet.encoder.stages.{s}.layers.{layer}"
            out[f"{base}.layer.0.convolution"] = mid * channels * size * size
            out[f"{base}.layer.1.convolution"] = mid * mid * 9 * out_size * out_size
            out[f"{base}.layer.2.convolution"] = width * mid * out_size * out_size
            if channels != width or stride != 1:
                out[f"{base}.shortcut.convolution"] = width * channels * out_size * out_size
            channels, size = width, out_size
    out["classifier.1"] = 2048 * 1000
    return out


def bert_base_closed_form(s: int = 128, d: int = 768, ff: int = 3072, layers: int = 12) -> dict[str, int]:
    """MACs of every projection and of each attention core (Q·Kᵀ and P·V over all heads) of BERT-base."""
    out = {}
    for i in range(layers):
        base = f"encoder.layer.{i}"
        for proj in ("query", "key", "value"):
            out[f"{base}.attention.self.{proj}"] = s * d * d
        out[f"{base}.attention.self"] = 2 * s * s * d
        out[f"{base}.attention.output.dense"] = s * d * d
        out[f"{base}.intermediate.dense"] = s * d * ff
        out[f"{base}.output.dense"] = s * ff * d
    out["pooler.dense"] = d * d  # the first token only
    return out


@pytest.mark.parametrize(
    ("name", "closed"), [("resnet50", resnet50_closed_form), ("bert_base", bert_base_closed_form)]
)
def test_per_layer_macs_equal_the_closed_form_within_one_percent(request, name, closed):
    _, m = request.getfixturevalue(name)
    prof = profile(m)
    macs, _, _ = _by_module(prof)
    want = closed()
    for module, expected in want.items():
        assert macs[module] == pytest.approx(expected, rel=0.01), module
    # nothing else computes products: the closed forms cover every MAC of the model
    assert prof.macs == pytest.approx(sum(want.values()), rel=0.01)
    assert not prof.unknown


@pytest.mark.parametrize(("name", "published"), [("resnet50", 25_557_032), ("bert_base", 109_482_240)])
def test_parameters_equal_torch_per_layer_and_the_model_card(request, name, published):
    net, m = request.getfixturevalue(name)
    prof = profile(m)
    assert prof.params == sum(p.numel() for p in net.parameters()) == published
    assert model_card(m, prof)["parameters"] == published
    _, params, buffers = _by_module(prof)
    for path, module in net.named_modules():
        own = sum(p.numel() for p in module.parameters(recurse=False))
        if own:
            assert params[path] == own, path
        stats = sum(b.numel() for k, b in module.named_buffers(recurse=False) if k.startswith("running_"))
        if stats:
            assert buffers[path] == stats, path
