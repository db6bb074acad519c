"""How far apart two arrays holding the same quantity are: error metrics as mergeable running sums.

:class:`Discrepancy` keeps sums and maxima (never the arrays), so metrics of a dataset are accumulated batch by
batch, or computed on shards and merged (:meth:`Discrepancy.merge`), and equal the metrics of the concatenation.
``a`` is the reference, ``b`` the other side, ``d = a − b`` (in float32 for float32 and narrower tensors, with
every sum accumulated in float64 — so a metric equals numpy's float64 value to float32 rounding; elements at the
edge of the tolerance and chunks with NaN or infinities are settled in float64):

- ``max_abs = max|d|``, ``mean_abs = mean|d|``;
- ``max_rel = max|d| / max|a|`` (relative to the reference's range; ``inf`` if ``a`` is all zeros and ``d`` not);
- ``cosine = Σab / √(Σa²·Σb²)`` (1 when both are all zeros, 0 when one is);
- ``sqnr_db = 10·log10(Σa² / Σd²)`` (``inf`` when ``d`` is all zeros);
- ``rel_l2 = √(Σd² / Σa²)``;
- ``frac_outside_tol``: the fraction of elements where ``numpy.isclose(b, a, rtol, atol)`` is false, i.e.
  ``|b − a| > atol + rtol·|a|`` (NaN counts as outside) — what ``numpy.allclose(b, a)`` tests;
- ``frac_differ``: the fraction of elements that differ at all;
- ``max_steps``/``mean_steps``: ``|d|`` in quantization steps, where one side is quantized (its scale), or
  where both are integers (then steps are integer differences).

A second, optional set (``introduced_*``) holds the same sums for the error a node introduces (its output
re-computed from the reference's inputs), and ``worst`` the samples with the largest per-sample ``rel_l2``.

Example:
    >>> import numpy as np
    >>> a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.5, 4.0])
    >>> d = Discrepancy().update(a[:2], b[:2]).merge(Discrepancy().update(a[2:], b[2:]))
    >>> d.max_abs, d.mean_abs, d.frac_outside_tol, round(d.cosine, 4)
    (0.5, 0.125, 0.25, 0.9974)
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["REPORT_FIELDS", "Discrepancy"]

# One comparison row as the compare writes it and the report reads it (onnxscope.audit.check_comparison), in order.
REPORT_FIELDS = (
    "a_tensor",
    "b_tensor",
    "node",
    "op",
    "alignment",
    "max_abs",
    "mean_abs",
    "max_rel",
    "cosine",
    "sqnr_db",
    "frac_outside_tol",
    "introduced_error",
)

_CHUNK = 1 << 16  # elements per chunk (temporaries of 256 KiB in float32)


def _f64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x).astype(np.float64, copy=False).reshape(-1)


@dataclass
class _Sums:
    n: int = 0
    sum_abs: float = 0.0
    max_abs: float = 0.0
    max_ref: float = 0.0
    saa: float = 0.0
    sbb: float = 0.0
    sab: float = 0.0
    sdd: float = 0.0
    outside: int = 0
    differ: int = 0
    max_steps: float | None = None
    sum_steps: float = 0.0
    nan: bool = False

    def add(
        self,
        a: np.ndarray,
        b: np.ndarray,
        rtol: float,
        atol: float,
        scale: np.ndarray | None,
        light: bool = False,
    ) -> None:
        """Add the elements of ``a`` and ``b``, chunk by chunk (chunks stay in the CPU's cache), in float32 for
        float32 and narrower inputs — every sum accumulated in float64 across chunks; elements whose tolerance
        test float32 cannot settle, and chunks holding NaN or infinities, are decided in float64. ``light``
        keeps only what the introduced error needs (no cosine terms, no tolerance count)."""
        fa_all, fb_all = np.asarray(a).reshape(-1), np.asarray(b).reshape(-1)
        n = fa_all.size
        if n == 0:
            return
        wide = any(  # float32 holds integers exactly only up to 2**24: wider integers are compared in float64
            x.dtype.itemsize > 4
            or x.dtype.kind not in "fiub"
            or (x.dtype.kind in "iu" and x.dtype.itemsize == 4)
            for x in (fa_all, fb_all)
        )
        work = np.float64 if wide else np.float32
        per_element = scale is not None and np.ndim(scale) > 0 and np.size(scale) > 1
        step = None if scale is None or per_element else float(np.asarray(scale).reshape(-1)[0])
        for start in range(0, n, _CHUNK):
            fa = fa_all[start : start + _CHUNK].astype(work, copy=False)
            fb = fb_all[start : start + _CHUNK].astype(work, copy=False)
            d = fa - fb
            self.sdd += float(np.dot(d, d))
            self.saa += float(np.dot(fa, fa))
            if not light:
                self.sbb += float(np.dot(fb, fb))
                self.sab += float(np.dot(fa, fb))
            ad = np.abs(d, out=d)
            total = float(ad.sum(dtype=work))  # pairwise summation within the chunk
            if not math.isfinite(total) or not math.isfinite(self.saa + self.sbb):
                self._exact(fa, fb, rtol, atol, step)
                continue
            m = float(ad.max())
            if not light:
                ref = np.abs(fa)
                top = float(ref.max())
                self.max_ref = max(self.max_ref, top)
            if m > atol and not light:
                ref *= rtol
                ref += atol
                slack = np.subtract(ref, ad)
                outside = int(np.count_nonzero(slack < 0))
                if work is np.float32:  # elements within rounding of the tolerance: decided in float64
                    np.abs(slack, out=slack)
                    bound = 4e-7 * (atol + rtol * top)  # ≥ 4e-7 × the element's own tolerance
                    if float(slack.min()) <= bound:
                        near = np.flatnonzero(slack <= bound)
                        x64 = fa[near].astype(np.float64)
                        d64 = np.abs(x64 - fb[near].astype(np.float64))
                        in32 = int(np.count_nonzero(ad[near] <= ref[near]))
                        in64 = int(np.count_nonzero(d64 <= atol + rtol * np.abs(x64)))
                        outside += in32 - in64
                self.outside += outside
            self.differ += int(np.count_nonzero(ad != 0)) if total else 0
            self.max_abs = max(self.max_abs, m)
            self.sum_abs += total
            if step is not None:
                self.max_steps = m / step if self.max_steps is None else max(self.max_steps, m / step)
                self.sum_steps += total / step
        if self.nan:
            self.max_abs = float("nan")
        self.n += n
        if per_element:
            assert scale is not None
            steps = (np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)) / scale).reshape(-1)
            top = float(steps.max())
            self.max_steps = top if self.max_steps is None else max(self.max_steps, top)
            self.sum_steps += float(steps.sum())

    def _exact(self, fa: np.ndarray, fb: np.ndarray, rtol: float, atol: float, step: float | None) -> None:
        """One chunk holding NaN or infinities, by numpy's own definitions in float64."""
        x, y = fa.astype(np.float64), fb.astype(np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            ad = np.abs(x - y)
        m = float(np.max(ad))
        if math.isnan(m):
            self.nan = True
        else:
            self.max_abs = max(self.max_abs, m)
        self.max_ref = max(self.max_ref, float(np.max(np.abs(x))))
        self.outside += int(np.count_nonzero(~np.isclose(y, x, rtol=rtol, atol=atol)))
        self.differ += int(np.count_nonzero(x != y))
        total = float(ad.sum())
        self.sum_abs += total
        if step is not None:
            self.max_steps = m / step if self.max_steps is None else max(self.max_steps, m / step)
            self.sum_steps += total / step

    def merge(self, o: _Sums) -> _Sums:
        if o.max_steps is None:
            steps = self.max_steps
        elif self.max_steps is None:
            steps = o.max_steps
        else:
            steps = max(self.max_steps, o.max_steps)
        nan = self.nan or o.nan
        return _Sums(
            n=self.n + o.n,
            sum_abs=self.sum_abs + o.sum_abs,
            max_abs=float("nan") if nan else max(self.max_abs, o.max_abs),
            max_ref=max(self.max_ref, o.max_ref),
            saa=self.saa + o.saa,
            sbb=self.sbb + o.sbb,
            sab=self.sab + o.sab,
            sdd=self.sdd + o.sdd,
            outside=self.outside + o.outside,
            differ=self.differ + o.differ,
            max_steps=steps,
            sum_steps=self.sum_steps + o.sum_steps,
            nan=nan,
        )


def _ratio(num: float, den: float) -> float:
    if den > 0:
        return num / den
    return 0.0 if num == 0 else math.inf


@dataclass
class Discrepancy:
    """Running error metrics of one aligned pair of tensors (see the module's description for each one).

    ``update(a, b)`` adds one batch (``a`` the reference); ``introduce(a, local)`` adds the same batch's
    re-computed value; ``merge`` combines shards. ``scale`` (an array broadcastable to ``a``) turns differences
    into quantization steps.
    """

    rtol: float = 1e-3
    atol: float = 1e-4
    keep: int = 3
    total: _Sums = field(default_factory=_Sums)
    local: _Sums = field(default_factory=_Sums)
    worst: list[tuple[float, int]] = field(default_factory=list)  # min-heap of (rel_l2, sample)
    samples: int = 0

    def update(
        self,
        a: np.ndarray,
        b: np.ndarray,
        *,
        scale: np.ndarray | None = None,
        first_sample: int = 0,
        batch: int | None = None,
    ) -> Discrepancy:
        """Add one batch: ``a`` (reference) and ``b`` of the same shape; ``batch`` samples along axis 0 when
        ``a.shape[0] == batch`` (else the batch counts as one sample, ``first_sample``)."""
        if a.shape != b.shape:
            raise ValueError(f"shapes differ: {a.shape} and {b.shape}")
        sdd, saa = self.total.sdd, self.total.saa
        self.total.add(a, b, self.rtol, self.atol, scale)
        if self.keep:
            if batch and batch > 1 and a.ndim and a.shape[0] == batch:
                per = _per_sample(a, b, batch)
            else:  # one sample: its error is what this batch added to the sums
                per = [math.sqrt(_ratio(self.total.sdd - sdd, self.total.saa - saa))]
            for i, err in enumerate(per):
                item = (err, first_sample + i)
                if len(self.worst) < self.keep:
                    heapq.heappush(self.worst, item)
                elif item > self.worst[0]:
                    heapq.heapreplace(self.worst, item)
        self.samples += batch if batch and a.ndim and a.shape[0] == batch else 1
        return self

    def introduce(self, a: np.ndarray, local: np.ndarray, *, scale: np.ndarray | None = None) -> Discrepancy:
        """Add one batch of the error a node introduces: ``local`` is its output computed from ``a``'s inputs."""
        if a.shape != local.shape:
            raise ValueError(f"shapes differ: {a.shape} and {local.shape}")
        self.local.add(a, local, self.rtol, self.atol, scale, light=True)
        return self

    def merge(self, other: Discrepancy) -> Discrepancy:
        """Both sets of batches together; neither operand changes."""
        worst = heapq.nlargest(self.keep, self.worst + other.worst)
        heapq.heapify(worst)
        return Discrepancy(
            rtol=self.rtol,
            atol=self.atol,
            keep=self.keep,
            total=self.total.merge(other.total),
            local=self.local.merge(other.local),
            worst=worst,
            samples=self.samples + other.samples,
        )

    # -- metrics -------------------------------------------------------------------------------------------
    @property
    def count(self) -> int:
        """Elements compared."""
        return self.total.n

    @property
    def max_abs(self) -> float:
        """``max|a − b|``."""
        return self.total.max_abs

    @property
    def mean_abs(self) -> float:
        """``mean|a − b|``."""
        return self.total.sum_abs / self.total.n if self.total.n else 0.0

    @property
    def max_rel(self) -> float:
        """``max|a − b| / max|a|``."""
        return _ratio(self.total.max_abs, self.total.max_ref)

    @property
    def cosine(self) -> float:
        """Cosine similarity of ``a`` and ``b`` (flattened)."""
        s = self.total
        if s.saa == 0 or s.sbb == 0:
            return 1.0 if s.saa == s.sbb else 0.0
        return s.sab / math.sqrt(s.saa * s.sbb)

    @property
    def sqnr_db(self) -> float:
        """``10·log10(Σa² / Σ(a − b)²)`` in dB."""
        s = self.total
        if s.sdd == 0:
            return math.inf
        if s.saa == 0:
            return -math.inf
        return 10.0 * math.log10(s.saa / s.sdd)

    @property
    def rel_l2(self) -> float:
        """``‖a − b‖ / ‖a‖``."""
        return math.sqrt(_ratio(self.total.sdd, self.total.saa))

    @property
    def frac_outside_tol(self) -> float:
        """Fraction of elements outside ``atol + rtol·|a|``."""
        return self.total.outside / self.total.n if self.total.n else 0.0

    @property
    def frac_differ(self) -> float:
        """Fraction of elements that differ at all."""
        return self.total.differ / self.total.n if self.total.n else 0.0

    @property
    def max_steps(self) -> float | None:
        """Largest difference in quantization steps (``None`` when neither side is quantized)."""
        return self.total.max_steps

    @property
    def mean_steps(self) -> float | None:
        """Mean difference in quantization steps."""
        if self.total.max_steps is None or not self.total.n:
            return None
        return self.total.sum_steps / self.total.n

    @property
    def introduced_error(self) -> float | None:
        """``‖a − local‖ / ‖a‖``: the error the node introduces (``None`` when it was not re-computed)."""
        if not self.local.n:
            return None
        return math.sqrt(_ratio(self.local.sdd, self.local.saa))

    @property
    def introduced_max_abs(self) -> float | None:
        """``max|a − local|``."""
        return self.local.max_abs if self.local.n else None

    @property
    def introduced_max_steps(self) -> float | None:
        """The introduced error's largest difference in quantization steps."""
        return self.local.max_steps if self.local.n else None

    @property
    def introduced_frac_differ(self) -> float | None:
        """Fraction of elements the node's own computation changes."""
        return self.local.differ / self.local.n if self.local.n else None

    def worst_samples(self) -> list[tuple[int, float]]:
        """``(sample, rel_l2)`` of the samples with the largest error, worst first."""
        return [(i, e) for e, i in sorted(self.worst, reverse=True)]

    def metrics(self) -> dict[str, Any]:
        """Every metric by name (JSON-ready; ``None`` where not applicable)."""
        return {
            "max_abs": self.max_abs,
            "mean_abs": self.mean_abs,
            "max_rel": self.max_rel,
            "cosine": self.cosine,
            "sqnr_db": self.sqnr_db,
            "rel_l2": self.rel_l2,
            "frac_outside_tol": self.frac_outside_tol,
            "frac_differ": self.frac_differ,
            "max_steps": self.max_steps,
            "mean_steps": self.mean_steps,
            "introduced_error": self.introduced_error,
            "introduced_max_abs": self.introduced_max_abs,
            "introduced_max_steps": self.introduced_max_steps,
            "introduced_frac_differ": self.introduced_frac_differ,
            "elements": self.count,
            "samples": self.samples,
            "worst_samples": [[i, e] for i, e in self.worst_samples()],
        }


def _per_sample(a: np.ndarray, b: np.ndarray, batch: int | None) -> list[float]:
    """Relative L2 error of each sample (axis 0 when it is the batch axis; else one value for the batch)."""
    if batch and a.ndim and a.shape[0] == batch:
        fa = np.asarray(a, np.float64).reshape(batch, -1)
        fd = fa - np.asarray(b, np.float64).reshape(batch, -1)
        num, den = (fd * fd).sum(axis=1), (fa * fa).sum(axis=1)
        return [math.sqrt(_ratio(float(x), float(y))) for x, y in zip(num, den, strict=True)]
    fa, fb = _f64(a), _f64(b)
    d = fa - fb
    return [math.sqrt(_ratio(float(d @ d), float(fa @ fa)))]
