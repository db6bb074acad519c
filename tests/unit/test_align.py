"""Alignment on graphs built in code (no onnxruntime): the rewrites optimizers and quantizers make, with names
that say nothing, and the steps that bring a derived tensor back — against numpy."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

import onnxscope
from onnxscope.align import Step, align, nchwc_block
from onnxscope.weights import quantize_linear

F = ir.DataType.FLOAT


class B:
    """A tiny graph builder: values by name, nodes in order."""

    def __init__(self, *inputs: tuple[str, list[int]]) -> None:
        self.inputs = [ir.Value(name=n, type=ir.TensorType(F), shape=ir.Shape(s)) for n, s in inputs]
        self.values = {v.name: v for v in self.inputs}
        self.nodes: list[ir.Node] = []
        self.inits: list[ir.Value] = []

    def const(self, name: str, array) -> str:
        a = np.asarray(array)
        v = ir.Value(name=name, const_value=ir.tensor(a, name=name))
        v.type, v.shape = ir.TensorType(ir.DataType.from_numpy(a.dtype)), ir.Shape(a.shape)
        self.values[name] = v
        self.inits.append(v)
        return name

    def op(self, op: str, ins: list[str | None], out: str, domain: str = "", **attrs) -> str:
        attributes = []
        for k, a in attrs.items():
            if isinstance(a, str):
                attributes.append(ir.AttrString(k, a))
            elif isinstance(a, float):
                attributes.append(ir.AttrFloat32(k, a))
            elif isinstance(a, int):
                attributes.append(ir.AttrInt64(k, a))
            else:
                attributes.append(ir.AttrInt64s(k, list(a)))
        node = ir.Node(
            domain, op, [self.values[i] if i else None for i in ins], attributes, num_outputs=1, name=out
        )
        node.outputs[0].name = out
        self.values[out] = node.outputs[0]
        self.nodes.append(node)
        return out

    def model(self, *outputs: str) -> onnxscope.Model:
        g = ir.Graph(
            self.inputs,
            [self.values[o] for o in outputs],
            nodes=self.nodes,
            initializers=self.inits,
            opset_imports={"": 17, "com.microsoft": 1},
        )
        return onnxscope.Model(ir.Model(g, ir_version=9))


rng = np.random.default_rng(0)
W = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
W2 = rng.standard_normal((4, 4, 3, 3)).astype(np.float32)


def conv_bn_relu():
    b = B(("x", [1, 3, 8, 8]))
    b.op("Conv", ["x", b.const("w", W)], "conv", pads=[1, 1, 1, 1])
    bn = [b.const(n, rng.uniform(0.5, 1.5, 4).astype(np.float32)) for n in ("g", "beta", "mu", "var")]
    b.op("BatchNormalization", ["conv", *bn], "bn")
    b.op("Relu", ["bn"], "relu")
    b.op("Conv", ["relu", b.const("w2", W2)], "conv2", pads=[1, 1, 1, 1])
    return b.model("conv2")


def test_folded_batchnorm_and_fused_relu_are_found_by_structure_under_other_names():
    a = conv_bn_relu()
    b = B(("x", [1, 3, 8, 8]))  # what onnxruntime's optimizer leaves: Conv+BN folded, ReLU fused in
    b.op(
        "FusedConv",
        ["x", b.const("w_folded", W * 0.7), b.const("b_folded", np.ones(4, np.float32))],
        "t0",
        domain="com.microsoft",
        activation="Relu",
        pads=[1, 1, 1, 1],
    )
    b.op("Conv", ["t0", b.const("w2", W2)], "t1", pads=[1, 1, 1, 1])
    al = align(a, b.model("t1"))
    got = {p.b: (p.a, p.how) for p in al.pairs}
    assert got["t0"] == ("relu", "fused Conv+BatchNormalization+Relu")
    assert got["t1"] == ("conv2", "structure+weights")
    assert al.unaligned_a == ["conv", "bn"] and al.unaligned_b == [] and al.reference == "a"


def test_folded_batchnorm_into_a_plain_conv():
    a = conv_bn_relu()
    b = B(("x", [1, 3, 8, 8]))
    b.op(
        "Conv",
        ["x", b.const("w_folded", W * 0.7), b.const("b_folded", np.ones(4, np.float32))],
        "t0",
        pads=[1, 1, 1, 1],
    )
    b.op("Relu", ["t0"], "t1")
    b.op("Conv", ["t1", b.const("w2", W2)], "t2", pads=[1, 1, 1, 1])
    got = {p.b: (p.a, p.how) for p in align(a, b.model("t2")).pairs}
    assert got["t0"] == ("bn", "fused Conv+BatchNormalization") and got["t1"] == ("relu", "structure")


def test_matmul_add_becomes_one_gemm_and_q_k_v_are_told_apart_by_their_weights():
    ws = [rng.standard_normal((6, 6)).astype(np.float32) for _ in range(3)]
    a = B(("x", [2, 6]))
    for i, w in enumerate(ws):
        a.op("MatMul", ["x", a.const(f"w{i}", w)], f"mm{i}")
        a.op("Add", [f"mm{i}", a.const(f"b{i}", np.full(6, i, np.float32))], f"y{i}")
    a.op("Sum", ["y0", "y1", "y2"], "out")
    b = B(("x", [2, 6]))
    for i in (2, 0, 1):  # another order, other names
        b.op(
            "Gemm",
            ["x", b.const(f"W{i}", ws[i].T.copy()), b.const(f"B{i}", np.full(6, i, np.float32))],
            f"g{i}",
            transB=1,
        )
    b.op("Sum", ["g0", "g1", "g2"], "out")
    got = {p.b: (p.a, p.how) for p in align(a.model("out"), b.model("out")).pairs}
    assert got["g0"] == ("y0", "fused MatMul+Add") and got["g1"][0] == "y1" and got["g2"][0] == "y2"
    assert got["out"] == ("out", "name")


def test_quantizer_renames_dequantize_and_an_absorbed_relu():
    w = rng.standard_normal((3, 5)).astype(np.float32)
    a = B(("x", [2, 3]))
    a.op("MatMul", ["x", a.const("w", w)], "mm")
    a.op("Relu", ["mm"], "act")
    b = B(("x", [2, 3]))  # quantize_static's QDQ: the Relu left to the uint8 range of the quantizer after it
    b.op(
        "QuantizeLinear",
        ["x", b.const("xs", np.float32(0.02)), b.const("xz", np.uint8(128))],
        "x_QuantizeLinear_Output",
    )
    b.op("DequantizeLinear", ["x_QuantizeLinear_Output", "xs", "xz"], "x_DequantizeLinear_Output")
    b.op("MatMul", ["x_DequantizeLinear_Output", b.const("w", w)], "act")
    b.op(
        "QuantizeLinear",
        ["act", b.const("s", np.float32(0.05)), b.const("z", np.uint8(0))],
        "act_QuantizeLinear_Output",
    )
    b.op("DequantizeLinear", ["act_QuantizeLinear_Output", "s", "z"], "act_DequantizeLinear_Output")
    ma, mb = a.model("act"), b.model("act_DequantizeLinear_Output")
    al = align(ma, mb)
    got = {p.b: p for p in al.pairs}
    assert (
        got["x_QuantizeLinear_Output"].a == "x" and got["x_QuantizeLinear_Output"].transform == "dequantized"
    )
    assert got["act"].a == "mm"  # the float MatMul: the name says otherwise, the structure is right
    assert (
        got["act_DequantizeLinear_Output"].a == "act"
        and "Relu absorbed" in got["act_DequantizeLinear_Output"].how
    )
    assert got["act_DequantizeLinear_Output"].grid.scale == np.float32(0.05)
    assert [p.b for p in al.rows()] == ["x_DequantizeLinear_Output", "act", "act_DequantizeLinear_Output"]
    q = np.array([[0, 10, 255]], np.uint8)
    np.testing.assert_array_equal(
        got["act_QuantizeLinear_Output"].to_reference(q), q.astype(np.float32) * 0.05
    )
    # b is the derived side whichever order the models come in
    swapped = align(mb, ma)
    assert swapped.reference == "b" and {(p.b, p.a) for p in swapped.pairs} >= {
        ("act", "act_DequantizeLinear_Output")
    }


def test_what_has_no_counterpart_is_listed_and_outputs_pair_by_position():
    a = B(("x", [2, 3]))
    a.op("Relu", ["x"], "r")
    a.op("Neg", ["r"], "out")
    b = B(("x", [2, 3]))
    b.op("Sigmoid", ["x"], "s")
    b.op("Neg", ["s"], "y")
    al = align(a.model("out"), b.model("y"))
    assert [(p.a, p.b, p.how) for p in al.pairs if p.how != "input"] == [("out", "y", "output position")]
    assert al.unaligned_a == ["r"] and al.unaligned_b == ["s"] and al.coverage_a == 0.5


@pytest.mark.parametrize("block", [8, 16])
def test_nchwc_blocked_tensors_are_unblocked_like_numpy(block, monkeypatch):
    import onnxscope.align as align_module

    monkeypatch.setattr(align_module, "NCHWC_BLOCK", block)
    x = rng.standard_normal((2, 12, 3, 5)).astype(np.float32)
    padded = -(-12 // block) * block
    blocked = np.zeros((2, padded // block, 3, 5, block), np.float32)  # [N, C/blk, H, W, blk]
    for c in range(12):
        blocked[:, c // block, :, :, c % block] = x[:, c]
    memory = blocked.reshape(2, padded, 3, 5)  # what onnxruntime hands over: blocked memory, NCHW shape
    step = Step("nchwc")
    np.testing.assert_array_equal(step.to_reference(memory, x.shape, lambda n: None), x)
    np.testing.assert_array_equal(step.from_reference(x, memory.shape, lambda n: None), memory)
    assert nchwc_block(padded, 12) == block


def test_quantize_and_transpose_steps_round_trip():
    x = rng.uniform(-1, 1, (2, 3, 4)).astype(np.float32)
    s = Step(
        "quantize", scale=np.array([0.01, 0.02, 0.03], np.float32), zero_point=np.zeros(3, np.int8), axis=1
    )
    q = s.from_reference(x, None, lambda n: None)
    want = quantize_linear(x, s.scale, s.zero_point, 1)
    np.testing.assert_array_equal(q, want)
    back = s.to_reference(q, None, lambda n: None)
    assert np.abs(back - x).max() <= 0.5 * 0.03 + 1e-7
    t = Step("transpose", perm=(2, 0, 1))
    np.testing.assert_array_equal(
        t.to_reference(t.from_reference(x, None, lambda n: None), None, lambda n: None), x
    )
    dyn = Step("quantize", scale="x_scale", zero_point="x_zero_point")
    got = dyn.to_reference(
        np.array([130, 126], np.uint8), None, {"x_scale": np.float32(0.5), "x_zero_point": np.uint8(128)}.get
    )
    np.testing.assert_array_equal(got, [1.0, -1.0])


def test_one_model_against_itself_pairs_every_tensor_by_name():
    m = conv_bn_relu()
    al = align(m, m)
    assert [p.a for p in al.rows()] == ["conv", "bn", "relu", "conv2"]
    assert all(p.a == p.b and p.how == "name" for p in al.rows()) and al.coverage_b == 1.0
