"""``onnxscope capture MODEL``: run once with onnxruntime and show (or save) every intermediate tensor."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import numpy as np

from onnxscope.cli._args import add_input_args, add_selection_args, input_kwargs
from onnxscope.render import check_output_path, fmt_num, table, to_json

if TYPE_CHECKING:
    from onnxscope.result import Capture


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add the ``capture`` command."""
    p = sub.add_parser("capture", parents=[common], help="run the model and capture every node's outputs")
    p.add_argument("model", help="path to an .onnx file")
    add_input_args(p)
    add_selection_args(p)
    p.add_argument(
        "--optimization",
        default="all",
        choices=["disable", "basic", "extended", "all"],
        help="onnxruntime graph optimization level (default all, as deployed): what its optimizations remove "
        "is recomputed from the captured tensors",
    )
    p.add_argument("--out", metavar="FILE.npz", help="save the capture (read it back with `onnxscope show`)")
    p.set_defaults(func=run)


def rows(cap: Capture) -> list[dict[str, Any]]:
    """One row per tensor: name, op, how it was obtained, shape, dtype, min/mean/max, NaN/Inf counts."""

    out = []
    for name in cap:
        a = np.asarray(cap[name])
        meta = cap.info(name)
        row: dict[str, Any] = {
            "tensor": name,
            "op": meta.op if meta.source != "input" else "input",
            "source": meta.source,
            "shape": list(a.shape),
            "dtype": str(a.dtype),
            "min": None,
            "mean": None,
            "max": None,
            "nan": 0,
            "inf": 0,
        }
        if a.dtype.kind in "biuf" and a.size:
            f = a.astype(np.float64, copy=False)
            finite = np.isfinite(f)
            ok = f if finite.all() else f[finite]
            if ok.size:
                row.update(min=float(ok.min()), mean=float(ok.mean()), max=float(ok.max()))
            row.update(nan=int(np.isnan(f).sum()), inf=int(np.isinf(f).sum()))
        out.append(row)
    return out


def render(cap: Capture, as_json: bool, saved: str | None = None) -> str:
    """The per-tensor table (or JSON) shared by ``capture`` and ``show``."""

    rows_ = rows(cap)
    if as_json:
        return to_json(
            {"tensors": rows_, "outputs": list(cap.outputs), "skipped": cap.skipped, "saved": saved}
        )
    body = table(
        [
            [
                r["tensor"],
                r["op"] or "-",
                r["source"] if r["source"] != "captured" else "",
                "x".join(map(str, r["shape"])) or "scalar",
                r["dtype"],
                fmt_num(r["min"]) if r["min"] is not None else "-",
                fmt_num(r["mean"]) if r["mean"] is not None else "-",
                fmt_num(r["max"]) if r["max"] is not None else "-",
                r["nan"],
                r["inf"],
            ]
            for r in rows_
        ],
        ["tensor", "op", "via", "shape", "dtype", "min", "mean", "max", "nan", "inf"],
    )
    recomputed = sum(r["source"] == "recomputed" for r in rows_)
    lines = [body, "", f"{len(rows_)} tensors; outputs: {', '.join(cap.outputs)}"]
    if recomputed:
        lines.append(
            f"{recomputed} recomputed from captured tensors (onnxruntime's optimizations removed them)"
        )
    lines += [f"not captured: {k}: {why}" for k, why in cap.skipped.items()]
    if saved:
        lines.append(f"saved to {saved}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> str:
    """Capture ``args.model`` on the given inputs."""
    if args.out:
        check_output_path(args.out)
    from onnxscope.inputs import resolve_dims
    from onnxscope.model import load
    from onnxscope.session import capture

    model = load(args.model)
    kwargs = input_kwargs(args)
    cap = capture(model, select=args.select, exclude=args.exclude, optimization=args.optimization, **kwargs)
    saved = cap.save(args.out) if args.out else None
    text = render(cap, args.json, saved)
    if args.random and not args.json:
        sizes = resolve_dims(model, kwargs["inputs"], kwargs["dims"])
        if sizes:
            text += (
                "\nrandom inputs with "
                + ", ".join(f"{k}={v}" for k, v in sizes.items())
                + " (set with --dim)"
            )
    return text
