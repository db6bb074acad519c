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

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxscope.errors import (
    CaptureError,
    InputError,
    MissingDependencyError,
    NotFoundError,
    UnsupportedError,
    closest,
)
from onnxscope.expose import Plan, Selection, TensorMeta, expose, is_qdq
from onnxscope.inputs import prepare_inputs
from onnxscope.model import Model, load
from onnxscope.neurons import _ELEMENTWISE, neuron
from onnxscope.report import save_npz
from onnxscope.weights import const_array, dequantize_linear

__all__ = ["Capture", "CaptureSession", "NeuronValues", "NodeValues", "capture", "load_capture"]

_META_KEY = "__onnxscope__"
_FORMAT = 1
_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


@dataclass(frozen=True)
class NodeValues:
    """A node's inputs and outputs by tensor name; ``None`` where a tensor was not captured."""

    node: str
    op: str
    inputs: dict[str, np.ndarray | None]
    outputs: dict[str, np.ndarray | None]


@dataclass(frozen=True)
class NeuronValues:
    """One neuron's values over a run: ``pre`` (the layer's output after its bias) and ``post`` (after the
    activation chain that follows it, or ``pre`` again when there is none), the neuron's axis removed."""

    layer: str
    index: int
    pre_tensor: str
    pre: np.ndarray
    post_tensor: str
    post: np.ndarray


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as e:
        raise MissingDependencyError("capture needs onnxruntime: pip install 'onnxscope[runtime]'") from e
    return onnxruntime


class Capture(Mapping[str, np.ndarray]):
    """Captured tensors of one run: a read-only mapping from tensor name to array, with helpers.

    Keys are ONNX tensor names for the top-level graph and ``node/attr/tensor`` paths inside If/Loop/Scan
    bodies; the model's inputs are included. Weights are not copied in: :meth:`node` reads them from the model.
    """

    def __init__(
        self,
        arrays: dict[str, np.ndarray],
        meta: dict[str, TensorMeta],
        inputs: list[str],
        outputs: list[str],
        nodes: dict[str, dict[str, Any]],
        skipped: dict[str, str],
        model: Model | None = None,
        model_path: str | None = None,
        constants: list[str] | None = None,
        derived: dict[str, tuple[str, Any, Any, int | None]] | None = None,
    ) -> None:
        self._arrays = arrays
        # QDQ: tensor → (captured int8 tensor, scale, zero point, axis), dequantized when read
        self._derived = {k: v for k, v in (derived or {}).items() if v[0] in arrays and k not in arrays}
        self._constants = [c for c in constants or [] if c not in arrays]
        self._meta = meta
        self._inputs = inputs
        self._outputs = outputs
        self._nodes = nodes
        self.skipped = dict(skipped)
        self._model = model
        self.model_path = model_path

    @property
    def derived(self) -> dict[str, str]:
        """Tensors not copied out of onnxruntime but dequantized here from a captured int8 tensor (QDQ models),
        each with the tensor it comes from."""
        return {k: v[0] for k, v in self._derived.items()}

    # -- mapping ---------------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self._arrays[name]
        except KeyError:
            if name in self._derived:
                src, scale, zero_point, axis = self._derived[name]
                return dequantize_linear(self._arrays[src], scale, zero_point, axis)
            if name in self._constants:
                return self._constant(name)
            if name in self.skipped:
                raise NotFoundError(f"tensor {name!r} was not captured: {self.skipped[name]}") from None
            raise NotFoundError(f"no captured tensor {name!r}; {closest(name, self._arrays)}") from None

    def __iter__(self) -> Iterator[str]:
        yield from self._arrays
        yield from self._derived
        yield from self._constants

    def __len__(self) -> int:
        return len(self._arrays) + len(self._derived) + len(self._constants)

    def __contains__(self, name: object) -> bool:
        return name in self._arrays or name in self._derived or name in self._constants

    def _constant(self, name: str) -> np.ndarray:
        """A tensor computed from weights alone, folded from the model's (memory-mapped) weights."""
        if self._model is None:
            raise NotFoundError(
                f"tensor {name!r} is computed from the model's weights alone; load_capture(path, model=...) "
                "to read it"
            )
        found = const_array(self._model.value(name))
        if found is None:  # pragma: no cover - expose() keeps only foldable tensors here
            raise NotFoundError(f"tensor {name!r} cannot be folded from the weights")
        return np.asarray(found[0])

    def __repr__(self) -> str:
        return f"<onnxscope.Capture: {len(self)} tensors, outputs {self._outputs}>"

    # -- helpers ---------------------------------------------------------------------------------------
    @property
    def outputs(self) -> dict[str, np.ndarray]:
        """The model's real outputs, in order."""
        return {k: self._arrays[k] for k in self._outputs}

    @property
    def inputs(self) -> dict[str, np.ndarray]:
        """The inputs the run was fed."""
        return {k: self._arrays[k] for k in self._inputs}

    def info(self, name: str) -> TensorMeta:
        """Where tensor ``name`` comes from: producing node and op, module path, enclosing bodies."""
        if name in self._meta:
            return self._meta[name]
        if name in self._inputs:
            return TensorMeta(name, name, None, None)
        raise NotFoundError(f"no captured tensor {name!r}; {closest(name, self._meta)}")

    def executed(self, name: str) -> bool | np.ndarray:
        """Whether ``name`` was computed: ``True`` outside If branches; inside them, from the captured
        conditions (an array over iterations when the If sits in a Loop/Scan)."""
        result: bool | np.ndarray = True
        for cond, branch in self.info(name).conditions:
            if cond not in self._arrays:
                raise NotFoundError(f"the condition {cond!r} of {name!r} was not captured; capture it too")
            value = np.asarray(self._arrays[cond]).astype(bool)
            k = self.info(cond).iteration_axes  # the condition is a one-element tensor per iteration
            value = value.reshape(value.shape[:k]) if k else value.reshape(-1)[0]
            result = np.logical_and(result, value == branch)
        return result if isinstance(result, np.ndarray) and result.ndim else bool(result)

    def _value(self, name: str | None) -> np.ndarray | None:
        if name is None:
            return None
        if name in self._arrays or name in self._derived:
            return self[name]
        if name in self._constants and self._model is not None:
            return self._constant(name)
        if self._model is not None and name in self._model.weights:
            return self._model.weights[name].numpy()
        return None

    def node(self, name: str) -> NodeValues:
        """A node's input and output arrays (initializers read lazily from the model, not copied)."""
        if name not in self._nodes:
            raise NotFoundError(f"no node {name!r}; {closest(name, self._nodes)}")
        n = self._nodes[name]
        return NodeValues(
            name,
            n["op"],
            {k: self._value(k) for k in n["inputs"] if k},
            {k: self._value(k) for k in n["outputs"] if k},
        )

    def neuron(self, layer: str, index: int) -> NeuronValues:
        """Pre- and post-activation values of unit ``index`` of ``layer`` (any name the neuron view takes)."""
        if self._model is None:
            raise UnsupportedError("this capture has no model attached; use load_capture(path, model=...)")
        n = neuron(self._model, layer, index)
        pre_name = n.output
        post_name = pre_name
        value = self._model.value(pre_name)
        while True:  # follow a single chain of element-wise ops (the activation, BatchNorm, Q/DQ…)
            uses = list(value.uses())
            if len(uses) != 1 or value.is_graph_output():
                break
            user, i = uses[0]
            if (
                user.op_type not in _ELEMENTWISE
                or user.op_type in ("Add", "Sub", "Mul", "Div", "Sum", "Max", "Min", "Mean", "Where", "Pow")
                or int(i) != 0
            ):
                break
            value = user.outputs[0]
            post_name = value.name or post_name
        pre, post = self[pre_name], self[post_name]
        return NeuronValues(
            n.layer,
            index,
            pre_name,
            np.take(pre, index, axis=n.axis),
            post_name,
            np.take(post, index, axis=n.axis),
        )

    def attention(self, block: Any) -> np.ndarray:
        """Attention probabilities of ``block`` (an :class:`~onnxscope.patterns.AttentionBlock` or its name) as
        ``[batch, heads, query, key]`` (with leading iteration axes if the block sits in a loop)."""
        from onnxscope.patterns import find_attention

        if isinstance(block, str):
            if self._model is None:
                raise UnsupportedError(
                    "this capture has no model attached; use load_capture(path, model=...)"
                )
            blocks = {b.name: b for b in find_attention(self._model)}
            if block not in blocks:
                raise NotFoundError(f"no attention block {block!r}; {closest(block, blocks)}")
            block = blocks[block]
        if block.probabilities is None:
            raise UnsupportedError(
                f"attention block {block.name!r} ({block.op}) does not expose its probabilities; maps come from "
                "decomposed softmax attention and from ONNX Attention (opset 23)"
            )
        a = self[block.probabilities]
        if a.ndim == 3 and block.heads:  # [batch*heads, query, key]
            a = a.reshape(-1, block.heads, *a.shape[1:])
        return a

    def stats(self, name: str) -> Any:
        """:class:`~onnxscope.stats.RunningStats` of one tensor of this run (per unit too), mergeable with others."""
        from onnxscope.stats import RunningStats, unit_axis_for

        a = np.asarray(self[name])
        return RunningStats.of(a, unit_axis_for(a.shape), self.info(name).op)

    def stats_table(self) -> list[dict[str, Any]]:
        """One row per tensor: name, op, shape, dtype, min/mean/max, NaN/Inf counts (as the CLI prints)."""
        rows = []
        for name in self:
            a = self[name]
            meta = self._meta.get(name)
            row: dict[str, Any] = {
                "tensor": name,
                "op": meta.op if meta else "input",
                "shape": list(a.shape),
                "dtype": str(a.dtype),
            }
            if a.dtype.kind in "biuf" and a.size:
                f = a.astype(np.float64, copy=False)
                finite = np.isfinite(f)
                ok = f[finite]
                row.update(
                    min=float(ok.min()) if ok.size else None,
                    mean=float(ok.mean()) if ok.size else None,
                    max=float(ok.max()) if ok.size else None,
                    nan=int(np.isnan(f).sum()),
                    inf=int(np.isinf(f).sum()),
                )
            else:
                row.update(min=None, mean=None, max=None, nan=0, inf=0)
            rows.append(row)
        return rows

    # -- persistence -------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> str:
        """Write every array and the metadata to one ``.npz`` (atomically; nothing pickled)."""
        meta = {
            "format": _FORMAT,
            "model": self.model_path,
            "inputs": self._inputs,
            "outputs": self._outputs,
            "tensors": {k: m.to_dict() for k, m in self._meta.items()},
            "nodes": self._nodes,
            "skipped": self.skipped,
            "keys": list(self._arrays),
            "constants": self._constants,  # folded from the model's weights when read, not stored
            "derived": self.derived,
        }
        stored = {**self._arrays, **{k: self[k] for k in self._derived}}  # dequantized ones written out
        meta["keys"] = list(stored)
        arrays = {f"t{i}": a for i, a in enumerate(stored.values())}
        arrays[_META_KEY] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        return save_npz(path, arrays)


def load_capture(
    path: str | os.PathLike[str], model: Model | str | os.PathLike[str] | None = None
) -> Capture:
    """Read a capture written by :meth:`Capture.save`; pass ``model`` to read weights and use ``.neuron``.

    Example:
        >>> import numpy as np, onnxscope, tempfile, os
        >>> from onnxscope.testing import mlp_model
        >>> cap = onnxscope.capture(onnxscope.Model(mlp_model()), {"x": np.ones((2, 3), np.float32)})
        >>> back = load_capture(cap.save(os.path.join(tempfile.mkdtemp(), "c.npz")))
        >>> bool(np.array_equal(back["y"], cap["y"])), back.info("h").op
        (True, 'Gemm')
    """
    from onnxscope.errors import ModelLoadError

    p = os.fspath(path)
    if not os.path.exists(p):
        raise ModelLoadError(f"{p}: no such capture file")
    try:
        with np.load(p, allow_pickle=False) as z:
            if _META_KEY not in z.files:
                raise ModelLoadError(f"{p}: not an onnxscope capture (no {_META_KEY} entry)")
            meta = json.loads(bytes(z[_META_KEY]).decode())
            arrays = {k: z[f"t{i}"] for i, k in enumerate(meta["keys"])}
    except (OSError, ValueError, KeyError) as e:
        raise ModelLoadError(f"{p}: not a readable onnxscope capture ({e})") from e
    if isinstance(model, (str, os.PathLike)):
        model = load(model)
    return Capture(
        arrays,
        {k: TensorMeta.from_dict(v) for k, v in meta["tensors"].items()},
        meta["inputs"],
        meta["outputs"],
        meta["nodes"],
        meta["skipped"],
        model,
        meta.get("model"),
        meta.get("constants", []),
    )


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
