"""check_kernels: the fused int8 kernels of this CPU against the model's own QDQ semantics. Every expectation is
computed here, on the machine the test runs on (int8 kernels differ between CPUs with and without VNNI), with raw
onnx and onnxruntime: the fused run with the QuantizeLinear outputs marked (the ones onnxruntime keeps when it
optimizes the model, read from its own saved optimized graph) against onnx's reference evaluator, or onnxruntime
with optimizations disabled, on the QDQ graph."""

from __future__ import annotations

import numpy as np
import pytest

import onnxscope

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("torch")
pytest.importorskip("transformers")
import onnx  # noqa: E402
from compare_models import Zoo, batches  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402
from oracles import ort_marking  # noqa: E402


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    return Zoo(tmp_path_factory.mktemp("compare-models"))


def quantizer_outputs_kept_by_onnxruntime(path, tmp_path):
    """The QuantizeLinear outputs (of activations) the optimized graph onnxruntime saves still has."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    kept = {o for n in onnx.load(so.optimized_model_filepath).graph.node for o in n.output}
    m = onnx.load(str(path))
    consts = {i.name for i in m.graph.initializer}
    return [
        n.output[0]
        for n in m.graph.node
        if n.op_type == "QuantizeLinear" and n.input[0] not in consts and n.output[0] in kept
    ]


@pytest.mark.parametrize("reference", ["evaluator", "unfused"])
def test_check_kernels_equals_the_fused_run_against_the_qdq_reference(zoo, tmp_path, reference):
    path = zoo.path("cnn", "qdq")
    names = quantizer_outputs_kept_by_onnxruntime(path, tmp_path)
    assert len(names) >= 10
    data = batches("cnn", 3, seed=5)
    report = onnxscope.check_kernels(path, data, reference=reference)
    assert [r.a_tensor for r in report.rows] == names
    diffs = {n: [] for n in names}
    for x in data:
        fused = ort_marking(path, x, names, "all")
        if reference == "evaluator":
            proto = onnx.load(str(path))
            for n in names:
                proto.graph.output.append(onnx.ValueInfoProto(name=n))
            plain = dict(zip(names, ReferenceEvaluator(proto).run(names, x), strict=True))
        else:
            plain = ort_marking(path, x, names, "disable")
        for n in names:
            assert fused[n].dtype == plain[n].dtype == np.uint8 or fused[n].dtype == np.int8
            diffs[n].append(np.abs(fused[n].astype(np.int64) - plain[n].astype(np.int64)))
    for row in report.rows:
        d = np.concatenate([x.ravel() for x in diffs[row.a_tensor]])
        assert row.max_steps == d.max(), row.a_tensor
        assert row.mean_steps == pytest.approx(d.mean(), abs=1e-15)
        assert row.frac_differ == np.count_nonzero(d) / d.size
        assert row.introduced_max_steps is not None  # the layer alone, from the int8 inputs the kernels made
    assert report.kind == "kernels" and report.samples == 3
    assert all(r.layer for r in report.rows)


def test_check_kernels_refuses_a_model_without_quantizers(zoo):
    with pytest.raises(onnxscope.UnsupportedError, match="needs a QDQ model"):
        onnxscope.check_kernels(zoo.path("cnn"), batches("cnn", 1)[0])
