"""Comparison metrics against their definitions in numpy (float64), batch by batch and merged from shards: equal
to float32 rounding (the metrics of float32 tensors are computed in float32 with float64 sums), and the count of
elements outside the tolerance exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from onnxscope.discrepancy import Discrepancy


def numpy_metrics(a, b, rtol, atol):
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    d = a - b
    return {
        "max_abs": np.abs(d).max(),
        "mean_abs": np.abs(d).mean(),
        "max_rel": np.abs(d).max() / np.abs(a).max(),
        "cosine": a @ b / (np.linalg.norm(a) * np.linalg.norm(b)),
        "sqnr_db": 10 * np.log10((a @ a) / (d @ d)),
        "rel_l2": np.linalg.norm(d) / np.linalg.norm(a),
        "frac_outside_tol": np.mean(~np.isclose(b, a, rtol=rtol, atol=atol)),
        "frac_differ": np.mean(a != b),
    }


def test_metrics_of_batches_and_of_merged_shards_equal_numpy_over_the_concatenation():
    rng = np.random.default_rng(0)
    a = [rng.standard_normal((int(rng.integers(1, 4)), 5, 3)).astype(np.float32) for _ in range(6)]
    b = [x + rng.normal(0, 0.01, x.shape).astype(np.float32) for x in a]
    b[2][0, 0, 0] = a[2][0, 0, 0]  # one element equal
    streamed = Discrepancy(rtol=1e-2, atol=1e-3)
    for x, y in zip(a, b, strict=True):
        streamed.update(x, y)
    left, right = Discrepancy(rtol=1e-2, atol=1e-3), Discrepancy(rtol=1e-2, atol=1e-3)
    for x, y in zip(a[:3], b[:3], strict=True):
        left.update(x, y)
    for x, y in zip(a[3:], b[3:], strict=True):
        right.update(x, y)
    merged = left.merge(right)
    want = numpy_metrics(
        np.concatenate([x.ravel() for x in a]), np.concatenate([y.ravel() for y in b]), 1e-2, 1e-3
    )
    for d in (streamed, merged):
        for key, value in want.items():
            if key in ("frac_outside_tol", "frac_differ"):
                assert getattr(d, key) == value, key
            else:
                assert getattr(d, key) == pytest.approx(value, rel=1e-6), key
        assert d.count == sum(x.size for x in a)


def test_elements_at_the_edge_of_the_tolerance_are_counted_as_numpy_counts_them():
    rng = np.random.default_rng(1)
    a = rng.uniform(-2, 2, 200_000).astype(np.float32)
    tol = 1e-4 + 1e-3 * np.abs(a.astype(np.float64))
    b = a.astype(np.float64) + tol * rng.choice([-1, 1], a.size) * rng.uniform(0.9999999, 1.0000001, a.size)
    b = b.astype(np.float32)
    d = Discrepancy().update(a, b)
    assert d.frac_outside_tol == np.mean(~np.isclose(b.astype(np.float64), a.astype(np.float64), 1e-3, 1e-4))


def test_steps_worst_samples_and_introduced_error():
    a = np.array([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])
    b = np.array([[0.0, 1.5, 2.0], [3.0, 4.0, 5.0]])
    d = Discrepancy(keep=1).update(a, b, scale=np.float64(0.25), first_sample=10, batch=2)
    assert d.max_steps == 2.0 and d.mean_steps == pytest.approx(2.0 / 6)
    assert d.worst_samples() == [(10, pytest.approx(0.5 / math.sqrt(5)))]
    assert d.introduced_error is None
    d.introduce(a, a)
    assert d.introduced_error == 0.0 and d.introduced_frac_differ == 0.0
    d.introduce(a, b)
    assert d.introduced_error == pytest.approx(0.5 / math.sqrt(2 * (a * a).sum()))


def test_edge_cases_zeros_and_nan():
    z = np.zeros(4)
    d = Discrepancy().update(z, z)
    assert (d.max_rel, d.cosine, d.sqnr_db, d.rel_l2, d.frac_outside_tol) == (0.0, 1.0, math.inf, 0.0, 0.0)
    d = Discrepancy().update(z, np.array([0.0, 0.0, 0.0, 1.0]))
    assert (d.max_rel, d.cosine, d.sqnr_db) == (math.inf, 0.0, -math.inf)
    d = Discrepancy().update(np.array([1.0, np.nan]), np.array([1.0, 2.0]))
    assert math.isnan(d.max_abs) and d.frac_outside_tol == 0.5
    with pytest.raises(ValueError, match="shapes differ"):
        Discrepancy().update(np.zeros(2), np.zeros(3))


def test_32_bit_integers_beyond_float32_precision_are_told_apart():
    """int32 values above 2**24 that differ by one (float32 would round them to the same number)."""
    a = np.array([16_777_217, 2_000_000_001, 5], np.int32)
    b = np.array([16_777_216, 2_000_000_000, 5], np.int32)
    d = Discrepancy(rtol=0.0, atol=0.0).update(a, b)
    assert (
        d.max_abs == 1.0
        and d.frac_differ == pytest.approx(2 / 3)
        and d.frac_outside_tol == pytest.approx(2 / 3)
    )
