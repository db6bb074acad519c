"""Run-time capture: every chosen tensor of one onnxruntime run, as one read-only :class:`Capture`.

Example:
    >>> import numpy as np, onnxscope
    >>> from onnxscope.testing import mlp_model
    >>> m = onnxscope.Model(mlp_model(in_features=3, hidden=4, out_features=2))
    >>> cap = onnxscope.capture(m, {"x": np.ones((1, 3), np.float32)})
    >>> sorted(cap), cap["h"].shape, list(cap.outputs)
    (['a', 'h', 'x', 'y'], (1, 4), ['y'])
    >>> bool((cap["a"] == np.maximum(cap["h"], 0)).all())
    True

Shapes: each array is what onnxruntime returned for that tensor, with one extra leading axis per enclosing
Loop/Scan (the iteration). ``capture.neuron(layer, i)`` slices the neuron's axis out of the layer's output.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from onnxscope.errors import CaptureError, InputError, MissingDependencyError
from onnxscope.expose import Plan, Selection, expose, is_qdq
from onnxscope.inputs import prepare_inputs
from onnxscope.model import Model, load
from onnxscope.result import Capture

__all__ = ["CaptureSession", "capture", "make_session", "session_options"]

_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as e:
        raise MissingDependencyError("capture needs onnxruntime: pip install 'onnxscope[runtime]'") from e
    return onnxruntime


def session_options(optimization: str = "basic", threads: int | None = None) -> Any:
    """onnxruntime ``SessionOptions`` at the given optimization level (disable/basic/extended/all)."""
    ort = _ort()
    if optimization not in _LEVELS:
        raise InputError(f"optimization {optimization!r}: choose one of {', '.join(_LEVELS)}")
    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[optimization])
    if threads is not None:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return so


def make_session(model_bytes: bytes, folder: str | None, so: Any, providers: list[str] | None) -> Any:
    """An onnxruntime session over serialized model bytes whose external data lives in ``folder``."""
    ort = _ort()
    available = ort.get_available_providers()
    providers = providers or ["CPUExecutionProvider"]
    for p in providers:
        if p not in available:
            raise InputError(f"requested provider {p!r} is not available; available: {', '.join(available)}")
    if folder:
        so.add_session_config_entry("session.model_external_initializers_file_folder_path", folder)
    try:
        return ort.InferenceSession(model_bytes, so, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types for load failures
        raise CaptureError(f"onnxruntime cannot load the model: {_first_line(e)}") from e


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _serialize(plan: Plan) -> bytes:
    return _serialize_model(plan.model)


class CaptureSession:
    """A rewritten model and its onnxruntime session, built once and run on many inputs.

    ``capture(model, inputs)`` is ``CaptureSession(model).run(inputs)``; keep a session to capture several
    inputs without planning and loading again.

    Example:
        >>> import numpy as np, onnxscope
        >>> from onnxscope.testing import mlp_model
        >>> s = CaptureSession(onnxscope.Model(mlp_model()), select="op:Relu")
        >>> [sorted(s.run({"x": np.full((1, 3), v, np.float32)})) for v in (0.0, 1.0)]
        [['a', 'x', 'y'], ['a', 'x', 'y']]
    """

    def __init__(
        self,
        model: Model | str | os.PathLike[str],
        select: Selection = None,
        exclude: Selection = None,
        providers: list[str] | None = None,
        *,
        optimization: str | None = None,
        threads: int | None = None,
        qdq: bool | None = None,
    ) -> None:
        self.model = model if isinstance(model, Model) else load(model)
        self._select, self._exclude = select, exclude
        # QDQ models keep onnxruntime's fused int8 kernels (which need the extended optimizations)
        self.qdq = is_qdq(self.model.ir) if qdq is None else qdq
        optimization = optimization or ("all" if self.qdq else "basic")
        self._providers, self._optimization, self._threads = providers, optimization, threads
        self._folder = os.path.dirname(os.path.abspath(self.model.path)) if self.model.path else None
        self._levels = ["all", "static", "none"]  # how much of the subgraph bodies is carried out
        self._failures: list[str] = []
        self._plain: Any = None
        self._open()

    def _open(self) -> None:
        while True:
            self.plan = expose(self.model, self._select, self._exclude, nested=self._levels[0], qdq=self.qdq)
            try:
                self._sess = make_session(
                    _serialize(self.plan), self._folder, self._options(), self._providers
                )
                break
            except CaptureError as e:
                if not self._downgrade(e):
                    raise
        self._names = [o.name for o in self._sess.get_outputs()]
        self._bound: _Binding | None = None  # outputs pre-bound into one buffer, for inputs of one signature
        self._low_precision = _rounds_differently(self.model, self._sess)
        self._unbindable: set[tuple[Any, ...]] = set()

    def _options(self) -> Any:
        return session_options(self._optimization, self._threads)

    def _run(self, feeds: dict[str, Any], copy: bool = True) -> list[Any]:
        """One onnxruntime run. After a first run has shown every output's shape for this input signature, the
        outputs are bound into one preallocated buffer (IO binding): onnxruntime writes them in place, and one
        copy hands them over — on graphs of many small tensors, per-output costs dominate otherwise."""
        key = _signature(feeds)
        bound = self._bound
        if bound is not None and bound.key == key:
            try:
                return bound.run(self._sess, feeds, copy)
            except Exception:  # an output whose shape depends on the data: run unbound from now on
                self._bound = None
                self._unbindable.add(key)
        results = self._sess.run(self._names, feeds)
        if key not in self._unbindable and len(self._names) >= _BIND_MIN_OUTPUTS:
            self._bound = _Binding.make(self._sess, self._names, results, key)
        return results

    def _downgrade(self, error: CaptureError) -> bool:
        """After onnxruntime refused the rewritten subgraphs, carry fewer of their tensors out."""
        if len(self._levels) == 1 or not any(m.scopes for m in self.plan.meta.values()):
            return False
        self._failures.append(str(error))
        self._levels.pop(0)
        return True

    def run(
        self,
        inputs: Mapping[str, np.ndarray] | None = None,
        *,
        random: bool = False,
        seed: int = 0,
        dims: Mapping[str, int] | None = None,
        reuse: bool = False,
    ) -> Capture:
        """Run once and return the :class:`Capture` (inputs are checked first, see :func:`capture`).

        With ``reuse``, the arrays may live in the session's own output buffer and are valid only until the next
        run: for a caller that writes them out at once (dataset capture), this saves a copy of every tensor.
        """
        feeds = prepare_inputs(self.model, inputs, random=random, seed=seed, dims=dims)
        while True:
            try:
                results = self._run(feeds, copy=not reuse)
                break
            except Exception as e:  # onnxruntime's run errors (shape mismatch inside, missing kernel…)
                error = CaptureError(f"onnxruntime failed to run {label_of(self.model)}: {_first_line(e)}")
                if not self._downgrade(error):
                    raise error from e
                self._open()
        plan = self.plan
        skipped = dict(plan.skipped)
        if self._failures:
            for name, why in skipped.items():
                if "subgraph" in why:
                    skipped[name] = f"{why} (with it: {self._failures[0]})"
        got: dict[str, np.ndarray] = {}
        for name, value in zip(self._names, results, strict=True):
            cname = plan.outputs.get(name, name)
            if isinstance(value, np.ndarray):
                got[cname] = value
            else:
                skipped[cname] = f"onnxruntime returned a {type(value).__name__}, not a tensor"
        fed = {k: v for k, v in feeds.items() if isinstance(v, np.ndarray)}
        order = [k for k in plan.meta if k in got] + [k for k in got if k not in plan.meta]  # graph order
        arrays = {**fed, **{k: got[k] for k in order}}
        if len(self._names) > len(plan.real_outputs) and self._low_precision:
            # onnxruntime's CPU kernels run float16 graphs in float32 between ops; an intermediate marked as an
            # output is rounded to float16, which changes what follows. The real outputs come from a plain run.
            if self._plain is None:
                self._plain = make_session(
                    _serialize_model(self.model.ir), self._folder, self._options(), self._providers
                )
            for name, value in zip(plan.real_outputs, self._plain.run(plan.real_outputs, feeds), strict=True):
                if isinstance(value, np.ndarray):
                    arrays[name] = value
        meta = {k: m for k, m in plan.meta.items() if k in arrays or k in plan.constants or k in plan.derived}
        return Capture(
            arrays,
            meta,
            list(fed),
            plan.real_outputs,
            plan.nodes,
            skipped,
            self.model,
            self.model.path,
            plan.constants,
            plan.derived,
        )


def capture(
    model: Model | str | os.PathLike[str],
    inputs: Mapping[str, np.ndarray] | None = None,
    select: Selection = None,
    exclude: Selection = None,
    providers: list[str] | None = None,
    *,
    random: bool = False,
    seed: int = 0,
    dims: Mapping[str, int] | None = None,
    optimization: str | None = None,
    threads: int | None = None,
    qdq: bool | None = None,
) -> Capture:
    """Run the model once with onnxruntime and capture the chosen tensors (default: every tensor).

    Parameters:
        model: a :class:`Model` or a path.
        inputs: arrays by input name; missing ones are generated when ``random`` (with ``seed`` and ``dims``).
        select, exclude: what to capture (see :func:`onnxscope.expose.expose`: names, globs, ``re:``, ``op:``,
            ``node:``, ``module:`` or a predicate).
        providers: onnxruntime execution providers (default CPU).
        optimization: onnxruntime graph optimization level; ``"basic"`` (the default for float models) keeps
            every captured tensor and gives outputs bit-identical to a plain run at that level.
        threads: ``intra_op_num_threads`` (``None``: onnxruntime's default).
        qdq: for QDQ-quantized models (detected when ``None``): keep onnxruntime's fused int8 kernels (level
            ``"all"``) by capturing QuantizeLinear outputs and dequantizing them here; the float tensors that only a
            fused kernel sees are listed in :attr:`Capture.skipped`, the dequantized ones in
            :attr:`Capture.derived`.

    If onnxruntime refuses the rewritten If/Loop/Scan bodies (e.g. a body tensor whose shape changes between
    iterations cannot be stacked), the capture retries carrying out fewer body tensors and says why the others
    are missing in :attr:`Capture.skipped`.

    Raises:
        InputError: wrong input name/rank/shape/dtype, or a bad selection (before onnxruntime runs).
        NotFoundError: a selected tensor name that does not exist.
        CaptureError: onnxruntime cannot load or run the model.

    Example:
        >>> import numpy as np, onnxscope
        >>> from onnxscope.testing import mlp_model
        >>> cap = capture(onnxscope.Model(mlp_model()), random=True, dims={"batch": 2}, select="op:Relu")
        >>> sorted(cap)
        ['a', 'x', 'y']
    """
    session = CaptureSession(
        model, select, exclude, providers, optimization=optimization, threads=threads, qdq=qdq
    )
    return session.run(inputs, random=random, seed=seed, dims=dims)


def _rounds_differently(model: Model, sess: Any) -> bool:
    if "CPUExecutionProvider" not in sess.get_providers():
        return False
    low = {"FLOAT16", "BFLOAT16"}
    values = (*model.ir.graph.inputs, *model.ir.graph.outputs, *model.ir.graph.initializers.values())
    return any(v.dtype is not None and v.dtype.name in low for v in values)


def _serialize_model(model: Any) -> bytes:
    import onnx_ir as ir

    return ir.to_proto(model).SerializeToString()


_BIND_MIN_OUTPUTS = 64


def _signature(feeds: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(
        (k, getattr(v, "shape", None), str(getattr(v, "dtype", type(v)))) for k, v in sorted(feeds.items())
    )


class _Binding:
    """Every output bound into one buffer per element type, at the shapes a first run produced."""

    def __init__(
        self,
        key: tuple[Any, ...],
        binding: Any,
        arenas: dict[Any, np.ndarray],
        layout: list[tuple[Any, int, int, tuple[int, ...]]],
    ) -> None:
        self.key, self.binding, self.arenas, self.layout = key, binding, arenas, layout

    @classmethod
    def make(cls, sess: Any, names: list[str], results: list[Any], key: tuple[Any, ...]) -> _Binding | None:
        if not all(isinstance(r, np.ndarray) and r.dtype.kind in "biuf" for r in results):
            return None
        sizes: dict[Any, int] = {}
        layout = []
        for r in results:
            dt = np.dtype(r.dtype.str)
            start = sizes.get(dt, 0)
            layout.append((dt, start, start + r.size, r.shape))
            sizes[dt] = start + r.size
        arenas = {dt: np.empty(max(n, 1), dt) for dt, n in sizes.items()}
        binding = sess.io_binding()
        for name, (dt, start, end, shape) in zip(names, layout, strict=True):
            binding.bind_output(name, "cpu", 0, dt, list(shape), arenas[dt][start:end].ctypes.data)
        return cls(key, binding, arenas, layout)

    def run(self, sess: Any, feeds: dict[str, Any], copy: bool = True) -> list[np.ndarray]:
        held = {name: np.ascontiguousarray(value) for name, value in feeds.items()}  # alive through the run
        for name, value in held.items():
            self.binding.bind_cpu_input(name, value)
        sess.run_with_iobinding(self.binding)
        del held
        # the capture owns its arrays (one copy), unless the caller consumes them before the next run
        owned = {dt: a.copy() for dt, a in self.arenas.items()} if copy else self.arenas
        return [owned[dt][start:end].reshape(shape) for dt, start, end, shape in self.layout]


def label_of(model: Model) -> str:
    """How errors name a model: its path, or ``the model``."""
    return repr(model.path) if model.path else "the model"
