"""``onnxscope stats STORE [TENSOR]``: running statistics of a dataset store (merged over shards with --merge)."""

from __future__ import annotations

import argparse

from onnxscope.errors import NotFoundError, closest
from onnxscope.render import fmt_num, table, to_json


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add the ``stats`` command."""
    p = sub.add_parser(
        "stats", parents=[common], help="statistics of a dataset store, per tensor and per unit"
    )
    p.add_argument("store", help="a store written by `onnxscope dataset`")
    p.add_argument("tensor", nargs="?", help="only this tensor (per-unit detail in --json)")
    p.add_argument(
        "--merge", action="append", metavar="STORE", help="another shard store to merge in (repeat)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> str:
    """Print the statistics table."""
    from onnxscope.dataset import merge_stats, open_store

    stats = merge_stats(open_store(args.store), *(open_store(s) for s in args.merge or []))
    if args.tensor is not None:
        if args.tensor not in stats:
            raise NotFoundError(f"no statistics for {args.tensor!r}; {closest(args.tensor, stats)}")
        stats = {args.tensor: stats[args.tensor]}
    if args.json:
        out = {}
        for k, s in stats.items():
            d = s.summary()
            if args.tensor is not None:
                d.update(
                    unit_mean=s.unit_mean.tolist(),
                    unit_std=s.unit_std.tolist(),
                    unit_min=s.unit_min.tolist(),
                    unit_max=s.unit_max.tolist(),
                )
            out[k] = d
        return to_json(out)
    rows = [
        [
            k,
            s.count,
            fmt_num(s.mean),
            fmt_num(s.std),
            fmt_num(s.min),
            fmt_num(s.max),
            s.nan,
            s.inf,
            fmt_num(s.zero_fraction),
            s.units,
            len(s.dead_units),
            len(s.saturated_units),
        ]
        for k, s in stats.items()
    ]
    return table(
        rows,
        ["tensor", "count", "mean", "std", "min", "max", "nan", "inf", "zeros", "units", "dead", "saturated"],
    )
