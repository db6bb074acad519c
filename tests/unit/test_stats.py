"""Streaming statistics against numpy over the concatenated data, batch by batch and merged from shards."""

from __future__ import annotations

import numpy as np
import pytest

from onnxscope.stats import RunningStats, unit_axis_for


def _batches(rng, n=7, shape=(3, 5, 4, 4)):
    out = [rng.standard_normal((rng.integers(1, 4), *shape[1:])) * 3 + 1 for _ in range(n)]
    out[2][0, 1] = 0.0
    out[4][..., 2, 2] = np.nan
    out[5][0, 0, 0, 0] = np.inf
    return out


def test_streamed_statistics_equal_numpy_over_the_concatenation():
    rng = np.random.default_rng(0)
    batches = _batches(rng)
    s = RunningStats()
    for b in batches:
        s = s.merge(RunningStats.of(b, unit_axis=1))
    allv = np.concatenate(batches)
    finite = allv[np.isfinite(allv)]
    assert s.count == finite.size and s.nan == np.isnan(allv).sum() and s.inf == np.isinf(allv).sum()
    assert s.mean == pytest.approx(finite.mean(), rel=1e-12)
    assert s.std == pytest.approx(finite.std(), rel=1e-12)
    assert (s.min, s.max) == (finite.min(), finite.max())
    assert s.zero_fraction == pytest.approx((allv == 0).mean())
    per = np.moveaxis(np.where(np.isfinite(allv), allv, np.nan), 1, -1).reshape(-1, 5)
    np.testing.assert_allclose(s.unit_mean, np.nanmean(per, axis=0), rtol=1e-12)
    np.testing.assert_allclose(s.unit_std, np.nanstd(per, axis=0), rtol=1e-12)
    np.testing.assert_array_equal(s.unit_max, np.nanmax(per, axis=0))


def test_shards_merge_to_the_same_statistics():
    rng = np.random.default_rng(1)
    batches = _batches(rng, n=8)
    a, b = RunningStats(), RunningStats()
    for x in batches[:3]:
        a = a.merge(RunningStats.of(x, unit_axis=1))
    for x in batches[3:]:
        b = b.merge(RunningStats.of(x, unit_axis=1))
    whole = RunningStats.of(np.concatenate(batches), unit_axis=1)
    merged = a.merge(b)
    assert merged.count == whole.count and merged.mean == pytest.approx(whole.mean, rel=1e-12)
    assert merged.m2 == pytest.approx(whole.m2, rel=1e-10)
    np.testing.assert_allclose(merged.unit_m2, whole.unit_m2, rtol=1e-10)
    back = RunningStats.from_arrays(merged.to_arrays("x/"), "x/")
    assert back.summary() == merged.summary()


def test_dead_and_saturated_units():
    relu = RunningStats.of(np.array([[0.0, 0.5, 3.0], [0.0, 0.0, 1.0]]), unit_axis=-1, op="Relu")
    assert relu.dead_units.tolist() == [0] and relu.saturated_units.tolist() == []
    sigmoid = RunningStats.of(np.array([[0.3, 0.5, 0.995], [0.2, 0.6, 0.999]]), unit_axis=-1, op="Sigmoid")
    assert sigmoid.dead_units.tolist() == [] and sigmoid.saturated_units.tolist() == [2]
    assert unit_axis_for((2, 3)) == 1 and unit_axis_for((2, 3, 8, 8)) == 1


def test_capture_stats_of_one_run():
    pytest.importorskip("onnxruntime")
    import onnxscope
    from onnxscope.testing import mlp_model

    x = np.random.default_rng(2).standard_normal((5, 3)).astype(np.float32)
    cap = onnxscope.capture(onnxscope.Model(mlp_model()), {"x": x})
    s = cap.stats("a")
    assert s.count == cap["a"].size and s.mean == pytest.approx(cap["a"].astype(np.float64).mean())
    assert s.dead_units.tolist() == np.flatnonzero(cap["a"].max(axis=0) <= 0).tolist()


def test_large_arrays_are_taken_in_slices_with_the_same_result(monkeypatch):
    import onnxscope.stats as st

    a = np.random.default_rng(3).standard_normal((9, 4, 5)) * 2 + 1
    whole = RunningStats.of(a, unit_axis=1)
    monkeypatch.setattr(st, "_SLICE", 30)  # slices of 1 row (20 values)
    sliced = RunningStats.of(a, unit_axis=1)
    assert sliced.count == whole.count and sliced.mean == pytest.approx(whole.mean, rel=1e-12)
    assert sliced.m2 == pytest.approx(whole.m2, rel=1e-12)
    np.testing.assert_allclose(sliced.unit_m2, whole.unit_m2, rtol=1e-12)
    np.testing.assert_array_equal(sliced.unit_max, whole.unit_max)
