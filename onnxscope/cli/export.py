"""``onnxscope export torch|keras …``: export a framework model with its layer map, optionally checking parity."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from typing import Any

import numpy as np

from onnxscope._files import check_regular
from onnxscope.cli._args import non_negative_int, positive_int
from onnxscope.errors import InputError
from onnxscope.render import check_output_path, fmt_num, table, to_json


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add the ``export`` command with its ``torch`` and ``keras`` forms."""
    p = sub.add_parser("export", help="export a PyTorch or Keras model to ONNX with a layer map")
    kinds = p.add_subparsers(dest="framework", metavar="FRAMEWORK", required=True)
    t = kinds.add_parser("torch", parents=[common], help="a torch nn.Module from MODULE:FACTORY")
    t.add_argument(
        "factory", help="python.module:function or path/to/file.py:function returning an nn.Module"
    )
    t.add_argument(
        "--input-shape",
        action="append",
        required=True,
        metavar="1,3,224,224",
        help="shape of each input, in order (repeat for several inputs)",
    )
    k = kinds.add_parser(
        "keras", parents=[common], help="a Keras model file (.keras/.h5) or SavedModel folder"
    )
    k.add_argument("source", help="path to the Keras model")
    for q in (t, k):
        q.add_argument("-o", "--output", required=True, metavar="OUT.onnx", help="where to write the model")
        q.add_argument(
            "--opset", type=positive_int, default=None, help="ONNX opset (default: the exporter's)"
        )
        q.add_argument("--check", action="store_true", help="compare every mapped layer with the framework")
        q.add_argument(
            "--seed", type=non_negative_int, default=0, help="seed of the random inputs used by --check"
        )
        q.set_defaults(func=run)


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.split(","))
    except ValueError:
        raise InputError(
            f"--input-shape {text!r}: expected comma-separated whole numbers, e.g. 1,3,224,224"
        ) from None
    if not dims or any(d <= 0 for d in dims):
        raise InputError(f"--input-shape {text!r}: every dimension must be a positive number")
    return dims


def _factory_parts(spec: str) -> tuple[str, str]:
    """``(target, function)`` of ``MODULE:FACTORY``; a ``file.py`` target must be a readable regular file."""
    target, sep, fn = spec.rpartition(":")
    if not sep or not target or not fn:
        raise InputError(f"{spec!r}: expected MODULE:FACTORY, e.g. mypkg.models:build or models.py:build")
    if target.endswith(".py") or os.sep in target:
        check_regular(target, f"{spec!r}: file {target!r}", InputError)
        if not os.access(target, os.R_OK):
            raise InputError(f"{spec!r}: file {target!r}: permission denied")
    return target, fn


def _check_source(path: str) -> None:
    """A Keras model is a readable file or a (SavedModel) folder: refused here, before tensorflow is imported."""
    if os.path.isdir(path):
        return
    check_regular(path, f"Keras model {path!r}", InputError)
    if not os.access(path, os.R_OK):
        raise InputError(f"Keras model {path!r}: permission denied")


def load_factory(spec: str) -> Any:
    """Call ``module:function`` (or ``file.py:function``) and return what it builds."""
    target, fn = _factory_parts(spec)
    try:
        if target.endswith(".py"):
            name = os.path.splitext(os.path.basename(target))[0]
            module_spec = importlib.util.spec_from_file_location(name, target)
            module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
            sys.modules[name] = module
            module_spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            module = importlib.import_module(target)
    except ImportError as e:
        raise InputError(f"{spec!r}: cannot import {target!r} ({e})") from e
    factory = getattr(module, fn, None)
    if factory is None or not callable(factory):
        names = ", ".join(n for n in dir(module) if callable(getattr(module, n)) and not n.startswith("_"))
        raise InputError(f"{spec!r}: {target} has no function {fn!r}; it has {names or 'none'}")
    return factory()


def run(args: argparse.Namespace) -> str:
    """Export, then report (and check, when asked)."""
    check_output_path(args.output)
    if args.framework == "torch":
        _factory_parts(args.factory)
    else:
        _check_source(args.source)
    import converters

    rng = np.random.default_rng(args.seed)
    if args.framework == "torch":
        torch = converters._common.require("torch", "torch")
        module = load_factory(args.factory)
        shapes = [_shape(s) for s in args.input_shape]
        arrays = tuple(rng.standard_normal(s).astype(np.float32) for s in shapes)
        model = converters.from_torch(
            module, tuple(torch.from_numpy(a) for a in arrays), args.output, opset=args.opset
        )
        framework = module
    else:
        framework = converters.keras_export._load_keras(args.source)
        model = converters.from_keras(framework, args.output, opset=args.opset or 17)
        arrays = ()
        if not isinstance(framework, str):
            arrays = tuple(
                rng.standard_normal((1, *t.shape[1:])).astype(np.float32) for t in framework.inputs
            )
    report = converters.check(framework, model, arrays) if args.check and arrays else None
    mapped = model.layer_map
    if args.json:
        return to_json(
            {
                "output": args.output,
                "layers": len(mapped.get("layers", {})),
                "weights": len(mapped.get("weights", {})),
                "parity": None if report is None else report.to_dict(),
            }
        )
    lines = [
        f"wrote {args.output}: {len(model.nodes)} nodes, {len(mapped.get('layers', {}))} layers mapped, "
        f"{len(mapped.get('weights', {}))} weights mapped"
    ]
    if report is not None:
        rows = [
            [
                r.layer,
                r.tensor,
                "x".join(map(str, r.shape)),
                fmt_num(r.max_abs),
                fmt_num(r.max_rel),
                "ok" if r.ok else "DIVERGES",
                r.note,
            ]
            for r in report.rows
        ]
        lines += ["", table(rows, ["layer", "onnx tensor", "shape", "max abs", "max rel", "", "note"]), ""]
        lines += [f"note: {n}" for n in report.notes]
        lines.append(
            "all layers within tolerance" if report.ok else f"first divergence: {report.first_divergence}"
        )
    return "\n".join(lines)
