"""Comparing two runs layer by layer, against independent computations: numpy for every metric, plain onnxruntime
(raw onnx, tensors marked as outputs) for the arrays, converters.check for torch against its export.

The models (tests/compare_models.py) are a torch CNN and a 2-layer BERT, quantized (QDQ, dynamic), optimized by
onnxruntime and saved, converted to fp16 and to opset 21 — the changes users make before deploying."""

from __future__ import annotations

import math

import numpy as np
import pytest

import onnxscope

ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
import onnx  # noqa: E402
from compare_models import Zoo, batches, conv_relu_pair, scale_initializer  # noqa: E402
from oracles import ort_marking  # noqa: E402

from onnxscope.audit import check_comparison  # noqa: E402


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    return Zoo(tmp_path_factory.mktemp("compare-models"))


def numpy_metrics(a, b, rtol, atol):
    """Every metric, written from its definition in numpy."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d = a - b
    return {
        "max_abs": np.abs(d).max(),
        "mean_abs": np.abs(d).mean(),
        "max_rel": np.abs(d).max() / np.abs(a).max()
        if np.abs(a).max()
        else (0.0 if not d.any() else math.inf),
        "cosine": float(np.dot(a.ravel(), b.ravel()) / (np.linalg.norm(a) * np.linalg.norm(b)))
        if np.linalg.norm(a) and np.linalg.norm(b)
        else float(np.linalg.norm(a) == np.linalg.norm(b)),
        "sqnr_db": 10 * np.log10(np.sum(a * a) / np.sum(d * d)) if np.sum(d * d) else math.inf,
        "frac_outside_tol": float(np.mean(~np.isclose(b, a, rtol=rtol, atol=atol))),
    }


def assert_metrics(row, a, b, rtol, atol):
    """Equal to float32 rounding (float32 tensors are compared in float32 with float64 sums); the fraction of
    elements outside the tolerance exactly."""
    want = numpy_metrics(a, b, rtol, atol)
    for key, value in want.items():
        got = getattr(row, key)
        if math.isinf(value) or key == "frac_outside_tol":
            assert got == value, (row.a_tensor, key)
        else:
            assert got == pytest.approx(value, rel=1e-6, abs=1e-12), (row.a_tensor, key, got, value)


def layer_tensors(path, initializer, output):
    """The tensors on the way from a weight to a layer's output (raw onnx: descendants ∩ ancestors)."""
    m = onnx.load(str(path))
    below = {initializer}
    for node in m.graph.node:  # graph order: producers first
        if any(i in below for i in node.input):
            below.update(node.output)
    above = {output}
    for node in reversed(m.graph.node):
        if any(o in above for o in node.output):
            above.update(node.input)
    return (below & above) - {initializer}


@pytest.mark.parametrize("name,variant", [("cnn", "qdq"), ("cnn", "dyn"), ("bert", "qdq"), ("bert", "dyn")])
def test_quantized_model_aligns_95_percent_of_float_layer_outputs_and_every_metric_equals_numpy(
    zoo, name, variant
):
    c = onnxscope.compare(zoo.path(name), zoo.path(name, variant), batches(name, 1)[0])
    assert c.alignment.coverage_a >= 0.95, c.alignment.unaligned_a
    assert len(c.rows) >= 0.95 * c.alignment.eligible_a
    run_a, run_b = c._last
    checked = 0
    for row in c.rows:
        a, b = c.arrays(row.a_tensor)
        assert_metrics(row, a, b, c.rtol, c.atol)
        np.testing.assert_array_equal(a, run_a[row.a_tensor])
        if not row.transform:  # b's own array, compared as it is
            np.testing.assert_array_equal(b, np.asarray(run_b[row.b_tensor], np.float64).astype(b.dtype))
            checked += 1
    assert checked > len(c.rows) / 2
    shown = check_comparison(c.to_dict())["rows"]  # what the report draws: every row, the metrics as computed
    assert [r["a_tensor"] for r in shown] == [r.a_tensor for r in c.rows]
    for r, row in zip(shown, c.rows, strict=True):  # the report keeps 6 significant digits
        assert r["b_tensor"] == row.b_tensor and r["alignment"] == row.alignment
        assert r["max_abs"] == pytest.approx(row.max_abs, rel=1e-5, abs=1e-12)
        assert r["mean_abs"] == pytest.approx(row.mean_abs, rel=1e-5, abs=1e-12)


def test_arrays_compared_are_plain_onnxruntime_marking_the_tensors(zoo):
    """Both sides unfused (every tensor computed by its own node): the arrays are what onnxruntime returns when the
    tensors are marked as outputs, and the metrics are numpy's on those."""
    x = batches("cnn", 1)[0]
    a_path, b_path = zoo.path("cnn"), zoo.path("cnn", "qdq")
    c = onnxscope.compare(
        onnxscope.Side(a_path, optimization="disable"), onnxscope.Side(b_path, optimization="disable"), x
    )
    rows = [r for r in c.rows if not r.transform]
    assert len(rows) >= 10
    oracle_a = ort_marking(a_path, x, [r.a_tensor for r in rows], "disable")
    oracle_b = ort_marking(b_path, x, [r.b_tensor for r in rows], "disable")
    for r in rows:
        assert_metrics(r, oracle_a.get(r.a_tensor, x.get(r.a_tensor)), oracle_b[r.b_tensor], c.rtol, c.atol)


@pytest.mark.parametrize(
    "name,variant,weight,output",
    [
        ("cnn", "qdq", "block1.conv2.weight_scale", "conv2d_2"),
        ("cnn", "dyn", "block1.conv2.weight_scale", "conv2d_2"),
        ("bert", "qdq", "inner.encoder.layer.0.intermediate.dense.weight", "val_105"),
        ("bert", "dyn", "val_104_scale", "linear_4"),
    ],
)
def test_a_weight_scaled_by_1_5_is_the_first_divergence_and_the_top_introduced_error(
    zoo, name, variant, weight, output, tmp_path
):
    """In the quantized model, one layer's weight scale × 1.5 (its weights × 1.5): compared with the quantized model
    as it was, that layer diverges first and introduces the largest error; the layers after it only inherit."""
    q = zoo.path(name, variant)
    scaled = scale_initializer(q, tmp_path / "scaled.onnx", weight, 1.5)
    layer = layer_tensors(q, weight, output)
    assert output in layer
    c = onnxscope.compare(
        onnxscope.Side(q), scaled, batches(name, 1)[0]
    )  # both as deployed (the same kernels)
    first = c.first_divergence
    assert first is not None and first.a_tensor in layer, (first, layer)
    top = c.ranked[0]
    assert top.a_tensor in layer and top.introduced_error > 0.1, top
    after = [r for r in c.rows if r.a_tensor not in layer and r.introduced_error is not None and r.diverges]
    assert after and all(r.introduced_error < 0.05 * top.introduced_error for r in after)


def test_error_introduced_by_a_float_op_between_qdq_nodes_is_that_op_run_on_the_float_models_values(zoo):
    """fp32 vs QDQ: the error a float op of the QDQ model introduces (a BatchNormalization whose input and weights
    the quantizer dequantized, an Add of two dequantized tensors…) is ``a``'s tensor against that op and its
    DequantizeLinear nodes run by onnxruntime on ``a``'s inputs quantized as ``b`` quantizes them (numpy, by the
    ONNX definition); the int8 layers are re-run in the same model."""
    from oracles import ort_subgraph

    a_path, b_path = zoo.path("cnn"), zoo.path("cnn", "qdq")
    c = onnxscope.compare(a_path, b_path, batches("cnn", 1)[0])
    run_a, _ = c._last
    proto = onnx.load(str(b_path))
    params = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    producer = {o: n for n in proto.graph.node for o in n.output}
    checked = 0
    for row in c.rows:
        op = producer.get(row.b_tensor)
        if (
            op is None
            or op.op_type in ("QuantizeLinear", "DequantizeLinear")
            or row.introduced_max_abs is None
        ):
            continue
        feeds = {}
        for i in op.input:
            dq = producer.get(i)
            if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] in params:
                continue
            # an int8 activation: a's aligned value, quantized with the DequantizeLinear's own parameters
            x = dq.input[0]
            scale, zero = params[dq.input[1]], params[dq.input[2]]
            value = np.asarray(run_a[c.alignment.by_b[x].a], np.float32)
            info = np.iinfo(zero.dtype)
            q = np.clip(np.rint(value / scale) + zero.astype(np.float32), info.min, info.max)
            feeds[x] = q.astype(zero.dtype)
        if not feeds:
            continue
        local = ort_subgraph(b_path, feeds, [row.b_tensor])
        a = np.asarray(run_a[row.a_tensor], np.float32)
        assert row.introduced_max_abs == float(np.abs(a - local[row.b_tensor]).max()), row
        checked += 1
    assert checked >= 3
    int8 = [r for r in c.rows if producer.get(r.b_tensor) is not None and r.introduced_error is not None]
    assert any(producer[r.b_tensor].op_type == "DequantizeLinear" for r in int8)


@pytest.mark.parametrize(
    "name,variant", [("cnn", "all-renamed"), ("bert", "all-renamed"), ("bert", "transformers-renamed")]
)
def test_optimized_model_saved_to_disk_is_aligned_by_structure(zoo, name, variant):
    """onnxruntime's ALL-level optimizations (Conv+BN folded, Conv+ReLU and MatMul+Add fused, NCHWc layout,
    LayerNorm, GELU) and its transformer optimizer, with every tensor renamed: ≥ 90 % of the optimized model's
    tensors are aligned by structure alone, and every aligned pair agrees (so each was aligned right)."""
    c = onnxscope.compare(zoo.path(name), zoo.path(name, variant), batches(name, 1)[0], introduced=False)
    assert c.alignment.coverage_b >= 0.9, c.alignment.unaligned_b
    assert all(p.how not in ("name", "quantizer rename") for p in c.alignment.pairs if p.b.startswith("t"))
    assert c.first_divergence is None, c.first_divergence
    assert any(r.alignment.startswith("fused") for r in c.rows)


@pytest.mark.parametrize("variant", ["fp16", "opset21"])
def test_fp16_copy_and_opset_conversion_align_every_tensor(zoo, variant):
    c = onnxscope.compare(zoo.path("cnn"), zoo.path("cnn", variant), batches("cnn", 1)[0], introduced=False)
    assert c.alignment.coverage_a == 1.0 and c.alignment.coverage_b == 1.0
    if variant == "opset21":
        assert c.first_divergence is None
    else:
        assert max(r.max_rel for r in c.rows) < 0.05  # fp16 rounding, not a misalignment


def test_recompute_chooses_which_tensors_fusions_removed_are_compared(tmp_path):
    """fp32 against QDQ: "none" compares only tensors the QDQ run produced (in onnxruntime's optimized graph, or
    an int8 tensor it computes); "cheap" adds those recomputed without a Conv (dequantizations); "all" also the
    float output of each Conv, which exists only inside an int8 kernel. The same pair gives the same numbers
    whatever else is compared."""
    fp32, qdq = conv_relu_pair(tmp_path)
    batch = {"x": np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    q = onnx.load(str(qdq))
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(qdq), so, providers=["CPUExecutionProvider"])
    run = {o for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node for o in n.output}
    run |= {n.output[0] for n in q.graph.node if n.op_type == "QuantizeLinear"} | {"x"}
    producer = {o: n for n in q.graph.node for o in n.output}

    def needs_conv(name):  # raw onnx: a Conv between the tensor and what the run produced
        node = producer.get(name)
        if name in run or node is None:
            return False
        return node.op_type == "Conv" or any(needs_conv(i) for i in node.input)

    rows = {
        how: {r.b_tensor: r for r in onnxscope.compare(fp32, qdq, batch, recompute=how).rows}
        for how in ("all", "cheap", "none")
    }
    assert rows["none"] and set(rows["none"]) <= run
    assert set(rows["cheap"]) - run and not any(needs_conv(b) for b in rows["cheap"])
    assert any(needs_conv(b) for b in rows["all"])
    for how in ("cheap", "none"):
        for name, row in rows[how].items():
            if name in rows["all"]:
                assert row.max_abs == rows["all"][name].max_abs and row.cosine == rows["all"][name].cosine
    with pytest.raises(onnxscope.InputError, match="recompute 'some': choose one of all, cheap, none"):
        onnxscope.compare(fp32, qdq, batch, recompute="some")


def test_one_model_under_two_runtime_configurations(zoo):
    m = onnxscope.load(zoo.path("cnn"))
    c = onnxscope.compare(
        onnxscope.Side(m), onnxscope.Side(m, optimization="disable", threads=1), batches("cnn", 1)[0]
    )
    assert c.a == "cnn_fp32.onnx (all)" and c.b == "cnn_fp32.onnx (disable, 1 thread)"
    assert {r.a_tensor for r in c.rows} == set(c.alignment.unaligned_a) | {r.a_tensor for r in c.rows}
    assert len(c.rows) == c.alignment.eligible_a and c.first_divergence is None


def test_a_model_against_onnx_reference_evaluator(zoo):
    m = onnxscope.load(zoo.path("cnn"))
    c = onnxscope.compare(
        m, onnxscope.Side(m, engine="reference"), batches("cnn", 1)[0], rtol=1e-4, atol=1e-5
    )
    assert len(c.rows) == c.alignment.eligible_a and c.first_divergence is None
    assert all(r.introduced_error is not None and r.introduced_error < 1e-5 for r in c.rows)


@pytest.mark.parametrize("perturb", [False, True])
def test_torch_against_its_export_finds_the_first_divergence_converters_check_finds(zoo, tmp_path, perturb):
    import converters

    net, x = zoo.net("cnn")
    path = zoo.folder / "cnn_export.onnx"
    zoo.path("cnn")
    if perturb:  # the export's block2.conv1 weight off by 1 %: the ONNX model departs from torch there
        path = scale_initializer(path, tmp_path / "perturbed.onnx", "block2.conv1.weight", 1.01)
    m = onnxscope.load(path)
    report = converters.check(net, m, x.numpy())
    c = onnxscope.compare(converters.side(net, m), m, {"x": x.numpy()}, rtol=1e-4, atol=1e-4)
    first = next((r.tensor for r in report.rows if not r.ok), None)
    assert (c.first_divergence.a_tensor if c.first_divergence else None) == first
    assert (first is not None) == perturb
    assert {r.a_tensor for r in c.rows} == {r.tensor for r in report.rows}
    if perturb:
        assert (
            c.ranked[0].a_tensor == first
        )  # the layer the export got wrong is the one introducing the error


def test_dataset_metrics_stream_and_shards_merge_into_the_whole(zoo, tmp_path):
    a, b = zoo.path("cnn"), zoo.path("cnn", "qdq")
    data = batches("cnn", 4, seed=3)
    for i, batch in enumerate(data):
        np.savez(tmp_path / f"batch{i}.npz", **batch)
    whole = onnxscope.compare(a, b, str(tmp_path), worst=2)
    assert whole.samples == 4 and whole.batches == 4
    shards = onnxscope.compare(a, b, data[:2], worst=2).merge(
        onnxscope.compare(a, b, data[2:], worst=2, first_sample=2)
    )
    for r, s in zip(whole.rows, shards.rows, strict=True):
        assert (r.a_tensor, r.max_abs, r.frac_outside_tol, r.worst_samples) == (
            s.a_tensor,
            s.max_abs,
            s.frac_outside_tol,
            s.worst_samples,
        )
        assert r.mean_abs == pytest.approx(s.mean_abs) and r.sqnr_db == pytest.approx(s.sqnr_db)
        assert r.introduced_error == pytest.approx(s.introduced_error)
    # the worst sample of a tensor is the one numpy finds worst
    row = whole.rows[3]
    errs = []
    for batch in data:
        one = onnxscope.compare(a, b, batch, introduced=False)
        x, y = one.arrays(row.a_tensor)
        errs.append(np.linalg.norm(x - y) / np.linalg.norm(x))
    assert row.worst_samples[0][0] == int(np.argmax(errs))
    assert row.worst_samples[0][1] == pytest.approx(max(errs))


def test_batches_accumulate_in_order_and_a_bad_one_stops_the_comparison_with_its_error(zoo):
    """Batches are pipelined (one accumulated while the next runs): the numbers are those of the batches compared
    one at a time and merged in order, and a batch that does not fit the model ends the comparison with its own
    error."""
    a, b = zoo.path("cnn"), zoo.path("cnn", "qdq")
    data = batches("cnn", 3, seed=5)
    whole = onnxscope.compare(a, b, data, worst=3)
    merged = onnxscope.compare(a, b, data[0], worst=3)
    for i in (1, 2):
        merged = merged.merge(onnxscope.compare(a, b, data[i], worst=3, first_sample=i))
    for r, s in zip(whole.rows, merged.rows, strict=True):
        assert (r.max_abs, r.frac_outside_tol, r.worst_samples) == (
            s.max_abs,
            s.frac_outside_tol,
            s.worst_samples,
        )
    bad = [*data, {"x": np.zeros((1, 3, 5), np.float32)}]
    with pytest.raises(onnxscope.InputError, match=r"input 'x': the model expects rank 4"):
        onnxscope.compare(a, b, bad)


def test_a_generator_that_refills_one_buffer_compares_each_batch_as_it_was():
    """Inputs from a loader that reuses one buffer (refilled after each yield): each batch is compared as it was
    yielded, although its metrics are computed while the next one runs — the same numbers as batches each in
    arrays of their own."""
    from onnxscope.testing import mlp_model

    m = onnxscope.Model(mlp_model())
    data = [np.random.default_rng(i).standard_normal((64, 3)).astype(np.float32) for i in range(12)]

    def refilled():
        buf = np.empty((64, 3), np.float32)
        for d in data:
            buf[...] = d
            yield {"x": buf}

    got = onnxscope.compare(m, m, refilled())
    want = onnxscope.compare(m, m, [{"x": d.copy()} for d in data])
    assert got.samples == want.samples == 12 * 64 and want.rows
    for r, w in zip(got.rows, want.rows, strict=True):
        assert (r.a_tensor, r.max_abs, r.sqnr_db, r.introduced_error, r.worst_samples) == (
            w.a_tensor,
            w.max_abs,
            w.sqnr_db,
            w.introduced_error,
            w.worst_samples,
        )


def test_captures_already_made_compare_without_inputs(zoo):
    x = batches("cnn", 1)[0]
    cap_a = onnxscope.capture(zoo.path("cnn"), x)
    cap_b = onnxscope.capture(zoo.path("cnn", "qdq"), x)
    c = onnxscope.compare(cap_a, cap_b)
    d = onnxscope.compare(onnxscope.Side(zoo.path("cnn")), zoo.path("cnn", "qdq"), x)  # both at "all"
    assert [(r.a_tensor, r.max_abs) for r in c.rows] == [(r.a_tensor, r.max_abs) for r in d.rows]
    with pytest.raises(onnxscope.InputError, match="differs from the one this capture was made with"):
        onnxscope.compare(cap_a, cap_b, batches("cnn", 1, seed=9)[0])
