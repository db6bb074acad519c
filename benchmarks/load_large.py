"""Opening a large model: ``onnx.load`` versus ``onnxscope.load`` + reading one big weight.

Builds a model of ``--gb`` GB (default 1.5) whose weights live in one external-data file, then measures, each in a
fresh subprocess so that peak RSS is its own:

- ``onnx.load(path)``: the usual way (reads every weight into memory);
- ``onnxscope.load(path)`` then reading one ≥ 200 MB weight completely (``.numpy()`` memory-maps it; summing it
  touches every page);
- the interpreter with the same imports and nothing loaded (the RSS floor).

Times exclude interpreter start-up and imports. Run:  ``python benchmarks/load_large.py [--gb 1.5] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper

CHILD = r"""
import json, sys, time
mode, path, name = sys.argv[1:4]
import numpy as np, onnx, onnx_ir, onnxscope
t0 = time.perf_counter()
if mode == "onnx.load":
    m = onnx.load(path)
    touched = len(m.graph.initializer)
elif mode == "onnxscope":
    m = onnxscope.load(path)
    w = m.weights[name].numpy()
    touched = float(w.sum(dtype=np.float64))  # reads every byte of the tensor
else:
    touched = 0
dt = time.perf_counter() - t0
# VmHWM is this process image's own peak (ru_maxrss would carry the parent's size across fork + exec)
hwm = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"seconds": dt, "peak_rss": hwm}))
"""


def build(folder: str, gb: float, n_tensors: int) -> tuple[str, str, int]:
    side = int((gb * 1e9 / n_tensors / 4) ** 0.5)
    data_name = "big.onnx.data"
    inits, nodes, offset = [], [], 0
    with open(os.path.join(folder, data_name), "wb") as f:
        for i in range(n_tensors):
            block = np.full((side, side), 0.001 * (i + 1), dtype=np.float32)
            block[:, 0] = np.arange(side, dtype=np.float32)
            raw = block.tobytes()
            f.write(raw)
            t = TensorProto(name=f"w{i}", data_type=TensorProto.FLOAT, dims=[side, side])
            t.data_location = TensorProto.EXTERNAL
            for k, v in (("location", data_name), ("offset", str(offset)), ("length", str(len(raw)))):
                t.external_data.add(key=k, value=v)
            inits.append(t)
            offset += len(raw)
            nodes.append(
                helper.make_node("MatMul", [f"h{i}" if i else "x", f"w{i}"], [f"h{i + 1}"], name=f"mm{i}")
            )
    graph = helper.make_graph(
        nodes,
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, side])],
        [helper.make_tensor_value_info(f"h{n_tensors}", TensorProto.FLOAT, [1, side])],
        initializer=inits,
    )
    path = os.path.join(folder, "big.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path, f"w{n_tensors // 2}", side * side * 4


def measure(mode: str, path: str, name: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, path, name], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=1.5, help="total weight size in GB (default 1.5)")
    ap.add_argument("--tensors", type=int, default=7, help="number of weights (default 7 → ~214 MB each)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per approach; the median is reported")
    ap.add_argument("--dir", help="where to build the model (default: a temporary folder, removed after)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        path, name, nbytes = build(folder, args.gb, args.tensors)
        total = os.path.getsize(os.path.join(folder, "big.onnx.data"))
        print(
            f"model: {total / 1e9:.2f} GB in {args.tensors} weights; reading {name} ({nbytes / 1e6:.0f} MB)"
        )
        runs: dict[str, list[dict[str, float]]] = {"floor": [], "onnx.load": [], "onnxscope": []}
        for _ in range(args.repeat):  # interleaved so that machine noise hits both alike
            for mode in runs:
                runs[mode].append(measure(mode, path, name))
    med = {
        m: {k: statistics.median(r[k] for r in rs) for k in ("seconds", "peak_rss")} for m, rs in runs.items()
    }
    mb = 1024 * 1024
    print(f"{'approach':<32}{'time (s)':>10}{'peak RSS (MB)':>16}")
    print(f"{'imports only (floor)':<32}{'-':>10}{med['floor']['peak_rss'] / mb:>16.0f}")
    print(f"{'onnx.load':<32}{med['onnx.load']['seconds']:>10.3f}{med['onnx.load']['peak_rss'] / mb:>16.0f}")
    print(
        f"{'onnxscope.load + read 1 weight':<32}{med['onnxscope']['seconds']:>10.3f}"
        f"{med['onnxscope']['peak_rss'] / mb:>16.0f}"
    )
    ratio = med["onnxscope"]["seconds"] / med["onnx.load"]["seconds"]
    over = (med["onnxscope"]["peak_rss"] - nbytes) / mb
    print(
        f"time ratio onnxscope/onnx.load: {ratio:.3f}  (target <= 0.100: {'PASS' if ratio <= 0.1 else 'FAIL'})"
    )
    print(
        f"peak RSS minus tensor size: {over:.0f} MB  (target <= 150 MB: {'PASS' if over <= 150 else 'FAIL'})"
    )


if __name__ == "__main__":
    main()
