"""Models the comparison tests share, built on first use and kept for the session: a torch CNN (Conv, BatchNorm,
ReLU, residual Adds) and a 2-layer BERT (transformers config, random weights), exported by converters.from_torch
(BatchNorm not folded), then changed the ways users change models — onnxruntime's quantize_static (QDQ) and
quantize_dynamic (BERT after onnxruntime's quant_pre_process), onnxruntime's ALL-level optimizations saved to disk, onnxruntime's transformer optimizer, the fp16
converter, onnx's opset converter — and, to test alignment by structure alone, with every tensor renamed.

Only raw onnx, onnxruntime and torch build these; onnxscope only reads them."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

SMALL_BERT = {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 64}


def torch_cnn():
    import torch

    class Block(torch.nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.conv1, self.bn1 = torch.nn.Conv2d(c, c, 3, padding=1), torch.nn.BatchNorm2d(c)
            self.conv2, self.bn2 = torch.nn.Conv2d(c, c, 3, padding=1), torch.nn.BatchNorm2d(c)

        def forward(self, x):
            h = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(h)) + x)

    class CNN(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.bn = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8)
            self.block1, self.block2 = Block(8), Block(8)
            self.fc = torch.nn.Linear(8, 4)

        def forward(self, x):
            h = self.block2(self.block1(torch.relu(self.bn(self.stem(x)))))
            return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(h, 1), 1))

    torch.manual_seed(0)
    net = CNN().eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # statistics a trained net would have, so folding matters
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net, torch.randn(1, 3, 16, 16)


def torch_bert():
    import torch
    import transformers as T

    class LastHidden(torch.nn.Module):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x).last_hidden_state

    torch.manual_seed(0)
    net = LastHidden(T.BertModel(T.BertConfig(**SMALL_BERT, vocab_size=100))).eval()
    return net, torch.randint(0, 100, (1, 7))


def batches(name: str, n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """``n`` batches of inputs for model ``name`` (input ``x``)."""
    rng = np.random.default_rng(seed)
    if name == "cnn":
        return [{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(n)]
    return [{"x": rng.integers(0, 100, (1, 7)).astype(np.int64)} for _ in range(n)]


def scramble(src: Path, dst: Path) -> Path:
    """The model with every tensor but the inputs and outputs renamed ``t0, t1…`` (nodes keep their names)."""
    m = onnx.load(str(src))
    keep = {v.name for v in m.graph.input} | {v.name for v in m.graph.output}
    keep |= {i.name for i in m.graph.initializer}
    names: dict[str, str] = {}
    for node in m.graph.node:
        for i, out in enumerate(node.output):
            if out and out not in keep:
                names[out] = node.output[i] = f"t{len(names)}"
    for node in m.graph.node:
        for i, inp in enumerate(node.input):
            if inp in names:
                node.input[i] = names[inp]
    del m.graph.value_info[:]
    onnx.save(m, str(dst))
    return dst


def scale_initializer(src: Path, dst: Path, name: str, factor: float) -> Path:
    """The model with initializer ``name`` multiplied by ``factor``."""
    m = onnx.load(str(src))
    for init in m.graph.initializer:
        if init.name == name:
            a = numpy_helper.to_array(init)
            init.CopyFrom(numpy_helper.from_array((a * factor).astype(a.dtype), name))
            break
    else:
        raise KeyError(name)
    onnx.save(m, str(dst))
    return dst


class Zoo:
    """Model files in ``folder``, each made on first request."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.nets: dict[str, tuple] = {}

    def net(self, name: str):
        if name not in self.nets:
            self.nets[name] = torch_cnn() if name == "cnn" else torch_bert()
        return self.nets[name]

    def path(self, name: str, variant: str = "fp32") -> Path:
        p = self.folder / f"{name}_{variant}.onnx"
        if p.exists():
            return p
        logging.getLogger().setLevel(logging.ERROR)  # the quantizer's pre-processing advice
        src = self.path(name) if variant != "fp32" else None
        if variant == "fp32":
            import converters

            net, x = self.net(name)
            tmp = self.folder / f"{name}_export.onnx"
            converters.from_torch(net, (x,), tmp, input_names=["x"])
            onnx.save(
                onnx.load(str(tmp)), str(p)
            )  # weights inline: the QOperator/QDQ quantizers want them so
        elif variant in ("qdq", "dyn"):
            from onnxruntime.quantization import QuantType, quantize_dynamic

            if variant == "dyn":
                if (
                    name == "bert"
                ):  # the weights are Transposes of initializers: fold them first, as ORT advises
                    from onnxruntime.quantization.shape_inference import quant_pre_process

                    pre = self.folder / f"{name}_pre.onnx"
                    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
                    src = pre
                quantize_dynamic(str(src), str(p), weight_type=QuantType.QInt8)
            else:
                quantize_qdq(src, p, batches(name, 8, seed=1))
        elif variant == "all":
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            so.optimized_model_filepath = str(p)
            so.log_severity_level = 3
            ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
        elif variant == "transformers":
            from onnxruntime.transformers.optimizer import optimize_model

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                optimize_model(str(src), model_type="bert", num_heads=4, hidden_size=32).save_model_to_file(
                    str(p)
                )
        elif variant == "fp16":
            from onnxruntime.transformers.float16 import convert_float_to_float16

            onnx.save(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(p))
        elif variant == "opset21":
            from onnx import version_converter

            onnx.save(version_converter.convert_version(onnx.load(str(src)), 21), str(p))
        elif variant.endswith("-renamed"):
            scramble(self.path(name, variant.removesuffix("-renamed")), p)
        else:
            raise ValueError(variant)
        assert os.path.exists(p)
        return p


def conv_relu_pair(folder):
    """A float Conv→ReLU net and its QDQ version: the quantizer absorbs each ReLU into its QuantizeLinear's range,
    so the float output of each Conv lives inside an int8 kernel."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1),
        torch.nn.ReLU(),
    ).eval()
    fp32, qdq = folder / "f.onnx", folder / "q.onnx"
    torch.onnx.export(net, (torch.randn(1, 3, 8, 8),), str(fp32), dynamo=False, input_names=["x"])

    rng = np.random.default_rng(0)
    quantize_qdq(fp32, qdq, [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(4)])
    return fp32, qdq


def quantize_qdq(src, dst, calibration: list[dict[str, np.ndarray]]) -> None:
    """onnxruntime's ``quantize_static`` to QDQ (int8 weights, uint8 activations), calibrated on ``calibration``."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calibration)

        def get_next(self):
            return next(self.items, None)

    quantize_static(
        str(src),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QDQ,
        weight_type=QuantType.QInt8,
        activation_type=QuantType.QUInt8,
    )
