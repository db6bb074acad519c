"""The report's charts: matplotlib figures rendered to inline SVG on the server side (no script in the page).

Each function takes the plain summaries :mod:`onnxscope.audit` computes and returns one ``<svg>`` element as
text; ids inside it are salted per chart, so several SVGs can share one page. matplotlib is imported lazily
(extra ``[report]``); only its object-oriented API is used (no pyplot, no global figure state).

Example:
    >>> svg = op_histogram({"Conv": 3, "Relu": 2})
    >>> svg.startswith("<svg") and "Conv" in svg
    True
"""

from __future__ import annotations

import io
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from onnxscope.errors import MissingDependencyError

__all__ = [
    "activation_distribution",
    "attention_heads",
    "comparison_depth",
    "error_ranking",
    "main_path",
    "op_histogram",
    "profile_by_op",
    "profile_depth",
    "scale_ranges",
    "unit_health",
    "weight_distribution",
    "weight_histograms",
]

_RC = {
    "svg.fonttype": "none",  # text stays text: smaller, selectable
    "font.size": 8,
    "font.family": "sans-serif",
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e5e5e5",
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "figure.dpi": 72,
}
BLUE, ORANGE, RED, GREY = "#3b6ea8", "#e08a2c", "#c0392b", "#888888"
_counter = itertools.count()
MAX_POINTS = 400  # bars or boxes along depth before binning / thinning


def _figure(
    width: float,
    height: float,
    left: float = 0.7,
    right: float = 0.15,
    top: float = 0.3,
    bottom: float = 0.45,
) -> Any:
    """A figure with fixed margins in inches (no layout engine: a layout engine draws every chart twice)."""
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError as e:
        raise MissingDependencyError(
            "the report's charts need matplotlib: pip install 'onnxscope[report]'"
        ) from e
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(width, height))
        fig.subplots_adjust(
            left=min(0.6, left / width),
            right=1 - right / width,
            top=1 - top / height,
            bottom=min(0.7, bottom / height),
        )
    return fig


def _room(labels: Sequence[str], rotated: bool = True) -> float:
    """Inches needed below an axis for tick labels rotated by 60 degrees (or beside it, unrotated)."""
    longest = max((len(t) for t in labels), default=0)
    return 0.35 + 0.052 * longest * (0.87 if rotated else 1.0)


def _svg(fig: Any, label: str) -> str:
    import matplotlib

    salt = f"c{next(_counter)}"
    buf = io.StringIO()
    with matplotlib.rc_context({**_RC, "svg.hashsalt": salt}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    # ids must be unique across the page: prefix matplotlib's own ids with this chart's salt
    text = re.sub(r'id="([^"]+)"', rf'id="{salt}-\1"', text)
    text = re.sub(r"url\(#([^)]+)\)", rf"url(#{salt}-\1)", text)
    text = re.sub(r'xlink:href="#([^"]+)"', rf'xlink:href="#{salt}-\1"', text)
    title = label.replace("&", "&amp;").replace("<", "&lt;")
    return text.replace("<svg ", f'<svg role="img" aria-label="{title}" class="chart" ', 1)


def _short(name: str, n: int = 38) -> str:
    return name if len(name) <= n else "…" + name[-(n - 1) :]


def _thin(n: int, limit: int = MAX_POINTS) -> np.ndarray:
    """Indices of at most ``limit`` evenly spaced items out of ``n``."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(int))


def op_histogram(ops: Mapping[str, int], limit: int = 30) -> str:
    """Horizontal bars: how many nodes of each op type (the rarest merged into "other")."""
    items = sorted(ops.items(), key=lambda kv: -kv[1])
    if len(items) > limit:
        items = [*items[: limit - 1], ("other", sum(v for _, v in items[limit - 1 :]))]
    items = items[::-1]
    fig = _figure(6.0, 0.7 + 0.17 * len(items), left=_room([k for k, _ in items], rotated=False), right=0.4)
    import matplotlib

    with matplotlib.rc_context(_RC):
        ax = fig.add_subplot()
        ax.barh([k for k, _ in items], [v for _, v in items], color=BLUE)
        for i, (_, v) in enumerate(items):
            ax.text(v, i, f" {v:,}", va="center", fontsize=7)
        ax.set_xlabel("nodes")
        ax.grid(axis="y", visible=False)
        ax.margins(x=0.12)
    return _svg(fig, "node count per op type")


def profile_depth(rows: Sequence[Mapping[str, Any]]) -> str:
    """MACs and parameters of each computing layer in graph order (binned beyond :data:`MAX_POINTS` layers)."""
    rows = [r for r in rows if (r.get("macs") or 0) > 0 or r.get("params", 0) > 0]
    macs = np.array([r.get("macs") or 0 for r in rows], np.float64)
    params = np.array([r.get("params") or 0 for r in rows], np.float64)
    n = len(rows)
    binned = n > MAX_POINTS
    if binned:
        edges = np.linspace(0, n, MAX_POINTS + 1).astype(int)
        macs = np.add.reduceat(macs, edges[:-1])
        params = np.add.reduceat(params, edges[:-1])
        x = (edges[:-1] + edges[1:]) / 2
        width = np.diff(edges)
    else:
        x = np.arange(n)
        width = np.ones(n) * 0.85
    import matplotlib

    names = [_short(str(r.get("module") or r["node"]), 24) for r in rows] if not binned and n <= 40 else []
    bottom = _room(names) + 0.2 if names else 0.5
    fig = _figure(9.5, 3.2 + bottom, left=0.8, bottom=bottom)
    with matplotlib.rc_context(_RC):
        ax1, ax2 = fig.subplots(2, 1, sharex=True)
        ax1.bar(x, macs, width=width, color=BLUE)
        ax1.set_ylabel("MACs" + (" per bin" if binned else ""))
        ax2.bar(x, params, width=width, color=ORANGE)
        ax2.set_ylabel("parameters" + (" per bin" if binned else ""))
        ax2.set_xlabel(
            f"layer (graph order; {n:,} layers with MACs or parameters" + (", binned)" if binned else ")")
        )
        ax1.set_title("Per-layer cost")
        if names:
            ax2.set_xticks(x, names, rotation=60, ha="right")
    return _svg(fig, "MACs and parameters per layer")


def profile_by_op(by_op: Mapping[str, Mapping[str, int]], limit: int = 16) -> str:
    """Share of MACs, FLOPs, parameters and activation memory taken by each op type."""
    keys = ("macs", "flops", "params", "activation_bytes")
    labels = ("MACs", "FLOPs", "parameters", "activation memory")
    ops = [o for o, d in by_op.items() if any(d[k] for k in keys)]
    ops = sorted(ops, key=lambda o: -(by_op[o]["flops"] + by_op[o]["params"]))[:limit]
    import matplotlib

    fig = _figure(9.5, 0.9 + 0.2 * len(ops), left=_room(ops, rotated=False), bottom=0.5, top=0.15)
    with matplotlib.rc_context(_RC):
        fig.subplots_adjust(wspace=0.12)
        axes = fig.subplots(1, 4, sharey=True)
        for ax, k, lab in zip(axes, keys, labels, strict=True):
            total = sum(d[k] for d in by_op.values()) or 1
            vals = [100.0 * by_op[o][k] / total for o in ops][::-1]
            ax.barh(ops[::-1], vals, color=BLUE if k in ("macs", "flops") else ORANGE)
            ax.set_xlim(0, 100)
            ax.set_xlabel(f"% of {lab}")
            ax.grid(axis="y", visible=False)
    return _svg(fig, "share of costs per op type")


def weight_histograms(hists: Mapping[str, Mapping[str, Any]], cols: int = 4) -> str:
    """Small multiples: the precomputed histogram of each weight (log count axis)."""
    from matplotlib.ticker import LogLocator, MaxNLocator, NullFormatter, NullLocator

    names = list(hists)
    rows = max(1, math.ceil(len(names) / cols))
    import matplotlib

    fig = _figure(9.5, 1.5 * rows + 0.2, left=0.45, right=0.1, top=0.25, bottom=0.3)
    with matplotlib.rc_context(_RC):
        fig.subplots_adjust(wspace=0.25, hspace=0.55)
        axes = np.atleast_1d(fig.subplots(rows, cols)).reshape(-1)
        for ax, name in zip(axes, names, strict=False):
            h = hists[name]
            counts = np.asarray(h["counts"], np.float64)
            edges = np.linspace(h["lo"], h["hi"], counts.size + 1)
            ax.stairs(counts, edges, fill=True, color=BLUE)
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(numticks=4))
            ax.yaxis.set_minor_locator(NullLocator())
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.xaxis.set_major_locator(MaxNLocator(4))
            ax.set_title(_short(name, 34), fontsize=7)
            ax.tick_params(labelsize=6)
        for ax in axes[len(names) :]:
            ax.set_visible(False)
    return _svg(fig, "weight histograms")


def _bxp(ax: Any, dist: Sequence[Mapping[str, Any]], color: str) -> None:
    stats = []
    positions = []
    for i, d in enumerate(dist):
        q = d["q"]
        if q is None or any(v is None for v in q):
            continue
        p001, p01, p25, p50, p75, p99, p999 = q
        stats.append({"whislo": p01, "q1": p25, "med": p50, "q3": p75, "whishi": p99, "fliers": [p001, p999]})
        positions.append(i)
    if stats:
        ax.bxp(
            stats,
            positions=positions,
            widths=0.7,
            patch_artist=True,
            boxprops={"facecolor": color, "edgecolor": color, "linewidth": 0.6},
            medianprops={"color": "white", "linewidth": 0.8},
            whiskerprops={"color": color, "linewidth": 0.6},
            capprops={"linewidth": 0},
            flierprops={"marker": ".", "markersize": 2, "markerfacecolor": GREY, "markeredgecolor": GREY},
            manage_ticks=False,
        )


def weight_distribution(dist: Sequence[Mapping[str, Any]], total: int | None = None) -> str:
    """Box per layer weight in graph order: quartiles, whiskers at the 1st/99th percentile, dots at 0.1/99.9
    (``total``: how many layer weights there are, when ``dist`` holds a subset)."""
    idx = _thin(len(dist), 160)
    shown = [dist[i] for i in idx]
    total = len(dist) if total is None else total
    import matplotlib

    names = [_short(d["name"], 28) for d in shown] if len(shown) <= 40 else []
    bottom = _room(names) + 0.2 if names else 0.5
    fig = _figure(9.5, 2.4 + bottom, bottom=bottom)
    with matplotlib.rc_context(_RC):
        ax = fig.add_subplot()
        _bxp(ax, shown, BLUE)
        ax.set_xlim(-1, len(shown))
        ax.set_ylabel("value")
        thinned = "" if len(shown) == total else f", {len(shown)} of {total:,} shown"
        ax.set_xlabel(f"layer weight (graph order{thinned})")
        if names:
            ax.set_xticks(range(len(shown)), names, rotation=60, ha="right")
        ax.set_title("Weight distributions (box: quartiles; whiskers: 1st–99th percentile)")
    return _svg(fig, "weight distribution per layer")


def scale_ranges(rows: Sequence[Mapping[str, Any]]) -> str:
    """Quantization scales per tensor: min–max range over channels (log axis), weights and activations."""
    rows = [r for r in rows if r.get("scale_min") and r.get("scale_max")]
    idx = _thin(len(rows), 200)
    rows = [rows[i] for i in idx]
    import matplotlib

    fig = _figure(9.5, 2.6, left=0.8)
    with matplotlib.rc_context(_RC):
        ax = fig.add_subplot()
        for kind, color in (("weight", BLUE), ("activation", ORANGE)):
            xs = [i for i, r in enumerate(rows) if r["kind"] == kind]
            if not xs:
                continue
            lo = [rows[i]["scale_min"] for i in xs]
            hi = [rows[i]["scale_max"] for i in xs]
            ax.vlines(xs, lo, hi, color=color, linewidth=2, label=f"{kind} scales (min–max over channels)")
            ax.plot(xs, hi, "_", color=color, markersize=5)
        ax.set_yscale("log")
        ax.set_xlabel("quantized tensor (graph order)")
        ax.set_ylabel("scale")
        ax.legend(loc="upper right")
        ax.set_title("Quantization scales")
    return _svg(fig, "quantization scales per tensor")


def activation_distribution(dist: Sequence[Mapping[str, Any]]) -> str:
    """Per-layer activation distributions in graph order: boxes from quantiles (a capture), or mean ± std with
    min–max (running statistics of a dataset)."""
    idx = _thin(len(dist), 160)
    shown = [dist[i] for i in idx]
    import matplotlib

    names = [_short(d["tensor"], 28) for d in shown] if len(shown) <= 40 else []
    bottom = _room(names) + 0.2 if names else 0.5
    fig = _figure(9.5, 2.6 + bottom, left=0.8, bottom=bottom)
    with matplotlib.rc_context(_RC):
        ax = fig.add_subplot()
        if shown and "q" in shown[0]:
            _bxp(ax, shown, BLUE)
            what = "box: quartiles; whiskers: 1st–99th percentile; dots: 0.1/99.9th"
        else:
            xs = np.arange(len(shown))
            f = np.array(
                [[d[k] if d[k] is not None else np.nan for k in ("mean", "std", "min", "max")] for d in shown]
            )
            if len(shown):
                ax.vlines(xs, f[:, 2], f[:, 3], color=GREY, linewidth=0.8, label="min–max")
                ax.errorbar(
                    xs,
                    f[:, 0],
                    yerr=f[:, 1],
                    fmt="o",
                    markersize=2.5,
                    color=BLUE,
                    elinewidth=1.5,
                    label="mean ± std",
                )
                ax.legend(loc="upper right")
            what = "mean ± std and min–max over the dataset"
        ax.set_xlim(-1, max(1, len(shown)))
        ax.set_yscale("symlog", linthresh=1.0)
        thinned = "" if len(shown) == len(dist) else f", {len(shown)} of {len(dist)} shown"
        ax.set_xlabel(f"tensor (graph order{thinned})")
        if names:
            ax.set_xticks(range(len(shown)), names, rotation=60, ha="right")
        ax.set_ylabel("value (symlog)")
        ax.set_title(f"Activation distributions ({what})")
    return _svg(fig, "activation distribution per layer")


def unit_health(rows: Sequence[Mapping[str, Any]]) -> str:
    """Fraction of dead units (ReLU-like outputs) and saturated units (Sigmoid/Tanh outputs) per layer."""
    rows = [
        r
        for r in rows
        if r.get("units") and (r.get("dead_units") is not None or r.get("saturated_units") is not None)
    ]
    idx = _thin(len(rows), 200)
    rows = [rows[i] for i in idx]
    dead = [(r["dead_units"] or 0) / r["units"] if r.get("dead_units") is not None else 0.0 for r in rows]
    sat = [
        (r["saturated_units"] or 0) / r["units"] if r.get("saturated_units") is not None else 0.0
        for r in rows
    ]
    import matplotlib

    names = [_short(r["tensor"], 28) for r in rows] if len(rows) <= 40 else []
    bottom = _room(names) + 0.2 if names else 0.5
    fig = _figure(9.5, 1.8 + bottom, bottom=bottom)
    with matplotlib.rc_context(_RC):
        ax = fig.add_subplot()
        xs = np.arange(len(rows))
        ax.bar(xs, dead, color=RED, label="dead (never above zero)")
        ax.bar(xs, sat, bottom=dead, color=ORANGE, label="saturated (≥ 99 % at a bound)")
        ax.set_ylim(0, 1)
        ax.set_xlim(-1, max(1, len(rows)))
        ax.set_ylabel("fraction of units")
        ax.set_xlabel("activation layer (graph order)")
        if names:
            ax.set_xticks(xs, names, rotation=60, ha="right")
        ax.legend(loc="upper right")
        ax.set_title("Dead and saturated units")
    return _svg(fig, "dead and saturated units per layer")


def attention_heads(m: np.ndarray, block: str, cols: int = 6) -> str:
    """One heatmap per head (``m`` is ``[heads, query, key]``) tiled into one image, one shared colour scale."""
    import matplotlib

    heads, q, k = m.shape
    cols = min(cols, heads)
    rows = math.ceil(heads / cols)
    gap = max(1, max(q, k) // 16)
    mosaic = np.full((rows * (q + gap) - gap, cols * (k + gap) - gap), np.nan, np.float32)
    for h in range(heads):
        r, c = divmod(h, cols)
        mosaic[r * (q + gap) : r * (q + gap) + q, c * (k + gap) : c * (k + gap) + k] = m[h]
    vmax = float(np.nanmax(m)) if m.size else 1.0
    aw = 1.5 * cols  # the image's width in inches; its height follows the mosaic's aspect
    ah = aw * mosaic.shape[0] / mosaic.shape[1]
    width, height = aw + 1.25, ah + 0.45
    fig = _figure(width, height, left=0.1, right=1.15, top=0.3, bottom=0.15)
    with matplotlib.rc_context(_RC):
        ax = fig.add_subplot()
        cax = fig.add_axes((1 - 1.0 / width, 0.15 / height, 0.12 / width, ah / height))
        # 32 colour levels: the embedded PNG stays small
        cmap = matplotlib.colormaps["viridis"].resampled(32).with_extremes(bad="white")
        im = ax.imshow(mosaic, cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest")
        for h in range(heads):
            r, c = divmod(h, cols)
            ax.text(
                c * (k + gap),
                r * (q + gap),
                f"h{h}",
                color="white",
                fontsize=6,
                va="top",
                ha="left",
                bbox={"boxstyle": "square,pad=0.1", "facecolor": "black", "alpha": 0.5, "linewidth": 0},
            )
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        for side in ("left", "bottom"):
            ax.spines[side].set_visible(False)
        fig.colorbar(im, cax=cax, label="probability")
        ax.set_title(f"{_short(block, 60)}: {heads} heads (query ↓, key →)", fontsize=8)
    return _svg(fig, f"attention maps of {block}")


def main_path(segments: Sequence[Mapping[str, Any]]) -> str:
    """MACs of each main-path segment, coloured by kind (plain layers, residual, dense, with attention)."""
    idx = _thin(len(segments), MAX_POINTS)
    shown = [segments[i] for i in idx]
    kinds = {"layers": GREY, "residual": BLUE, "dense": ORANGE, "attention": "#8e44ad"}
    import matplotlib

    fig = _figure(9.5, 2.3, left=0.8)
    with matplotlib.rc_context(_RC):
        ax = fig.add_subplot()
        xs = np.arange(len(shown))
        kind_of = ["attention" if s["attention"] else s["kind"].split(" ")[0] for s in shown]
        for kind, color in kinds.items():
            sel = [i for i, k in enumerate(kind_of) if k == kind]
            if sel:
                label = {"layers": "plain layers", "attention": "residual with attention"}.get(kind, kind)
                ax.bar(xs[sel], [max(shown[i]["macs"], 0) for i in sel], color=color, width=0.8, label=label)
        ax.set_xlim(-1, max(1, len(shown)))
        ax.set_ylabel("MACs")
        thinned = "" if len(shown) == len(segments) else f", {len(shown)} of {len(segments)} shown"
        ax.set_xlabel(f"main-path segment (graph order{thinned})")
        ax.legend(loc="upper right", ncols=4)
        ax.set_title("Main path: compute per block")
    return _svg(fig, "MACs per main-path segment")


def comparison_depth(rows: Sequence[Mapping[str, Any]], first: str | None) -> str:
    """SQNR (dB) and the fraction of values out of tolerance per aligned tensor, in graph order."""
    idx = _thin(len(rows), MAX_POINTS)
    shown = [rows[i] for i in idx]
    sq = np.array([r["sqnr_db"] if r.get("sqnr_db") is not None else np.nan for r in shown], np.float64)
    sq = np.clip(sq, -50, 200)
    frac = np.array(
        [r["frac_outside_tol"] if r.get("frac_outside_tol") is not None else np.nan for r in shown]
    )
    rel = np.array([r["max_rel"] if r.get("max_rel") is not None else np.nan for r in shown], np.float64)
    import matplotlib

    names = [_short(r["a_tensor"], 28) for r in shown] if len(shown) <= 40 else []
    bottom = _room(names) + 0.2 if names else 0.5
    fig = _figure(9.5, 3.3 + bottom, left=0.8, right=0.8, bottom=bottom)
    with matplotlib.rc_context(_RC):
        ax1, ax2 = fig.subplots(2, 1, sharex=True)
        xs = np.arange(len(shown))
        ax1.plot(xs, sq, "-o", color=BLUE, markersize=2.5, linewidth=1)
        ax1.set_ylabel("SQNR (dB)")
        ax1.set_title("Per-layer error (higher SQNR is closer)")
        ax2.bar(xs, frac, color=ORANGE, label="fraction out of tolerance")
        ax2.set_ylim(0, 1)
        ax2.set_ylabel("out of tolerance")
        ax3 = ax2.twinx()
        ax3.plot(xs, rel, ".", color=RED, markersize=3, label="max relative error")
        ax3.set_yscale("log")
        ax3.set_ylabel("max rel. error")
        ax3.grid(False)
        for a in (ax1, ax2):
            for i, r in enumerate(shown):
                if first is not None and r["a_tensor"] == first:
                    a.axvline(i, color=RED, linestyle="--", linewidth=1)
        if first is not None:
            ax1.annotate("first divergence", xy=(0.01, 0.9), xycoords="axes fraction", color=RED, fontsize=7)
        thinned = "" if len(shown) == len(rows) else f", {len(shown)} of {len(rows)} shown"
        ax2.set_xlabel(f"aligned tensor (graph order{thinned})")
        if names:
            ax2.set_xticks(xs, names, rotation=60, ha="right")
    return _svg(fig, "per-layer error")


def error_ranking(rows: Sequence[Mapping[str, Any]], top: int = 20) -> str:
    """The layers that introduce the most error (``introduced_error``), largest first."""
    ranked = sorted(
        (r for r in rows if r.get("introduced_error") is not None), key=lambda r: -r["introduced_error"]
    )[:top]
    import matplotlib

    labels = [f"{_short(r['a_tensor'], 44)} ({r.get('op') or '?'})" for r in ranked][::-1]
    fig = _figure(9.5, 0.8 + 0.19 * max(1, len(ranked)), left=_room(labels, rotated=False), bottom=0.45)
    with matplotlib.rc_context(_RC):
        ax = fig.add_subplot()
        vals = [r["introduced_error"] for r in ranked][::-1]
        ax.barh(labels, vals, color=[RED if v > 0 else GREY for v in vals])
        ax.set_xlabel("introduced error (relative error of the output minus that of its inputs)")
        ax.grid(axis="y", visible=False)
        ax.set_title(f"Ranking by introduced error (top {len(ranked)})")
    return _svg(fig, "ranking by introduced error")
