"""capture(): every tensor against onnx's ReferenceEvaluator, outputs bit-identical to plain onnxruntime,
external data, inputs from files, and every bad input refused before onnxruntime runs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

import onnxscope
from onnxscope.runtime import make_session, session_options
from onnxscope.testing import mlp_model, save

ort = pytest.importorskip("onnxruntime")
from oracles import ort_marking, ort_plain, ort_subgraph  # noqa: E402

GRAPHS = {
    "conv-bn-pool-gemm": """<ir_version: 9, opset_import: ["": 17]>
        g (float[2, 3, 6, 6] x) => (float[2, 4] y) {
            c = Conv <pads = [1, 1, 1, 1]> (x, w, b)
            n = BatchNormalization(c, s, bb, mu, var)
            r = Relu(n)
            p = MaxPool <kernel_shape = [2, 2], strides = [2, 2]> (r)
            f = Flatten(p)
            y = Gemm <transB = 1> (f, fw, fb)
        }""",
    "attention-like": """<ir_version: 9, opset_import: ["": 17]>
        g (float[2, 5, 8] x) => (float[2, 5, 8] y) {
            q = MatMul(x, wq)
            k = MatMul(x, wk)
            kt = Transpose <perm = [0, 2, 1]> (k)
            sc = MatMul(q, kt)
            sc2 = Div(sc, scale)
            p = Softmax <axis = -1> (sc2)
            v = MatMul(x, wv)
            a = MatMul(p, v)
            res = Add(a, x)
            y = LayerNormalization <axis = -1> (res, ln_s, ln_b)
        }""",
}


def _inits(name):
    rng = np.random.default_rng(0)
    r = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    if name == "conv-bn-pool-gemm":
        return {
            "w": r(5, 3, 3, 3),
            "b": r(5),
            "s": r(5),
            "bb": r(5),
            "mu": r(5),
            "var": rng.uniform(0.5, 2, 5).astype(np.float32),
            "fw": r(4, 45),
            "fb": r(4),
        }
    return {
        "wq": r(8, 8),
        "wk": r(8, 8),
        "wv": r(8, 8),
        "scale": np.array(np.sqrt(8), np.float32),
        "ln_s": r(8),
        "ln_b": r(8),
    }


def _shape(proto):
    return [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]


def _save(name, tmp_path):
    proto = onnx.parser.parse_model(GRAPHS[name])
    proto.graph.initializer.extend(numpy_helper.from_array(a, k) for k, a in _inits(name).items())
    path = tmp_path / f"{name}.onnx"
    onnx.save(proto, path)
    return proto, path


@pytest.mark.parametrize("name", GRAPHS)
def test_every_captured_tensor_equals_the_reference_evaluator(tmp_path, name):
    proto, path = _save(name, tmp_path)
    x = (
        np.random.default_rng(1)
        .standard_normal([d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim])
        .astype(np.float32)
    )
    cap = onnxscope.capture(path, {"x": x})
    ref = ReferenceEvaluator(proto).run(None, {"x": x}, intermediate=True)
    produced = {o for n in proto.graph.node for o in n.output}
    assert produced <= set(cap), produced - set(cap)
    for k in produced:
        np.testing.assert_allclose(cap[k], ref[k], rtol=1e-4, atol=1e-5, err_msg=k)


@pytest.mark.parametrize("level", ["all", "extended", "basic", "disable"])
@pytest.mark.parametrize("name", GRAPHS)
def test_outputs_and_captured_tensors_equal_onnxruntime_marking_them_at_the_same_level(tmp_path, name, level):
    proto, path = _save(name, tmp_path)
    x = np.random.default_rng(2).standard_normal(_shape(proto)).astype(np.float32)
    cap = onnxscope.capture(path, {"x": x}, optimization=level)
    captured = [k for k in cap if cap.info(k).source == "captured"]
    expected = ort_marking(path, {"x": x}, captured, level)
    for k in captured:
        assert cap[k].dtype == expected[k].dtype and np.array_equal(cap[k], expected[k]), k
    plain = ort_plain(path, {"x": x}, level)
    assert np.array_equal(cap.outputs["y"], plain["y"])  # the real output is exactly plain onnxruntime's


def test_tensors_onnxruntime_fused_away_are_recomputed_by_the_original_nodes_on_read(tmp_path):
    proto, path = _save("conv-bn-pool-gemm", tmp_path)
    x = np.random.default_rng(3).standard_normal((2, 3, 6, 6)).astype(np.float32)
    cap = onnxscope.capture(path, {"x": x})
    recomputed = [k for k in cap if cap.info(k).source == "recomputed"]
    assert "c" in recomputed and "n" in recomputed  # BatchNorm folded into the Conv, Conv+Relu fused
    assert not cap.storage.captured("c")  # nothing is computed before it is read
    session = onnxscope.CaptureSession(path)
    for k in recomputed:
        part = session.plan.recompute.parts[session.plan.recompute.part_of[k]]
        oracle = ort_subgraph(path, {f: np.asarray(cap[f]) for f in part.feeds}, part.outputs)
        np.testing.assert_array_equal(cap[k], oracle[k], err_msg=k)
    ref = ReferenceEvaluator(proto).run(None, {"x": x}, intermediate=True)
    for k in recomputed:  # and end to end, the unfused semantics within float tolerance
        np.testing.assert_allclose(cap[k], ref[k], rtol=1e-4, atol=1e-5, err_msg=k)


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_without_recompute_the_tensors_fusions_remove_are_marked_and_equal_onnxruntime_marking_them(
    tmp_path, name, monkeypatch
):
    """recompute=False (what a dataset capture uses): every tensor comes from the run itself, onnxruntime leaving
    out the fusions that would remove them; the oracle is plain onnxruntime at ALL with all of them marked."""
    proto, path = _save(name, tmp_path)
    x = np.random.default_rng(4).standard_normal(_shape(proto)).astype(np.float32)
    fused = onnxscope.capture(path, {"x": x})
    assert any(fused.info(k).source == "recomputed" for k in fused)  # the default does recompute some

    def refuse(*args, **kwargs):
        raise AssertionError("no quantized layer: onnxruntime's optimized graph is not needed")

    monkeypatch.setattr("onnxscope.session.survivors", refuse)
    session = onnxscope.CaptureSession(path, recompute=False)
    cap = session.run({"x": x})
    assert session.plan.recompute is None and sorted(cap) == sorted(fused)
    names = [k for k in cap if cap.info(k).source == "captured"]
    assert sorted(names) == sorted(k for k in cap if k != "x" and cap.info(k).source != "folded")
    oracle = ort_marking(path, {"x": x}, names, "all")
    for k in names:
        np.testing.assert_array_equal(cap[k], oracle[k], err_msg=k)


def test_external_data_models_run_without_loading_weights_into_the_rewrite(tmp_path):
    path = save(
        mlp_model(in_features=5, hidden=64, out_features=3),
        tmp_path / "ext.onnx",
        external_data="ext.onnx.data",
    )
    m = onnxscope.load(path)
    assert m.weights["fc1.weight"].external == "ext.onnx.data"
    x = np.ones((2, 5), np.float32)
    cap = onnxscope.capture(m, {"x": x})
    assert m.weights["fc1.weight"].tensor.raw is None, "the rewrite must not read external weights"
    w = mlp_model(in_features=5, hidden=64, out_features=3).graph.initializers
    h = x @ w["fc1.weight"].const_value.numpy().T + w["fc1.bias"].const_value.numpy()
    np.testing.assert_allclose(cap["h"], h, rtol=1e-5)
    node = cap.node("fc1")
    assert node.op == "Gemm" and set(node.inputs) == {"x", "fc1.weight", "fc1.bias"}
    np.testing.assert_array_equal(node.inputs["fc1.weight"], w["fc1.weight"].const_value.numpy())


def test_untyped_intermediates_are_captured_without_shape_inference(tmp_path):
    proto, path = _save("conv-bn-pool-gemm", tmp_path)
    del proto.graph.value_info[:]
    onnx.save(proto, path)
    m = onnxscope.load(path)
    assert m.value("p").shape is None
    cap = onnxscope.capture(m, random=True)
    assert cap["p"].shape == (2, 5, 3, 3)


def test_select_and_exclude(tmp_path):
    _, path = _save("attention-like", tmp_path)
    x = np.zeros((2, 5, 8), np.float32)
    assert sorted(onnxscope.capture(path, {"x": x}, select="op:Softmax")) == ["p", "x", "y"]
    assert sorted(onnxscope.capture(path, {"x": x}, select=["re:^s", "k*"], exclude="kt")) == [
        "k",
        "sc",
        "sc2",
        "x",
        "y",
    ]
    assert sorted(
        onnxscope.capture(path, {"x": x}, select=lambda t: t.op == "MatMul" and t.name.startswith("q"))
    ) == ["q", "x", "y"]


def test_capture_neuron_gives_pre_and_post_activation(tmp_path):
    m = onnxscope.Model(mlp_model(in_features=3, hidden=4, out_features=2))
    x = np.random.default_rng(3).standard_normal((5, 3)).astype(np.float32)
    cap = onnxscope.capture(m, {"x": x})
    n = cap.neuron("fc1", 2)
    w = m.weights["fc1.weight"].numpy()
    pre = x @ w[2] + m.weights["fc1.bias"].numpy()[2]
    np.testing.assert_allclose(n.pre, pre, rtol=1e-5)
    np.testing.assert_allclose(n.post, np.maximum(pre, 0), rtol=1e-5)
    assert (n.pre_tensor, n.post_tensor) == ("h", "a")


def test_save_and_load_capture_round_trip(tmp_path):
    m = onnxscope.Model(mlp_model())
    cap = onnxscope.capture(m, random=True, dims={"batch": 3})
    back = onnxscope.load_capture(cap.save(tmp_path / "c.npz"), model=m)
    assert list(back) == list(cap)
    for k in cap:
        np.testing.assert_array_equal(back[k], cap[k])
    np.testing.assert_array_equal(back.neuron("fc1", 1).post, cap.neuron("fc1", 1).post)
    assert not list(tmp_path.glob(".onnxscope-*")), "no temporary file left behind"


def test_inputs_from_npy_npz_and_pb_files(tmp_path):
    from onnxscope.inputs import read_inputs

    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "all.npz", x=x)
    (tmp_path / "input_0.pb").write_bytes(numpy_helper.from_array(x, "x").SerializeToString())
    for feeds in (
        read_inputs(["x=" + str(tmp_path / "x.npy")]),
        read_inputs(bundle=tmp_path / "all.npz"),
        read_inputs(["x=" + str(tmp_path / "input_0.pb")]),
        read_inputs(bundle=tmp_path),
    ):
        np.testing.assert_array_equal(feeds["x"], x)


@pytest.mark.parametrize(
    ("feeds", "message"),
    [
        (
            {"z": np.zeros((1, 3), np.float32)},
            r"the model has no input 'z'; its inputs are x \(float32 \[batch, 3\]\)",
        ),
        (
            {"x": np.zeros((1, 3), np.float64)},
            r"input 'x': the model expects float32 \[batch, 3\], got float64",
        ),
        ({"x": np.zeros((3,), np.float32)}, r"input 'x': the model expects rank 2 .* got rank 1"),
        ({"x": np.zeros((2, 4), np.float32)}, r"axis 1 must be 3"),
        ({}, r"missing input 'x' \(float32 \[batch, 3\]\)"),
    ],
)
def test_bad_inputs_are_refused_before_onnxruntime_runs(feeds, message):
    with pytest.raises(onnxscope.InputError, match=message):
        onnxscope.capture(onnxscope.Model(mlp_model()), feeds)


def _free_dims_model(tmp_path):
    proto = onnx.parser.parse_model("""<ir_version: 9, opset_import: ["": 17]>
        g (float[N, 3, H, W] x, float[N, 4] z) => (float[N, 3, H, W] y, float[N, 4] r) {
            y = Relu(x)
            r = Relu(z)
        }""")
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    dims[0].Clear()
    dims[0].dim_value = -1  # as PaddlePaddle declares a batch
    dims[2].Clear()
    dims[2].dim_param = "?"  # a literal '?' on two axes that are not the same size
    dims[3].Clear()
    dims[3].dim_param = "?"
    proto.graph.input[1].type.tensor_type.shape.dim[0].Clear()  # unnamed
    onnx.save(proto, tmp_path / "free.onnx")
    return onnxscope.load(tmp_path / "free.onnx")


def test_free_dimensions_take_any_size_independently(tmp_path):
    m = _free_dims_model(tmp_path)
    x = np.ones((2, 3, 48, 192), np.float32)
    z = np.ones((5, 4), np.float32)  # -1 on x and an unnamed dim on z: independent of each other
    cap = onnxscope.capture(m, {"x": x, "z": z})
    assert cap["y"].shape == (2, 3, 48, 192) and cap["r"].shape == (5, 4)
    with pytest.raises(onnxscope.InputError, match=r"axis 1 must be 3"):
        onnxscope.capture(m, {"x": np.ones((1, 4, 8, 8), np.float32), "z": z})


def test_random_inputs_pick_sensible_sizes_and_any_dim_can_be_set(tmp_path):
    from onnxscope.inputs import resolve_dims

    m = _free_dims_model(tmp_path)
    assert resolve_dims(m) == {"x:0": 1, "x:2": 224, "x:3": 224, "z:0": 1}
    cap = onnxscope.capture(m, random=True, dims={"x:2": 48, "x:3": 192, "z:0": 3})
    assert cap["x"].shape == (1, 3, 48, 192) and cap["z"].shape == (3, 4)
    with pytest.raises(onnxscope.InputError, match=r"no such dimension; its non-fixed dimensions are .*x:2"):
        onnxscope.capture(m, random=True, dims={"height": 4})
    named = onnxscope.Model(mlp_model())
    assert onnxscope.capture(named, random=True)["x"].shape == (1, 3)  # 'batch' defaults to 1
    assert onnxscope.capture(named, random=True, dims={"batch": 4})["x"].shape == (4, 3)


def test_a_named_dimension_must_have_one_size_in_every_input(tmp_path):
    proto = onnx.parser.parse_model("""<ir_version: 9, opset_import: ["": 17]>
        g (float[batch, 3] a, float[batch, 3] b) => (float[batch, 3] y) {
            y = Add(a, b)
        }""")
    onnx.save(proto, tmp_path / "two.onnx")
    with pytest.raises(onnxscope.InputError, match=r"dimension 'batch' is 2 in input 'a' but 3 here"):
        onnxscope.capture(
            tmp_path / "two.onnx", {"a": np.ones((2, 3), np.float32), "b": np.ones((3, 3), np.float32)}
        )


def test_an_unknown_tensor_in_select_names_close_ones():
    with pytest.raises(onnxscope.NotFoundError, match=r"select 'hh': no such tensor; did you mean 'h'"):
        onnxscope.capture(onnxscope.Model(mlp_model()), random=True, dims={"batch": 1}, select="hh")


def test_a_model_onnxruntime_cannot_load_is_a_capture_error(tmp_path):
    proto = onnx.parser.parse_model("""<ir_version: 9, opset_import: ["": 17, "custom.domain": 1]>
        g (float[2] x) => (float[2] y) { y = custom.domain.Frobnicate(x) }""")
    onnx.save(proto, tmp_path / "custom.onnx")
    with pytest.raises(onnxscope.CaptureError, match="onnxruntime cannot load the model"):
        onnxscope.capture(tmp_path / "custom.onnx", random=True)


def test_an_unavailable_provider_lists_the_available_ones():
    with pytest.raises(
        onnxscope.InputError,
        match=r"provider 'NoSuchProvider' is not available; available: .*CPUExecutionProvider",
    ):
        make_session(b"", None, session_options(), ["NoSuchProvider"])


def test_tensors_computed_from_weights_alone_are_folded_not_copied_from_each_run(tmp_path):
    proto = onnx.parser.parse_model("""<ir_version: 9, opset_import: ["": 17]>
        g (float[2, 3] x) => (float[2, 4] y) {
            wt = Transpose(w)
            y = MatMul(x, wt)
        }""")
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    proto.graph.initializer.append(numpy_helper.from_array(w, "w"))
    onnx.save(proto, tmp_path / "t.onnx")
    m = onnxscope.load(tmp_path / "t.onnx")
    session = onnxscope.CaptureSession(m)
    assert "wt" in session.plan.names("folded") and "wt" not in session.plan.outputs.values()
    cap = session.run({"x": np.ones((2, 3), np.float32)})
    assert "wt" in cap and list(cap) == ["x", "wt", "y"] and cap.info("wt").source == "folded"
    np.testing.assert_array_equal(cap["wt"], w.T)
    np.testing.assert_array_equal(cap.node("wt").outputs["wt"], w.T)
    saved = cap.save(tmp_path / "c.npz")
    with pytest.raises(onnxscope.NotFoundError, match="computed from the model's weights alone"):
        onnxscope.load_capture(saved)["wt"]
    np.testing.assert_array_equal(onnxscope.load_capture(saved, model=m)["wt"], w.T)


def test_a_reused_session_binds_its_outputs_after_the_first_run(tmp_path):
    m = onnxscope.Model(mlp_model(in_features=3, hidden=4))
    session = onnxscope.CaptureSession(m)
    xs = np.random.default_rng(0).standard_normal((3, 2, 3)).astype(np.float32)
    caps = [session.run({"x": x}) for x in xs]
    assert len(session._pool) == 1  # one input signature, its outputs bound
    for x, cap in zip(xs, caps, strict=True):
        np.testing.assert_array_equal(cap["y"], onnxscope.capture(m, {"x": x})["y"])


def test_binding_many_outputs_matches_unbound_runs_and_survives_data_dependent_shapes(tmp_path, monkeypatch):
    import importlib

    capmod = importlib.import_module("onnxscope.session")

    proto = onnx.parser.parse_model("""<ir_version: 9, opset_import: ["": 17]>
        g (float[5] x) => (int64[1, ?] idx, float[5] y) {
            r = Relu(x)
            idx = NonZero(r)
            y = Mul(r, r)
        }""")
    onnx.save(proto, tmp_path / "nz.onnx")
    monkeypatch.setattr(capmod, "_BIND_MIN_OUTPUTS", 1)  # bind even this small graph
    session = onnxscope.CaptureSession(tmp_path / "nz.onnx")
    a = np.array([1, -1, 2, -2, 3], np.float32)
    b = np.array([-1, -1, 2, 2, 3], np.float32)
    c = np.array([5, 4, 3, 2, 1], np.float32)
    caps = [session.run({"x": v}) for v in (a, a, b, c)]
    for v, cap in zip((a, a, b, c), caps, strict=True):
        fresh = onnxscope.capture(tmp_path / "nz.onnx", {"x": v})
        for k in fresh:
            np.testing.assert_array_equal(cap[k], fresh[k], err_msg=k)
    assert caps[0]["idx"] is not caps[1]["idx"] and not np.shares_memory(caps[1]["y"], caps[2]["y"])
    assert not session._pool and session._unbindable  # NonZero's shape changed: unbound from then on


def test_bound_runs_copy_nothing_and_reuse_a_buffer_only_once_nothing_refers_to_it(tmp_path, monkeypatch):
    import importlib

    monkeypatch.setattr(importlib.import_module("onnxscope.session"), "_BIND_MIN_OUTPUTS", 1)
    proto, path = _save("conv-bn-pool-gemm", tmp_path)
    session = onnxscope.CaptureSession(path, optimization="disable")
    xs = np.random.default_rng(4).standard_normal((6, 2, 3, 6, 6)).astype(np.float32)
    kept = [session.run({"x": x}) for x in xs[:3]]  # first run unbound, then bound
    fresh = [onnxscope.capture(path, {"x": x}, optimization="disable") for x in xs[:3]]
    for a, b in zip(kept, fresh, strict=True):  # captures held at once never share a buffer
        for k in b:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    ((layout, buffers),) = session._pool.values()
    assert len(buffers) == 3  # run 1's own arrays, then buffers for runs 2 and 3: all three still held
    relu = kept[2]["r"]
    del kept
    for x in xs[3:]:  # a loop that lets each capture go before the next run: no new buffer, no copy
        cap = session.run({"x": x})
        assert any(np.shares_memory(cap["r"], a) for b in buffers for a in b.arenas)
        del cap
    assert len(session._pool[next(iter(session._pool))][1]) == 2
    np.testing.assert_array_equal(
        relu, fresh[2]["r"]
    )  # an array still held kept its buffer from being reused


def test_a_first_runs_arrays_become_the_buffers_of_the_next_once_nothing_refers_to_them(tmp_path):
    """onnxruntime's arrays of the first (unbound) run are bound as buffers: a loop that lets each capture go takes
    no second copy of the captured bytes. Held arrays, views of them, or the capture keep them from being reused."""
    proto, path = _save("conv-bn-pool-gemm", tmp_path)
    session = onnxscope.CaptureSession(path, optimization="disable")
    xs = np.random.default_rng(6).standard_normal((4, 2, 3, 6, 6)).astype(np.float32)
    expected = [onnxscope.capture(path, {"x": x}, optimization="disable") for x in xs]
    first = session.run({"x": xs[0]})
    where = {k: first[k].ctypes.data for k in ("r", "p", "y")}
    del first
    second = session.run({"x": xs[1]})  # written where the first run's arrays were
    assert {k: second[k].ctypes.data for k in where} == where
    for k in expected[1]:
        np.testing.assert_array_equal(second[k], expected[1][k], err_msg=k)
    view = second["r"][:, 1:]  # a view of one array keeps the whole set from being reused
    del second
    third = session.run({"x": xs[2]})
    assert third["r"].ctypes.data != where["r"]
    np.testing.assert_array_equal(view, expected[1]["r"][:, 1:])
    capture = third  # a capture held keeps its set too
    del view, third
    fourth = session.run({"x": xs[3]})
    assert fourth["r"].ctypes.data == where["r"] and not np.shares_memory(fourth["r"], capture["r"])
    for k in expected[3]:
        np.testing.assert_array_equal(fourth[k], expected[3][k], err_msg=k)
        np.testing.assert_array_equal(capture[k], expected[2][k], err_msg=k)


def test_outputs_can_be_written_straight_into_the_callers_arrays(tmp_path):
    proto, path = _save("conv-bn-pool-gemm", tmp_path)
    session = onnxscope.CaptureSession(path, optimization="disable")
    xs = np.random.default_rng(5).standard_normal((3, 2, 3, 6, 6)).astype(np.float32)
    session.run({"x": xs[0]})  # the first run shows the shapes; later ones are bound
    mine = {"r": np.empty((2, 5, 6, 6), np.float32), "y": np.empty((2, 4), np.float32)}
    for x in xs[1:]:
        cap = session.run({"x": x}, out=mine)
        assert np.shares_memory(cap["r"], mine["r"]) and np.shares_memory(cap["y"], mine["y"])
        expected = onnxscope.capture(path, {"x": x}, optimization="disable")
        np.testing.assert_array_equal(mine["r"], expected["r"])
        np.testing.assert_array_equal(cap["p"], expected["p"])  # the others still in the session's buffers
    wrong = {"y": np.empty((3, 4), np.float32)}  # a shape that is not the run's: written elsewhere, untouched
    cap = session.run({"x": xs[0]}, out=wrong)
    assert not np.shares_memory(cap["y"], wrong["y"])
    np.testing.assert_array_equal(
        cap["y"], onnxscope.capture(path, {"x": xs[0]}, optimization="disable")["y"]
    )


def test_materializing_every_recomputed_tensor_at_once_gives_what_reading_them_one_by_one_gives(tmp_path):
    proto, path = _save("conv-bn-pool-gemm", tmp_path)
    x = np.random.default_rng(6).standard_normal((2, 3, 6, 6)).astype(np.float32)
    session = onnxscope.CaptureSession(path)
    one_by_one, at_once = session.run({"x": x}), session.run({"x": x}).materialize()
    recomputed = [k for k in one_by_one if one_by_one.info(k).source == "recomputed"]
    assert recomputed and all(at_once.storage.captured(k) for k in recomputed)
    for k in recomputed:
        np.testing.assert_array_equal(at_once[k], one_by_one[k], err_msg=k)


def test_inputs_validated_once_are_not_validated_again_whatever_their_order(tmp_path, monkeypatch):
    """A session validates an input signature once; later runs with the same names, shapes and dtypes skip it —
    also when the caller's mapping lists them in another order than the graph (Silero VAD's inputs as its users
    pass them: the check ran on every run, ~0.1 ms of a 0.14 ms model)."""
    import importlib

    capmod = importlib.import_module("onnxscope.session")
    proto = onnx.parser.parse_model("""<ir_version: 9, opset_import: ["": 17]>
        g (float[2] a, float[2] b) => (float[2] y) {
            y = Add(a, b)
        }""")
    onnx.save(proto, tmp_path / "ab.onnx")
    calls = []
    real = capmod.prepare_inputs
    monkeypatch.setattr(capmod, "prepare_inputs", lambda *a, **k: calls.append(1) or real(*a, **k))
    session = onnxscope.CaptureSession(tmp_path / "ab.onnx")
    feeds = {"b": np.ones(2, np.float32), "a": np.arange(2, dtype=np.float32)}  # not the graph's order
    for _ in range(3):
        np.testing.assert_array_equal(session.run(feeds).outputs["y"], [1.0, 2.0])
    assert len(calls) == 1
    with pytest.raises(onnxscope.InputError, match="float32"):  # another signature is checked again
        session.run({"a": np.ones(2, np.float64), "b": np.ones(2, np.float32)})
    assert len(calls) == 2
