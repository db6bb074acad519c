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


def test_blocks_with_and_without_nan_agree_with_numpy_in_every_layout(monkeypatch):
    import onnxscope.stats as st

    monkeypatch.setattr(
        st, "_SLICE", 64
    )  # many blocks: some clean, some with NaN/Inf, split inside a row too
    rng = np.random.default_rng(4)
    for shape, axis in (((6, 3, 5, 7), 1), ((6, 9, 20), 2), ((2, 100), 1), ((50,), None)):
        a = rng.standard_normal(shape) * 3 + 2
        flat = a.reshape(-1)
        flat[[5, 77, 150] if flat.size > 150 else [5]] = [np.nan, np.inf, -np.inf][
            : 3 if flat.size > 150 else 1
        ]
        a[..., 0] = np.maximum(a[..., 0], 0)
        s = RunningStats.of(a, unit_axis=axis, op="Tanh")
        ok = a[np.isfinite(a)]
        assert (s.count, s.nan, s.inf, s.zeros) == (
            ok.size,
            np.isnan(a).sum(),
            np.isinf(a).sum(),
            (a == 0).sum(),
        )
        assert s.mean == pytest.approx(ok.mean(), rel=1e-12) and s.std == pytest.approx(ok.std(), rel=1e-12)
        assert (s.min, s.max) == (ok.min(), ok.max())
        if axis is None:
            assert s.units == 0
            continue
        per = np.moveaxis(np.where(np.isfinite(a), a, np.nan), axis, -1).reshape(-1, shape[axis])
        np.testing.assert_allclose(s.unit_mean, np.nanmean(per, axis=0), rtol=1e-12)
        np.testing.assert_allclose(s.unit_std, np.nanstd(per, axis=0), rtol=1e-12)
        np.testing.assert_array_equal(s.unit_min, np.nanmin(per, axis=0))
        np.testing.assert_array_equal(s.unit_active, np.sum(per > 0, axis=0))
        saturated = np.sum((per <= -0.99) | (per >= 0.99), axis=0)
        np.testing.assert_array_equal(s.unit_saturated, saturated)


def test_integer_boolean_half_and_empty_arrays():
    ints = np.arange(24, dtype=np.int64).reshape(4, 6)
    s = RunningStats.of(ints, unit_axis=1)
    assert (
        s.mean == ints.mean()
        and s.std == pytest.approx(ints.std())
        and s.unit_max.tolist() == ints[-1].tolist()
    )
    b = RunningStats.of(np.array([[True, False], [True, True]]), unit_axis=1)
    assert b.unit_mean.tolist() == [1.0, 0.5] and b.zeros == 1
    h = np.linspace(-1, 1, 12, dtype=np.float16).reshape(3, 4)
    assert RunningStats.of(h, 1).mean == pytest.approx(h.astype(np.float64).mean(), abs=1e-12)
    e = RunningStats.of(np.zeros((0, 3), np.float32), unit_axis=1)
    assert e.count == 0 and e.units == 3 and e.unit_count.tolist() == [0, 0, 0]
    with pytest.raises(TypeError, match="numeric array"):
        RunningStats.of(np.array(["a"]))
