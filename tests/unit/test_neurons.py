"""Neurons on graphs built in code; expected slices come from the operators' definitions, written out in numpy."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import onnxscope

RNG = np.random.default_rng(0)


def _model(text: str, tmp_path, **inits: np.ndarray) -> onnxscope.Model:
    proto = onnx.parser.parse_model('<ir_version: 9, opset_import: ["": 17]>\n' + text)
    for name, arr in inits.items():
        proto.graph.initializer.append(numpy_helper.from_array(arr, name))
    p = tmp_path / "m.onnx"
    onnx.save(proto, p)
    return onnxscope.load(p)


def _r(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_incoming_follows_trans_b_and_alpha_beta(tmp_path, trans_b):
    w = _r(5, 3) if trans_b else _r(3, 5)
    c, w2 = _r(5), _r(4, 5)
    m = _model(
        f"""g (float[2, 3] x) => (float[2, 4] y) {{
            h = Gemm <transB = {trans_b}, alpha = 2.0, beta = 0.5> (x, w, c)
            y = MatMul(h, w2t)
        }}""",
        tmp_path,
        w=w,
        c=c,
        w2t=w2.T.copy(),
    )
    n = m.neuron("h", 3)
    per_unit = w if trans_b else w.T
    np.testing.assert_allclose(n.incoming, 2.0 * per_unit[3])
    assert float(n.bias) == pytest.approx(0.5 * c[3])
    (out,) = n.outgoing
    np.testing.assert_array_equal(out.weights, w2[:, 3])


def test_matmul_with_the_weight_on_the_left(tmp_path):
    w = _r(4, 3)
    m = _model(
        """g (float[3, 6] x) => (float[4, 6] y) {
            y = MatMul(w, x)
        }""",
        tmp_path,
        w=w,
    )
    n = m.neuron("y", 2)
    np.testing.assert_array_equal(n.incoming, w[2])
    assert n.axis == -2


def test_matmul_then_add_finds_the_bias(tmp_path):
    w, b = _r(3, 4), _r(4)
    m = _model(
        """g (float[2, 7, 3] x) => (float[2, 7, 4] y) {
            h = MatMul(x, w)
            y = Add(h, b)
        }""",
        tmp_path,
        w=w,
        b=b,
    )
    n = m.neuron("w", 1)
    np.testing.assert_array_equal(n.incoming, w[:, 1])
    assert float(n.bias) == b[1] and n.output == "y"


def test_flatten_maps_a_channel_to_its_block_of_features(tmp_path):
    wc, wf = _r(4, 2, 3, 3), _r(5, 4 * 3 * 3)
    m = _model(
        """g (float[1, 2, 5, 5] x) => (float[1, 5] y) {
            c = Conv(x, wc)
            r = Relu(c)
            f = Flatten(r)
            y = Gemm <transB = 1> (f, wf)
        }""",
        tmp_path,
        wc=wc,
        wf=wf,
    )
    n = m.neuron("c", 2)
    np.testing.assert_array_equal(n.incoming, wc[2])
    (out,) = n.outgoing
    np.testing.assert_array_equal(out.weights, wf[:, 18:27])
    assert out.inputs == tuple(range(18, 27))
    assert (out.node, out.path) == ("y", ("r", "f"))


def test_nhwc_transpose_then_reshape_maps_a_channel_to_strided_features(tmp_path):
    wc, wd = _r(4, 2, 1, 1), _r(3 * 3 * 4, 6)
    m = _model(
        """g (float[1, 2, 3, 3] x) => (float[1, 6] y) {
            c = Conv(x, wc)
            t = Transpose <perm = [0, 2, 3, 1]> (c)
            f = Reshape(t, shape)
            y = MatMul(f, wd)
        }""",
        tmp_path,
        wc=wc,
        wd=wd,
        shape=np.array([1, -1], np.int64),
    )
    n = m.neuron("c", 1)
    channel_of_feature = (
        np.broadcast_to(np.arange(4)[:, None, None], (4, 3, 3)).transpose(1, 2, 0).reshape(-1)
    )
    expected = np.flatnonzero(channel_of_feature == 1)
    (out,) = n.outgoing
    assert out.inputs == tuple(expected)
    np.testing.assert_array_equal(out.weights, wd[expected].T)


def test_grouped_and_depthwise_convolutions(tmp_path):
    w1 = _r(6, 2, 3, 3)  # 4 input channels, group 2: out 0-2 read in 0-1, out 3-5 read in 2-3
    w2 = _r(12, 1, 3, 3)  # depthwise, multiplier 2: channel c feeds outputs 2c, 2c+1
    m = _model(
        """g (float[1, 4, 8, 8] x) => (float[1, 12, 4, 4] y) {
            a = Conv <group = 2> (x, w1)
            y = Conv <group = 6> (a, w2)
        }""",
        tmp_path,
        w1=w1,
        w2=w2,
    )
    n = m.neuron("a", 4)
    np.testing.assert_array_equal(n.incoming, w1[4])
    assert n.input_channels == (2, 4)
    (out,) = n.outgoing
    assert out.targets == (8, 9)
    np.testing.assert_array_equal(out.weights, w2[8:10, 0])


def test_conv_transpose_incoming_and_outgoing(tmp_path):
    wt = _r(4, 3, 2, 2)  # ConvTranspose: [in, out/group, kh, kw]
    w2 = _r(5, 3, 1, 1)
    m = _model(
        """g (float[1, 4, 3, 3] x) => (float[1, 5, 6, 6] y) {
            a = ConvTranspose <strides = [2, 2]> (x, wt)
            y = ConvTranspose(a, w2b)
        }""",
        tmp_path,
        wt=wt,
        w2b=np.ascontiguousarray(w2.transpose(1, 0, 2, 3)),
    )
    n = m.neuron("a", 1)
    np.testing.assert_array_equal(n.incoming, wt[:, 1])
    (out,) = n.outgoing
    np.testing.assert_array_equal(out.weights, w2.transpose(1, 0, 2, 3)[1])


def test_a_branching_output_reaches_every_consumer(tmp_path):
    w1, w2, w3 = _r(3, 3), _r(3, 3), _r(3, 2)
    m = _model(
        """g (float[2, 3] x) => (float[2, 2] y) {
            h = MatMul(x, w1)
            a = Relu(h)
            b = MatMul(a, w2)
            s = Add(a, b)
            y = MatMul(s, w3)
        }""",
        tmp_path,
        w1=w1,
        w2=w2,
        w3=w3,
    )
    n = m.neuron("h", 0)
    by_node = {o.node: o for o in n.outgoing}
    assert sorted(by_node) == ["b", "y"] and len(n.outgoing) == 2
    np.testing.assert_array_equal(by_node["b"].weights, w2[0])
    np.testing.assert_array_equal(by_node["y"].weights, w3[0])
    assert by_node["y"].path == ("a", "s")


@pytest.mark.parametrize(
    ("op_text", "reason"),
    [
        ("s = Softmax <axis = -1> (h)", "Softmax mixes"),
        ("s = Gather <axis = 1> (h, runtime)", "Gather selects"),
    ],
)
def test_paths_that_cannot_be_followed_are_reported_not_guessed(tmp_path, op_text, reason):
    m = _model(
        f"""g (float[2, 3] x, int64[1] runtime) => (float[?] s) {{
            h = MatMul(x, w)
            {op_text}
        }}""",
        tmp_path,
        w=_r(3, 4),
        idx=np.array([0], np.int64),
    )
    n = m.neuron("h", 1)
    assert n.outgoing == ()
    assert any(reason in s.reason and s.op in ("Softmax", "Gather") for s in n.stops)


def test_split_slice_and_gather_on_the_channel_axis_map_the_unit_into_every_consumer(tmp_path):
    # h: [1, 8, 4, 4]. Split 3/5 on channels: part a = 0..2, part b = 3..7; Slice 1:8:2 keeps 1, 3, 5, 7;
    # Gather [6, 2, 6] takes 6, 2, 6. Unit 6 lands at b's channel 3 and at the gathered positions 0 and 2;
    # unit 5 at b's channel 2 and at the sliced position 2.
    w, wa, wb, ws, wg = _r(8, 3, 1, 1), _r(2, 3, 1, 1), _r(2, 5, 1, 1), _r(2, 4, 1, 1), _r(2, 3, 1, 1)
    m = _model(
        """g (float[1, 3, 4, 4] x) => (float[1, 2, 4, 4] ya, float[1, 2, 4, 4] yb, float[1, 2, 4, 4] ys,
               float[1, 2, 4, 4] yg) {
            h = Conv(x, w)
            a, b = Split <axis = 1> (h, sizes)
            ya = Conv(a, wa)
            yb = Conv(b, wb)
            s = Slice(h, starts, ends, axes, steps)
            ys = Conv(s, ws)
            g2 = Gather <axis = 1> (h, idx)
            yg = Conv(g2, wg)
        }""",
        tmp_path,
        w=w,
        wa=wa,
        wb=wb,
        ws=ws,
        wg=wg,
        sizes=np.array([3, 5], np.int64),
        starts=np.array([1], np.int64),
        ends=np.array([8], np.int64),
        axes=np.array([1], np.int64),
        steps=np.array([2], np.int64),
        idx=np.array([6, 2, 6], np.int64),
    )
    out = {o.node: o for o in m.neuron("h", 6).outgoing}
    assert set(out) == {"yb", "yg"}  # not 'ya' (channels 0..2) nor 'ys' (1, 3, 5, 7)
    np.testing.assert_array_equal(out["yb"].weights, wb[:, 3])  # Conv: [out_channels, kh, kw]
    assert out["yb"].inputs == (3,)
    np.testing.assert_array_equal(out["yg"].weights, wg[:, [0, 2]])
    assert out["yg"].inputs == (0, 2)
    out = {o.node: o for o in m.neuron("h", 5).outgoing}
    assert set(out) == {"yb", "ys"}
    np.testing.assert_array_equal(out["ys"].weights, ws[:, 2])
    np.testing.assert_array_equal(out["yb"].weights, wb[:, 2])
    assert not any("Split" in s.reason or "Slice" in s.reason for s in m.neuron("h", 5).stops)


def test_split_along_another_axis_passes_the_unit_to_every_part(tmp_path):
    w, w1, w2 = _r(3, 4), _r(4, 2), _r(4, 2)
    m = _model(
        """g (float[6, 3] x) => (float[2, 2] y1, float[4, 2] y2) {
            h = MatMul(x, w)
            p, q = Split <axis = 0> (h, sizes)
            y1 = MatMul(p, w1)
            y2 = MatMul(q, w2)
        }""",
        tmp_path,
        w=w,
        w1=w1,
        w2=w2,
        sizes=np.array([2, 4], np.int64),
    )
    out = {o.node: o.weights for o in m.neuron("h", 1).outgoing}
    np.testing.assert_array_equal(out["y1"], w1[1])
    np.testing.assert_array_equal(out["y2"], w2[1])


def test_a_reshape_into_heads_is_a_stop(tmp_path):
    m = _model(
        """g (float[2, 8] x) => (float[2, 2, 4] y) {
            h = MatMul(x, w)
            y = Reshape(h, shape)
        }""",
        tmp_path,
        w=_r(8, 8),
        shape=np.array([2, 2, 4], np.int64),
    )
    (stop,) = [s for s in m.neuron("h", 5).stops if s.op == "Reshape"]
    assert "splits the neuron" in stop.reason


def test_errors_name_the_layer_and_the_alternatives(tmp_path):
    m = _model(
        """g (float[2, 3] x) => (float[2, 4] y) {
            h = MatMul(x, w)
            y = Relu(h)
        }""",
        tmp_path,
        w=_r(3, 4),
    )
    with pytest.raises(onnxscope.InputError, match=r"index 4 is out of range .* valid indices 0\.\.3"):
        m.neuron("h", 4)
    with pytest.raises(onnxscope.NotFoundError, match="no layer 'hh'; did you mean"):
        m.neuron("hh", 0)
    with pytest.raises(onnxscope.UnsupportedError, match="is a Relu: neuron queries need a weighted layer"):
        m.neuron("y", 0)


def test_a_consumer_whose_weight_is_narrower_than_the_layer_stops_with_a_reason(tmp_path):
    """A graph rewired so that a 6-unit layer feeds a MatMul expecting 4 inputs (found by the fuzzer): unit 5 has
    no weight row there; the query says so instead of failing on the index."""
    m = _model(
        """g (float[1, 3] x) => (float[1, 2] y) {
            h = Gemm <transB = 1> (x, w)
            y = MatMul(h, w2)
        }""",
        tmp_path,
        w=_r(6, 3),
        w2=_r(4, 2),
    )
    n = m.neuron("h", 5)
    assert n.outgoing == () and [s.reason for s in n.stops] == [
        "MatMul 'y': the neuron lies outside its weight (4 inputs)"
    ]
    assert [o.weights.tolist() for o in m.neuron("h", 1).outgoing] == [m.weights["w2"].numpy()[1].tolist()]
