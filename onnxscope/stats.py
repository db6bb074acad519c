"""Streaming statistics of activations, per tensor and per unit (channel or feature), mergeable across shards.

Means and variances use Chan's parallel update (Welford's for one value at a time), so statistics of a dataset
can be accumulated batch by batch, or computed on shards and merged, and equal numpy's over the concatenation.

Example:
    >>> import numpy as np
    >>> a, b = np.arange(12.0).reshape(3, 4), np.ones((2, 4))
    >>> s = RunningStats.of(a, unit_axis=-1).merge(RunningStats.of(b, unit_axis=-1))
    >>> bool(np.isclose(s.mean, np.concatenate([a, b]).mean())), s.units
    (True, 4)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

__all__ = ["RunningStats", "unit_axis_for"]

_SLICE = 1 << 17  # elements per block: the float64 temporaries of one block stay in cache

SATURATING = {
    "Sigmoid": (0.01, 0.99),
    "HardSigmoid": (0.01, 0.99),
    "Tanh": (-0.99, 0.99),
    "Softsign": (-0.99, 0.99),
}


def _blocks(shape: tuple[int, int, int]) -> Any:
    """Index blocks of an ``(outer, units, inner)`` array holding at most about ``_SLICE`` elements each."""
    outer, units, inner = shape
    row = units * inner
    if row <= _SLICE:
        step = max(1, _SLICE // max(row, 1))
        for start in range(0, max(outer, 1), step):
            yield (slice(start, start + step), slice(None), slice(None))
        return
    step = max(1, _SLICE // max(units, 1))
    for o in range(outer):
        for start in range(0, inner, step):
            yield (slice(o, o + 1), slice(None), slice(start, start + step))


def _count(mask: np.ndarray) -> np.ndarray:
    """Per-unit counts of a boolean ``(outer, units, inner)`` block (bytes summed along the contiguous axis first:
    faster than numpy's boolean reductions; with one element per unit and row, features last, rows summed as
    int8 vectors into int32: a block holds fewer than 2**31 rows)."""
    outer, units, inner = mask.shape
    if inner == 1:
        return np.add.reduce(mask.reshape(outer, units).view(np.int8), axis=0, dtype=np.int32).astype(
            np.int64
        )
    return np.add.reduce(mask.view(np.int8), axis=2, dtype=np.int32).sum(axis=0, dtype=np.int64)


def unit_axis_for(shape: tuple[int, ...]) -> int | None:
    """Which axis indexes units: channels (axis 1) of a 4-D or 5-D tensor, features (last axis) otherwise.

    Example:
        >>> unit_axis_for((8, 16, 7, 7)), unit_axis_for((8, 128, 768)), unit_axis_for((8,))
        (1, 2, None)
    """
    if len(shape) < 2:
        return None
    return 1 if len(shape) in (4, 5) else len(shape) - 1


@dataclass
class RunningStats:
    """Count, mean, variance (as ``m2``), min, max, NaN/Inf and zero counts — for the whole tensor and per unit.

    Per-unit arrays have one entry per unit (``units``); ``active`` counts values > 0 and ``saturated`` values at
    an activation's bounds (for Sigmoid/Tanh outputs), so dead and saturated units can be read off.
    """

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: float = np.inf
    max: float = -np.inf
    nan: int = 0
    inf: int = 0
    zeros: int = 0
    unit_count: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    unit_mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    unit_m2: np.ndarray = field(default_factory=lambda: np.zeros(0))
    unit_min: np.ndarray = field(default_factory=lambda: np.zeros(0))
    unit_max: np.ndarray = field(default_factory=lambda: np.zeros(0))
    unit_active: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    unit_saturated: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def units(self) -> int:
        """Number of units tracked (0 when the tensor has no unit axis)."""
        return int(self.unit_count.size)

    @property
    def std(self) -> float:
        """Population standard deviation (numpy's ``std`` default) of the finite values."""
        return float(np.sqrt(self.m2 / self.count)) if self.count else float("nan")

    @property
    def unit_std(self) -> np.ndarray:
        """Per-unit population standard deviation."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.sqrt(self.unit_m2 / self.unit_count)

    @property
    def dead_units(self) -> np.ndarray:
        """Units never above zero over everything seen."""
        return np.flatnonzero((self.unit_active == 0) & (self.unit_count > 0))

    @property
    def saturated_units(self) -> np.ndarray:
        """Units at their activation's bound for at least 99 % of their values."""
        return np.flatnonzero((self.unit_saturated >= 0.99 * self.unit_count) & (self.unit_count > 0))

    @property
    def zero_fraction(self) -> float:
        """Fraction of values exactly zero."""
        total = self.count + self.nan + self.inf
        return self.zeros / total if total else 0.0

    @classmethod
    def of(cls, a: np.ndarray, unit_axis: int | None = None, op: str | None = None) -> RunningStats:
        """The statistics of one array (``unit_axis`` as :func:`unit_axis_for` chooses, or given).

        Vectorised over blocks of about 128K elements (a block's moments are computed in cache and folded into the
        running ones with Chan's update), so the float64 temporaries stay small whatever the array's size. A block
        without NaN or Inf (told by its float64 sum being finite) takes a path without masks.

        Example:
            >>> s = RunningStats.of(np.array([[1.0, 0.0], [3.0, np.nan]]), unit_axis=1)
            >>> s.count, s.mean, s.nan, s.unit_count.tolist(), s.unit_mean.tolist()
            (3, 1.3333333333333333, 1, [2, 1], [2.0, 0.0])
        """
        a = np.asarray(a)
        if a.dtype.kind == "b":
            a = a.view(np.uint8)
        if a.dtype.kind not in "iuf":
            raise TypeError(f"statistics need a numeric array, not {a.dtype}")
        has_units = unit_axis is not None and a.ndim >= 2
        if has_units:
            ax = unit_axis % a.ndim  # type: ignore[operator]
            shape = (math.prod(a.shape[:ax]), a.shape[ax], math.prod(a.shape[ax + 1 :]))
        else:
            shape = (a.size, 1, 1)
        v = np.ascontiguousarray(a).reshape(shape)
        bounds = SATURATING.get(op or "")
        k = shape[1]
        count, mean, m2 = np.zeros(k, np.int64), np.zeros(k), np.zeros(k)
        vmin, vmax = np.full(k, np.inf), np.full(k, -np.inf)
        active, saturated = np.zeros(k, np.int64), np.zeros(k, np.int64)
        zeros = nan = inf = 0
        for block in _blocks(shape):
            x = v[block]
            if not x.size:
                continue
            zeros += int(np.count_nonzero(x == 0))
            total = np.add.reduce(x, axis=(0, 2), dtype=np.float64)
            if a.dtype.kind != "f" or np.isfinite(total.sum()):  # no NaN/Inf in this block: no masks
                n = np.full(k, x.shape[0] * x.shape[2], np.int64)
                bmean = total / n
                d = x - bmean[None, :, None]
                lo, hi = x.min(axis=(0, 2)), x.max(axis=(0, 2))
                above = _count(x > 0)
                at_bound = None if bounds is None else (x <= bounds[0]) | (x >= bounds[1])
            else:
                ok = np.isfinite(x)
                nan += int(np.count_nonzero(np.isnan(x)))
                inf += int(np.count_nonzero(np.isinf(x)))
                n = np.count_nonzero(ok, axis=(0, 2)).astype(np.int64)
                with np.errstate(invalid="ignore", divide="ignore"):
                    bmean = np.where(n > 0, np.add.reduce(np.where(ok, x, 0.0), axis=(0, 2)) / n, 0.0)
                d = np.where(ok, x - bmean[None, :, None], 0.0)
                lo = np.where(ok, x, np.inf).min(axis=(0, 2))
                hi = np.where(ok, x, -np.inf).max(axis=(0, 2))
                above = _count(ok & (x > 0))
                at_bound = None if bounds is None else ok & ((x <= bounds[0]) | (x >= bounds[1]))
            np.multiply(d, d, out=d)
            bm2 = np.add.reduce(d, axis=(0, 2))
            # Chan et al.: fold this block's per-unit moments into the running ones
            both = count + n
            with np.errstate(invalid="ignore", divide="ignore"):
                w = np.where(both > 0, n / np.maximum(both, 1), 0.0)
            delta = bmean - mean
            mean = mean + delta * w
            m2 = m2 + bm2 + delta * delta * count * w
            count = both
            vmin, vmax = np.minimum(vmin, lo), np.maximum(vmax, hi)
            active += above
            if at_bound is not None:
                saturated += _count(at_bound)
        total_n = int(count.sum())
        grand = float(np.dot(count, mean) / total_n) if total_n else 0.0
        s = cls(
            count=total_n,
            mean=grand,
            m2=float(m2.sum() + np.dot(count, (mean - grand) ** 2)) if total_n else 0.0,
            min=float(vmin.min()) if total_n else np.inf,
            max=float(vmax.max()) if total_n else -np.inf,
            nan=nan,
            inf=inf,
            zeros=zeros,
        )
        if has_units:
            s.unit_count, s.unit_mean, s.unit_m2 = count, mean, m2
            s.unit_min, s.unit_max = vmin.astype(np.float64), vmax.astype(np.float64)
            s.unit_active, s.unit_saturated = active.astype(np.int64), saturated
        return s

    def merge(self, other: RunningStats) -> RunningStats:
        """The statistics of both sets of values together (Chan et al.); neither operand changes."""
        if self.count + self.nan + self.inf == 0 and self.units == 0:
            return other.copy()
        if other.count + other.nan + other.inf == 0 and other.units == 0:
            return self.copy()
        n = self.count + other.count
        delta = other.mean - self.mean
        out = RunningStats(
            count=n,
            mean=self.mean + delta * other.count / n if n else 0.0,
            m2=self.m2 + other.m2 + delta * delta * self.count * other.count / n if n else 0.0,
            min=min(self.min, other.min),
            max=max(self.max, other.max),
            nan=self.nan + other.nan,
            inf=self.inf + other.inf,
            zeros=self.zeros + other.zeros,
        )
        if self.units and other.units:
            if self.units != other.units:
                raise ValueError(f"cannot merge statistics of {self.units} and {other.units} units")
            nu = self.unit_count + other.unit_count
            d = other.unit_mean - self.unit_mean
            with np.errstate(invalid="ignore", divide="ignore"):
                w = np.where(nu > 0, other.unit_count / np.maximum(nu, 1), 0.0)
                out.unit_mean = self.unit_mean + d * w
                out.unit_m2 = self.unit_m2 + other.unit_m2 + d * d * self.unit_count * w
            out.unit_count = nu
            out.unit_min = np.minimum(self.unit_min, other.unit_min)
            out.unit_max = np.maximum(self.unit_max, other.unit_max)
            out.unit_active = self.unit_active + other.unit_active
            out.unit_saturated = self.unit_saturated + other.unit_saturated
        return out

    def copy(self) -> RunningStats:
        """An independent copy."""
        return RunningStats(
            **{
                f.name: np.copy(getattr(self, f.name))
                if isinstance(getattr(self, f.name), np.ndarray)
                else getattr(self, f.name)
                for f in fields(self)
            }
        )

    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """Every field as an array (for an ``.npz`` or a store), keys ``prefix + field``."""
        return {prefix + f.name: np.asarray(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str = "") -> RunningStats:
        """Inverse of :meth:`to_arrays`."""
        kw: dict[str, Any] = {}
        for f in fields(cls):
            v = np.asarray(arrays[prefix + f.name])
            kw[f.name] = (
                v
                if f.name.startswith("unit_")
                else (int(v) if f.name in ("count", "nan", "inf", "zeros") else float(v))
            )
        return cls(**kw)

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (per-unit detail reduced to the dead and saturated unit lists)."""
        return {
            "count": self.count,
            "mean": self.mean,
            "std": self.std,
            "min": self.min,
            "max": self.max,
            "nan": self.nan,
            "inf": self.inf,
            "zero_fraction": self.zero_fraction,
            "units": self.units,
            "dead_units": self.dead_units.tolist(),
            "saturated_units": self.saturated_units.tolist(),
        }
