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

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

__all__ = ["RunningStats", "unit_axis_for"]

_SLICE = 1 << 20  # elements per slice of a large array

SATURATING = {
    "Sigmoid": (0.01, 0.99),
    "HardSigmoid": (0.01, 0.99),
    "Tanh": (-0.99, 0.99),
    "Softsign": (-0.99, 0.99),
}


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

        Large arrays are taken in slices along their first axis (merged as shards), so the float64 temporaries
        stay small whatever the array's size.
        """
        a = np.asarray(a)
        if a.size > _SLICE and a.ndim >= 2 and a.shape[0] > 1 and unit_axis != 0:
            step = max(1, _SLICE // (a.size // a.shape[0]))
            out = cls()
            for start in range(0, a.shape[0], step):
                out = out.merge(cls.of(a[start : start + step], unit_axis, op))
            return out
        f = a.astype(np.float64, copy=False)
        finite = np.isfinite(f)
        ok = f[finite]
        s = cls(
            count=int(ok.size),
            mean=float(ok.mean()) if ok.size else 0.0,
            m2=float(((ok - ok.mean()) ** 2).sum()) if ok.size else 0.0,
            min=float(ok.min()) if ok.size else np.inf,
            max=float(ok.max()) if ok.size else -np.inf,
            nan=int(np.isnan(f).sum()),
            inf=int(np.isinf(f).sum()),
            zeros=int((f == 0).sum()),
        )
        if unit_axis is None or a.ndim < 2:
            return s
        all_finite = ok.size == f.size
        rows = np.moveaxis(f if all_finite else np.where(finite, f, np.nan), unit_axis, -1).reshape(
            -1, a.shape[unit_axis]
        )
        if all_finite and rows.shape[0]:  # the common case, without the slower NaN-aware reductions
            n = np.full(rows.shape[1], rows.shape[0])
            mean = rows.mean(axis=0)
            s.unit_m2 = ((rows - mean) ** 2).sum(axis=0)
            s.unit_min, s.unit_max = rows.min(axis=0), rows.max(axis=0)
        else:
            n = np.sum(~np.isnan(rows), axis=0)
            with np.errstate(invalid="ignore"), np.testing.suppress_warnings() as sup:
                sup.filter(RuntimeWarning)
                mean = np.where(n > 0, np.nanmean(rows, axis=0), 0.0)
                s.unit_m2 = np.where(n > 0, np.nansum((rows - mean) ** 2, axis=0), 0.0)
                s.unit_min = np.where(n > 0, np.nanmin(rows, axis=0), np.inf)
                s.unit_max = np.where(n > 0, np.nanmax(rows, axis=0), -np.inf)
        s.unit_count, s.unit_mean = n.astype(np.int64), mean
        s.unit_active = np.sum(rows > 0, axis=0).astype(np.int64)
        lo, hi = SATURATING.get(op or "", (np.nan, np.nan))
        s.unit_saturated = np.sum((rows <= lo) | (rows >= hi), axis=0).astype(np.int64)
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
