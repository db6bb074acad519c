"""Comparing a float model with its QDQ-quantized version over a dataset: onnxscope.compare against the two plain
onnxruntime runs it replaces, side by side in one process.

Model: ResNet-50 from a ``transformers`` config (random weights, no download; ``--size`` sets the image side,
224 by default), exported by torch's dynamo exporter, and its ``quantize_static`` QDQ version (int8 weights, uint8
activations, 4 calibration images). For ``--inputs`` images (100 by default), in interleaved rounds (``--rounds``,
medians), single-threaded (``intra_op_num_threads=1``), each approach from scratch (sessions made inside the timing):

- ``plain ort``    two onnxruntime sessions at ORT_ENABLE_ALL (the fp32 and the QDQ model), each input run by both;
- ``compare``      ``onnxscope.compare(fp32, qdq, batches)``: both captured, every tensor aligned and compared
                   (reading the tensors fusions removed recomputes them), every metric, and each layer of the QDQ
                   model re-run on the float model's values (introduced error);
- ``compare -intro`` the same without the re-run (``introduced=False``);
- ``compare cheap`` ``recompute="cheap"``: only the tensors whose recomputation runs no Conv/MatMul (the float
                   outputs of Convs the QDQ model runs as int8 kernels are left out).

onnxscope pipelines the batches over two threads (both sides' runs of one batch while the re-runs and metrics of
the batch before are computed), so on a machine with two cores it uses both, while plain onnxruntime uses one: the
script prints CPU seconds beside wall seconds.

Target: ``compare`` ≤ 2.5 × ``plain ort``.
Run: ``python benchmarks/compare.py [--inputs 100] [--rounds 3] [--size 224]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings

import numpy as np


def build(folder: str, size: int) -> tuple[str, str]:
    import torch
    import transformers as T
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    torch.manual_seed(0)

    class LastHidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = T.ResNetModel(T.ResNetConfig())

        def forward(self, x):
            return self.inner(x).last_hidden_state

    fp32 = os.path.join(folder, "resnet50.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            LastHidden().eval(), (torch.randn(1, 3, size, size),), fp32, dynamo=True, input_names=["x"]
        )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.items = iter(
                [{"x": rng.standard_normal((1, 3, size, size)).astype(np.float32)} for _ in range(4)]
            )

        def get_next(self):
            return next(self.items, None)

    qdq = os.path.join(folder, "resnet50-qdq.onnx")
    quantize_static(
        fp32,
        qdq,
        Reader(),
        quant_format=QuantFormat.QDQ,
        weight_type=QuantType.QInt8,
        activation_type=QuantType.QUInt8,
        use_external_data_format=True,
    )
    return fp32, qdq


def plain(fp32: str, qdq: str, data: list[dict[str, np.ndarray]]) -> None:
    import onnxruntime as ort

    sessions = []
    for path in (fp32, qdq):
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        sessions.append(ort.InferenceSession(path, so, providers=["CPUExecutionProvider"]))
    for feeds in data:
        for s in sessions:
            s.run(None, feeds)


def ours(
    fp32: str, qdq: str, data: list[dict[str, np.ndarray]], introduced: bool, recompute: str = "all"
) -> object:
    import onnxscope

    return onnxscope.compare(
        onnxscope.Side(fp32, optimization="disable", threads=1),
        onnxscope.Side(qdq, threads=1),
        data,
        introduced=introduced,
        recompute=recompute,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", type=int, default=224, help="image side (224: ResNet-50's)")
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    data = [
        {"x": rng.standard_normal((1, 3, args.size, args.size)).astype(np.float32)}
        for _ in range(args.inputs)
    ]
    times: dict[str, list[float]] = {
        "plain ort": [],
        "compare": [],
        "compare -intro": [],
        "compare cheap": [],
    }
    cpu_times: dict[str, list[float]] = {k: [] for k in times}
    with tempfile.TemporaryDirectory() as folder:
        fp32, qdq = build(folder, args.size)
        result = None
        for _ in range(args.rounds):
            for name in times:
                t0, c0 = time.perf_counter(), time.process_time()
                if name == "plain ort":
                    plain(fp32, qdq, data)
                elif name == "compare cheap":
                    ours(fp32, qdq, data, introduced=True, recompute="cheap")
                else:
                    result = ours(fp32, qdq, data, introduced=name == "compare")
                times[name].append(time.perf_counter() - t0)
                cpu_times[name].append(time.process_time() - c0)
    med = {k: statistics.median(v) for k, v in times.items()}
    cpu = {k: statistics.median(v) for k, v in cpu_times.items()}
    base = med["plain ort"]
    print(
        f"ResNet-50 {args.size}x{args.size}, fp32 vs QDQ, {args.inputs} inputs, median of {args.rounds} "
        "interleaved rounds, 1 thread"
    )
    print(f"{'approach':<16}{'time (s)':>10}{'x plain':>9}{'ms/input':>10}{'CPU s':>9}")
    for k, t in med.items():
        print(f"{k:<16}{t:>10.2f}{t / base:>9.2f}{1e3 * t / args.inputs:>10.1f}{cpu[k]:>9.2f}")
    ratio = med["compare"] / base
    print(f"compare / plain = {ratio:.2f} (target <= 2.5: {'PASS' if ratio <= 2.5 else 'FAIL'})")
    if result is not None:
        print(result)
    print(f"CPU: {cpu_name()}")


def cpu_name() -> str:
    """The CPU's model name and its SIMD flags that matter for int8 kernels."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return "unknown"
    name = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    simd = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return f"{name} ({', '.join(simd)})"


if __name__ == "__main__":
    main()
