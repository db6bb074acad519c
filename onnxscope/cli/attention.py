"""``onnxscope attention MODEL``: attention blocks; with inputs, their maps (``--png DIR`` writes heatmaps)."""

from __future__ import annotations

import argparse
import os

import numpy as np

from onnxscope.cli._args import add_input_args, input_kwargs
from onnxscope.errors import InputError, MissingDependencyError, OutputError
from onnxscope.render import atomic_write, table, to_json


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add the ``attention`` command."""
    p = sub.add_parser("attention", parents=[common], help="attention blocks and their maps")
    p.add_argument("model", help="path to an .onnx file")
    add_input_args(p)
    p.add_argument(
        "--png", metavar="DIR", help="write one heatmap per block and head (first sample) into DIR"
    )
    p.set_defaults(func=run)


def _png(path: str, a: np.ndarray) -> None:
    try:
        from PIL import Image
    except ImportError as e:
        raise MissingDependencyError("--png needs Pillow: pip install 'onnxscope[png]'") from e
    lo, hi = float(a.min()), float(a.max())
    scaled = ((a - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(a)).astype(np.uint8)
    scale = max(1, 256 // max(a.shape))
    img = Image.fromarray(scaled).resize((a.shape[1] * scale, a.shape[0] * scale), Image.NEAREST)
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))


def run(args: argparse.Namespace) -> str:
    """List the attention blocks; capture and summarize (or draw) their maps when inputs are given."""
    if args.png and not os.path.isdir(args.png):
        raise InputError(f"--png {args.png!r}: no such folder")
    if args.png and not os.access(args.png, os.W_OK | os.X_OK):
        raise OutputError(f"--png {args.png!r}: the folder is not writable")
    from onnxscope.model import load
    from onnxscope.patterns import find_attention

    model = load(args.model)
    blocks = find_attention(model)
    want_maps = bool(args.input or args.inputs or args.random or args.png)
    maps: dict[str, np.ndarray] = {}
    if want_maps and blocks:
        from onnxscope.session import capture

        selected = [b.probabilities for b in blocks if b.probabilities]
        cap = capture(model, select=selected, **input_kwargs(args))
        maps = {b.name: cap.attention(b) for b in blocks if b.probabilities}
    written = []
    if args.png:
        for name, a in maps.items():
            sample = a.reshape(-1, *a.shape[-3:])[0]
            for h in range(sample.shape[0]):
                path = os.path.join(args.png, f"{name.replace('/', '_')}_head{h}.png")
                _png(path, sample[h])
                written.append(path)
    if args.json:
        out = []
        for b in blocks:
            d = b.to_dict()
            if b.name in maps:
                d["map_shape"] = list(maps[b.name].shape)
            out.append(d)
        return to_json({"attention": out, "png": written})
    rows = [
        [
            b.name,
            b.op,
            b.heads or "?",
            {True: "yes", False: "no", None: "?"}[b.causal],
            b.w_q or "-",
            b.w_k or "-",
            b.w_v or "-",
            b.w_o or "-",
            "x".join(map(str, maps[b.name].shape)) if b.name in maps else "-",
        ]
        for b in blocks
    ]
    text = table(rows, ["block", "op", "heads", "causal", "W_Q", "W_K", "W_V", "W_O", "map"]) if rows else ""
    text += f"\n\n{len(blocks)} attention block(s)"
    if written:
        text += f"; {len(written)} heatmap(s) written to {args.png}"
    return text.lstrip()
