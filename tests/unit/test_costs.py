"""The per-layer profile against closed-form counts written here, on graphs built in code (no onnxruntime)."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnx.parser
import onnx_ir as ir
import pytest

import onnxscope
from onnxscope.costs import FLOPS_PER_ELEMENT, profile
from onnxscope.errors import InputError


def build(text: str, **weights: np.ndarray) -> onnxscope.Model:
    """A model from ONNX's text syntax; ``weights`` become initializers (name → array)."""
    proto = onnx.parser.parse_model(text)
    for name, a in weights.items():
        proto.graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(a), name))
    return onnxscope.Model(ir.serde.deserialize_model(proto))


def costs(m: onnxscope.Model, **kw) -> dict[str, object]:
    return {r.node: r for r in profile(m, **kw).layers}


HEAD = '<ir_version: 9, opset_import: ["" : 17, "com.microsoft" : 1]>'


def test_grouped_strided_dilated_conv_counts_cin_over_groups_times_kernel_per_output():
    m = build(
        HEAD
        + """
        g (float[2,8,11,11] x) => (float[n, c, h, w] y) {
          y = Conv <group = 2, strides = [2, 2], pads = [2, 2, 2, 2], dilations = [2, 2]> (x, w, b)
        }""",
        w=np.zeros((16, 4, 3, 3), np.float32),
        b=np.zeros(16, np.float32),
    )
    # no output shape in the model: inference gives floor((11 + 4 - 2*(3-1) - 1) / 2) + 1 = 6
    (r,) = profile(m).layers
    out = 2 * 16 * 6 * 6
    assert r.output_shape == (2, 16, 6, 6)
    assert r.macs == out * (8 // 2) * 3 * 3
    assert r.flops == 2 * r.macs + out  # + the bias
    assert r.params == 16 * 4 * 3 * 3 + 16
    assert r.activation_bytes == out * 4


def test_conv_output_size_from_attributes_when_shapes_are_unknown():
    from onnxscope.costs import _conv_out_spatial

    n = ir.Node(
        "", "Conv", [], attributes=[ir.AttrInt64s("strides", [3, 1]), ir.AttrString("auto_pad", "SAME_UPPER")]
    )
    assert _conv_out_spatial(n, (1, 3, 10, 7), (4, 3, 3, 3)) == (4, 7)
    n = ir.Node("", "Conv", [], attributes=[ir.AttrInt64s("dilations", [2]), ir.AttrInt64s("pads", [1, 1])])
    assert _conv_out_spatial(n, (1, 3, 10), (4, 3, 3)) == ((10 + 2 - 5) // 1 + 1,)


def test_conv_transpose_counts_per_input_element():
    m = build(
        HEAD
        + """
        g (float[1,8,5,5] x) => (float[1,6,11,11] y) {
          y = ConvTranspose <group = 2, strides = [2, 2]> (x, w)
        }""",
        w=np.zeros((8, 3, 3, 3), np.float32),
    )
    (r,) = profile(m).layers
    assert r.macs == (1 * 8 * 5 * 5) * 3 * 3 * 3
    assert r.output_shape == (1, 6, 11, 11)


def test_gemm_with_transposes_and_batched_broadcast_matmul():
    m = build(
        HEAD
        + """
        g (float[7,5] a, float[3,1,4,6] p, float[2,6,9] q) => (float[5,3] y, float[3,2,4,9] z) {
          y = Gemm <transA = 1, transB = 1> (a, w, c)
          z = MatMul (p, q)
        }""",
        w=np.zeros((3, 7), np.float32),
        c=np.zeros(3, np.float32),
    )
    r = costs(m)
    gemm = next(v for k, v in r.items() if v.op == "Gemm")
    mm = next(v for k, v in r.items() if v.op == "MatMul")
    assert gemm.macs == 5 * 3 * 7 and gemm.flops == 2 * 5 * 3 * 7 + 5 * 3 and gemm.params == 21 + 3
    assert mm.macs == (3 * 2) * 4 * 9 * 6 and mm.params == 0


def test_einsum_contraction_counts_every_index_once():
    m = build(
        HEAD
        + """
        g (float[2,3,4] a, float[2,4,5] b) => (float[2,3,5] y) {
          y = Einsum <equation = "bij,bjk->bik"> (a, b)
        }"""
    )
    (r,) = profile(m).layers
    assert r.macs == 2 * 3 * 4 * 5


def test_fused_onnx_attention_counts_qk_and_pv():
    proto = onnx.parser.parse_model(
        '<ir_version: 10, opset_import: ["" : 23]>'
        + """
        g (float[2,4,7,8] q, float[2,4,9,8] k, float[2,4,9,6] v) => (float[2,4,7,6] y) {
          y = Attention (q, k, v)
        }"""
    )
    m = onnxscope.Model(ir.serde.deserialize_model(proto))
    (r,) = profile(m).layers
    scores = 2 * 4 * 7 * 9
    assert r.macs == scores * 8 + scores * 6
    assert r.flops == 2 * r.macs + scores * (FLOPS_PER_ELEMENT["Softmax"] + 2)


def test_onnxruntime_attention_adds_the_packed_qkv_projection_and_mha_does_not():
    b, s, d, heads = 2, 16, 32, 4
    m = build(
        HEAD
        + f"""
        g (float[{b},{s},{d}] x, float[{b},{s},{d}] q, float[{b},{s},{d}] k, float[{b},{s},{d}] v)
          => (float[{b},{s},{d}] y, float[{b},{s},{d}] z) {{
          y = com.microsoft.Attention <num_heads = {heads}> (x, w, bias)
          z = com.microsoft.MultiHeadAttention <num_heads = {heads}> (q, k, v)
        }}""",
        w=np.zeros((d, 3 * d), np.float32),
        bias=np.zeros(3 * d, np.float32),
    )
    r = {v.op: v for v in profile(m).layers}
    attention_core = b * s * s * d * 2  # QKᵀ and PV summed over heads: B·H·S·S·(d/H) each
    assert r["com.microsoft::Attention"].macs == b * s * d * 3 * d + attention_core
    assert r["com.microsoft::Attention"].params == d * 3 * d + 3 * d
    assert r["com.microsoft::MultiHeadAttention"].macs == attention_core


@pytest.mark.parametrize(("op", "gates"), [("LSTM", 4), ("GRU", 3), ("RNN", 1)])
def test_recurrent_layers_count_gates_times_input_plus_hidden(op, gates):
    seq, batch, inp, hidden, dirs = 5, 3, 10, 8, 2
    m = build(
        HEAD
        + f"""
        g (float[{seq},{batch},{inp}] x) => (float[{seq},{dirs},{batch},{hidden}] y) {{
          y = {op} <hidden_size = {hidden}, direction = "bidirectional"> (x, w, r)
        }}""",
        w=np.zeros((dirs, gates * hidden, inp), np.float32),
        r=np.zeros((dirs, gates * hidden, hidden), np.float32),
    )
    (layer,) = profile(m).layers
    assert layer.macs == dirs * seq * batch * gates * hidden * (inp + hidden)
    assert layer.params == dirs * gates * hidden * (inp + hidden)
    assert layer.flops > 2 * layer.macs  # plus the gates' element-wise arithmetic


def test_pooling_normalization_and_elementwise_flops():
    m = build(
        HEAD
        + """
        g (float[1,4,8,8] x) => (float[1,4,1,1] y) {
          p = MaxPool <kernel_shape = [2, 2], strides = [2, 2]> (x)
          n = BatchNormalization (p, s, b, mean, var)
          r = Relu (n)
          y = GlobalAveragePool (r)
        }""",
        s=np.ones(4, np.float32),
        b=np.zeros(4, np.float32),
        mean=np.zeros(4, np.float32),
        var=np.ones(4, np.float32),
    )
    rows = {r.op: r for r in profile(m).layers}
    assert rows["MaxPool"].flops == (4 * 4 * 4) * 4 and rows["MaxPool"].macs == 0
    assert rows["BatchNormalization"].flops == 2 * 64
    assert rows["BatchNormalization"].params == 8 and rows["BatchNormalization"].buffers == 8
    assert rows["Relu"].flops == 64
    assert rows["GlobalAveragePool"].flops == 64


def test_parameters_count_each_stored_tensor_once_and_skip_scalars_and_quantization_parameters():
    w = np.zeros((4, 3), np.int8)
    m = build(
        HEAD
        + """
        g (float[2,3] x) => (float[2,4] y, float[2,4] z) {
          wf = DequantizeLinear <axis = 0> (wq, scale, zp)
          y0 = Gemm <transB = 1> (x, wf)
          y = Mul (y0, two)
          z = Gemm <transB = 1> (x, wf)
        }""",
        wq=w,
        scale=np.ones(4, np.float32),
        zp=np.zeros(4, np.int8),
        two=np.float32(2.0),
    )
    p = profile(m)
    assert [r.params for r in p.layers if r.op == "Gemm"] == [12, 0]  # shared: counted at its first use
    assert p.params == 12  # scale, zero point and the scalar 2 are not parameters
    assert next(r for r in p.layers if r.op == "DequantizeLinear").folded


SYMBOLIC = (
    HEAD
    + """
    g (float[batch,seq,8] x) => (float[rows, cols] h) {
      flat = Reshape (x, minus)
      h = MatMul (flat, w)
    }"""
)


def test_symbolic_dims_are_sized_by_dims_on_a_clone_and_the_model_is_untouched():
    m = build(
        SYMBOLIC,
        minus=np.array([-1, 8], np.int64),
        w=np.zeros((8, 4), np.float32),
    )
    # the 2-D MatMul output is [batch*seq, 4]: only inference on concrete inputs can size it
    before = {v.name: v.shape for n in m.ir.graph for v in n.outputs}
    r = costs(m, dims={"batch": 3, "seq": 5})
    mm = next(v for v in r.values() if v.op == "MatMul")
    assert mm.output_shape == (15, 4) and mm.macs == 15 * 4 * 8
    assert {v.name: v.shape for n in m.ir.graph for v in n.outputs} == before
    assert m.ir.graph.inputs[0].shape[0] == ir.SymbolicDim("batch")


def test_a_symbolic_dim_without_a_size_is_a_one_line_error_naming_it():
    m = build(SYMBOLIC, minus=np.array([-1, 8], np.int64), w=np.zeros((8, 4), np.float32))
    with pytest.raises(InputError, match=r"'batch'.*dims=\{'batch': 1, 'seq': 1\}"):
        profile(m)
    with pytest.raises(InputError, match="positive"):
        profile(m, dims={"batch": 0, "seq": 1})
    with pytest.raises(InputError, match="name no input dimension"):
        profile(m, dims={"batch": 1, "seq": 1, "tokens": 3})


def test_totals_and_op_breakdown_add_up():
    m = onnxscope.load("fixtures/small_cnn.onnx")
    p = profile(m)
    by_op = p.by_op()
    assert sum(d["macs"] for d in by_op.values()) == p.macs
    assert sum(d["params"] for d in by_op.values()) == p.params
    assert p.params + p.buffers == sum(
        w.size for w in m.weights.values() if w.size > 1 and w.dtype == "float32"
    )
    assert p.to_dict()["macs"] == p.macs
    assert math.isclose(p.flops, sum(r.flops or 0 for r in p.layers))


def test_free_dims_declared_minus_one_are_sized_by_input_and_axis():
    m = build(
        HEAD
        + """
        g (float[-1,8] x) => (float[n, m] y) {
          y = MatMul (x, w)
        }""",
        w=np.zeros((8, 4), np.float32),
    )
    with pytest.raises(InputError, match=r"'x:0'"):
        profile(m)
    (r,) = profile(m, dims={"x:0": 6}).layers
    assert r.output_shape == (6, 4) and r.macs == 6 * 4 * 8


def test_weight_only_int8_weights_count_and_their_scales_do_not():
    m = build(
        HEAD
        + """
        g (float[2,3] x) => (float[2,4] y) {
          wf = Cast <to = 1> (wq)
          w = Mul (wf, scale)
          y = MatMul (x, w)
        }""",
        wq=np.ones((3, 4), np.int8),
        scale=np.full(4, 0.5, np.float32),
    )
    mm = next(r for r in profile(m).layers if r.op == "MatMul")
    assert mm.params == 12 and mm.macs == 2 * 3 * 4
    assert profile(m).params == 12  # the per-channel scale is a quantization parameter


def test_onnxruntime_dynamic_quantize_lstm_uses_its_transposed_weight_layout():
    seq, batch, inp, hidden = 7, 2, 10, 6
    m = build(
        HEAD
        + f"""
        g (float[{seq},{batch},{inp}] x) => (float[{seq},1,{batch},{hidden}] y) {{
          y = com.microsoft.DynamicQuantizeLSTM <hidden_size = {hidden}> (x, w, r, , , , , , ws, wz, rs, rz)
        }}""",
        w=np.zeros((1, inp, 4 * hidden), np.int8),
        r=np.zeros((1, hidden, 4 * hidden), np.int8),
        ws=np.ones(1, np.float32),
        wz=np.zeros(1, np.int8),
        rs=np.ones(1, np.float32),
        rz=np.zeros(1, np.int8),
    )
    (layer,) = profile(m).layers
    assert layer.macs == seq * batch * 4 * hidden * (inp + hidden)
    assert layer.params == 4 * hidden * (inp + hidden)
