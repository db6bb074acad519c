"""QDQ models: capture keeps onnxruntime's fused int8 kernels. The int8 tensors those kernels produce are captured;
the float tensors they never materialize are recomputed by the model's own QDQ nodes from the captured int8
tensors. Every expectation is computed on the machine the test runs on (int8 kernels differ between CPUs with and
without VNNI): the oracle is onnxruntime with the QuantizeLinear outputs marked and its fusions intact."""

from __future__ import annotations

import numpy as np
import pytest

import onnxscope

ort = pytest.importorskip("onnxruntime")
from onnx import numpy_helper  # noqa: E402
from oracles import load_proto, ort_marking, ort_plain, ort_subgraph  # noqa: E402

torch = pytest.importorskip("torch")
from compare_models import quantize_qdq  # noqa: E402


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8 * 8 * 8, 4)

    def forward(self, x):
        h = torch.relu(self.c1(x))
        return self.fc(torch.flatten(torch.relu(self.c2(h)) + h, 1))


@pytest.fixture(scope="module")
def qdq_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qdq")
    torch.manual_seed(0)
    torch.onnx.export(
        Net().eval(), (torch.randn(1, 3, 8, 8),), str(folder / "f.onnx"), dynamo=False, input_names=["input"]
    )
    rng = np.random.default_rng(0)
    calibration = [{"input": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(8)]
    quantize_qdq(folder / "f.onnx", folder / "q.onnx", calibration)
    return onnxscope.load(folder / "q.onnx")


@pytest.mark.parametrize("recompute", [True, False])
def test_int8_tensors_are_captured_and_dequantized_ones_recomputed_from_them(qdq_model, recompute):
    """Also without recompute (a dataset's capture marks the float tensors fusions remove): marking the float
    tensors of a QDQ layer would run it in float instead of its int8 kernel, so those stay recomputed."""
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    cap = onnxscope.CaptureSession(qdq_model, recompute=recompute).run({"input": x})
    quantized = [k for k in cap if cap.info(k).op == "QuantizeLinear" and cap.info(k).source == "captured"]
    dequantized = [
        k for k in cap if cap.info(k).op == "DequantizeLinear" and cap.info(k).source == "recomputed"
    ]
    assert quantized and dequantized
    oracle = ort_marking(qdq_model.path, {"input": x}, quantized, "all")  # fused int8 kernels kept
    for q in quantized:
        assert cap[q].dtype in (np.uint8, np.int8)
        np.testing.assert_array_equal(cap[q], oracle[q], err_msg=q)
    proto = load_proto(qdq_model.path)
    params = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    dq_nodes = {n.output[0]: n for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    for d in dequantized:
        node = dq_nodes[d]
        source = node.input[0]
        if source not in oracle:  # a QuantizeLinear output onnxruntime fused away too: recomputed itself
            assert cap.info(source).source == "recomputed"
            continue
        scale, zero = params[node.input[1]], params[node.input[2]].astype(np.float32)
        expected = ((oracle[source].astype(np.float32) - zero) * scale).astype(np.float32)
        np.testing.assert_array_equal(cap[d], expected, err_msg=d)
    plain = ort_plain(qdq_model.path, {"input": x}, "all")
    np.testing.assert_array_equal(next(iter(cap.outputs.values())), next(iter(plain.values())))


def test_float_tensors_inside_int8_kernels_are_the_qdq_semantics_run_on_captured_tensors(qdq_model):
    x = np.random.default_rng(2).standard_normal((1, 3, 8, 8)).astype(np.float32)
    session = onnxscope.CaptureSession(qdq_model)
    cap = session.run({"input": x})
    inside = [k for k in cap if cap.info(k).op == "Conv"]
    assert inside and all(cap.info(k).source == "recomputed" for k in inside)
    for k in inside:
        part = session.plan.recompute.parts[session.plan.recompute.part_of[k]]
        oracle = ort_subgraph(qdq_model.path, {f: np.asarray(cap[f]) for f in part.feeds}, part.outputs)
        np.testing.assert_array_equal(cap[k], oracle[k], err_msg=k)


def test_int8_tensors_onnxruntime_renames_for_its_layout_are_captured_from_its_own_kernels(
    qdq_model, tmp_path
):
    """onnxruntime runs QLinearConv in NHWC on some CPUs, and then its optimized graph holds the int8 tensors under
    new names. Asked for by their own names, it transposes them back and runs the same kernels. So every
    QuantizeLinear output is captured (none recomputed in float), equal to onnxruntime marking it, and the model's
    output is plain onnxruntime's."""
    proto = load_proto(qdq_model.path)
    quantized = [n.output[0] for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(qdq_model.path, so, providers=["CPUExecutionProvider"])
    kept = {o for n in load_proto(tmp_path / "optimized.onnx").graph.node for o in n.output}
    renamed = [q for q in quantized if q not in kept]
    print(f"{len(renamed)} of {len(quantized)} int8 tensors renamed by onnxruntime on this CPU")
    x = np.random.default_rng(3).standard_normal((1, 3, 8, 8)).astype(np.float32)
    cap = onnxscope.capture(qdq_model, {"input": x})
    oracle = ort_marking(qdq_model.path, {"input": x}, quantized, "all")
    for q in quantized:
        assert cap.info(q).source == "captured", q
        np.testing.assert_array_equal(cap[q], oracle[q], err_msg=q)
    plain = ort_plain(qdq_model.path, {"input": x}, "all")
    np.testing.assert_array_equal(next(iter(cap.outputs.values())), next(iter(plain.values())))


def test_materializing_sets_of_tensors_gives_each_tensor_its_own_value(qdq_model):
    """``materialize(names)`` recomputes exactly ``names`` in one run; another set drawn from the same
    recomputations (one of them with more of its tensors) gets a run of its own, and every value is the one read
    alone (each recomputation run whole)."""
    x = {"input": np.random.default_rng(4).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    session = onnxscope.CaptureSession(qdq_model)
    parts = session.plan.recompute.parts
    multi = [p for p in parts if len(p.outputs) > 1 and not p.virtual and not p.conditions]
    other = [p for p in parts if p not in multi and not p.virtual and not p.conditions]
    assert multi and other
    first = [multi[0].outputs[0], other[0].outputs[0]]
    second = [*multi[0].outputs, other[0].outputs[0]]
    cap = session.run(x)
    alone = {k: np.array(cap[k]) for k in second}
    for names in (first, second):
        cap = session.run(x).materialize(names)
        assert all(cap.storage.captured(k) for k in names)
        for k in names:  # (fewer outputs marked may let onnxruntime fuse more: float rounding at most)
            np.testing.assert_allclose(cap[k], alone[k], rtol=1e-6, atol=1e-6, err_msg=k)


def test_without_recompute_a_float_op_before_the_quantizer_stays_inside_the_int8_kernel(tmp_path):
    """DQ → Conv → Relu → Q (as QAT exports keep it): onnxruntime runs Conv+Relu+Q as one QLinearConv. Marking the
    Relu output would split the layer and run the Conv in float; recompute=False must leave every float tensor
    between the DequantizeLinear and the QuantizeLinear recomputed, and the output stays plain onnxruntime's."""
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    consts = {
        "w_q": rng.integers(-50, 50, (8, 3, 3, 3)).astype(np.int8),
        "w_s": np.array(0.01, np.float32),
        "w_z": np.array(0, np.int8),
        "x_s": np.array(0.02, np.float32),
        "x_z": np.array(128, np.uint8),
        "y_s": np.array(0.05, np.float32),
        "y_z": np.array(0, np.uint8),
        "b": (rng.standard_normal(8) * 0.1).astype(np.float32),
    }
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "x_s", "x_z"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["wd"]),
        helper.make_node("Conv", ["xd", "wd", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("QuantizeLinear", ["r", "y_s", "y_z"], ["rq"]),
        helper.make_node("DequantizeLinear", ["rq", "y_s", "y_z"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])],
        [numpy_helper.from_array(v, k) for k, v in consts.items()],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
    onnx.save(proto, tmp_path / "q.onnx")
    session = onnxscope.CaptureSession(onnxscope.load(tmp_path / "q.onnx"), recompute=False)
    cap = session.run({"x": np.zeros((1, 3, 8, 8), np.float32)})
    assert {k: cap.info(k).source for k in ("c", "r", "xq", "rq")} == {
        "c": "recomputed",
        "r": "recomputed",
        "xq": "captured",
        "rq": "captured",
    }
    for _ in range(20):
        x = (rng.standard_normal((1, 3, 8, 8)) * 2).astype(np.float32)
        cap = session.run({"x": x})
        np.testing.assert_array_equal(cap.outputs["y"], ort_plain(tmp_path / "q.onnx", {"x": x}, "all")["y"])
        np.testing.assert_array_equal(
            cap["rq"], ort_marking(tmp_path / "q.onnx", {"x": x}, ["rq"], "all")["rq"]
        )
