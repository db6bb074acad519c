"""Capture inside Loop (with an If and a residual Add in its body), Scan and nested If branches, against values
computed by hand."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxscope

pytest.importorskip("onnxruntime")

F = TensorProto.FLOAT


def _model(path):
    one = helper.make_tensor("one", F, [], [1.0])
    two = helper.make_tensor("two", F, [], [2.0])
    then_g = helper.make_graph(
        [helper.make_node("Add", ["m", "one"], ["t"], name="inc")],
        "then",
        [],
        [helper.make_tensor_value_info("t", F, [2])],
    )
    else_g = helper.make_graph(
        [helper.make_node("Sub", ["m", "one"], ["e"], name="dec")],
        "else",
        [],
        [helper.make_tensor_value_info("e", F, [2])],
    )
    body = helper.make_graph(
        [
            helper.make_node("Mul", ["s_in", "two"], ["m"], name="double"),
            helper.make_node("Constant", [], ["k2"], value=numpy_helper.from_array(np.array(2, np.int64))),
            helper.make_node("Mod", ["i", "k2"], ["parity"], name="mod"),
            helper.make_node("Constant", [], ["k0"], value=numpy_helper.from_array(np.array(0, np.int64))),
            helper.make_node("Equal", ["parity", "k0"], ["even"], name="is_even"),
            helper.make_node("If", ["even"], ["r"], name="branch", then_branch=then_g, else_branch=else_g),
            helper.make_node("Add", ["r", "s_in"], ["s_out"], name="residual"),
            helper.make_node("Identity", ["c_in"], ["c_out"], name="keep_going"),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("s_in", F, [2]),
        ],
        [
            helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("s_out", F, [2]),
        ],
    )
    scan_body = helper.make_graph(
        [
            helper.make_node("Add", ["acc_in", "row"], ["acc_out"], name="accumulate"),
            helper.make_node("Mul", ["acc_out", "row"], ["y_row"], name="weigh"),
        ],
        "scan_body",
        [helper.make_tensor_value_info("acc_in", F, [2]), helper.make_tensor_value_info("row", F, [2])],
        [helper.make_tensor_value_info("acc_out", F, [2]), helper.make_tensor_value_info("y_row", F, [2])],
    )
    graph = helper.make_graph(
        [
            helper.make_node("Loop", ["trip", "cond", "x"], ["s_final"], name="loop", body=body),
            helper.make_node(
                "Scan", ["s_final", "rows"], ["acc", "ys"], name="scan", body=scan_body, num_scan_inputs=1
            ),
        ],
        "control_flow",
        [helper.make_tensor_value_info("x", F, [2]), helper.make_tensor_value_info("rows", F, [3, 2])],
        [helper.make_tensor_value_info("acc", F, [2]), helper.make_tensor_value_info("ys", F, [3, 2])],
        initializer=[
            one,
            two,
            numpy_helper.from_array(np.array(3, np.int64), "trip"),
            numpy_helper.from_array(np.array(True), "cond"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _by_hand(x, rows):
    ref = {k: [] for k in ("i", "s_in", "m", "parity", "even", "t", "e", "r", "s_out")}
    s = x.copy()
    for i in range(3):
        m = s * 2
        even = i % 2 == 0
        r = m + 1 if even else m - 1
        ref["i"].append(i), ref["s_in"].append(s), ref["m"].append(m), ref["parity"].append(i % 2)
        ref["even"].append(even), ref["r"].append(r)
        ref["t" if even else "e"].append(r)
        s = r + s
        ref["s_out"].append(s)
    acc = s
    scan = {"acc_in": [], "acc_out": [], "y_row": []}
    for row in rows:
        scan["acc_in"].append(acc)
        acc = acc + row
        scan["acc_out"].append(acc)
        scan["y_row"].append(acc * row)
    return ref, scan, s


def test_every_body_tensor_is_captured_per_iteration(tmp_path):
    path = _model(tmp_path / "cf.onnx")
    x = np.array([1.0, -2.0], np.float32)
    rows = np.arange(6, dtype=np.float32).reshape(3, 2)
    cap = onnxscope.capture(path, {"x": x, "rows": rows})
    ref, scan, s_final = _by_hand(x, rows)
    for name in ("i", "s_in", "m", "parity", "even", "r", "s_out"):
        np.testing.assert_array_equal(cap[f"loop/body/{name}"], np.array(ref[name]), err_msg=name)
    np.testing.assert_array_equal(cap["s_final"], s_final)
    # the If branches: values where the branch ran, and which iterations those were
    then_t, else_e = cap["loop/body/branch/then_branch/t"], cap["loop/body/branch/else_branch/e"]
    ran_then = cap.executed("loop/body/branch/then_branch/t")
    np.testing.assert_array_equal(ran_then, [True, False, True])
    np.testing.assert_array_equal(cap.executed("loop/body/branch/else_branch/e"), [False, True, False])
    np.testing.assert_array_equal(then_t[ran_then], np.array(ref["t"]))
    np.testing.assert_array_equal(else_e[~ran_then], np.array(ref["e"]))
    assert cap.info("loop/body/branch/then_branch/t").iteration_axes == 1
    for name in ("acc_in", "acc_out", "y_row"):
        np.testing.assert_array_equal(cap[f"scan/body/{name}"], np.array(scan[name]), err_msg=name)
    # the real outputs are untouched
    np.testing.assert_array_equal(cap["ys"], np.array(scan["y_row"]))
    assert list(cap.outputs) == ["acc", "ys"]


def test_selecting_one_body_tensor_rewrites_only_its_loop(tmp_path):
    path = _model(tmp_path / "cf.onnx")
    cap = onnxscope.capture(
        path, {"x": np.ones(2, np.float32), "rows": np.ones((3, 2), np.float32)}, select="loop/body/m"
    )
    assert sorted(cap) == ["acc", "loop/body/m", "rows", "x", "ys"]
    assert cap["loop/body/m"].shape == (3, 2)


def test_the_networkx_view_reaches_into_bodies(tmp_path):
    import networkx as nx

    m = onnxscope.load(_model(tmp_path / "cf.onnx"))
    assert m.graph is m.graph  # built once, cached
    assert m.graph.nodes["loop/body/branch/then_branch/inc"]["op"] == "Add"
    assert nx.has_path(m.graph, "loop/body/double", "scan")
    assert onnxscope.shortest_path(m, "loop/body/m", "loop/body/s_out")[0] == "loop/body/m"


def _nested_if(path):
    """x → If(sum(x) > 0): then a = Relu(x), If(max(a) > 1): then b = a·k2 else b = −a; out = b + a
    else out = Sigmoid(x). The inner branches read ``a``, a tensor of the outer branch; ``k2`` = 2 is a Constant
    node of the main graph."""
    k1 = numpy_helper.from_array(np.array(1.0, np.float32), "k1")
    inner_then = helper.make_graph(
        [helper.make_node("Mul", ["a", "k2"], ["b_t"], name="double")],
        "inner_then",
        [],
        [helper.make_tensor_value_info("b_t", F, [3])],
    )
    inner_else = helper.make_graph(
        [helper.make_node("Neg", ["a"], ["b_e"], name="negate")],
        "inner_else",
        [],
        [helper.make_tensor_value_info("b_e", F, [3])],
    )
    outer_then = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["a"], name="relu"),
            helper.make_node("ReduceMax", ["a"], ["mx"], name="max", keepdims=0),
            helper.make_node("Greater", ["mx", "k1"], ["big"], name="is_big"),
            helper.make_node(
                "If", ["big"], ["b"], name="inner", then_branch=inner_then, else_branch=inner_else
            ),
            helper.make_node("Add", ["b", "a"], ["o_t"], name="plus"),
        ],
        "outer_then",
        [],
        [helper.make_tensor_value_info("o_t", F, [3])],
        [k1],
    )
    outer_else = helper.make_graph(
        [helper.make_node("Sigmoid", ["x"], ["o_e"], name="sigmoid")],
        "outer_else",
        [],
        [helper.make_tensor_value_info("o_e", F, [3])],
    )
    zero = numpy_helper.from_array(np.array(0.0, np.float32), "zero")
    graph = helper.make_graph(
        [
            helper.make_node(
                "Constant", [], ["k2"], name="two", value=numpy_helper.from_array(np.array(2.0, np.float32))
            ),
            helper.make_node("ReduceSum", ["x"], ["s"], name="sum", keepdims=0),
            helper.make_node("Greater", ["s", "zero"], ["pos"], name="is_pos"),
            helper.make_node(
                "If", ["pos"], ["y"], name="outer", then_branch=outer_then, else_branch=outer_else
            ),
        ],
        "nested",
        [helper.make_tensor_value_info("x", F, [3])],
        [helper.make_tensor_value_info("y", F, [3])],
        [zero],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)
    return path


@pytest.mark.parametrize("optimization", ["all", "disable"])
@pytest.mark.parametrize("x", [[0.5, 2.0, -1.0], [0.2, 0.3, 0.1], [-1.0, -2.0, 0.5]])
def test_tensors_of_nested_if_branches_are_recomputed_without_carrying_anything_out_of_the_if(
    tmp_path, x, optimization
):
    # the inner branches read `a` of the outer branch: it is recomputed from x when read, not marked as an extra
    # output of the If (which costs the run of a small model like Silero VAD ~0.1× of plain onnxruntime)
    path = _nested_if(tmp_path / "nested.onnx")
    x = np.array(x, np.float32)
    with onnxscope.CaptureSession(path, threads=1, optimization=optimization) as s:
        cap = s.run({"x": x})
        assert set(s.plan.outputs) <= {"x", "k2", "s", "pos", "y"}, "no tensor of a branch is carried out"
    a = np.maximum(x, 0)
    if x.sum() > 0:
        b = a * 2 if a.max() > 1 else -a
        inner = "inner/then_branch/b_t" if a.max() > 1 else "inner/else_branch/b_e"
        expected = {"a": a, "mx": a.max(), "big": a.max() > 1, inner: b, "b": b, "o_t": b + a}
        expected = {f"outer/then_branch/{k}": v for k, v in expected.items()}
        y = b + a
    else:
        y = 1 / (1 + np.exp(-x))
        expected = {"outer/else_branch/o_e": y}
    ran = {k for k in cap if cap.info(k).scopes and cap.executed(k)}
    assert ran == set(expected)
    for k, v in expected.items():
        np.testing.assert_allclose(cap[k], v, rtol=1e-6, err_msg=k)
    np.testing.assert_allclose(cap["y"], y, rtol=1e-6)


@pytest.mark.parametrize("optimization", ["all", "disable"])
def test_selecting_only_a_tensor_of_an_inner_branch_keeps_the_conditions_that_say_it_ran(
    tmp_path, optimization
):
    path = _nested_if(tmp_path / "nested.onnx")
    x = np.array([0.5, 2.0, -1.0], np.float32)  # both branches taken: a = [0.5, 2, 0], max(a) > 1
    inner = "outer/then_branch/inner/then_branch/b_t"
    cap = onnxscope.capture(path, {"x": x}, select=[inner], exclude=["pos"], optimization=optimization)
    assert cap.executed(inner) and {"pos", "outer/then_branch/big"} <= set(cap)
    np.testing.assert_allclose(cap[inner], np.maximum(x, 0) * 2, rtol=1e-6)
    other = onnxscope.capture(path, {"x": -x}, select=[inner], optimization=optimization)  # outer else ran
    assert not other.executed(inner) and inner not in other
