"""Fused attention that ships in the model: onnxruntime's transformer optimizer turns a BERT and a GPT-2 export into
``com.microsoft`` ``Attention`` / ``MultiHeadAttention`` nodes, which never expose their probabilities; capture
rebuilds them on read from the fused node's captured inputs. Oracle: the same export before fusion, whose
Softmax outputs are captured directly — for every layer and head.

The models are BERT-base and GPT-2 (124M) sized (hidden 768, 12 heads; 2 layers to keep the test short), written
the way transformers 4.x wrote them (HF ``Conv1D`` for GPT-2, the additive -10000 padding mask for BERT) and
exported by torch's TorchScript exporter: the optimizer's fusion patterns match those exports, not the ones
transformers 5 produces.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import onnxscope

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
from onnxruntime.transformers.fusion_options import FusionOptions  # noqa: E402
from onnxruntime.transformers.optimizer import optimize_model  # noqa: E402

H, NH, LAYERS, T = 768, 12, 2, 24


class Conv1D(torch.nn.Module):
    def __init__(self, nx: int, nf: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.bias = torch.nn.Parameter(torch.randn(nf) * 0.02)
        self.nf = nf

    def forward(self, x):
        size = x.size()[:-1] + (self.nf,)
        return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(size)


class GPT2Attention(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c_attn, self.c_proj = Conv1D(H, 3 * H), Conv1D(H, H)
        self.register_buffer("bias", torch.tril(torch.ones(64, 64, dtype=torch.uint8)).view(1, 1, 64, 64))
        self.register_buffer("masked_bias", torch.tensor(-1e4))

    def heads(self, x, k=False):
        x = x.view(*(x.size()[:-1] + (NH, x.size(-1) // NH)))
        return x.permute(0, 2, 3, 1) if k else x.permute(0, 2, 1, 3)

    def forward(self, x):
        q, k, v = self.c_attn(x).split(H, dim=2)
        q, k, v = self.heads(q), self.heads(k, True), self.heads(v)
        w = torch.matmul(q, k) / (float(v.size(-1)) ** 0.5)
        nd, ns = w.size(-2), w.size(-1)
        w = torch.where(self.bias[:, :, ns - nd : ns, :ns].bool(), w, self.masked_bias.to(w.dtype))
        a = torch.matmul(torch.softmax(w, dim=-1), v).permute(0, 2, 1, 3).contiguous()
        return self.c_proj(a.view(*(a.size()[:-2] + (a.size(-2) * a.size(-1),))))


class GPT2Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln_1, self.attn, self.ln_2 = torch.nn.LayerNorm(H), GPT2Attention(), torch.nn.LayerNorm(H)
        self.fc, self.proj = Conv1D(H, 4 * H), Conv1D(4 * H, H)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.proj(torch.nn.functional.gelu(self.fc(self.ln_2(x))))


class GPT2(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wte, self.wpe = torch.nn.Embedding(1000, H), torch.nn.Embedding(64, H)
        self.h = torch.nn.ModuleList([GPT2Block() for _ in range(LAYERS)])
        self.ln_f = torch.nn.LayerNorm(H)

    def forward(self, input_ids):
        x = self.wte(input_ids) + self.wpe(torch.arange(0, input_ids.size(-1), dtype=torch.long).unsqueeze(0))
        for block in self.h:
            x = block(x)
        return self.ln_f(x)


class BertLayer(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (torch.nn.Linear(H, H) for _ in range(4))
        self.ln1, self.ln2 = torch.nn.LayerNorm(H), torch.nn.LayerNorm(H)
        self.f1, self.f2 = torch.nn.Linear(H, 4 * H), torch.nn.Linear(4 * H, H)

    def heads(self, x):
        b, t, _ = x.size()
        return x.view(b, t, NH, H // NH).permute(0, 2, 1, 3)

    def forward(self, x, mask):
        q, k, v = self.heads(self.q(x)), self.heads(self.k(x)), self.heads(self.v(x))
        p = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(H // NH) + mask, dim=-1)
        c = torch.matmul(p, v).permute(0, 2, 1, 3).contiguous()
        b, t = c.size()[:2]
        h = self.ln1(self.o(c.view(b, t, H)) + x)
        return self.ln2(self.f2(torch.nn.functional.gelu(self.f1(h))) + h)


class Bert(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb, self.ln = torch.nn.Embedding(1000, H), torch.nn.LayerNorm(H)
        self.layers = torch.nn.ModuleList([BertLayer() for _ in range(LAYERS)])

    def forward(self, input_ids, attention_mask):
        mask = (1.0 - attention_mask[:, None, None, :].float()) * -10000.0
        x = self.ln(self.emb(input_ids))
        for layer in self.layers:
            x = layer(x, mask)
        return x


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fused")
    torch.manual_seed(0)
    out = {}
    ids = torch.randint(0, 1000, (2, T))
    mask = torch.ones(2, T, dtype=torch.int64)
    for name, net, args, names in (
        ("bert", Bert().eval(), (ids, mask), ["input_ids", "attention_mask"]),
        ("gpt2", GPT2().eval(), (ids,), ["input_ids"]),
    ):
        plain = folder / f"{name}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                net,
                args,
                str(plain),
                dynamo=False,
                input_names=names,
                opset_version=14,
                dynamic_axes={n: {0: "batch", 1: "seq"} for n in names},
            )
        variants = [("attention", None)]
        if name == "bert":
            mha = FusionOptions("bert")
            mha.use_multi_head_attention = True
            variants.append(("mha", mha))
        for tag, options in variants:
            fused = optimize_model(
                str(plain),
                model_type=name,
                num_heads=NH,
                hidden_size=H,
                opt_level=0,
                optimization_options=options,
            )
            path = folder / f"{name}-{tag}.onnx"
            fused.save_model_to_file(str(path))
            out[f"{name}-{tag}"] = (plain, path)
    return out


@pytest.mark.parametrize(
    "name, op",
    [("bert-attention", "Attention"), ("bert-mha", "MultiHeadAttention"), ("gpt2-attention", "Attention")],
)
def test_fused_attention_maps_equal_the_unfused_export_for_every_layer_and_head(exports, name, op):
    plain, fused = exports[name]
    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(0, 1000, (2, T)).astype(np.int64)}
    if name.startswith("bert"):
        mask = np.ones((2, T), np.int64)
        mask[1, 17:] = 0  # the second sequence is padded
        feeds["attention_mask"] = mask
    reference, cap = onnxscope.capture(plain, feeds), onnxscope.capture(fused, feeds)
    unfused, blocks = onnxscope.find_attention(reference.model), onnxscope.find_attention(cap.model)
    assert [b.op for b in blocks] == [f"com.microsoft::{op}"] * LAYERS  # the optimizer did fuse them
    assert [b.heads for b in blocks] == [NH] * LAYERS and all(
        b.causal == name.startswith("gpt2") for b in blocks
    )
    for u, f in zip(unfused, blocks, strict=True):
        expected, got = reference.attention(u), cap.attention(f)
        assert got.shape == expected.shape == (2, NH, T, T)
        assert cap.info(f.probabilities).source == "recomputed"
        np.testing.assert_allclose(got, expected, atol=2e-6, err_msg=f.name)  # fused kernels' float tolerance
