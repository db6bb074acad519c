"""``onnxscope weights MODEL``: every weight with its role; ``--stats`` audits, ``--save`` writes an .npz."""

from __future__ import annotations

import argparse

import numpy as np

from onnxscope.render import check_output_path, fmt_bytes, save_npz, table, to_json


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add the ``weights`` command."""
    p = sub.add_parser("weights", parents=[common], help="list, audit and export weights")
    p.add_argument("model", help="path to an .onnx file")
    p.add_argument("--name", help="only weights whose name matches this glob (e.g. 'layer1.*')")
    p.add_argument("--op", help="only weights used by this op type (e.g. Conv)")
    p.add_argument("--role", help="only weights in this role (weight, bias, scale, running_mean…)")
    p.add_argument("--stats", action="store_true", help="audit each tensor (reads the data)")
    p.add_argument(
        "--duplicates", action="store_true", help="find identical tensors stored under several names"
    )
    p.add_argument(
        "--raw", action="store_true", help="keep quantized weights as stored (default: dequantize)"
    )
    p.add_argument("--save", metavar="FILE.npz", help="write the selected weights' values to an .npz")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> str:
    """List (and optionally audit or save) the weights of ``args.model``."""
    if args.save:
        check_output_path(args.save)
    from onnxscope.model import load

    model = load(args.model)
    ws = model.weights
    if args.name or args.op or args.role:
        ws = ws.select(name=args.name, op=args.op, role=args.role)
    dequantize = not args.raw
    stats = {k: w.stats(dequantize) for k, w in ws.items() if w.dtype != "string"} if args.stats else {}
    dups = ws.duplicates() if args.duplicates else []
    saved = None
    if args.save:
        arrays = {}
        for k, w in ws.items():
            a = np.asarray(w.values(dequantize))
            if a.dtype.kind == "O":  # string tensors: fixed-width bytes, which .npz stores without pickle
                a = a.astype(np.bytes_)
            arrays[k] = a if a.dtype.kind in "biufcS" else a.astype(np.float32)
        saved = save_npz(args.save, arrays)
    if args.json:
        out = []
        for k, w in ws.items():
            d = w.to_dict()
            if k in stats:
                d["stats"] = stats[k].to_dict()
            out.append(d)
        return to_json({"weights": out, "duplicates": dups, "saved": saved})
    rows = []
    for k, w in ws.items():
        used = ", ".join(sorted({f"{u.op}:{u.role}" for u in w.uses})) or "unused"
        q = w.quantization
        row = [
            k,
            "x".join(map(str, w.shape)) or "scalar",
            w.dtype,
            used,
            fmt_bytes(w.nbytes),
            w.external or "-",
            "-" if q is None else f"{q.kind}" + ("" if q.axis is None else f"/axis {q.axis}"),
        ]
        if args.stats:
            s = stats.get(k)
            row += (
                ["-"] * 10
                if s is None
                else [
                    s.mean,
                    s.std,
                    s.min,
                    s.max,
                    s.l2,
                    s.sparsity,
                    s.nan,
                    s.inf,
                    s.fp16_overflow,
                    len(s.dead_units),
                ]
            )
        rows.append(row)
    headers = ["name", "shape", "dtype", "used as", "bytes", "external", "quant"]
    if args.stats:
        headers += [
            "mean",
            "std",
            "min",
            "max",
            "l2",
            "sparsity",
            "nan",
            "inf",
            "fp16 overflow",
            "dead units",
        ]
    text = [
        table(rows, headers),
        "",
        f"{len(ws)} weights, {ws.parameters:,} parameters, {fmt_bytes(ws.nbytes)}",
    ]
    for group in dups:
        text.append("identical: " + ", ".join(group))
    if args.duplicates and not dups:
        text.append("no identical tensors under different names")
    if saved:
        text.append(f"saved {len(ws)} arrays to {saved}")
    return "\n".join(text)
