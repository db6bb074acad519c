"""Residual and attention detection on a synthetic transformer-like graph of >= 100,000 nodes.

Builds (in memory, with onnx_ir) ``--layers`` pre-norm transformer layers of small decomposed ops — LayerNorm,
Q/K/V MatMuls, Transpose, MatMul, Div, Softmax, MatMul, output projection, residual Add, MLP, residual Add —
16 nodes per layer, then times ``find_residuals`` + ``find_attention`` (networkx views built from scratch,
shape inference included). Side by side, for scale: ``onnx.load`` of the same model from disk, the step every
peer tool starts with. Target: detection <= 5 s in all, with every block found.

Run: ``python benchmarks/patterns.py [--layers 6250]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import onnx_ir as ir

D, H = 8, 2


def build(layers: int) -> ir.Model:
    rng = np.random.default_rng(0)
    x = ir.Value(name="x", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([1, 4, D]))
    inits: list[ir.Value] = []
    nodes: list[ir.Node] = []

    def w(name: str, shape: tuple[int, ...]) -> ir.Value:
        v = ir.Value(
            name=name, const_value=ir.tensor(rng.standard_normal(shape).astype(np.float32), name=name)
        )
        inits.append(v)
        return v

    def op(kind: str, *inputs: ir.Value, shape: tuple[int, ...] = (1, 4, D), **attrs: object) -> ir.Value:
        a = [
            ir.AttrInt64s(k, v)
            if isinstance(v, list)
            else (ir.AttrInt64(k, v) if isinstance(v, int) else ir.AttrFloat32(k, v))
            for k, v in attrs.items()
        ]
        n = ir.Node("", kind, list(inputs), attributes=a, num_outputs=1, name=f"n{len(nodes)}")
        n.outputs[0].name = f"t{len(nodes)}"
        n.outputs[0].shape, n.outputs[0].dtype = (
            ir.Shape(shape),
            ir.DataType.FLOAT,
        )  # as exporters record them
        nodes.append(n)
        return n.outputs[0]

    scale = w("scale", ())
    ln_s, ln_b = w("ln_s", (D,)), w("ln_b", (D,))
    h = x
    for i in range(layers):
        n1 = op("LayerNormalization", h, ln_s, ln_b, axis=-1)
        q = op("MatMul", n1, w(f"l{i}.wq", (D, D)))
        k = op("MatMul", n1, w(f"l{i}.wk", (D, D)))
        v = op("MatMul", n1, w(f"l{i}.wv", (D, D)))
        kt = op("Transpose", k, perm=[0, 2, 1], shape=(1, D, 4))
        s = op("Div", op("MatMul", q, kt, shape=(1, 4, 4)), scale, shape=(1, 4, 4))
        p = op("Softmax", s, axis=-1, shape=(1, 4, 4))
        a = op("MatMul", p, v)
        h = op("Add", op("MatMul", a, w(f"l{i}.wo", (D, D))), h)
        n2 = op("LayerNormalization", h, ln_s, ln_b, axis=-1)
        up = op("MatMul", n2, w(f"l{i}.w1", (D, 2 * D)), shape=(1, 4, 2 * D))
        f = op("MatMul", op("Relu", up, shape=(1, 4, 2 * D)), w(f"l{i}.w2", (2 * D, D)))
        h = op("Add", f, h)
    h.name = "y"
    graph = ir.Graph([x], [h], nodes=nodes, initializers=inits, opset_imports={"": 17}, name="synthetic")
    return ir.Model(graph, ir_version=9)


def main() -> None:
    import onnx

    import onnxscope
    from onnxscope.patterns import find_attention, find_residuals

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--layers", type=int, default=6250, help="16 nodes per layer (default 6250 → 100,000 nodes)"
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "synthetic.onnx")
        ir.save(build(args.layers), path)
        t0 = time.perf_counter()
        onnx.load(path)
        t_onnx = time.perf_counter() - t0
        m = onnxscope.load(path)
        nodes = len(m.nodes)
        t0 = time.perf_counter()
        residuals = find_residuals(m)
        t_res = time.perf_counter() - t0
        t0 = time.perf_counter()
        blocks = find_attention(m)
        t_att = time.perf_counter() - t0
    total = t_res + t_att
    print(f"synthetic graph: {nodes:,} nodes, {args.layers:,} layers")
    print(f"{'step':<34}{'seconds':>9}")
    print(f"{'onnx.load (reference)':<34}{t_onnx:>9.2f}")
    print(f"{'find_residuals':<34}{t_res:>9.2f}")
    print(f"{'find_attention':<34}{t_att:>9.2f}")
    ok = (
        len(residuals) == 2 * args.layers
        and len(blocks) == args.layers
        and all(b.w_q and b.w_o for b in blocks)
    )
    print(
        f"found {len(residuals):,} residuals (expected {2 * args.layers:,}), {len(blocks):,} attention blocks "
        f"(expected {args.layers:,}): {'OK' if ok else 'WRONG'}"
    )
    print(f"detection total {total:.2f} s (target <= 5 s: {'PASS' if total <= 5 else 'FAIL'})")


if __name__ == "__main__":
    main()
