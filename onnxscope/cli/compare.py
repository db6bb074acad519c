"""``onnxscope compare A [B]``: two runs layer by layer — aligned tensors, error metrics, the first divergence,
the error each layer introduces; ``onnxscope compare Q.onnx --kernels``: where this CPU's fused int8 kernels
depart from the model's QDQ semantics.

A runs with every tensor computed by its own node (``--a-optimization disable``, the reference semantics), B at
onnxruntime's deployed level (``--b-optimization all``). Without ``B`` the model is compared with itself under the
two configurations (``--a-*``/``--b-*``: optimization level, threads, execution providers) or with onnx's
reference evaluator (``--b-reference``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from onnxscope.cli._args import (
    add_input_args,
    input_kwargs,
    non_negative_float,
    non_negative_int,
    positive_int,
)
from onnxscope.errors import InputError
from onnxscope.render import fmt_num, table, to_json

LEVELS = ["disable", "basic", "extended", "all"]


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add the ``compare`` command."""
    p = sub.add_parser(
        "compare",
        parents=[common],
        help="compare two runs layer by layer (quantized, optimized, converted models; runtime settings)",
    )
    p.add_argument("a", help="the reference model (.onnx)")
    p.add_argument("b", nargs="?", help="the other model (default: A again, under --b-* settings)")
    add_input_args(p)
    p.add_argument(
        "--data", metavar="DIR", help="a folder of batches (.npz, .npy or test_data_set_* folders)"
    )
    p.add_argument("--rtol", type=non_negative_float, default=1e-3, help="relative tolerance (default 1e-3)")
    p.add_argument("--atol", type=non_negative_float, default=1e-4, help="absolute tolerance (default 1e-4)")
    p.add_argument(
        "--a-optimization",
        choices=LEVELS,
        default="disable",
        help="onnxruntime level of A (default disable: every tensor by its own node)",
    )
    p.add_argument(
        "--b-optimization",
        choices=LEVELS,
        default="all",
        help="onnxruntime level of B (default all, as deployed)",
    )
    p.add_argument("--a-threads", type=positive_int, help="intra-op threads of A")
    p.add_argument("--b-threads", type=positive_int, help="intra-op threads of B")
    p.add_argument("--a-provider", action="append", metavar="EP", help="execution provider of A (repeat)")
    p.add_argument("--b-provider", action="append", metavar="EP", help="execution provider of B (repeat)")
    p.add_argument(
        "--recompute",
        choices=["all", "cheap", "none"],
        default="all",
        help="tensors a run's fusions removed, recomputed on read: compare all (default), only those whose "
        "recomputation runs no Conv/MatMul, or none",
    )
    p.add_argument("--b-reference", action="store_true", help="run B with onnx's reference evaluator")
    p.add_argument("--no-introduced", action="store_true", help="skip re-running B's layers on A's values")
    p.add_argument(
        "--kernels",
        action="store_true",
        help="one QDQ model: its fused int8 kernels against its own QDQ semantics, on this CPU",
    )
    p.add_argument(
        "--reference",
        choices=["unfused", "evaluator"],
        default="unfused",
        help="--kernels: the QDQ semantics by onnxruntime unfused (default) or onnx's reference evaluator",
    )
    p.add_argument(
        "--limit", type=non_negative_int, default=40, metavar="N", help="rows shown (default 40; 0: all)"
    )
    p.add_argument("--out", metavar="FILE.json", help="also write the full comparison as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> str:
    """Compare, then render the tables (or JSON)."""
    from onnxscope.model import load

    kwargs = input_kwargs(args)
    given = kwargs["inputs"] or kwargs["random"] or args.data
    if not given:
        raise InputError("compare needs inputs: --input NAME=FILE, --inputs FILE|DIR, --data DIR or --random")
    if args.data and (kwargs["inputs"] or kwargs["random"]):
        raise InputError("--data DIR replaces --input/--inputs/--random; give one of them")
    inputs: Any = args.data if args.data else (kwargs["inputs"] or None)
    progress = bool(args.data) and sys.stderr.isatty()
    model_a = load(args.a)
    if args.kernels:
        if args.b:
            raise InputError("--kernels checks one QDQ model; give only A")
        from onnxscope.comparison import check_kernels

        comparison = check_kernels(
            model_a,
            inputs,
            random=kwargs["random"],
            seed=kwargs["seed"],
            dims=kwargs["dims"],
            reference=args.reference,
            threads=args.a_threads,
            progress=progress,
        )
    else:
        from onnxscope.comparison import compare
        from onnxscope.sides import Side

        side_a = Side(
            model_a, optimization=args.a_optimization, threads=args.a_threads, providers=args.a_provider
        )
        model_b = load(args.b) if args.b else model_a
        side_b = Side(
            model_b,
            optimization=args.b_optimization,
            threads=args.b_threads,
            providers=args.b_provider,
            engine="reference" if args.b_reference else "onnxruntime",
        )
        if not args.b and not args.b_reference and (side_a.label == side_b.label):
            raise InputError(
                "one model against itself under the same settings: give B, or other --a-*/--b-* settings, "
                "or --b-reference"
            )
        comparison = compare(
            side_a,
            side_b,
            inputs,
            random=kwargs["random"],
            seed=kwargs["seed"],
            dims=kwargs["dims"],
            rtol=args.rtol,
            atol=args.atol,
            introduced=not args.no_introduced,
            progress=progress,
            recompute=args.recompute,
        )
    data = comparison.to_dict()
    saved = None
    if args.out:
        from onnxscope.render import atomic_write

        text = to_json(data)
        saved = atomic_write(args.out, lambda tmp: open(tmp, "w", encoding="utf-8").write(text))
    if args.json:
        return to_json(data)
    out = render_kernels(comparison, args.limit) if args.kernels else render(comparison, args.limit)
    if saved:
        out += f"\nsaved to {saved}"
    return out


def _n(x: Any, pct: bool = False) -> str:
    if x is None:
        return "-"
    if pct:
        return f"{100 * x:.3g}%"
    return fmt_num(x)


def _shown(rows: list[Any], limit: int, first: Any) -> tuple[list[Any], str]:
    """At most ``limit`` rows, starting a little before the first divergence."""
    if not limit or len(rows) <= limit:
        return rows, ""
    start = 0
    if first is not None:
        start = max(0, min(next(i for i, r in enumerate(rows) if r is first) - 3, len(rows) - limit))
    shown = rows[start : start + limit]
    return (
        shown,
        f"({len(rows) - len(shown)} more rows not shown: --limit 0 shows all, --json gives everything)",
    )


def render(comparison: Any, limit: int = 40) -> str:
    """The comparison as text: header, the first divergence, the table in A's graph order, the ranking by
    introduced error, what could not be aligned."""
    rows = comparison.rows
    al = comparison.alignment
    first = next((r for r in rows if r.diverges), None)
    lines = [
        f"A: {comparison.a}",
        f"B: {comparison.b}",
        f"{comparison.samples} sample(s) in {comparison.batches} batch(es); tolerance rtol={comparison.rtol:g} "
        f"atol={comparison.atol:g}; aligned {100 * al.coverage_a:.1f}% of A's tensors, "
        f"{100 * al.coverage_b:.1f}% of B's",
    ]
    if first is None:
        lines.append("no divergence: every aligned tensor is within tolerance")
    else:
        lines.append(
            f"first divergence: {first.a_tensor} ({first.op}, node {first.node}) ~ {first.b_tensor}: "
            f"max abs {_n(first.max_abs)}, SQNR {_n(first.sqnr_db)} dB, {_n(first.frac_outside_tol, True)} "
            "of elements outside tolerance"
        )
    shown, more = _shown(rows, limit, first)
    body = [
        [
            ("> " if r is first else "") + r.a_tensor,
            r.b_tensor,
            r.op or "-",
            r.alignment,
            _n(r.max_abs),
            _n(r.mean_abs),
            _n(r.cosine),
            _n(r.sqnr_db),
            _n(r.frac_outside_tol, True),
            _n(r.max_steps),
            _n(r.introduced_error),
        ]
        for r in shown
    ]
    headers = ["tensor (A)", "tensor (B)", "op", "aligned by", "max abs", "mean abs", "cosine", "SQNR dB"]
    headers += ["outside tol", "max steps", "introduced"]
    lines += ["", table(body, headers)]
    if more:
        lines.append(more)
    ranked = [r for r in comparison.ranked if r.introduced_error is not None][:10]
    if ranked:
        lines += [
            "",
            "error introduced by each layer (B's layer re-run on A's values; relative L2), largest first:",
        ]
        lines.append(
            table(
                [
                    [i + 1, r.a_tensor, r.op or "-", _n(r.introduced_error), _n(r.rel_l2)]
                    for i, r in enumerate(ranked)
                ],
                ["#", "tensor (A)", "op", "introduced", "total (rel L2)"],
            )
        )
    worst = [r for r in rows if r.worst_samples and comparison.samples > 1 and r.diverges][:5]
    if worst:
        lines += ["", "worst samples (relative L2 error):"]
        for r in worst:
            lines.append(f"  {r.a_tensor}: " + ", ".join(f"#{i} {fmt_num(e)}" for i, e in r.worst_samples))
    if al.unaligned_a or al.unaligned_b:
        lines.append("")
        for side, names in (("A", al.unaligned_a), ("B", al.unaligned_b)):
            if names:
                extra = f" and {len(names) - 8} more" if len(names) > 8 else ""
                lines.append(f"not aligned in {side} ({len(names)}): {', '.join(names[:8])}{extra}")
    lines += [f"note: {n}" for n in comparison.notes]
    return "\n".join(lines)


def render_kernels(comparison: Any, limit: int = 40) -> str:
    """``check_kernels`` as text: one row per quantized layer."""
    rows = comparison.rows
    differ = [r for r in rows if r.frac_differ]
    lines = [
        f"{comparison.a} vs {comparison.b}, {comparison.samples} sample(s)",
        f"{len(differ)} of {len(rows)} quantized tensors differ"
        + (f"; first: {differ[0].a_tensor} (layer {differ[0].layer})" if differ else ""),
        "",
    ]
    shown, more = _shown(rows, limit, differ[0] if differ else None)
    lines.append(
        table(
            [
                [
                    r.layer or "-",
                    r.a_tensor,
                    _n(r.max_steps),
                    _n(r.mean_steps),
                    _n(r.frac_differ, True),
                    _n(r.introduced_max_steps),
                    _n(r.introduced_frac_differ, True),
                ]
                for r in shown
            ],
            ["layer", "quantized tensor", "max steps", "mean steps", "share", "own max steps", "own share"],
        )
    )
    if more:
        lines.append(more)
    lines.append(
        "\nsteps: int8 differences end to end; own: the layer alone, its QDQ nodes re-run on the int8 inputs "
        "the fused kernels produced"
    )
    lines += [f"note: {n}" for n in comparison.notes]
    return "\n".join(lines)
