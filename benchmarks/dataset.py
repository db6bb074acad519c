"""Dataset capture memory: peak RSS of a 1,000-batch run against a 10-batch run (it must not grow with batches).

Each run is a fresh process that captures every tensor of a small CNN (Conv → BatchNorm → ReLU → residual →
Linear, 3×32×32 inputs, batch 8) into a Zarr store with statistics, generating batches on the fly. Printed side by
side: plain onnxruntime over the same batches (no capture) for reference.

Run: ``python benchmarks/dataset.py [--batches 10 1000]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, time, numpy as np
import onnxscope, onnxscope.dataset, zarr  # the same imports in every run: the baseline differs only in capture
mode, model, out, n, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
def batches():
    rng = np.random.default_rng(0)
    for _ in range(n):
        yield {"x": rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)}
t0 = time.perf_counter()
if mode == "onnxscope":
    from onnxscope.dataset import capture_dataset
    store = capture_dataset(model, batches(), out=out, progress=False, threads=1)
    assert store.batches == n
    captured = sum(store.array(k)[:batch].nbytes for k in store)  # one batch's captured tensors (first chunk)
else:
    import onnxruntime as ort
    so = ort.SessionOptions(); so.intra_op_num_threads = 1
    s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    for b in batches():
        s.run(None, b)
hwm = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"seconds": time.perf_counter() - t0, "peak_rss": hwm,
                  "captured": captured if mode == "onnxscope" else 0}))
"""


def build(path: str) -> None:
    import numpy as np
    import onnx
    from onnx import numpy_helper

    rng = np.random.default_rng(0)
    proto = onnx.parser.parse_model("""<ir_version: 9, opset_import: ["": 17]>
        g (float[B, 3, 32, 32] x) => (float[B, 10] y) {
            c1 = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
            n1 = BatchNormalization(c1, s, bb, mu, var)
            r1 = Relu(n1)
            c2 = Conv <pads = [1, 1, 1, 1]> (r1, w2, b2)
            a = Add(c2, r1)
            r2 = Relu(a)
            p = GlobalAveragePool(r2)
            f = Flatten(p)
            y = Gemm <transB = 1> (f, wf, bf)
        }""")
    inits = {
        "w1": (16, 3, 3, 3),
        "b1": (16,),
        "s": (16,),
        "bb": (16,),
        "mu": (16,),
        "w2": (16, 16, 3, 3),
        "b2": (16,),
        "wf": (10, 16),
        "bf": (10,),
    }
    for k, shape in inits.items():
        proto.graph.initializer.append(
            numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), k)
        )
    proto.graph.initializer.append(numpy_helper.from_array(np.ones(16, np.float32), "var"))
    onnx.save(proto, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[10, 1000])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument(
        "--one-batch-size", type=int, default=256, help="batch size of the one-batch memory check"
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        model = os.path.join(folder, "cnn.onnx")
        build(model)
        print(f"{'run':<28}{'batches':>8}{'seconds':>10}{'peak RSS (MB)':>15}")
        peaks = {}
        for n in args.batches:
            for mode in ("ort", "onnxscope"):
                out = os.path.join(folder, f"{mode}-{n}.zarr")
                r = subprocess.run(
                    [sys.executable, "-c", CHILD, mode, model, out, str(n), str(args.batch_size)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                d = json.loads(r.stdout.strip().splitlines()[-1])
                peaks[(mode, n)] = d["peak_rss"]
                label = "plain onnxruntime" if mode == "ort" else "onnxscope capture_dataset"
                print(f"{label:<28}{n:>8}{d['seconds']:>10.2f}{d['peak_rss'] / 2**20:>15.0f}")
        lo, hi = min(args.batches), max(args.batches)
        growth = peaks[("onnxscope", hi)] / peaks[("onnxscope", lo)] - 1
        verdict = "PASS" if abs(growth) <= 0.05 else "FAIL"
        print(f"peak RSS, {hi} batches vs {lo}: {growth:+.1%} (target within 5%: {verdict})")
        # one big batch: peak RSS against plain onnxruntime's + 1.2 x the bytes captured
        size = args.one_batch_size
        res = {}
        for mode in ("ort", "onnxscope"):
            out = os.path.join(folder, f"one-{mode}.zarr")
            r = subprocess.run(
                [sys.executable, "-c", CHILD, mode, model, out, "1", str(size)],
                capture_output=True,
                text=True,
                check=True,
            )
            res[mode] = json.loads(r.stdout.strip().splitlines()[-1])
        limit = res["ort"]["peak_rss"] + 1.2 * res["onnxscope"]["captured"]
        ok = "PASS" if res["onnxscope"]["peak_rss"] <= limit else "FAIL"
        mb = 2**20
        print(
            f"one batch of {size}: plain onnxruntime {res['ort']['peak_rss'] / mb:.0f} MB, captured "
            f"{res['onnxscope']['captured'] / mb:.0f} MB, onnxscope {res['onnxscope']['peak_rss'] / mb:.0f} MB "
            f"(limit: plain + 1.2 x captured = {limit / mb:.0f} MB: {ok})"
        )


if __name__ == "__main__":
    main()
