"""The audit report: one self-contained HTML page per model (and per capture, dataset store or comparison).

:func:`report` writes the page; :func:`render` returns its text. The page needs nothing outside itself: charts are
inline SVG drawn by matplotlib on the server side; tables are drawn by one small inline script (sortable,
filterable, paginated) from a gzip-compressed JSON block, so a 100,000-node model stays a few megabytes. A
Content-Security-Policy ``<meta>`` forbids every request: no network, no other file, no script but that one
(allowed by its hash), no ``eval``.

Sections, each present when its data exists: **model card** (provenance, opsets, I/O, op histogram, parameters
and bytes, external data, quantization format, per-layer profile), **weights** (statistics, histograms,
outliers, NaN/Inf, fp16 overflow, dead and duplicate units, quantization scales and zero points),
**structure** (residual/dense connections, attention blocks, the main path block by block), **activations**
(from a capture or a dataset store: per-layer distributions, dead and saturated units, the first NaN/Inf,
attention heatmaps per head for one input) and **comparison** (per-layer error, first divergence, ranking by
introduced error; see :func:`onnxscope.audit.check_comparison` for the data it takes).

Example:
    >>> import onnxscope, tempfile, os
    >>> from onnxscope.testing import mlp_model
    >>> m = onnxscope.Model(mlp_model())
    >>> path = report(m, os.path.join(tempfile.mkdtemp(), "r.html"), dims={"batch": 1})
    >>> text = open(path, encoding="utf-8").read()
    >>> "Content-Security-Policy" in text and 'data-section="weights"' in text
    True
"""

from __future__ import annotations

import base64
import gc
import gzip
import hashlib
import html
import json
import os
import time
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import numpy as np

from onnxscope import audit, charts
from onnxscope.costs import Profile, _dim_key, _free, _graph_inputs, _size_of, profile
from onnxscope.errors import InputError
from onnxscope.model import Model, load
from onnxscope.render import atomic_write, fmt_bytes

__all__ = ["SECTIONS", "render", "report"]

SECTIONS = ("model-card", "weights", "structure", "activations", "comparison")
_TITLES = {
    "model-card": "Model card",
    "weights": "Weights",
    "structure": "Structure",
    "activations": "Activations",
    "comparison": "Comparison",
}
_BLOCK_CARDS = 300  # main-path segments drawn as cards (all of them are in the table)


def _asset(name: str) -> str:
    return resources.files("onnxscope").joinpath("_assets", name).read_text(encoding="utf-8")


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _n(x: int | None) -> str:
    return "?" if x is None else f"{x:,}"


def _si(x: float | None, unit: str = "") -> str:
    """``11.17 GMACs``-style numbers (``unit`` appended after the prefix)."""
    if x is None:
        return "?"
    for prefix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f} {prefix}{unit}"
    return f"{x:g} {unit}".rstrip()


Column = tuple[str, str, str]  # key, label, type (str, int, num, bytes, pct, bool)


class _Page:
    def __init__(self) -> None:
        self.tables: dict[str, dict[str, Any]] = {}
        self.sections: list[tuple[str, str]] = []

    def table(
        self,
        tid: str,
        columns: Sequence[Column],
        rows: Sequence[Mapping[str, Any]],
        sort: tuple[str, int] | None = None,
        page: int = 25,
        caption: str = "",
    ) -> str:
        keys = [k for k, _, _ in columns]
        self.tables[tid] = {
            "columns": [{"key": k, "label": label, "type": t} for k, label, t in columns],
            "rows": [list(map(r.get, keys)) for r in rows],
            "sort": list(sort) if sort else None,
            "page": page,
        }
        cap = f'<p class="note">{_e(caption)}</p>' if caption else ""
        return (
            f'{cap}<div class="table-host" id="table-{_e(tid)}" data-table="{_e(tid)}">'
            f'<p class="muted">{len(rows):,} rows (the table needs JavaScript)</p></div>'
        )

    def add(self, sid: str, body: str) -> None:
        self.sections.append(
            (
                sid,
                f'<section id="{sid}" class="report-section" data-section="{sid}">'
                f"<h2>{_TITLES[sid]}</h2>{body}</section>",
            )
        )


def _facts(pairs: Sequence[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in pairs if v not in (None, ""))
    return f'<table class="facts">{rows}</table>'


def _figure(svg: str, caption: str = "") -> str:
    cap = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    return f'<figure class="chart-figure">{svg}{cap}</figure>'


def _findings(items: Sequence[Mapping[str, str]], limit: int = 60) -> str:
    if not items:
        return ""
    order = {"error": 0, "warning": 1, "info": 2}
    items = sorted(items, key=lambda f: order.get(f["level"], 3))
    lis = "".join(f'<li class="{_e(f["level"])}">{_e(f["text"])}</li>' for f in items[:limit])
    more = f'<li class="info">… and {len(items) - limit:,} more</li>' if len(items) > limit else ""
    return f'<ul class="findings">{lis}{more}</ul>'


# -- sections ------------------------------------------------------------------------------------------------
def _model_card(page: _Page, model: Model, prof: Profile, notes: list[str]) -> None:
    card = audit.model_card(model, prof)
    q = card["quantization"]
    qtext = q["format"]
    if q["format"] != "none":
        wt = ", ".join(f"{k} {v:,}" for k, v in q["weight_types"].items())
        at = ", ".join(f"{k} ×{v}" for k, v in q["activation_types"].items())
        qtext += f" — weights: {wt or '?'}"
        if at:
            qtext += f"; activations quantized to {at}"
        if q["per_channel_weights"] or q["per_tensor_weights"]:
            qtext += f"; {q['per_channel_weights']} per-channel, {q['per_tensor_weights']} per-tensor weights"
    ext = (
        ", ".join(f"{_e(f)} ({fmt_bytes(b)})" for f, b in card["external_data"].items())
        or "none (all inline)"
    )
    io_rows = "".join(
        f"<tr><th>{kind}</th><td>{_e(t['name'])}</td><td>{_e(t['dtype'])}</td><td>{_e(t['shape'])}</td></tr>"
        for kind, ts in (("input", card["inputs"]), ("output", card["outputs"]))
        for t in ts
    )
    body = _facts(
        [
            ("file", _e(card["path"] or "(in memory)")),
            ("graph", _e(card["graph"])),
            ("producer", _e(card["producer"] or "?")),
            ("IR version", card["ir_version"]),
            ("opsets", _e(", ".join(f"{k} {v}" for k, v in card["opsets"].items()))),
            (
                "nodes",
                f"{card['nodes']:,}" + (f" ({card['subgraphs']} subgraphs)" if card["subgraphs"] else ""),
            ),
            (
                "parameters",
                f"<b>{card['parameters']:,}</b> learnable (weights, biases, norm scales, embeddings)"
                + (f"; {card['buffers']:,} BatchNorm running statistics" if card["buffers"] else ""),
            ),
            (
                "stored tensors",
                f"{card['stored_tensors']:,} tensors, {card['stored_elements']:,} elements, "
                f"{fmt_bytes(card['stored_bytes'])}",
            ),
            ("external data", ext),
            ("quantization", _e(qtext)),
            (
                "compute",
                f"{_si(card['macs'], 'MACs')}, {_si(card['flops'], 'FLOPs')}, "
                f"activations {fmt_bytes(card['activation_bytes'])}"
                + (f" (dims {_e(card['dims'])})" if card["dims"] else ""),
            ),
            ("metadata", _e("; ".join(f"{k}: {v}" for k, v in card["metadata"].items()))),
        ]
    )
    body += f'<h3>Inputs and outputs</h3><table class="facts">{io_rows}</table>'
    body += "".join(f'<p class="note">{_e(n)}</p>' for n in notes)
    if card["unknown_costs"]:
        body += (
            f'<p class="note">MACs/FLOPs unknown for {len(card["unknown_costs"]):,} node(s) whose shapes are not '
            f"static: {_e(', '.join(card['unknown_costs'][:8]))}</p>"
        )
    body += "<h3>Op histogram</h3>" + _figure(charts.op_histogram(card["ops"]), "nodes per op type")
    rows = audit.profile_rows(prof)
    body += "<h3>Per-layer profile</h3>"
    if any((r["macs"] or 0) > 0 or r["params"] > 0 for r in rows):
        body += _figure(charts.profile_depth(rows), "MACs and parameters of each layer, in graph order")
        body += _figure(charts.profile_by_op(prof.by_op()), "share of each op type in the totals")
    body += page.table(
        "profile",
        [
            ("node", "node", "str"),
            ("op", "op", "str"),
            ("module", "module", "str"),
            ("output", "output shape", "str"),
            ("params", "parameters", "int"),
            ("macs", "MACs", "int"),
            ("flops", "FLOPs", "int"),
            ("activation_bytes", "activation memory", "bytes"),
        ],
        rows,
        caption="One row per node (constant computations that runtimes fold away left out, unless they own "
        "parameters). "
        "MAC = multiply-accumulate = 2 FLOPs; conventions in onnxscope.costs.",
    )
    page.add("model-card", body)


def _weights(page: _Page, model: Model, histograms: int) -> None:
    w = audit.weights_audit(model, histograms=histograms)
    if not w["rows"]:
        return
    body = (
        _findings(w["findings"])
        or '<p class="callout ok">No NaN/Inf, fp16 overflow, dead or duplicate units.</p>'
    )
    if w["histograms"]:
        body += "<h3>Histograms</h3>" + _figure(
            charts.weight_histograms(w["histograms"]),
            f"{len(w['histograms'])} layer weights (the largest, and every flagged one); log count axis",
        )
    if w["distribution"]:
        body += _figure(
            charts.weight_distribution(w["distribution"], w["layer_weights"]),
            "distribution of each layer weight",
        )
    body += "<h3>Per-tensor statistics</h3>" + page.table(
        "weights",
        [
            ("name", "name", "str"),
            ("role", "role", "str"),
            ("layer", "layer", "str"),
            ("op", "op", "str"),
            ("shape", "shape", "str"),
            ("dtype", "dtype", "str"),
            ("size", "elements", "int"),
            ("bytes", "bytes", "bytes"),
            ("mean", "mean", "num"),
            ("std", "std", "num"),
            ("min", "min", "num"),
            ("max", "max", "num"),
            ("sparsity", "zeros", "pct"),
            ("nan", "NaN", "int"),
            ("inf", "Inf", "int"),
            ("fp16_overflow", "fp16 overflow", "int"),
            ("outliers", "> 6σ", "int"),
            ("units", "units", "int"),
            ("dead_units", "dead units", "int"),
            ("duplicate_units", "duplicate units", "int"),
            ("quantized", "quantized", "str"),
        ],
        w["rows"],
        caption="Statistics of dequantized values for quantized weights; NaN/Inf excluded from mean/std/min/max. "
        "Units are output channels/neurons of the consuming layer.",
    )
    if w["quantization"]:
        body += "<h3>Quantization parameters</h3>"
        body += _figure(
            charts.scale_ranges(w["quantization"]), "scale range over channels, per quantized tensor"
        )
        body += page.table(
            "quantization",
            [
                ("tensor", "tensor", "str"),
                ("kind", "kind", "str"),
                ("node", "node", "str"),
                ("format", "format", "str"),
                ("dtype", "dtype", "str"),
                ("axis", "axis", "int"),
                ("channels", "scales", "int"),
                ("scale_min", "scale min", "num"),
                ("scale_max", "scale max", "num"),
                ("scale_ratio", "max/min", "num"),
                ("zp_min", "zero point min", "num"),
                ("zp_max", "zero point max", "num"),
            ],
            w["quantization"],
        )
    page.add("weights", body)


def _structure(page: _Page, model: Model, prof: Profile) -> None:
    s = audit.structure(model, prof)
    res, att, segs = s["residuals"], s["attention"], s["segments"]
    dense = sum(r["kind"] == "dense" for r in res)
    body = _facts(
        [
            (
                "residual connections",
                f"{len(res) - dense:,} ({sum(r['projection'] for r in res):,} with a projection)",
            ),
            ("dense connections", f"{dense:,}"),
            ("attention blocks", f"{len(att):,}"),
            ("main path", f"{len(segs):,} segments"),
        ]
    )
    cards = []
    for i, seg in enumerate(segs[:_BLOCK_CARDS]):
        kind = seg["kind"].split(" ")[0]
        cls = kind + (" attention" if seg["attention"] else "")
        skip = f'<div class="skip">{_e(seg["skip"])}</div>' if kind != "layers" else ""
        att_txt = f" · attention: {_e(seg['attention'])}" if seg["attention"] else ""
        where = f"{_e(seg['module'])} · " if seg["module"] else ""
        mod = f'<div class="mod">{where}{_e(seg["kind"])}{att_txt}</div>'
        cards.append(
            f'<li class="{cls}"><span class="idx">{i + 1}</span><div>{mod}<div class="main">{_e(seg["main"])}</div>'
            f'{skip}</div><span class="cost">{_si(seg["macs"], "MACs")}<br>{_n(seg["params"])} params</span></li>'
        )
    more = (
        f'<p class="note">first {_BLOCK_CARDS} of {len(segs):,} segments shown; all are in the table below</p>'
        if len(segs) > _BLOCK_CARDS
        else ""
    )
    body += "<h3>Main path</h3>"
    if len(segs) >= 3:
        body += _figure(
            charts.main_path(segs), "one bar per block of the main path; the blocks are listed below"
        )
    body += f'<ol class="blocks">{"".join(cards)}</ol>{more}'
    if len(segs) > _BLOCK_CARDS:
        body += page.table(
            "segments",
            [
                ("kind", "kind", "str"),
                ("module", "module", "str"),
                ("main", "main branch", "str"),
                ("skip", "skip branch", "str"),
                ("attention", "attention", "str"),
                ("nodes", "nodes", "int"),
                ("params", "parameters", "int"),
                ("macs", "MACs", "int"),
            ],
            segs,
        )
    if res:
        body += "<h3>Residual and dense connections</h3>" + page.table(
            "residuals",
            [
                ("merge", "merge node", "str"),
                ("kind", "kind", "str"),
                ("fork", "fork tensor", "str"),
                ("main", "main branch", "str"),
                ("skip", "skip branch", "str"),
                ("projection", "projection", "bool"),
                ("attention", "attention inside", "str"),
            ],
            res,
        )
    if att:
        body += "<h3>Attention blocks</h3>" + page.table(
            "attention",
            [
                ("name", "block", "str"),
                ("op", "op", "str"),
                ("fused", "fused", "bool"),
                ("heads", "heads", "int"),
                ("causal", "causal", "bool"),
                ("w_q", "W_Q", "str"),
                ("w_k", "W_K", "str"),
                ("w_v", "W_V", "str"),
                ("w_o", "W_O", "str"),
            ],
            att,
        )
    page.add("structure", body)


def _activations(page: _Page, a: Mapping[str, Any], label: str) -> None:
    body = f'<p class="note">{_e(label)}</p>'
    if a["first_nonfinite"]:
        first = next(r for r in a["rows"] if r["tensor"] == a["first_nonfinite"])
        body += (
            f'<div class="callout" data-first-nonfinite="{_e(first["tensor"])}"><b>NaN/Inf first appear in '
            f"{_e(first['tensor'])}</b>, the output of {_e(first['op'])} {_e(first['node'])} "
            f"({first['nan']:,} NaN, {first['inf']:,} Inf)</div>"
        )
    else:
        body += '<p class="callout ok">No NaN or Inf in any captured tensor.</p>'
    body += _findings([f for f in a["findings"] if not f["text"].startswith("NaN/Inf first")])
    if a["distribution"]:
        body += _figure(
            charts.activation_distribution(a["distribution"]), "per-layer distributions, graph order"
        )
    if any(r["dead_units"] is not None or r["saturated_units"] is not None for r in a["rows"] if r["units"]):
        body += _figure(
            charts.unit_health(a["rows"]), "ReLU-like outputs: dead units; Sigmoid/Tanh outputs: saturated"
        )
    body += "<h3>Per-tensor statistics</h3>" + page.table(
        "activations",
        [
            ("tensor", "tensor", "str"),
            ("node", "node", "str"),
            ("op", "op", "str"),
            ("module", "module", "str"),
            ("shape", "shape", "str"),
            ("mean", "mean", "num"),
            ("std", "std", "num"),
            ("min", "min", "num"),
            ("max", "max", "num"),
            ("zero_fraction", "zeros", "pct"),
            ("nan", "NaN", "int"),
            ("inf", "Inf", "int"),
            ("units", "units", "int"),
            ("dead_units", "dead units", "int"),
            ("saturated_units", "saturated units", "int"),
        ],
        a["rows"],
        caption="Layout-only ops (Reshape, Transpose, Cast…) repeat their input's values and are left out.",
    )
    if a["attention"]:
        body += f"<h3>Attention maps (input sample {a['sample']})</h3>"
        if a["attention_blocks"] > len(a["attention"]):
            body += f'<p class="note">first {len(a["attention"])} of {a["attention_blocks"]} blocks shown</p>'
        figs = []
        for m in a["attention"]:
            note = f"{m['heads']} heads, {m['shape'][0]}×{m['shape'][1]}"
            figs.append(
                _figure(charts.attention_heads(np.asarray(m["map"]), m["block"]), f"{m['block']}: {note}")
            )
        body += f'<div class="heatmaps">{"".join(figs)}</div>'
    if a.get("skipped"):
        body += f'<p class="note">{len(a["skipped"]):,} tensors were not captured (e.g. only a fused kernel sees them).</p>'
    page.add("activations", body)


def _comparison(page: _Page, c: Mapping[str, Any]) -> None:
    rows = c["rows"]
    tol = c["tolerance"]
    tol_text = ", ".join(f"{k} {v}" for k, v in tol.items()) if tol else "as computed by the comparison"
    body = _facts(
        [
            ("A", _e(c["a"])),
            ("B", _e(c["b"])),
            ("aligned tensor pairs", f"{len(rows):,}"),
            ("alignment", _e(", ".join(sorted({r["alignment"] for r in rows if r["alignment"]})) or "?")),
            ("tolerance", _e(tol_text)),
        ]
    )
    first = c["first_divergence"]
    if first:
        r = next((r for r in rows if r["a_tensor"] == first), None)
        detail = (
            f" — output of {_e(r['op'])} {_e(r['node'])}: max |A−B| {r['max_abs']}, SQNR {r['sqnr_db']} dB"
            if r
            else ""
        )
        body += f'<div class="callout" data-first-divergence="{_e(first)}"><b>First divergence: {_e(first)}</b>{detail}</div>'
    else:
        body += '<p class="callout ok">No aligned tensor is out of tolerance.</p>'
    if rows:
        body += _figure(charts.comparison_depth(rows, first), "per-layer error, graph order of A")
        if any(r["introduced_error"] is not None for r in rows):
            body += _figure(
                charts.error_ranking(rows), "layers ranked by the error they add to their inputs'"
            )
    body += "<h3>Ranking by introduced error</h3>" + page.table(
        "comparison",
        [
            ("a_tensor", "tensor (A)", "str"),
            ("b_tensor", "tensor (B)", "str"),
            ("node", "node", "str"),
            ("op", "op", "str"),
            ("alignment", "aligned by", "str"),
            ("max_abs", "max |A−B|", "num"),
            ("mean_abs", "mean |A−B|", "num"),
            ("max_rel", "max rel.", "num"),
            ("cosine", "cosine", "num"),
            ("sqnr_db", "SQNR dB", "num"),
            ("frac_outside_tol", "out of tol.", "pct"),
            ("introduced_error", "introduced error", "num"),
        ],
        rows,
        sort=("introduced_error", -1),
    )
    page.add("comparison", body)


# -- assembly ------------------------------------------------------------------------------------------------
def _dims(model: Model, dims: Mapping[str, int] | None, cap: Any) -> tuple[dict[str, int], list[str]]:
    """Sizes for the inputs' free dims: given, else read from the capture's inputs, else 1 (with a note)."""
    out = dict(dims or {})
    assumed = []
    for v in _graph_inputs(model.ir):
        arr = np.asarray(cap[v.name]) if cap is not None and v.name in cap else None
        for axis, d in enumerate(v.shape):  # type: ignore[arg-type]
            if not _free(d) or _size_of(v, axis, d, out) is not d:
                continue
            key = _dim_key(v, axis, d)
            if arr is not None and axis < arr.ndim:
                out[key] = int(arr.shape[axis])
            else:
                out[key] = 1
                assumed.append(key)
    notes = []
    if assumed:
        notes.append(
            f"Free input dimensions {', '.join(dict.fromkeys(assumed))} taken as 1 for the profile; "
            "pass dims= (CLI: --dim NAME=SIZE or INPUT:AXIS=SIZE)."
        )
    return out, notes


def render(
    model: Model | str | os.PathLike[str],
    *,
    capture: Any = None,
    stats: Mapping[str, Any] | None = None,
    comparison: Mapping[str, Any] | Any = None,
    dims: Mapping[str, int] | None = None,
    sample: int = 0,
    title: str | None = None,
    histograms: int = 24,
    heatmaps: int = 12,
    store_label: str | None = None,
    timings: dict[str, float] | None = None,
) -> str:
    """The report's HTML text (see :func:`report`, which writes it; ``stats`` is a dataset store's
    ``all_stats()``; ``timings``, when given, receives the seconds each step took)."""
    t0 = time.perf_counter()
    m = model if isinstance(model, Model) else load(model)
    if sample < 0:
        raise InputError(f"sample {sample}: must be >= 0")
    collecting = gc.isenabled()
    gc.disable()  # hundreds of thousands of small objects: the cyclic collector would rescan them again and again
    try:
        return _render(
            m, capture, stats, comparison, dims, sample, title, histograms, heatmaps, store_label, t0, timings
        )
    finally:
        if collecting:
            gc.enable()


def _render(
    m: Model,
    capture: Any,
    stats: Mapping[str, Any] | None,
    comparison: Any,
    dims: Mapping[str, int] | None,
    sample: int,
    title: str | None,
    histograms: int,
    heatmaps: int,
    store_label: str | None,
    t0: float,
    timings: dict[str, float] | None,
) -> str:
    clock = [time.perf_counter()]

    def lap(step: str) -> None:
        now = time.perf_counter()
        if timings is not None:
            timings[step] = now - clock[0]
        clock[0] = now

    sizes, notes = _dims(m, dims, capture)
    prof = profile(m, sizes)
    lap("profile")
    page = _Page()
    _model_card(page, m, prof, notes)
    lap("model card")
    _weights(page, m, histograms)
    lap("weights")
    _structure(page, m, prof)
    lap("structure")
    if capture is not None:
        n_inputs = next((np.asarray(a).shape[0] for a in capture.inputs.values() if np.ndim(a)), 1)
        acts = audit.activations_from_capture(m, capture, sample=sample, heatmaps=heatmaps)
        _activations(page, acts, f"From a capture of one run ({n_inputs} sample(s) in the batch).")
    elif stats is not None:
        acts = audit.activations_from_stats(m, stats)
        _activations(
            page,
            acts,
            f"From the running statistics of a dataset store{': ' + store_label if store_label else ''}.",
        )
    lap("activations")
    if comparison is not None:
        data = comparison.to_dict() if hasattr(comparison, "to_dict") else comparison
        _comparison(page, audit.check_comparison(data))
    lap("comparison")
    name = title or (os.path.basename(m.path) if m.path else (m.ir.graph.name or "model"))
    text = _html(page, name, time.perf_counter() - t0)
    lap("html")
    return text


def _html(page: _Page, name: str, elapsed: float) -> str:
    from onnxscope import __version__

    script = _asset("report.js")
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    csp = (
        "default-src 'none'; "
        f"script-src 'sha256-{digest}'; "
        "style-src 'unsafe-inline'; img-src data:; font-src 'none'; connect-src 'none'; media-src 'none'; "
        "object-src 'none'; frame-src 'none'; worker-src 'none'; manifest-src 'none'; base-uri 'none'; "
        "form-action 'none'"
    )
    payload = json.dumps(
        {"tables": page.tables}, separators=(",", ":"), allow_nan=False, default=_json_default
    )
    blob = base64.b64encode(gzip.compress(payload.encode("utf-8"), compresslevel=6, mtime=0)).decode("ascii")
    nav = "".join(f'<a href="#{sid}">{_TITLES[sid]}</a>' for sid, _ in page.sections)
    sections = "".join(body for _, body in page.sections)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="referrer" content="no-referrer">\n'
        f"<title>onnxscope report — {_e(name)}</title>\n"
        f"<style>{_asset('report.css')}</style>\n"
        "</head><body>\n"
        f'<header class="top"><h1>onnxscope report — {_e(name)}</h1><nav>{nav}</nav></header>\n'
        f"<main>{sections}</main>\n"
        f"<footer>Generated by onnxscope {__version__} in {elapsed:.1f} s. Self-contained: this page makes no request "
        "to any network or file.</footer>\n"
        f'<script type="application/octet-stream" id="onnxscope-data">{blob}</script>\n'
        f"<script>{script}</script>\n"
        "</body></html>\n"
    )


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (tuple, set, frozenset)):
        return list(o)
    raise TypeError(f"not JSON-serializable: {type(o).__name__}")


def report(
    model: Model | str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    capture: Any = None,
    store: Any = None,
    comparison: Mapping[str, Any] | Any = None,
    dims: Mapping[str, int] | None = None,
    sample: int = 0,
    title: str | None = None,
    histograms: int = 24,
    heatmaps: int = 12,
) -> str:
    """Write the audit report of ``model`` to ``out`` (one self-contained HTML file) and return its path.

    Parameters:
        model: a :class:`onnxscope.Model` or a path.
        out: the ``.html`` file to write (atomically).
        capture: a :class:`onnxscope.Capture` or the path of a saved one (``.npz``): adds the activations section
            and attention maps.
        store: a dataset store (:func:`onnxscope.open_store`) or its path: activations from its running
            statistics (ignored when ``capture`` is given).
        comparison: per-tensor-pair rows of a comparison of this model with another (see
            :func:`onnxscope.audit.check_comparison`), or an object with ``to_dict()`` returning them.
        dims: sizes of the inputs' symbolic dimensions for the profile (default: the capture's, else 1).
        sample: which input of the captured batch the attention heatmaps show.
        histograms: how many weight histograms to draw; heatmaps: how many attention blocks to draw.

    Raises:
        ModelLoadError: the model, capture or store cannot be read.
        InputError: ``out`` is not an ``.html`` file in an existing folder, or ``sample`` is out of range.
        MissingDependencyError: matplotlib (extra ``[report]``) is missing.

    Example:
        >>> import onnxscope, tempfile, os
        >>> from onnxscope.testing import mlp_model
        >>> p = onnxscope.report(onnxscope.Model(mlp_model()), os.path.join(tempfile.mkdtemp(), "m.html"))
        >>> os.path.getsize(p) > 10_000
        True
    """
    if not os.fspath(out).endswith((".html", ".htm")):
        raise InputError(f"cannot write the report to {os.fspath(out)!r}: the file name must end in .html")
    m = model if isinstance(model, Model) else load(model)
    if capture is not None and isinstance(capture, (str, os.PathLike)):
        from onnxscope.persist import load_capture

        capture = load_capture(capture, model=m)
    stats = None
    label = None
    if capture is None and store is not None:
        if isinstance(store, (str, os.PathLike)):
            from onnxscope.dataset import open_store

            label = os.fspath(store)
            store = open_store(store)
        stats = store.all_stats()
        if not stats:
            raise InputError(
                f"store {label or store!r} holds no statistics (was it written with stats=False?)"
            )
    text = render(
        m,
        capture=capture,
        stats=stats,
        comparison=comparison,
        dims=dims,
        sample=sample,
        title=title,
        histograms=histograms,
        heatmaps=heatmaps,
        store_label=label,
    )

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return atomic_write(out, write)  # readable like any new file (the umask's), a page to share
