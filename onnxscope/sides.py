"""The two sides of a comparison: a model and the way it runs.

A :class:`Side` is a model (its graph is what alignment reads) and an engine that runs it on inputs and hands
back its tensors by capture name: onnxruntime through a :class:`~onnxscope.CaptureSession` (any optimization
level, execution providers, thread count), onnx's reference evaluator (``engine="reference"``), or a capture
already made (:meth:`Side.of` wraps one). A side also re-runs small sub-models of its own nodes the same way —
how a comparison measures the error one node introduces. Framework models (torch, Keras) are sides too, made by
``converters.side``: their tensors are the layers' outputs, under the names of the exported ONNX tensors.

Example:
    >>> import numpy as np, onnxscope
    >>> from onnxscope.testing import mlp_model
    >>> s = Side(onnxscope.Model(mlp_model()), optimization="disable")
    >>> sorted(s.run({"x": np.ones((1, 3), np.float32)})), s.label
    (['a', 'h', 'x', 'y'], 'the model (disable)')
    >>> s.close()
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from onnxscope._ir import ir
from onnxscope.errors import InputError, UnsupportedError
from onnxscope.model import Model, load

__all__ = ["Side"]

ENGINES = ("onnxruntime", "reference")


class Side:
    """A model and the way it runs, for :func:`onnxscope.compare`.

    Parameters:
        model: a :class:`~onnxscope.Model` or a path.
        optimization: onnxruntime's graph optimization level (``"all"``, the deployed one, by default).
        providers: onnxruntime execution providers (default CPU).
        threads: ``intra_op_num_threads``.
        engine: ``"onnxruntime"`` or ``"reference"`` (``onnx.reference.ReferenceEvaluator``).
        label: how reports name this side (default: the file name and the configuration).

    Subclasses (``converters.side`` for torch and Keras models) override :meth:`run`, :meth:`tensors` and
    :meth:`rerun` (``rerunnable = False`` when sub-graphs cannot be re-run).
    """

    rerunnable = True

    def __init__(
        self,
        model: Model | str | os.PathLike[str],
        *,
        optimization: str = "all",
        providers: list[str] | None = None,
        threads: int | None = None,
        engine: str = "onnxruntime",
        label: str | None = None,
    ) -> None:
        if engine not in ENGINES:
            raise InputError(f"engine {engine!r}: choose one of {', '.join(ENGINES)}")
        self.model = model if isinstance(model, Model) else load(model)
        self.optimization, self.providers, self.threads, self.engine = (
            optimization,
            providers,
            threads,
            engine,
        )
        if engine == "onnxruntime":
            from onnxscope.runtime import session_options

            session_options(optimization)  # refuse an unknown level now
        self.label = label or self._default_label()
        self._session: Any = None
        self._reruns: dict[int, Any] = {}

    def _default_label(self) -> str:
        name = os.path.basename(self.model.path) if self.model.path else "the model"
        if self.engine == "reference":
            return f"{name} (reference evaluator)"
        parts = [self.optimization]
        if self.providers:
            parts.append("+".join(p.removesuffix("ExecutionProvider") for p in self.providers))
        if self.threads is not None:
            parts.append(f"{self.threads} thread{'s' if self.threads != 1 else ''}")
        return f"{name} ({', '.join(parts)})"

    @property
    def folder(self) -> str | None:
        """Where the model's external weights live."""
        return os.path.dirname(os.path.abspath(self.model.path)) if self.model.path else None

    @classmethod
    def of(cls, x: Any, **config: Any) -> Side:
        """``x`` as a side: a :class:`Side` as it is, a :class:`~onnxscope.Capture` (one run, already made),
        a :class:`~onnxscope.Model` or a path with ``config`` (the keyword arguments of :class:`Side`).

        Example:
            >>> import onnxscope
            >>> from onnxscope.testing import mlp_model
            >>> Side.of(onnxscope.Model(mlp_model()), optimization="basic").optimization
            'basic'
        """
        if isinstance(x, Side):
            return x
        from onnxscope.result import Capture

        if isinstance(x, Capture):
            return _CapturedSide(x)
        if isinstance(x, Model | str | os.PathLike):
            return cls(x, **config)
        raise InputError(
            f"cannot compare a {type(x).__name__}: give a path, an onnxscope.Model, a Capture or a Side "
            "(converters.side(...) for a torch or Keras model)"
        )

    # -- what subclasses provide ------------------------------------------------------------------------------
    def tensors(self) -> Collection[str] | None:
        """The tensors a run hands back (``None``: every tensor of the model)."""
        return None

    def inputs(self) -> list[str]:
        """The model's input names, in order."""
        g = self.model.ir.graph
        return [v.name or "" for v in g.inputs if v.name not in g.initializers]

    def run(self, feeds: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        """Run on ``feeds`` and hand back every tensor by capture name (a :class:`~onnxscope.Capture` for
        onnxruntime: tensors its fusions removed are recomputed when read)."""
        if self.engine == "reference":
            from onnxscope.evaluator import evaluator, run

            if self._session is None:
                self._session = evaluator(self.model.ir, None, self.folder)
            out = dict(feeds)
            out.update(run(self._session, dict(feeds)))
            return out
        if self._session is None:
            from onnxscope.session import CaptureSession

            self._session = CaptureSession(
                self.model, optimization=self.optimization, providers=self.providers, threads=self.threads
            )
        return self._session.run(feeds)

    def shapes(self, run: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
        """Shapes of the tensors of ``run`` that cost nothing to read (captured ones; not recomputed ones)."""
        storage = getattr(run, "storage", None)
        out = {}
        for k in run:
            if storage is not None and not storage.captured(k):
                continue
            out[k] = tuple(np.shape(run[k]))
        return out

    def cost(self, run: Mapping[str, np.ndarray], name: str) -> str:
        """What reading tensor ``name`` of ``run`` costs: ``"free"`` (the run produced it), ``"cheap"``
        (recomputed by nodes that weigh nothing — dequantizations, activations, reshapes) or ``"expensive"``
        (its recomputation re-runs a Conv, MatMul, Gemm… that onnxruntime's fusions removed from the run)."""
        storage = getattr(run, "storage", None)
        if storage is None or storage.captured(name):
            return "free"
        plan = getattr(self._session, "plan", None)
        recompute = getattr(plan, "recompute", None)
        if recompute is None or name not in recompute.part_of:
            return "cheap"
        return "expensive" if recompute.parts[recompute.part_of[name]].heavy else "cheap"

    def rerun(self, model: ir.Model, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run a sub-model of this side's nodes the way this side runs (same engine and configuration); the
        session is made once per sub-model."""
        key = id(model)
        if self.engine == "reference":
            from onnxscope.evaluator import evaluator, run

            sess = self._reruns.get(key)
            if sess is None:
                sess = self._reruns[key] = evaluator(
                    model, [v.name or "" for v in model.graph.outputs], self.folder
                )
            return run(sess, dict(feeds))
        from onnxscope.runtime import make_session, serialize, session_options

        sess = self._reruns.get(key)
        if sess is None:
            so = session_options(self.optimization, self.threads)
            sess = self._reruns[key] = make_session(serialize(model), self.folder, so, self.providers)
        names = [o.name for o in sess.get_outputs()]
        wanted = {i.name for i in sess.get_inputs()}
        values = sess.run(names, {k: v for k, v in feeds.items() if k in wanted})
        return dict(zip(names, values, strict=True))

    def close(self) -> None:
        """Release the engine's sessions."""
        if self._session is not None and hasattr(self._session, "close"):
            self._session.close()
        self._session = None
        self._reruns = {}

    def __repr__(self) -> str:
        return f"<onnxscope.Side {self.label}>"


class _CapturedSide(Side):
    """A capture already made: one run, whatever the inputs; sub-models re-run by onnxruntime at the capture's
    optimization level."""

    def __init__(self, capture: Any) -> None:
        if capture.model is None:
            raise UnsupportedError("this capture has no model attached; use load_capture(path, model=...)")
        super().__init__(capture.model, optimization=capture.provenance.optimization or "all")
        self.capture = capture
        self.label = f"{self.label.rsplit(' (', 1)[0]} (capture)"

    def run(self, feeds: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        for k, v in feeds.items():
            mine = self.capture.inputs.get(k)
            if mine is not None and (np.shape(mine) != np.shape(v) or not np.array_equal(mine, v)):
                raise InputError(
                    f"input {k!r} differs from the one this capture was made with; compare captures of the "
                    "same inputs, or give the model instead"
                )
        return self.capture

    def tensors(self) -> Collection[str] | None:
        return set(self.capture.provenance.meta)


def probe_nchwc_block() -> int | None:
    """The channel block onnxruntime's NCHWc kernels use on this machine (8 with AVX2, 16 with AVX-512), found
    once by letting onnxruntime optimize an 8-channel Conv and reading how far it padded the weight (``None`` if
    it did not use NCHWc); recorded in :data:`onnxscope.align.NCHWC_BLOCK`.

    Example:
        >>> probe_nchwc_block() in (None, 8, 16)
        True
    """
    from onnxscope import align as align_module

    if align_module.NCHWC_BLOCK is not None:
        return align_module.NCHWC_BLOCK
    import tempfile

    from onnxscope.runtime import make_session, serialize, session_options

    x = ir.Value(name="x", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([1, 8, 8, 8]))
    w = ir.Value(name="w", const_value=ir.tensor(np.ones((8, 8, 3, 3), np.float32), name="w"))
    w.type, w.shape = ir.TensorType(ir.DataType.FLOAT), ir.Shape([8, 8, 3, 3])
    conv = ir.Node("", "Conv", [x, w], attributes=[ir.AttrInt64s("pads", [1, 1, 1, 1])], num_outputs=1)
    conv.outputs[0].name = "y"
    conv.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
    graph = ir.Graph([x], conv.outputs, nodes=[conv], initializers=[w], opset_imports={"": 17})
    model = ir.Model(graph, ir_version=9)
    with tempfile.TemporaryDirectory(prefix="onnxscope-") as tmp:
        so = session_options("all", 1)
        so.optimized_model_filepath = f"{tmp}/probe.onnx"
        make_session(serialize(model), None, so, None)
        try:
            done = ir.load(f"{tmp}/probe.onnx")
        except Exception:  # pragma: no cover - onnxruntime always writes it
            return None
    block = None
    for node in done.graph:
        if node.domain == "com.microsoft.nchwc" and node.op_type == "Conv":
            weight = node.inputs[1]
            if weight is not None and weight.shape is not None:
                block = 16 if int(weight.shape[0]) == 16 else 8
    align_module.NCHWC_BLOCK = block
    return block
