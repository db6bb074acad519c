"""A query never changes the model: its serialized bytes are the same after every public query as before, and
answers do not depend on which query ran first (shapes are inferred on a copy and kept beside the model)."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

import onnxscope
from onnxscope.testing import mlp_model, save

pytest.importorskip("onnxruntime")


def _bytes(m: onnxscope.Model) -> bytes:
    return ir.to_proto(m.ir).SerializeToString()


def _transformer(tmp_path):
    import onnx

    proto = onnx.parser.parse_model("""<ir_version: 9, opset_import: ["": 17]>
        g (float[batch, 5, 8] x, bool c) => (float[batch, 5, 8] y, float[batch, 5, 8] z) {
            q = MatMul(x, wq)
            k = MatMul(x, wk)
            kt = Transpose <perm = [0, 2, 1]> (k)
            s = MatMul(q, kt)
            p = Softmax <axis = -1> (s)
            v = MatMul(x, wv)
            a = MatMul(p, v)
            r = Add(a, x)
            y = Relu(r)
            z = If(c) <then_branch = t () => (float[batch, 5, 8] o) { o = Neg(r) },
                       else_branch = e () => (float[batch, 5, 8] o2) { o2 = Identity(r) }>
        }""")
    rng = np.random.default_rng(0)
    for n in ("wq", "wk", "wv"):
        proto.graph.initializer.append(
            onnx.numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), n)
        )
    onnx.save(proto, tmp_path / "t.onnx")
    return tmp_path / "t.onnx"


@pytest.mark.parametrize("which", ["mlp", "transformer"])
def test_every_public_query_leaves_the_models_bytes_unchanged(tmp_path, which):
    path = save(mlp_model(), tmp_path / "m.onnx") if which == "mlp" else _transformer(tmp_path)
    m = onnxscope.load(path)
    before = _bytes(m)
    layer = "fc1" if which == "mlp" else "q"
    m.neuron(layer, 1)
    m.summary()
    for w in m.weights.values():
        w.stats()
    onnxscope.find_residuals(m)
    onnxscope.find_attention(m)
    src, dst = ("x", "y")
    list(onnxscope.all_paths(m, src, dst))
    onnxscope.shortest_path(m, src, dst)
    onnxscope.between(m, [src], [dst])
    onnxscope.extract(m, [src], [dst], tmp_path / "sub.onnx")
    for v in m.ir.graph.inputs:
        m.shape(v)
    inputs = {"x": np.ones((2, 3) if which == "mlp" else (2, 5, 8), np.float32)}
    if which == "transformer":
        inputs["c"] = np.array(True)
    cap = onnxscope.capture(m, inputs)
    for k in cap:
        cap[k]  # recomputed tensors too
    with onnxscope.CaptureSession(m, optimization="disable") as s:
        s.run(inputs)
    assert _bytes(m) == before


def test_a_shape_does_not_depend_on_which_query_ran_first(tmp_path):
    m = onnxscope.Model(mlp_model())
    h = m.value("h")
    assert h.shape is None  # the model carries no shape for it
    assert m.shape(h) == ("batch", 16)  # inferred on a copy…
    assert h.shape is None  # …and not written into the model
    fresh = onnxscope.Model(mlp_model())
    fresh.neuron("fc1", 0)
    assert fresh.value("h").shape is None and fresh.shape(fresh.value("h")) == m.shape(h)
