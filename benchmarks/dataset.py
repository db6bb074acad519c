"""Dataset capture: throughput against plain onnxruntime and against the I/O limit, scale-out on a local Dask
cluster, and memory that stays flat with the number of batches.

Printed side by side, each run a fresh process (intra_op_num_threads=1, rounds interleaved, median reported):

1. an I/O-bound model (a small CNN: Conv → BatchNorm → ReLU → residual → Linear, batch 8 of 3×32×32, ~3 MB of
   captures per batch) over a folder of ``.npy`` batches:
   - plain onnxruntime (no capture);
   - plain onnxruntime returning every intermediate tensor + ``numpy.save`` of each to its own raw file: the I/O
     limit (no chunking, no statistics, nothing to resume);
   - onnxscope ``capture_dataset`` in one process (Zarr store + statistics);
   - onnxscope on a local Dask cluster of 2 single-threaded workers;
   target: one process ≤ 1.5 × the I/O limit.
   CPU seconds (all threads; for Dask, the workers' and the client's) are printed too: on a shared machine they
   say more than the wall time about the work each approach does.
2. a compute-bound model (an MLP of 2048-wide Gemm → ReLU layers, batch 32): one process against 2 workers;
   target: 2 workers ≥ 1.6 × the single-process throughput.
3. memory: peak RSS of one process, and of each Dask worker, over 10 and over 1,000 batches (target: within 5 %),
   and one batch of 256 samples against plain onnxruntime + 1.2 × the bytes captured.

Run: ``python benchmarks/dataset.py`` (``--quick`` for a short sanity run, ``--parts 2`` for one part).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import json, os, resource, sys, time, glob
import numpy as np
import onnxruntime as ort
import onnxscope, onnxscope.dataset, zarr  # the same imports in every run
mode, model, data, out, extra = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
files = sorted(glob.glob(os.path.join(data, "*.npy")))
name = extra["input"]
result = {}
def hwm():
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
if mode in ("ort", "ort+save"):
    so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    path = extra["all_outputs"] if mode == "ort+save" else model
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in s.get_outputs()]
    os.makedirs(out, exist_ok=True)
    t0, c0 = time.perf_counter(), cpu()
    written = 0
    for b, f in enumerate(files):
        x = np.load(f)
        outs = s.run(None, {name: x})
        if mode == "ort+save":
            np.save(os.path.join(out, f"{b}-input.npy"), x)
            for i, a in enumerate(outs):
                np.save(os.path.join(out, f"{b}-{i}.npy"), a)
                written += a.nbytes
            written += x.nbytes
    result["seconds"], result["cpu"] = time.perf_counter() - t0, cpu() - c0
    result["bytes"] = written
elif mode == "onnxscope":
    t0, c0 = time.perf_counter(), cpu()
    store = onnxscope.dataset.capture_dataset(model, data, out=out, progress=False, threads=1, **extra["kw"])
    result["seconds"], result["cpu"] = time.perf_counter() - t0, cpu() - c0
    result["peak_rss"] = hwm()  # the capture's, before reading anything back
    result["bytes"] = store.nbytes
    result["captured"] = sum(store.array(k)[: extra["batch"]].nbytes for k in store)
    assert store.batches == len(files)
else:  # dask
    from onnxscope.dataset import local_client
    def warm():  # the same imports as the single-process run has done before its clock starts
        import onnxruntime, onnxscope.dataset, onnxscope.session, zarr
    with local_client(int(extra["workers"])) as client:
        client.run(warm)
        c0 = sum(client.run(cpu).values()) + cpu()
        t0 = time.perf_counter()
        store = onnxscope.dataset.capture_dataset(model, data, out=out, progress=False, client=client, **extra["kw"])
        result["seconds"] = time.perf_counter() - t0
        result["cpu"] = sum(client.run(cpu).values()) + cpu() - c0
        result["bytes"] = store.nbytes
        peaks = client.run(lambda: next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:")))
        result["worker_rss"] = max(peaks.values())
result.setdefault("peak_rss", hwm())
print(json.dumps(result))
"""


def build_cnn(path: str) -> None:
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


def build_mlp(path: str, width: int = 2048, layers: int = 4) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits = [], []
    prev = "x"
    for i in range(layers):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        inits += [
            numpy_helper.from_array(w, f"w{i}"),
            numpy_helper.from_array(np.zeros(width, np.float32), f"b{i}"),
        ]
        nodes += [
            helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [f"h{i}"], transB=1),
            helper.make_node("Relu", [f"h{i}"], [f"a{i}"]),
        ]
        prev = f"a{i}"
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", width])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, ["B", width])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)


def all_outputs(model: str, path: str) -> None:
    """The model with every intermediate tensor as a graph output: what plain onnxruntime returns to be saved."""
    import onnx

    m = onnx.shape_inference.infer_shapes(onnx.load(model))
    have = {o.name for o in m.graph.output}
    for vi in m.graph.value_info:
        if vi.name not in have:
            m.graph.output.append(vi)
    onnx.save(m, path)


def make_data(folder: str, n: int, shape: tuple[int, ...]) -> None:
    import numpy as np

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for b in range(n):
        np.save(os.path.join(folder, f"{b:06d}.npy"), rng.standard_normal(shape).astype(np.float32))


def child(mode: str, model: str, data: str, out: str, extra: dict) -> dict:
    r = subprocess.run(
        [sys.executable, "-c", CHILD, mode, model, data, out, json.dumps(extra)],
        capture_output=True,
        text=True,
    )
    if r.returncode:
        sys.exit(f"{mode} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def rounds(modes: dict, model: str, data: str, folder: str, n_rounds: int) -> dict:
    """Each mode once per round, rounds interleaved; the median seconds and the last run's other figures."""
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    for r in range(n_rounds):
        for mode, (kind, extra) in modes.items():
            out = os.path.join(folder, f"{mode}-{r}.out")
            runs[mode].append(child(kind, model, data, out, extra))
            subprocess.run(["rm", "-rf", out], check=True)
    return {
        m: {
            **v[-1],
            "seconds": statistics.median(x["seconds"] for x in v),
            "cpu": statistics.median(x["cpu"] for x in v),
        }
        for m, v in runs.items()
    }


def throughput(name: str, batch: int, batches: int, folder: str, n_rounds: int) -> dict:
    """The four approaches on ``<name>.onnx`` over ``<name>-data`` (batches of ``batch``): plain onnxruntime, with
    ``numpy.save`` of every tensor (the I/O limit), onnxscope in one process and on 2 Dask workers; printed."""
    base = {"input": "x", "batch": batch, "all_outputs": os.path.join(folder, f"{name}-all.onnx"), "kw": {}}
    modes = {
        "plain onnxruntime": ("ort", base),
        "onnxruntime + numpy.save (I/O limit)": ("ort+save", base),
        "onnxscope, one process": ("onnxscope", base),
        "onnxscope, Dask 2 workers": ("dask", {**base, "workers": 2}),
    }
    model, data = os.path.join(folder, f"{name}.onnx"), os.path.join(folder, f"{name}-data")
    res = rounds(modes, model, data, folder, n_rounds)
    _table(res, batches * batch)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=1000, help="batches of the I/O-bound throughput runs")
    ap.add_argument("--mlp-batches", type=int, default=384, help="batches of the compute-bound runs")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rss-batches", type=int, nargs=2, default=[10, 1000])
    ap.add_argument("--one-batch-size", type=int, default=256)
    ap.add_argument("--quick", action="store_true", help="a short sanity run (few batches, one round)")
    ap.add_argument(
        "--parts", type=int, nargs="+", default=[1, 2, 3], choices=[1, 2, 3], help="which parts to run"
    )
    args = ap.parse_args()
    if args.quick:
        args.batches, args.mlp_batches, args.rounds, args.rss_batches = 100, 64, 1, [10, 100]
    with tempfile.TemporaryDirectory() as folder:
        cnn, mlp = os.path.join(folder, "cnn.onnx"), os.path.join(folder, "mlp.onnx")
        build_cnn(cnn)
        build_mlp(mlp)
        all_outputs(cnn, os.path.join(folder, "cnn-all.onnx"))
        all_outputs(mlp, os.path.join(folder, "mlp-all.onnx"))
        if 1 in args.parts:
            make_data(os.path.join(folder, "cnn-data"), args.batches, (8, 3, 32, 32))
        if 2 in args.parts:
            make_data(os.path.join(folder, "mlp-data"), args.mlp_batches, (32, 2048))

        if 1 in args.parts:
            print(f"1. I/O-bound: small CNN, {args.batches} batches of 8 (median of {args.rounds} rounds)")
            res = throughput("cnn", 8, args.batches, folder, args.rounds)
            limit = res["onnxruntime + numpy.save (I/O limit)"]["seconds"]
            one = res["onnxscope, one process"]["seconds"]
            print(
                f"one process / I/O limit: {one / limit:.2f}x (target <= 1.5x: {'PASS' if one <= 1.5 * limit else 'FAIL'})"
            )
            print(f"2 workers vs one process: {one / res['onnxscope, Dask 2 workers']['seconds']:.2f}x\n")

        if 2 in args.parts:
            print(f"2. compute-bound: MLP 4 x Gemm(2048) + ReLU, {args.mlp_batches} batches of 32")
            res = throughput("mlp", 32, args.mlp_batches, folder, args.rounds)
            one, two = res["onnxscope, one process"]["seconds"], res["onnxscope, Dask 2 workers"]["seconds"]
            print(
                f"2 workers vs one process: {one / two:.2f}x (target >= 1.6x: {'PASS' if one >= 1.6 * two else 'FAIL'})\n"
            )

        if 3 in args.parts:
            print("3. memory (small CNN, the same plan for both runs: 16 batches per shard)")
            lo, hi = args.rss_batches
            make_data(os.path.join(folder, "rss-data"), hi, (8, 3, 32, 32))
            peaks = {}
            for n in (lo, hi):
                data = os.path.join(folder, f"rss-{n}")
                os.makedirs(data, exist_ok=True)
                for b in range(n):
                    os.link(
                        os.path.join(folder, "rss-data", f"{b:06d}.npy"), os.path.join(data, f"{b:06d}.npy")
                    )
                extra = {"input": "x", "batch": 8, "kw": {"shard_batches": 16}}
                peaks[("one", n)] = child(
                    "onnxscope", cnn, data, os.path.join(folder, f"rss-one-{n}"), extra
                )["peak_rss"]
                w = child("dask", cnn, data, os.path.join(folder, f"rss-dask-{n}"), {**extra, "workers": 2})
                peaks[("worker", n)] = w["worker_rss"]
            for who in ("one", "worker"):
                growth = peaks[(who, hi)] / peaks[(who, lo)] - 1
                label = "one process" if who == "one" else "per Dask worker"
                print(
                    f"peak RSS {label}: {peaks[(who, lo)] / 2**20:.0f} MB over {lo} batches, {peaks[(who, hi)] / 2**20:.0f} MB "
                    f"over {hi}: {growth:+.1%} (target within 5%: {'PASS' if abs(growth) <= 0.05 else 'FAIL'})"
                )
            size = args.one_batch_size
            data = os.path.join(folder, "one-batch")
            make_data(data, 1, (size, 3, 32, 32))
            extra = {"input": "x", "batch": size, "kw": {}}
            plain = child("ort", cnn, data, os.path.join(folder, "one-ort"), extra)
            ours = child("onnxscope", cnn, data, os.path.join(folder, "one-onnxscope"), extra)
            limit = plain["peak_rss"] + 1.2 * ours["captured"]
            mb = 2**20
            print(
                f"one batch of {size}: plain onnxruntime {plain['peak_rss'] / mb:.0f} MB, captured "
                f"{ours['captured'] / mb:.0f} MB, onnxscope {ours['peak_rss'] / mb:.0f} MB "
                f"(limit: plain + 1.2 x captured = {limit / mb:.0f} MB: {'PASS' if ours['peak_rss'] <= limit else 'FAIL'})"
            )


def _table(res: dict, samples: int) -> None:
    print(f"{'run':<40}{'seconds':>9}{'CPU s':>8}{'samples/s':>11}{'MB/s written':>14}{'peak RSS MB':>13}")
    for mode, d in res.items():
        mbs = d.get("bytes", 0) / d["seconds"] / 2**20
        rss = d.get("worker_rss", d["peak_rss"]) / 2**20
        print(
            f"{mode:<40}{d['seconds']:>9.2f}{d['cpu']:>8.2f}{samples / d['seconds']:>11.0f}{mbs:>14.0f}{rss:>13.0f}"
        )


if __name__ == "__main__":
    main()
