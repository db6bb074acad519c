"""Weights: roles, dequantization (oracle: onnx's ReferenceEvaluator), audits (oracle: numpy)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import onnxscope
from onnxscope.testing import mlp_model
from onnxscope.weights import dequantize_linear, quantize_linear, tensor_stats


def _model(text: str, tmp_path, inits: dict[str, np.ndarray] | None = None) -> onnxscope.Model:
    proto = onnx.parser.parse_model(text)
    for name, arr in (inits or {}).items():
        proto.graph.initializer.append(numpy_helper.from_array(arr, name))
    p = tmp_path / "m.onnx"
    onnx.save(proto, p)
    return onnxscope.load(p)


def test_roles_follow_the_operator_schema(tmp_path):
    rng = np.random.default_rng(0)
    m = _model(
        """<ir_version: 9, opset_import: ["": 17]>
        g (float[1, 2, 5, 5] x) => (float[1, 4, 3, 3] y) {
            c = Conv(x, w, b)
            y = BatchNormalization(c, s, bb, mu, var)
        }""",
        tmp_path,
        {
            "w": rng.standard_normal((4, 2, 3, 3)).astype(np.float32),
            "b": np.ones(4, np.float32),
            "s": np.ones(4, np.float32),
            "bb": np.zeros(4, np.float32),
            "mu": np.zeros(4, np.float32),
            "var": np.ones(4, np.float32),
        },
    )
    roles = {k: w.role for k, w in m.weights.items()}
    assert roles == {
        "w": "weight",
        "b": "bias",
        "s": "scale",
        "bb": "bias",
        "mu": "running_mean",
        "var": "running_var",
    }
    assert m.weights["w"].unit_axis == 0


def _dq_reference(q, scale, zp, axis, block_size=0):
    attrs = {"axis": axis} if axis is not None else {}
    if block_size:
        attrs["block_size"] = block_size
    inputs = ["q", "s"] + (["z"] if zp is not None else [])
    node = helper.make_node("DequantizeLinear", inputs, ["y"], **attrs)
    feeds = {"q": q, "s": scale, **({"z": zp} if zp is not None else {})}
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
            for k, v in feeds.items()
        ],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    return ReferenceEvaluator(model).run(None, feeds)[0]


@pytest.mark.parametrize(
    ("shape", "scale_shape", "axis", "block", "dtype"),
    [
        ((4, 6), (), None, 0, np.int8),
        ((4, 6), (4,), 0, 0, np.int8),
        ((4, 6), (6,), 1, 0, np.uint8),
        ((4, 6, 2), (6,), 1, 0, np.int8),
        ((4, 6), (4, 3), 1, 2, np.int8),
    ],
)
def test_dequantize_linear_matches_the_onnx_reference(shape, scale_shape, axis, block, dtype):
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype)
    q = rng.integers(info.min, info.max, size=shape).astype(dtype)
    scale = rng.uniform(0.01, 0.1, size=scale_shape).astype(np.float32)
    zp = rng.integers(info.min // 4, info.max // 4, size=scale_shape).astype(dtype)
    expected = _dq_reference(q, scale, zp, axis, block)
    np.testing.assert_allclose(dequantize_linear(q, scale, zp, axis, block), expected, rtol=1e-6)


@pytest.mark.parametrize(
    ("x", "scale", "zp", "axis"),
    [
        (np.float32(1.0), np.float32(0.1), np.uint8(3), 1),  # a scalar constant through QuantizeLinear
        (np.float32(-0.7), np.float32(0.02), np.int8(0), 1),
        (np.linspace(-3, 3, 24, dtype=np.float32).reshape(4, 6), np.float32(0.05), np.uint8(128), 1),
        (
            np.linspace(-3, 3, 24, dtype=np.float32).reshape(4, 6),
            np.linspace(0.01, 0.04, 6, dtype=np.float32),
            np.arange(6, dtype=np.int8),
            1,
        ),
    ],
)
def test_quantize_linear_matches_the_onnx_reference_scalars_included(x, scale, zp, axis):
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], axis=axis)
    feeds = {"x": np.asarray(x), "s": np.asarray(scale), "z": np.asarray(zp)}
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
            for k, v in feeds.items()
        ],
        [helper.make_tensor_value_info("y", helper.np_dtype_to_tensor_dtype(feeds["z"].dtype), None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    expected = ReferenceEvaluator(model).run(None, feeds)[0]
    got = quantize_linear(x, scale, zp, axis)
    assert np.shape(got) == np.shape(expected) and np.asarray(got).dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


def test_a_qdq_weight_dequantizes_per_channel(tmp_path):
    rng = np.random.default_rng(2)
    q = rng.integers(-127, 127, size=(3, 5)).astype(np.int8)
    scale = np.array([0.1, 0.2, 0.3], np.float32)
    m = _model(
        """<ir_version: 9, opset_import: ["": 17]>
        g (float[2, 5] x) => (float[2, 3] y) {
            wd = DequantizeLinear <axis = 0> (wq, ws, wz)
            y = Gemm <transB = 1> (x, wd)
        }""",
        tmp_path,
        {"wq": q, "ws": scale, "wz": np.zeros(3, np.int8)},
    )
    w = m.weights["wq"]
    assert w.role == "quantized weight" and w.quantization.kind == "QDQ" and w.quantization.axis == 0
    np.testing.assert_allclose(w.dequantize(), q.astype(np.float32) * scale[:, None])
    n = m.neuron("y", 1)
    np.testing.assert_allclose(n.incoming, q[1].astype(np.float32) * 0.2, rtol=1e-6)
    assert any("dequantized" in note for note in n.notes)


def test_dequantizing_a_float_weight_says_it_is_not_quantized():
    m = onnxscope.Model(mlp_model())
    with pytest.raises(onnxscope.UnsupportedError, match="'fc1.weight' .*is not quantized"):
        m.weights["fc1.weight"].dequantize()


def test_stats_match_numpy_and_find_dead_units():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((6, 7)).astype(np.float32)
    a[2] = 0
    a[4, 3] = 1e5
    s = tensor_stats(a, unit_axis=0)
    assert s.count == a.size
    assert s.mean == pytest.approx(float(a.astype(np.float64).mean()), rel=1e-9)
    assert s.std == pytest.approx(float(a.astype(np.float64).std()), rel=1e-9)
    assert (s.min, s.max) == (float(a.min()), float(a.max()))
    assert s.l2 == pytest.approx(float(np.linalg.norm(a.astype(np.float64))), rel=1e-9)
    assert s.sparsity == pytest.approx(np.mean(a == 0))
    assert s.fp16_overflow == 1 and s.dead_units == (2,)


def test_stats_count_nan_and_inf_and_ignore_them_in_moments():
    a = np.array([1.0, np.nan, np.inf, -np.inf, 3.0], np.float32)
    s = tensor_stats(a)
    assert (s.nan, s.inf) == (1, 2)
    assert s.mean == 2.0 and s.min == 1.0 and s.max == 3.0


def test_stats_are_chunked_without_changing_the_result(monkeypatch):
    import onnxscope.weights as wmod

    rng = np.random.default_rng(4)
    a = rng.standard_normal((50, 40)).astype(np.float32)
    whole = tensor_stats(a, unit_axis=1)
    monkeypatch.setattr(wmod, "_CHUNK", 7)
    chunked = tensor_stats(a, unit_axis=1)
    assert chunked.mean == pytest.approx(whole.mean, rel=1e-9, abs=1e-12)
    assert chunked.std == pytest.approx(whole.std, rel=1e-9)
    assert (chunked.min, chunked.max, chunked.dead_units) == (whole.min, whole.max, whole.dead_units)


def test_identical_tensors_under_two_names_are_reported(tmp_path):
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    m = _model(
        """<ir_version: 9, opset_import: ["": 17]>
        g (float[2, 3] x) => (float[2, 4] y) {
            a = MatMul(x, w1)
            b = MatMul(x, w2)
            y = Add(a, b)
        }""",
        tmp_path,
        {"w1": w, "w2": w.copy(), "w3": w + 1},
    )
    assert m.weights.duplicates() == [["w1", "w2"]]


def test_selecting_nothing_names_what_exists():
    ws = onnxscope.Model(mlp_model()).weights
    with pytest.raises(onnxscope.InputError, match=r"op 'Conv' \(ops using weights: Gemm\)"):
        ws.select(op="Conv")
    assert sorted(ws.select(role="bias")) == ["fc1.bias", "fc2.bias"]


def test_a_weight_transform_without_inputs_is_not_a_constant():
    """A Transpose whose input was removed (found by the fuzzer; loads when its opset is unknown): not a constant,
    and nothing is folded, instead of failing on the missing input."""
    import onnx_ir as ir

    from onnxscope.weights import const_array, is_const

    t = ir.Node("", "Transpose", [], num_outputs=1)
    assert is_const(t.outputs[0]) is False and const_array(t.outputs[0]) is None
    w = ir.Value(name="w", const_value=ir.tensor(np.arange(6, dtype=np.float32).reshape(2, 3)))
    full = ir.Node("", "Transpose", [w], num_outputs=1)
    assert is_const(full.outputs[0]) and const_array(full.outputs[0])[0].shape == (3, 2)


def test_a_unit_axis_is_followed_only_through_transforms_that_keep_the_weights_axes(tmp_path):
    """Found by the fuzzer: a weight used as a Squeeze's *axes* input, followed on to a MatMul, was given an axis its
    2-D array does not have, and its statistics failed. A weight that is not a transform's data, or that a
    Reshape/Squeeze/Unsqueeze regroups, has no known unit axis; one that is transposed keeps it."""
    m = _model(
        """<ir_version: 9, opset_import: ["": 17]>
        g (float[2, 3] x, float[1, 2, 3] s) => (float[2, 6] y, float[2, 4] z, float[2, 4] v) {
            e = Reshape(w, shape)
            y = MatMul(x, e)
            t = Transpose <perm = [1, 0]> (wt)
            z = MatMul(x, t)
            q = Squeeze(s, axes)
            v = MatMul(q, w3)
        }""",
        tmp_path,
        {
            "w": np.arange(18, dtype=np.float32).reshape(6, 3),
            "shape": np.array([3, 6], np.int64),
            "wt": np.arange(12, dtype=np.float32).reshape(4, 3),
            "axes": np.array([0], np.int64),
            "w3": np.ones((3, 4), np.float32),
        },
    )
    assert m.weights["w"].unit_axis is None and m.weights["w"].stats().count == 18
    assert m.weights["wt"].unit_axis == 0  # MatMul's units are t's columns: wt's rows
    assert m.weights["axes"].unit_axis is None and m.weights["axes"].stats().count == 1
    assert m.weights["w3"].unit_axis == 1
