"""A stand-in comparison for the report: two captures aligned by tensor name, one row of error metrics per pair.

The report's comparison section takes plain rows (:data:`onnxscope.audit.COMPARISON_FIELDS`); this module makes
them for ``onnxscope report --compare`` until the compare module (with richer alignment: renamed tensors,
fused or quantized nodes) replaces :func:`compare_by_name`.

Metrics per pair (``a`` the reference, ``b`` the other model's tensor, ``d = a − b``, in float64):
``max_abs = max|d|``, ``mean_abs = mean|d|``, ``max_rel = max|d| / max|a|``, ``cosine = a·b / (‖a‖‖b‖)``,
``sqnr_db = 10·log10(Σa² / Σd²)``, ``frac_outside_tol`` = the fraction of elements where
``|d| > atol + rtol·|b|`` (numpy's ``isclose``), ``introduced_error = ‖d‖/‖a‖`` minus the largest such relative
error among the node's compared inputs. ``first_divergence`` is the first pair (graph order of A) with any
element out of tolerance.

Example:
    >>> import numpy as np, onnxscope
    >>> from onnxscope.testing import mlp_model
    >>> m = onnxscope.Model(mlp_model())
    >>> x = {"x": np.ones((2, 3), np.float32)}
    >>> c = compare_by_name(onnxscope.capture(m, x), onnxscope.capture(m, x), m)
    >>> [r["a_tensor"] for r in c["rows"]], c["first_divergence"]
    (['h', 'a', 'y'], None)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from onnxscope.audit import _order
from onnxscope.model import Model

__all__ = ["compare_by_name", "pair_metrics"]

_DQ = "_DequantizeLinear_Output"


def pair_metrics(a: np.ndarray, b: np.ndarray, rtol: float = 1e-3, atol: float = 1e-4) -> dict[str, float]:
    """Error metrics of ``b`` against the reference ``a`` (same shape), plus ``rel_l2 = ‖a−b‖/‖a‖``.

    Example:
        >>> m = pair_metrics(np.array([1.0, 2.0]), np.array([1.0, 2.5]))
        >>> m["max_abs"], m["frac_outside_tol"]
        (0.5, 0.5)
    """
    fa = np.asarray(a, np.float64).reshape(-1)
    fb = np.asarray(b, np.float64).reshape(-1)
    d = fa - fb
    ad = np.abs(d)
    sa, sd = float(fa @ fa), float(d @ d)
    na, nb = math.sqrt(sa), math.sqrt(float(fb @ fb))
    return {
        "max_abs": float(ad.max()) if ad.size else 0.0,
        "mean_abs": float(ad.mean()) if ad.size else 0.0,
        "max_rel": float(ad.max() / np.abs(fa).max()) if ad.size and np.abs(fa).max() > 0 else 0.0,
        "cosine": float(fa @ fb / (na * nb)) if na > 0 and nb > 0 else (1.0 if na == nb else 0.0),
        "sqnr_db": 10 * math.log10(sa / sd) if sd > 0 and sa > 0 else math.inf,
        "frac_outside_tol": float(np.mean(ad > atol + rtol * np.abs(fb))) if ad.size else 0.0,
        "rel_l2": math.sqrt(sd) / na if na > 0 else (0.0 if sd == 0 else math.inf),
    }


def compare_by_name(
    a: Any,
    b: Any,
    model: Model | None = None,
    rtol: float = 1e-3,
    atol: float = 1e-4,
    labels: tuple[str, str] = ("A", "B"),
) -> dict[str, Any]:
    """Compare two :class:`onnxscope.Capture` s tensor by tensor where their names match (floating tensors of
    equal shape; the model's inputs left out), in the graph order of ``model`` (A's model). A tensor ``t`` of A
    missing from B is paired with ``t_DequantizeLinear_Output`` (how onnxruntime's ``quantize_static`` names the
    dequantized value of ``t`` in a QDQ model).

    Returns the plain comparison data the report takes (see :func:`onnxscope.audit.check_comparison`).
    """
    order = _order(model)
    inputs = set(a.inputs)
    pairs = []
    for n in a:
        if n in inputs:
            continue
        if n in b:
            pairs.append((n, n, "name"))
        elif n + _DQ in b:  # quantize_static's QDQ model: the dequantized value of the float tensor n
            pairs.append((n, n + _DQ, "name (dequantized)"))
    pairs.sort(key=lambda p: order.get(p[0], -1))
    rows: list[dict[str, Any]] = []
    rel: dict[str, float] = {}
    for name, b_name, how in pairs:
        x, y = np.asarray(a[name]), np.asarray(b[b_name])
        if x.dtype.kind != "f" or y.dtype.kind != "f" or x.shape != y.shape or x.size == 0:
            continue
        m = pair_metrics(x, y, rtol, atol)
        rel[name] = m["rel_l2"]
        info = a.info(name)
        upstream = 0.0
        if model is not None and info.node and not info.scopes:
            try:
                node = model.node(info.node)
            except KeyError:
                node = None
            if node is not None:
                seen = [rel[v.name] for v in node.inputs if v is not None and v.name in rel]
                upstream = max(seen, default=0.0)
        rows.append(
            {
                "a_tensor": name,
                "b_tensor": b_name,
                "node": info.node or "",
                "op": info.op or "",
                "alignment": how,
                **{k: v for k, v in m.items() if k != "rel_l2"},
                "introduced_error": m["rel_l2"] - upstream if math.isfinite(m["rel_l2"]) else None,
            }
        )
    first = next((r["a_tensor"] for r in rows if r["frac_outside_tol"] > 0), None)
    return {
        "a": labels[0],
        "b": labels[1],
        "tolerance": {"rtol": rtol, "atol": atol},
        "rows": rows,
        "first_divergence": first,
    }
