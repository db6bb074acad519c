"""onnxruntime, in one place: session options, sessions over serialized models, and what its optimizations keep.

Example:
    >>> so = session_options("all", threads=1)
    >>> so.intra_op_num_threads
    1
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from onnxscope._ir import ir
from onnxscope.errors import CaptureError, InputError, MissingDependencyError

__all__ = [
    "LEVELS",
    "first_line",
    "is_runtime_error",
    "make_session",
    "ort",
    "serialize",
    "session_options",
    "survivors",
]

LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def ort() -> Any:
    """The ``onnxruntime`` module; :class:`MissingDependencyError` naming the extra when it is not installed."""
    try:
        import onnxruntime
    except ImportError as e:
        raise MissingDependencyError("capture needs onnxruntime: pip install 'onnxscope[runtime]'") from e
    if not getattr(ort, "_quiet", False):
        onnxruntime.set_default_logger_severity(4)  # its errors reach the user as one line each, not a log
        ort._quiet = True  # type: ignore[attr-defined]
    return onnxruntime


def session_options(optimization: str = "all", threads: int | None = None) -> Any:
    """onnxruntime ``SessionOptions`` at an optimization level (``disable``, ``basic``, ``extended``, ``all``).

    Raises:
        InputError: an unknown level (the message lists the valid ones).
    """
    rt = ort()
    if optimization not in LEVELS:
        raise InputError(f"optimization {optimization!r}: choose one of {', '.join(LEVELS)}")
    so = rt.SessionOptions()
    so.graph_optimization_level = getattr(rt.GraphOptimizationLevel, LEVELS[optimization])
    if threads is not None:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.log_severity_level = 4  # errors come back as exceptions, said once, in one line
    return so


def is_runtime_error(e: BaseException) -> bool:
    """Whether ``e`` was raised by onnxruntime itself (as opposed to a bug of ours).

    Example:
        >>> is_runtime_error(ValueError("x"))
        False
    """
    return type(e).__module__.startswith("onnxruntime")


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (onnxruntime's are long)."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def make_session(model_bytes: bytes | str, folder: str | None, so: Any, providers: list[str] | None) -> Any:
    """An onnxruntime session over serialized model bytes (or a model file) whose external data lives in
    ``folder``.

    Raises:
        InputError: a provider that is not available (the message lists the available ones).
        CaptureError: onnxruntime refuses the model.
    """
    rt = ort()
    available = rt.get_available_providers()
    providers = providers or ["CPUExecutionProvider"]
    for p in providers:
        if p not in available:
            raise InputError(f"requested provider {p!r} is not available; available: {', '.join(available)}")
    if folder:
        so.add_session_config_entry("session.model_external_initializers_file_folder_path", folder)
    try:
        return rt.InferenceSession(model_bytes, so, providers=providers)
    except Exception as e:
        if not is_runtime_error(e):
            raise
        raise CaptureError(f"onnxruntime cannot load the model: {first_line(e)}") from e


def serialize(model: ir.Model) -> bytes:
    """The model's bytes; external weights stay references to their files (never read here)."""
    return ir.to_proto(model).SerializeToString()


def survivors(
    model: ir.Model | str,
    folder: str | None,
    optimization: str,
    providers: list[str] | None = None,
    threads: int | None = None,
) -> set[str] | None:
    """Names of the main graph's tensors that onnxruntime keeps after optimizing the model at ``optimization``
    (``None``: all of them — no optimization, or onnxruntime could not save its optimized graph).

    onnxruntime itself says what survives: it writes the graph it will run (``optimized_model_filepath``), and the
    names found there are the tensors its fused kernels still produce. ``model`` may be the path of the model's
    file (onnxruntime reads it itself, the quickest way for large graphs).

    Example:
        >>> from onnxscope.testing import mlp_model
        >>> sorted(survivors(mlp_model(), None, "all"))  # Gemm and Relu fused: 'h' is never computed alone
        ['a', 'x', 'y']
    """
    if optimization == "disable":
        return None
    found = _optimized(model, folder, optimization, providers, threads, [])
    if found is None:
        return None
    names, ops = found
    if isinstance(model, str) or not _relaid(model, ops):
        return names
    # Layout transforms (NHWC for the int8 kernels of some CPUs, NCHWc blocks for float convolutions) give the
    # tensors of the nodes they move new names. Those tensors are still computed, and asked for by their own names
    # onnxruntime reorders them back and runs the same kernels — at the price of one reorder each. Float ones stay
    # recomputed on read (equal within float rounding, and the run keeps its speed); quantized ones (QuantizeLinear
    # outputs) are captured, because only the int8 kernels say what they compute: recomputed in float by the QDQ
    # nodes, they would not show where this CPU's kernels saturate. onnxruntime says whether marking them keeps
    # its kernels: they are kept when the optimized graph then runs as many kernels of each kind (layout ops
    # aside; a kernel may then run in another layout, which computes the same integers).
    quantized = [
        v.name
        for n in model.graph
        if n.op_type == "QuantizeLinear" and (n.domain or "") in ("", "com.microsoft")
        for v in n.outputs[:1]
        if v.name and v.name not in names and not v.is_graph_output()
    ]
    if not quantized:
        return names
    try:
        marked = _optimized(model, folder, optimization, providers, threads, quantized)
    except CaptureError:  # onnxruntime refuses the model with them marked: they stay recomputed
        return names
    if marked is None:
        return names
    names2, ops2 = marked
    if _compute(ops2) == _compute(ops) and names2.issuperset(quantized):
        return names | set(quantized)
    return names


def _relaid(model: ir.Model, ops: Any) -> bool:
    """Whether onnxruntime's optimized graph (node counts ``ops``) moved tensors to another layout."""
    if any(d == "com.microsoft.nchwc" or t.startswith("Nhwc") for d, t in ops):
        return True
    transposes = sum(1 for n in model.graph if n.op_type == "Transpose" and (n.domain or "") == "")
    return bool(ops.get(("", "Transpose"), 0) > transposes)


_LAYOUT_OPS = {
    ("", "Transpose"),
    ("com.microsoft.nchwc", "ReorderInput"),
    ("com.microsoft.nchwc", "ReorderOutput"),
}


def _compute(ops: Any) -> dict[tuple[str, str], int]:
    """Node counts by kind, without the ops that only move data between layouts."""
    return {k: v for k, v in ops.items() if k not in _LAYOUT_OPS}


def _optimized(
    model: ir.Model | str,
    folder: str | None,
    optimization: str,
    providers: list[str] | None,
    threads: int | None,
    marked: list[str],
) -> tuple[set[str], Any] | None:
    """The tensor names and node counts of the graph onnxruntime optimizes ``model`` into, with main-graph
    tensors ``marked`` as extra outputs (``None``: onnxruntime could not save it, or it cannot be read back)."""
    so = session_options(optimization, threads)
    with tempfile.TemporaryDirectory(prefix="onnxscope-") as tmp:
        path = os.path.join(tmp, "optimized.onnx")
        so.optimized_model_filepath = path
        so.add_session_config_entry("session.optimized_model_external_initializers_file_name", "weights.bin")
        so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        # the probe never runs: no packed copies of the weights
        so.add_session_config_entry("session.disable_prepacking", "1")
        if isinstance(model, str):
            data: bytes | str = model
        elif marked:
            from onnxscope._load import serialize_with_outputs

            data = serialize_with_outputs(model, marked)
        else:
            data = serialize(model)
        sess = make_session(data, folder, so, providers)
        del sess, data
        if not os.path.exists(path):
            return None
        from onnxscope._load import graph_contents

        try:
            return graph_contents(path)
        except Exception:  # an optimized graph that cannot be read back: assume nothing was removed
            return None
