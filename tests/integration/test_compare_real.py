"""Alignment on the real-model corpus (fixtures/REAL_MODELS.md): every pretrained model against the graph
onnxruntime saves after its ALL-level optimizations (NCHWc convolutions, fused activations, folded BatchNorm,
QuickGelu, dynamic-quantization fusions…): at least 90 % of the optimized model's tensors are aligned. One model
is also compared end to end: the aligned tensors agree, so they were aligned right."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import onnxscope
from onnxscope.align import align

ort = pytest.importorskip("onnxruntime")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fixtures"))
from real_inputs import CACHE, inputs_of, manifest  # noqa: E402

if not (CACHE / "manifest.json").exists():
    pytest.fail(f"the real-model corpus is missing from {CACHE}: run `make real-models`", pytrace=False)
MANIFEST = manifest()


def optimized(mid: str, folder: Path) -> Path:
    out = folder / f"{mid}.optimized.onnx"
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(out)
    so.log_severity_level = 3
    ort.InferenceSession(str(CACHE / MANIFEST[mid]["file"]), so, providers=["CPUExecutionProvider"])
    return out


@pytest.mark.parametrize("mid", sorted(MANIFEST))
def test_optimized_corpus_model_is_90_percent_aligned(mid, tmp_path):
    al = align(onnxscope.load(CACHE / MANIFEST[mid]["file"]), onnxscope.load(optimized(mid, tmp_path)))
    assert al.coverage_b >= 0.9, (al.coverage_b, al.unaligned_b[:10])


def test_yolo_against_its_optimized_graph_agrees_tensor_by_tensor(tmp_path):
    """nudenet (YOLOv8n): onnxruntime's saved graph runs NCHWc-blocked convolutions with fused activations; the
    blocked tensors are un-blocked and every aligned pair agrees."""
    mid = "nudenet-320n"
    c = onnxscope.compare(
        CACHE / MANIFEST[mid]["file"],
        optimized(mid, tmp_path),
        inputs_of(MANIFEST[mid]["inputs"]),
        introduced=False,
    )
    assert c.alignment.coverage_b >= 0.9
    assert any("NCHWc" in r.transform for r in c.rows)
    assert c.first_divergence is None, c.first_divergence
