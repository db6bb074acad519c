"""Report generation: time and file size for ResNet-50, BERT-base (with a capture) and a 100,000-node graph.

Targets: <= 15 s and <= 10 MB per page. Models: ResNet-50 (224×224) and BERT-base (128 tokens) from
``transformers`` configs with random weights (no download), exported by torch's dynamo exporter as in
``benchmarks/capture.py``; the 100,000-node transformer-like graph of ``benchmarks/patterns.py``. Each page is
rendered ``--rounds`` times in this process (median reported; the model is loaded once, outside the timing — load
times are in ``benchmarks/load_large.py``), with the seconds each step took, and the file size. No peer writes
such a page (Netron and Model Explorer draw the graph only, onnx-tool prints a profile, Polygraphy ASCII
histograms), so there is no side-by-side baseline: the targets are absolute.

Run: ``python benchmarks/report.py [--models resnet50 bert synthetic100k] [--rounds 3]`` (needs the [dev,bench]
extras).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

MODELS = ("resnet50", "bert", "synthetic100k")
TARGET_S, TARGET_MB = 15.0, 10.0


def prepare(name: str, folder: str):
    """The loaded model and, for BERT, a capture of one input (both outside the timing)."""
    from capture import export

    import onnxscope

    path = export(name, folder)
    m = onnxscope.load(path)
    cap = None
    if name == "bert":
        x = np.load(os.path.join(folder, f"{name}.x.npy"))
        cap = onnxscope.capture(m, {"x": x})
    return m, cap


def main() -> None:
    from onnxscope import page

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            m, cap = prepare(name, folder)
            times, steps = [], []
            out = os.path.join(folder, f"{name}.html")
            for _ in range(args.rounds):
                timings: dict[str, float] = {}
                t0 = time.perf_counter()
                text = page.render(m, capture=cap, timings=timings)
                with open(out, "w", encoding="utf-8") as f:
                    f.write(text)
                times.append(time.perf_counter() - t0)
                steps.append(timings)
            size = os.path.getsize(out) / 2**20
            med = statistics.median(times)
            step = {k: statistics.median(s[k] for s in steps) for k in steps[0]}
            rows.append((name, len(m.nodes), cap is not None, med, size, step))
            print(
                f"\n{name}: {len(m.nodes):,} nodes{' + capture' if cap is not None else ''}: "
                f"{med:.2f} s (median of {args.rounds}), {size:.2f} MB"
            )
            print("  " + ", ".join(f"{k} {v:.2f} s" for k, v in step.items() if v >= 0.005))
            ok = med <= TARGET_S and size <= TARGET_MB
            print(f"  target <= {TARGET_S:g} s and <= {TARGET_MB:g} MB: {'PASS' if ok else 'FAIL'}")
    print("\n| model | nodes | capture | seconds | MB |")
    print("|---|---|---|---|---|")
    for name, nodes, has_cap, med, size, _ in rows:
        print(f"| {name} | {nodes:,} | {'yes' if has_cap else 'no'} | {med:.2f} | {size:.2f} |")


if __name__ == "__main__":
    main()
