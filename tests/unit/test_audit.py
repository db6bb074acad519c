"""What the report says about weights, structure and comparisons, against numpy computed here (no onnxruntime)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import onnx_ir as ir
import pytest

import onnxscope
from onnxscope import audit
from onnxscope.errors import InputError

FIXTURE = "fixtures/small_cnn.onnx"


def gemm_model(w: np.ndarray) -> onnxscope.Model:
    proto = onnx.parser.parse_model(
        f"""<ir_version: 9, opset_import: ["" : 17]>
        g (float[2,{w.shape[1]}] x) => (float[2,{w.shape[0]}] y) {{
          y = Gemm <transB = 1> (x, fc_weight)
        }}"""
    )
    proto.graph.initializer.append(onnx.numpy_helper.from_array(w, "fc_weight"))
    return onnxscope.Model(ir.serde.deserialize_model(proto))


def test_weight_audit_counts_dead_duplicate_outlier_and_nonfinite_units_like_numpy():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((12, 50)).astype(np.float32)
    w[3] = 0.0  # dead
    w[7] = w[2]  # duplicate of unit 2
    w[9] = w[2]  # and another
    w[5, 4] = 40.0  # an outlier far beyond 6σ
    w[6, 1] = 1e5  # beyond float16
    w[8, 8] = np.nan
    a = audit.weights_audit(gemm_model(w))
    (row,) = a["rows"]
    finite = w[np.isfinite(w)].astype(np.float64)
    mean, std = finite.mean(), finite.std()
    assert row["dead_units"] == int((~np.any(w != 0, axis=1)).sum()) == 1
    assert row["duplicate_units"] == 2
    assert row["outliers"] == int((np.abs(finite - mean) > 6 * std).sum())
    assert row["fp16_overflow"] == 1 and row["nan"] == 1 and row["units"] == 12
    assert row["mean"] == pytest.approx(mean, rel=1e-5) and row["std"] == pytest.approx(std, rel=1e-5)
    levels = {f["level"] for f in a["findings"]}
    assert levels == {"error", "warning", "info"}
    text = " ".join(f["text"] for f in a["findings"])
    assert "1 NaN" in text and "1 of 12 units all zero" in text and "2 of 12 units repeat" in text
    hist = a["histograms"]["fc_weight"]
    assert hist["counts"] == np.histogram(finite, bins=64, range=(finite.min(), finite.max()))[0].tolist()


def test_quantiles_come_from_the_tensor_itself():
    w = np.arange(200, dtype=np.float32).reshape(4, 50)
    q = audit.weights_audit(gemm_model(w))["distribution"][0]["q"]
    assert q == pytest.approx(np.quantile(w.astype(np.float64), audit.QUANTILES).tolist())


def test_quantization_format_and_parameters_of_a_qdq_weight():
    proto = onnx.parser.parse_model(
        """<ir_version: 9, opset_import: ["" : 17]>
        g (float[2,3] x) => (float[2,4] y) {
          xq = QuantizeLinear (x, xs, xz)
          xd = DequantizeLinear (xq, xs, xz)
          wd = DequantizeLinear <axis = 0> (wq, ws, wz)
          y = Gemm <transB = 1> (xd, wd)
        }"""
    )
    arrays = {
        "wq": np.arange(12, dtype=np.int8).reshape(4, 3),
        "ws": np.array([0.5, 1.0, 2.0, 4.0], np.float32),
        "wz": np.zeros(4, np.int8),
        "xs": np.float32(0.1),
        "xz": np.uint8(128),
    }
    for k, v in arrays.items():
        proto.graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(v), k))
    m = onnxscope.Model(ir.serde.deserialize_model(proto))
    q = audit.quantization_format(m)
    assert (
        q["format"] == "QDQ" and q["weight_types"] == {"int8": 12} and q["activation_types"] == {"uint8": 1}
    )
    rows = {r["tensor"]: r for r in audit.weights_audit(m)["quantization"]}
    assert rows["wq"]["channels"] == 4 and rows["wq"]["scale_ratio"] == 8.0 and rows["wq"]["axis"] == 0
    assert rows["x"]["kind"] == "activation" and rows["x"]["zp_min"] == 128 and rows["x"]["dtype"] == "uint8"


def test_structure_of_the_bundled_model():
    s = audit.structure(onnxscope.load(FIXTURE), onnxscope.profile(onnxscope.load(FIXTURE)))
    assert [seg["kind"] for seg in s["segments"]] == ["layers", "residual", "layers"]
    assert s["segments"][0]["main"] == "Conv → BatchNormalization → Relu"
    assert (s["segments"][1]["main"], s["segments"][1]["skip"]) == ("Conv", "identity")
    assert s["segments"][1]["macs"] == 8 * 8 * 9 * 4 * 4  # conv2: 8→8, 3×3, on 4×4
    assert s["residuals"][0]["projection"] is False and s["attention"] == []


def test_attention_maps_are_average_pooled_to_the_size_limit():
    m = np.random.default_rng(0).random((2, 256, 130)).astype(np.float32)
    pooled = audit._pool(m, 128)
    assert pooled.shape == (2, 128, 65)
    np.testing.assert_allclose(pooled[1, 3, 7], m[1, 6:8, 14:16].mean(), rtol=1e-6)
    assert audit._pool(m[:, :100, :100], 128) is not None and audit._pool(m[:, :100, :100], 128).shape == (
        2,
        100,
        100,
    )


def test_comparison_rows_are_checked_and_normalized():
    c = audit.check_comparison(
        {"rows": [{"a_tensor": "h", "op": "Conv", "sqnr_db": float("inf"), "max_abs": np.float32(0.5)}]}
    )
    assert (
        c["rows"][0]["b_tensor"] == "h"
        and c["rows"][0]["sqnr_db"] == 1e308
        and c["rows"][0]["max_abs"] == 0.5
    )
    assert c["first_divergence"] is None and c["a"] == "A"
    with pytest.raises(InputError, match="needs 'rows'"):
        audit.check_comparison({})
    with pytest.raises(InputError, match="row 0 has no 'a_tensor'"):
        audit.check_comparison({"rows": [{"b_tensor": "h"}]})
