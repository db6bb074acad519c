"""Capture-all speed and memory: onnxscope versus plain onnxruntime, the naive mark-all approach, torch hooks.

Models are built from ``transformers`` configs with random weights (no download): ResNet-50, BERT-base, GPT-2
(124M) and ViT-base, exported with torch's dynamo exporter. For each model, in one process and interleaved over
``--rounds`` rounds (medians reported), single-threaded (``intra_op_num_threads=1``, ``torch.set_num_threads(1)``):

- ``ort``            plain onnxruntime, default optimization level (ALL) — the baseline of every ratio;
- ``ort-basic``      plain onnxruntime at ORT_ENABLE_BASIC;
- ``onnxscope``      ``CaptureSession(model).run(inputs)``: every tensor, as a ``Capture``;
- ``naive mark-all`` what Polygraphy's ``--onnx-outputs mark all`` does: ``onnx.load`` (weights into memory),
                     every node output appended as a graph output, onnxruntime at its default level;
- ``torch hooks``    the torch model with a forward hook on every module keeping its output (torchlens-style).

Also ``resnet50-qdq`` (ResNet-50 quantized by onnxruntime's ``quantize_static``, QDQ; target 1.5×) and
``synthetic100k`` (100,000 small nodes, where per-output costs dominate; target 4×).

Peak RSS (VmHWM) is measured for each approach in a fresh subprocess (load + one run).
Run: ``python benchmarks/capture.py [--models resnet50 bert gpt2 vit] [--rounds 7]`` (needs the [dev,bench] extras).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable

import numpy as np

MODELS = ("resnet50", "bert", "gpt2", "vit", "resnet50-qdq", "synthetic100k")


def build_torch(name: str):
    import torch
    import transformers as T

    torch.manual_seed(0)
    if name == "resnet50":
        inner, x = T.ResNetModel(T.ResNetConfig()), torch.randn(1, 3, 224, 224)
    elif name == "bert":
        inner, x = T.BertModel(T.BertConfig()), torch.randint(0, 1000, (1, 128))
    elif name == "gpt2":
        inner, x = T.GPT2Model(T.GPT2Config(use_cache=False)), torch.randint(0, 1000, (1, 128))
    elif name == "vit":
        inner, x = T.ViTModel(T.ViTConfig()), torch.randn(1, 3, 224, 224)
    else:
        raise SystemExit(f"unknown model {name!r}; choose from {', '.join(MODELS)}")

    class LastHidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x):
            kwargs = {"use_cache": False} if name == "gpt2" else {}
            return self.inner(x, **kwargs).last_hidden_state

    return LastHidden().eval(), x


def export(name: str, folder: str) -> str:
    import torch

    if name.endswith("-qdq"):
        return quantize(name, folder)
    if name == "synthetic100k":  # 100,000 small nodes (benchmarks/patterns.py's transformer-like graph)
        import onnx_ir as ir
        from patterns import build

        path = os.path.join(folder, f"{name}.onnx")
        ir.save(build(6250), path)
        np.save(
            os.path.join(folder, f"{name}.x.npy"),
            np.random.default_rng(0).standard_normal((1, 4, 8)).astype(np.float32),
        )
        return path
    net, x = build_torch(name)
    path = os.path.join(folder, f"{name}.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), path, dynamo=True, optimize=False, input_names=["x"])
    np.save(os.path.join(folder, f"{name}.x.npy"), x.numpy())
    return path


def quantize(name: str, folder: str) -> str:
    """The float model quantized by onnxruntime's ``quantize_static`` (QDQ, int8 weights, uint8 activations)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    base = name.removesuffix("-qdq")
    src = os.path.join(folder, f"{base}.onnx")
    if not os.path.exists(src):
        export(base, folder)
    x = np.load(os.path.join(folder, f"{base}.x.npy"))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.items = iter([{"x": rng.standard_normal(x.shape).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.items, None)

    path = os.path.join(folder, f"{name}.onnx")
    quantize_static(
        src,
        path,
        Reader(),
        quant_format=QuantFormat.QDQ,
        weight_type=QuantType.QInt8,
        activation_type=QuantType.QUInt8,
        use_external_data_format=True,
    )
    np.save(os.path.join(folder, f"{name}.x.npy"), x)
    return path


def _ort_session(model: bytes | str, level: str, folder: str):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    so.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    }[level]
    so.add_session_config_entry("session.model_external_initializers_file_folder_path", folder)
    so.log_severity_level = 3
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def naive_mark_all(path: str) -> bytes:
    """Polygraphy-style: load every weight, append every node output as an untyped graph output."""
    import onnx

    proto = onnx.load(path)
    known = {o.name for o in proto.graph.output}
    for node in proto.graph.node:
        for out in node.output:
            if out and out not in known:
                proto.graph.output.append(onnx.ValueInfoProto(name=out))
                known.add(out)
    return proto.SerializeToString()


APPROACHES = ("ort", "ort-basic", "onnxscope", "naive mark-all", "torch hooks")


def make_runner(name: str, folder: str, approach: str) -> Callable[[], object] | None:
    """One approach as a zero-argument callable doing one full inference (its setup done here)."""
    path = os.path.join(folder, f"{name}.onnx")
    x = np.load(os.path.join(folder, f"{name}.x.npy"))
    feeds = {"x": x}
    if approach in ("ort", "ort-basic"):
        sess = _ort_session(path, "all" if approach == "ort" else "basic", folder)
        return lambda: sess.run(None, feeds)
    if approach == "onnxscope":
        import onnxscope

        scope = onnxscope.CaptureSession(path, threads=1)
        return lambda: scope.run(feeds)
    if approach == "naive mark-all":
        naive = _ort_session(naive_mark_all(path), "all", folder)
        names = [o.name for o in naive.get_outputs()]
        return lambda: naive.run(names, feeds)
    if name.endswith("-qdq") or name == "synthetic100k":
        return None  # no torch counterpart of these graphs
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    net, _ = build_torch(name)
    kept: dict[str, object] = {}

    def hook(mod_path: str):
        def keep(_m, _i, output) -> None:
            kept[mod_path] = output.detach().clone() if isinstance(output, torch.Tensor) else output

        return keep

    for mod_path, module in net.named_modules():
        module.register_forward_hook(hook(mod_path))
    tx = torch.from_numpy(x)

    def torch_hooks() -> object:
        kept.clear()
        with torch.no_grad():
            return net(tx)

    return torch_hooks


def time_model(name: str, folder: str, rounds: int) -> dict[str, float]:
    run = {a: f for a in APPROACHES if (f := make_runner(name, folder, a)) is not None}
    for f in run.values():  # warm-up
        f()
    times: dict[str, list[float]] = {k: [] for k in run}
    for _ in range(rounds):  # interleaved so that machine noise hits every approach alike
        for k, f in run.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def peak_rss(name: str, folder: str, approach: str) -> float:
    here = os.path.dirname(os.path.abspath(__file__))
    code = (
        f"import sys, json; sys.path.insert(0, {here!r}); import capture as b; "
        f"b.make_runner({name!r}, {folder!r}, {approach!r})(); "
        "print(json.dumps(next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmHWM:'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1]) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--no-rss", action="store_true", help="skip the per-approach peak RSS subprocesses")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            export(name, folder)
            med = time_model(name, folder, args.rounds)
            base = med["ort"]
            print(f"\n{name}  (median of {args.rounds} interleaved rounds, 1 thread)")
            print(f"{'approach':<16}{'time (ms)':>11}{'x ort':>8}{'peak RSS (MB)':>15}")
            for k, t in med.items():
                rss = "-" if args.no_rss else f"{peak_rss(name, folder, k):.0f}"
                print(f"{k:<16}{t * 1e3:>11.1f}{t / base:>8.2f}{rss:>15}")
            target = 1.5 if name.endswith("-qdq") else (4.0 if name == "synthetic100k" else 1.10)
            verdict = "PASS" if med["onnxscope"] / base <= target else "FAIL"
            ratio = med["onnxscope"] / base
            print(
                f"onnxscope capture-all / plain onnxruntime = {ratio:.3f} (target <= {target:.2f}: {verdict})"
            )


if __name__ == "__main__":
    main()
