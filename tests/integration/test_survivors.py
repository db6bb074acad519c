"""What onnxruntime keeps after optimizing (``runtime.survivors``), against onnxruntime itself: the names in the
graph a default session writes with ``optimized_model_filepath`` (prepacking on, as deployed; onnxscope's probe
turns it off to spare a copy of the weights). The only names onnxscope adds are quantized tensors (QuantizeLinear
outputs) that a layout transform renamed, and only when the graph optimized with them marked runs the same
kernels."""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import onnx
import pytest

import onnxscope
from onnxscope.runtime import survivors

ort = pytest.importorskip("onnxruntime")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fixtures"))
from real_inputs import CACHE, manifest  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from compare_models import conv_relu_pair  # noqa: E402

LAYOUT = {
    ("", "Transpose"),
    ("com.microsoft.nchwc", "ReorderInput"),
    ("com.microsoft.nchwc", "ReorderOutput"),
}


def optimized(path, folder, marked=()):
    """Names and kernel counts of the graph a default onnxruntime session runs (raw onnx, raw onnxruntime)."""
    m = onnx.load(str(path), load_external_data=False)
    m.graph.output.extend(onnx.ValueInfoProto(name=n) for n in marked)
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(folder / "optimized.onnx")
    so.add_session_config_entry(
        "session.model_external_initializers_file_folder_path", str(Path(path).parent)
    )
    ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    g = onnx.load(str(folder / "optimized.onnx"), load_external_data=False).graph
    names = {i.name for i in g.input} | {o for n in g.node for o in n.output if o}
    ops = collections.Counter((n.domain, n.op_type) for n in g.node if (n.domain, n.op_type) not in LAYOUT)
    return names, ops


MODELS = sorted(manifest()) if (CACHE / "manifest.json").exists() else []


@pytest.mark.parametrize("name", [*MODELS, "conv-relu-qdq"])
def test_survivors_are_onnxruntimes_own_optimized_graph(name, tmp_path):
    if name == "conv-relu-qdq":  # every Conv one int8 kernel (NHWC on some CPUs)
        pytest.importorskip("torch")
        path = conv_relu_pair(tmp_path)[1]
    else:
        path = CACHE / manifest()[name]["file"]
    model = onnxscope.load(path)
    got = survivors(model.ir, str(path.parent), "all", None, 1)
    names, ops = optimized(path, tmp_path)
    assert got is not None and names <= got
    added = got - names
    print(f"{name}: {len(names)} names in onnxruntime's optimized graph, {len(added)} quantized ones added")
    if added:  # quantized tensors onnxruntime renamed: marking them keeps its kernels
        proto = onnx.load(str(path), load_external_data=False)
        quantized = {n.output[0] for n in proto.graph.node if n.op_type == "QuantizeLinear"}
        assert added <= quantized
        names2, ops2 = optimized(path, tmp_path, sorted(added))
        assert ops2 == ops and added <= names2
