"""Run-time capture at the deployed speed: :class:`CaptureSession` and :func:`capture`.

The model runs at onnxruntime's full optimization level (``"all"``, what a deployed session uses; any level can be
named). What survives onnxruntime's optimizations is captured from that run; the tensors its fusions removed are
recomputed on first read by the original nodes, from the captured tensors that feed them; tensors computed from
the weights alone are folded from the weights on read (see :mod:`onnxscope.expose`).

Outputs are bound to preallocated buffers (onnxruntime's IO binding) once a first run has shown their shapes, so
onnxruntime writes them in place and nothing is copied: a capture's arrays are views into the buffer of its run,
and a buffer is reused only when no capture or array of an earlier run still refers to it (the session keeps a
small pool and rotates through it). The first run's own arrays become the first buffer, so a loop that lets each
capture go before the next run holds the captured bytes once, not twice.

Example:
    >>> import numpy as np, onnxscope
    >>> from onnxscope.testing import mlp_model
    >>> with onnxscope.CaptureSession(onnxscope.Model(mlp_model())) as s:
    ...     cap = s.run({"x": np.ones((1, 3), np.float32)})
    ...     sorted(cap), cap.info("a").source, cap.info("h").source  # Gemm+Relu fused: h is recomputed
    (['a', 'h', 'x', 'y'], 'captured', 'recomputed')
"""

from __future__ import annotations

import os
import sys
from collections.abc import Collection, Iterator, Mapping
from typing import Any

import numpy as np

from onnxscope.errors import CaptureError, InputError, NotFoundError
from onnxscope.expose import Plan, Selection, TensorMeta, expose
from onnxscope.inputs import prepare_inputs, resolve_dims
from onnxscope.model import Model, load
from onnxscope.result import Capture, Provenance, Storage
from onnxscope.runtime import (
    first_line,
    make_session,
    serialize,
    session_options,
    survivors,
)

__all__ = ["CaptureSession", "capture"]

_BIND_MIN_OUTPUTS = 1  # bound runs hand arrays over without a Python object per output
_POOL = 2  # free output buffers kept per input signature
_ADOPT_MAX_OUTPUTS = 1024  # an unbound run's arrays become buffers only up to this many outputs


def label_of(model: Model) -> str:
    """How errors name a model: its path, or ``the model``."""
    return repr(model.path) if model.path else "the model"


def _signature(feeds: Mapping[str, Any]) -> tuple[Any, ...]:
    """Names, shapes and dtypes of the inputs (by name, whatever order the caller's mapping has): a run with the
    signature of the last validated one needs no validation, and its outputs fit the buffers bound for it."""
    return tuple(
        (k, v.shape, v.dtype) if isinstance(v, np.ndarray) else (k, None, type(v))
        for k, v in sorted(feeds.items(), key=lambda kv: kv[0])
    )


class _RuntimeFailure(Exception):
    """What onnxruntime raised during a run (kept apart from errors of onnxscope's own code)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class _Layout:
    """Where each output lives in the per-dtype buffers of one input signature."""

    def __init__(self, names: list[str], cnames: list[str], results: list[Any]) -> None:
        sizes: dict[np.dtype, int] = {}
        self.slots: list[tuple[np.dtype, int, int, tuple[int, ...]]] = []
        for r in results:
            dt = np.dtype(r.dtype.str)
            start = sizes.get(dt, 0)
            self.slots.append((dt, start, start + r.size, r.shape))
            sizes[dt] = start + r.size
        self.sizes = sizes
        self.names = names
        self.index = {c: i for i, c in enumerate(cnames)}


class _Buffers:
    """One set of preallocated output buffers with the IO binding that writes into them."""

    def __init__(self, sess: Any, layout: _Layout, adopt: list[np.ndarray] | None = None) -> None:
        self.binding = sess.io_binding()
        if adopt is not None:  # the arrays of an unbound run, one per output, become this set's buffers
            self.arenas = tuple(adopt)
            self.slots = [(i, -1, -1, a.shape) for i, a in enumerate(adopt)]  # -1: the whole array
            for name, a in zip(layout.names, adopt, strict=True):
                self.binding.bind_output(name, "cpu", 0, a.dtype, list(a.shape), a.ctypes.data)
            # onnxruntime's arrays hold their memory through a capsule (their base): a view taken of one refers to
            # the capsule, a capture to the array. Free: each array referred to by this object's two tuples only,
            # each capsule by its array and ``_owners`` only
            self._owners = self.arenas + tuple(a.base for a in adopt)
            alone = _refs((np.empty(0),))[0]  # an object one tuple refers to
            self._free = [alone + 1] * len(self._owners)
            return
        self.arenas = tuple(np.empty(max(n, 1), dt) for dt, n in layout.sizes.items())
        self._owners = self.arenas
        where = {dt: i for i, dt in enumerate(layout.sizes)}
        self.slots = [(where[dt], start, end, shape) for dt, start, end, shape in layout.slots]
        for name, (dt, start, end, shape) in zip(layout.names, layout.slots, strict=True):
            ptr = self.arenas[where[dt]][start:end].ctypes.data
            self.binding.bind_output(name, "cpu", 0, dt, list(shape), ptr)
        self._free = _refs(self.arenas)  # nothing but this object refers to them now

    @staticmethod
    def adoptable(results: list[Any]) -> bool:
        """Whether an unbound run's arrays can be bound as buffers: each holds onnxruntime's memory through a
        capsule of its own, writable and contiguous; and few enough that checking two reference counts per output
        on every run costs nothing next to the run (many-output graphs are small ones: nothing to save there)."""
        return len(results) <= _ADOPT_MAX_OUTPUTS and all(
            isinstance(r, np.ndarray)
            and r.size > 0
            and not r.flags.owndata
            and r.base is not None
            and not isinstance(r.base, np.ndarray)  # memory owned by onnxruntime, through one capsule
            and sys.getrefcount(r.base) == 2  # r.base, the argument: nothing else holds it
            and r.flags.c_contiguous
            and r.flags.writeable
            for r in results
        )

    def busy(self) -> bool:
        """Whether a capture, or an array taken from one, still refers to these buffers."""
        return _refs(self._owners) != self._free


def _refs(arrays: tuple[np.ndarray, ...]) -> list[int]:
    """Reference counts of ``arrays`` (a view of an array refers to it, so a count above the free one means some
    capture or some array taken from one still uses the buffer)."""
    return [sys.getrefcount(a) for a in arrays]


class _Views(Mapping[str, np.ndarray]):
    """Capture name → a view into the run's buffers, made on first access (nothing is copied)."""

    def __init__(self, layout: _Layout, buffers: _Buffers, fed: dict[str, np.ndarray]) -> None:
        self._index = layout.index
        self._slots = buffers.slots
        self._arenas = list(buffers.arenas)  # own references: the buffers stay busy while this capture lives
        self._fed = fed  # inputs, and outputs written into the caller's own arrays (``out``)

    def __getitem__(self, name: str) -> np.ndarray:
        if name in self._fed:
            return self._fed[name]
        i, start, end, shape = self._slots[self._index[name]]
        return self._arenas[i] if start < 0 else self._arenas[i][start:end].reshape(shape)

    def get(self, name: str, default: Any = None) -> Any:
        if name in self._fed:
            return self._fed[name]
        i = self._index.get(name)
        if i is None:
            return default
        a, start, end, shape = self._slots[i]
        return self._arenas[a] if start < 0 else self._arenas[a][start:end].reshape(shape)

    def __contains__(self, name: object) -> bool:
        return name in self._index or name in self._fed

    def __iter__(self) -> Iterator[str]:
        yield from self._fed
        yield from self._index

    def __len__(self) -> int:
        return len(self._index) + len(self._fed)


_COMBINED_SESSIONS = 4  # sessions kept for sets of tensors recomputed together (the oldest goes first)


class _Recomputer:
    """Runs the sub-models of a plan's recomputation, each in an onnxruntime session made on first use."""

    def __init__(self, session: CaptureSession) -> None:
        self.model = session.model
        self.plan = session.plan.recompute
        self.folder = session._folder
        self.options = (session.optimization, session.threads, session.providers)
        self.sessions: dict[Any, Any] = {}  # by part index, or the parts run together

    def _feed(self, name: str, get: Any) -> np.ndarray:
        try:
            return get(name)
        except KeyError:  # an input with a default (an initializer of the same name) the run was not fed
            if name in self.model.ir.graph.initializers and name in self.model.weights:
                return self.model.weights[name].numpy()
            raise

    def compute_all(self, get: Any, names: Collection[str] | None = None) -> dict[str, np.ndarray]:
        """Every unconditional recomputation of the main graph (or those yielding ``names``) in one run (one
        session: cheaper than one per part when all are wanted, as when a capture is saved or compared)."""
        assert self.plan is not None
        if names is not None:
            names = [n for n in names if n in self.plan.part_of]
        part = self.plan.combined(self.model, names)
        if part is None:
            return {}
        key = -1 if names is None else ("combined", frozenset(names))  # its outputs are exactly ``names``
        combined = [k for k in self.sessions if isinstance(k, tuple)]
        if (
            key not in self.sessions and len(combined) >= _COMBINED_SESSIONS
        ):  # callers asking for ever new sets
            del self.sessions[combined[0]]
        return self._run_part(key, part, part.outputs[0], get)

    def compute(self, name: str, get: Any) -> dict[str, np.ndarray]:
        assert self.plan is not None
        i = self.plan.part_of[name]
        part = self.plan.parts[i]
        return self._run_part(i, part, name, get)

    def _run_part(self, i: Any, part: Any, name: str, get: Any) -> dict[str, np.ndarray]:
        for cond, branch in part.conditions:  # outermost first: a branch that did not run computed nothing
            try:
                value = np.asarray(get(cond))
            except NotFoundError:
                value = np.zeros(0)
            if value.size == 0 or bool(value.reshape(-1)[0]) != branch:
                raise NotFoundError(
                    f"tensor {name!r} was not computed in this run: its If branch did not run"
                )
        feeds = {f: np.ascontiguousarray(self._feed(f, get)) for f in part.feeds}
        sess = self.sessions.get(
            i
        )  # made on first use: a capture whose recomputed tensors are never read pays nothing
        if sess is None:
            optimization, threads, providers = self.options
            so = session_options(optimization, threads)
            sub = part.model(self.model, {k: v.dtype for k, v in feeds.items()})
            sess = make_session(serialize(sub), self.folder, so, providers)
            self.sessions[i] = sess
        try:
            results = sess.run(part.outputs, feeds)
        except Exception as e:  # only onnxruntime runs in this block
            raise CaptureError(
                f"onnxruntime failed to recompute {name!r} from the captured tensors: {first_line(e)}"
            ) from e
        out = {k: r for k, r in zip(part.outputs, results, strict=True) if isinstance(r, np.ndarray)}
        if name not in out:
            from onnxscope.errors import UnsupportedError

            raise UnsupportedError(
                f"tensor {name!r} is a sequence or optional, not a tensor; captures hold tensors"
            )
        return out


def _markable(model: Model) -> set[str]:
    """The main graph's tensors that can be marked as outputs without changing a QDQ layer's kernels: all but the
    float tensors between a DequantizeLinear and the next QuantizeLinear (marked, they would have onnxruntime run
    the layer in float instead of its int8 kernel)."""
    names: set[str] = set()
    inside: set[str] = set()  # the float tensors of quantized layers
    for node in model.ir.graph:  # in topological order
        outs = {v.name for v in node.outputs if v.name}
        names |= outs
        if node.op_type == "DequantizeLinear" or (
            node.op_type != "QuantizeLinear" and any(v is not None and v.name in inside for v in node.inputs)
        ):
            inside |= outs
    return names - inside


class CaptureSession:
    """A planned capture of one model and its onnxruntime session, built once and run on many inputs.

    ``capture(model, inputs)`` is ``CaptureSession(model).run(inputs)``; keep a session (``with
    CaptureSession(m) as s: …``) to capture several inputs without planning and loading again. ``close()``
    releases onnxruntime's sessions and the output buffers; captures already returned stay readable.

    Parameters:
        model: a :class:`Model` or a path.
        select, exclude: what to capture (see :func:`capture`).
        providers: onnxruntime execution providers (default CPU).
        optimization: onnxruntime's graph optimization level: ``"all"`` (the default, what a deployed session
            runs), ``"extended"``, ``"basic"`` or ``"disable"`` (every tensor computed by its own node).
        threads: ``intra_op_num_threads`` (``None``: onnxruntime's default).
        recompute: ``True`` (the default): the run keeps the fusions of ``optimization`` and the tensors they
            remove are recomputed when read. ``False``: those tensors are marked as outputs instead, and
            onnxruntime leaves out the fusions that would remove them (the run is slower, reading costs nothing)
            — the better choice when every tensor of every run is read, as a dataset capture does. The values
            are then onnxruntime's without those fusions (equal to the fused ones within float rounding, and so
            are the tensors after them). QDQ layers keep their int8 kernels either way (their float tensors,
            from a DequantizeLinear to the next QuantizeLinear, stay recomputed); a ``quantize_dynamic`` model's
            fused DynamicQuantizeMatMul comes apart into its ops (the same values, more time).

    Example:
        >>> import numpy as np, onnxscope
        >>> from onnxscope.testing import mlp_model
        >>> s = CaptureSession(onnxscope.Model(mlp_model()), select="op:Relu")
        >>> [sorted(s.run({"x": np.full((1, 3), v, np.float32)})) for v in (0.0, 1.0)]
        [['a', 'x', 'y'], ['a', 'x', 'y']]
        >>> s.close()
    """

    def __init__(
        self,
        model: Model | str | os.PathLike[str],
        select: Selection = None,
        exclude: Selection = None,
        providers: list[str] | None = None,
        *,
        optimization: str = "all",
        threads: int | None = None,
        recompute: bool = True,
    ) -> None:
        self.model = model if isinstance(model, Model) else load(model)
        self.providers, self.optimization, self.threads = providers, optimization, threads
        if not isinstance(recompute, bool):
            raise InputError(f"recompute {recompute!r}: choose True or False")
        self.recompute = recompute
        self._select, self._exclude = select, exclude
        self._folder = os.path.dirname(os.path.abspath(self.model.path)) if self.model.path else None
        self._levels = ["all", "static", "none"]  # how much of the subgraph bodies is carried out
        self._failures: list[str] = []
        self._sess: Any = None
        self._open()

    # -- lifetime --------------------------------------------------------------------------------------
    def __enter__(self) -> CaptureSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release onnxruntime's sessions and the output buffers (captures already returned stay readable)."""
        self._sess = None
        self._pool: dict[tuple[Any, ...], tuple[_Layout, list[_Buffers]]] = {}
        self._recomputer = None

    def _survivors(self) -> set[str] | None:
        if not self.recompute and self.optimization != "disable":
            if not any(node.op_type == "DequantizeLinear" for node in self.model.ir.graph):
                return None  # every tensor is marked (no quantized layer to keep): nothing to ask onnxruntime
        cache = self.model.__dict__.setdefault("_survivors", {})  # analysis kept beside the model
        key = (self.optimization, tuple(self.providers or ()))
        if key not in cache:
            cache[key] = survivors(
                self.model.ir, self._folder, self.optimization, self.providers, self.threads
            )
        found: set[str] | None = cache[key]
        if found is None or self.recompute:
            return found
        return found | _markable(self.model)

    def _loops_within_budget(self) -> None:
        """Refuse a Loop whose constant trip count would make its per-iteration outputs (the model's scan outputs
        and the body tensors capture carries out) exceed the memory budget — before onnxruntime tries."""
        from onnxscope.limits import check_alloc
        from onnxscope.weights import const_array

        for e in self.model.entries:
            node = e.node
            if node.op_type != "Loop" or not node.inputs or node.inputs[0] is None:
                continue
            found = const_array(node.inputs[0])
            if found is None or np.asarray(found[0]).size != 1:
                continue
            trips = int(np.asarray(found[0]).reshape(-1)[0])
            if trips <= 0:
                continue
            carried = max(len(node.inputs) - 2, 0)
            per_iteration = max(len(node.outputs) - carried, 0)
            per_iteration += sum(
                1 for m in self.plan.meta.values() if m.scopes and m.scopes[-1].node == e.path
            )
            if per_iteration:
                check_alloc(
                    trips * per_iteration * 4,
                    f"Loop {e.path!r}: {trips} iterations of {per_iteration} outputs",
                )

    def _open(self) -> None:
        session_options(self.optimization)  # refuse an unknown level before any work
        kept = self._survivors()
        while True:
            self.plan = expose(
                self.model, self._select, self._exclude, survivors=kept, nested=self._levels[0]
            )
            try:
                so = session_options(self.optimization, self.threads)
                data = self.plan.serialize(self.model)
                self.plan.model = (
                    None  # the rewritten clone is not needed once written: free it before loading
                )
                self._sess = make_session(data, self._folder, so, self.providers)
                del data
                break
            except CaptureError as e:
                if not self._downgrade(e):
                    raise
        plan = self.plan
        self._loops_within_budget()
        self._names = [o.name for o in self._sess.get_outputs()]
        self._cnames = [plan.outputs.get(n, n) for n in self._names]
        self._pool = {}
        self._unbindable: set[tuple[Any, ...]] = set()
        self._recomputer: _Recomputer | None = _Recomputer(self) if plan.recompute else None
        self._lazy = {k: m.source for k, m in plan.meta.items() if m.source in ("recomputed", "folded")}
        self._conditions = {k: plan.meta[k].conditions for k in self._lazy if plan.meta[k].conditions}
        self._hidden = frozenset(plan.hidden)
        self._checked: tuple[Any, ...] | None = None  # the input signature validated last
        self._provenance: dict[tuple[str, ...], Provenance] = {}

    def _downgrade(self, error: CaptureError) -> bool:
        """After onnxruntime refused the rewritten subgraphs, carry fewer of their tensors out."""
        if len(self._levels) == 1 or not any(m.scopes for m in self.plan.meta.values()):
            return False
        self._failures.append(str(error))
        self._levels.pop(0)
        return True

    # -- running ---------------------------------------------------------------------------------------
    def _feeds(
        self, inputs: Mapping[str, Any] | None, random: bool, seed: int, dims: Mapping[str, int] | None
    ) -> dict[str, Any]:
        if inputs is not None and not random and not dims and self._checked is not None:
            if _signature(inputs) == self._checked:  # the same names, shapes and dtypes as last time
                return inputs  # type: ignore[return-value]
        feeds = prepare_inputs(self.model, inputs, random=random, seed=seed, dims=dims)
        self._checked = _signature(feeds)
        return feeds

    def _run(
        self, feeds: dict[str, Any], out: Mapping[str, np.ndarray] | None = None
    ) -> Mapping[str, np.ndarray]:
        """One onnxruntime run; raises :class:`_RuntimeFailure` for what onnxruntime itself raised."""
        key = self._checked
        fed = {k: v for k, v in feeds.items() if isinstance(v, np.ndarray)}
        entry = self._pool.get(key) if key is not None else None
        if entry is not None:
            layout, free = entry
            buffers = next((b for b in free if not b.busy()), None)
            if buffers is None:
                buffers = _Buffers(self._sess, layout)
                free.append(buffers)
            held = {n: v if v.flags.c_contiguous else np.ascontiguousarray(v) for n, v in fed.items()}
            for name, value in held.items():
                buffers.binding.bind_cpu_input(name, value)
            placed = self._place(layout, buffers, out) if out else {}
            try:
                self._sess.run_with_iobinding(buffers.binding)
            except Exception:  # an output whose shape depends on the data: run unbound from now on
                del self._pool[key]
                self._unbindable.add(key)
            else:
                if len(free) > _POOL:  # keep a few free buffers, not every one a caller ever held
                    free[:] = [b for b in free if b.busy() or b is buffers][-_POOL - 1 :]
                return _Views(layout, buffers, {**held, **placed})
            finally:
                self._unplace(layout, buffers, placed)
        try:
            results = self._sess.run(self._names, feeds)
        except Exception as e:
            raise _RuntimeFailure(e) from e
        bindable = all(isinstance(r, np.ndarray) and r.dtype.kind in "biuf" for r in results)
        if (
            key is not None
            and key not in self._unbindable
            and len(self._names) >= _BIND_MIN_OUTPUTS
            and bindable
        ):
            layout = _Layout(self._names, self._cnames, results)
            # this run's own arrays serve as the first set of buffers: once its capture is released, the next
            # run writes into the memory this one took, instead of taking as much again
            first = [_Buffers(self._sess, layout, results)] if _Buffers.adoptable(results) else []
            self._pool[key] = (layout, first)
        arrays = {c: r for c, r in zip(self._cnames, results, strict=True) if isinstance(r, np.ndarray)}
        arrays.update(fed)  # sequences and optionals onnxruntime returns are not tensors: listed as skipped
        return arrays

    @staticmethod
    def _place(layout: _Layout, buffers: _Buffers, out: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Bind outputs to the caller's arrays where they fit (C-contiguous, the dtype and shape of the run)."""
        placed = {}
        for cname, arr in out.items():
            i = layout.index.get(cname)
            if (
                i is None
                or not isinstance(arr, np.ndarray)
                or not arr.flags.c_contiguous
                or not arr.flags.writeable
            ):
                continue
            dt, _, _, shape = layout.slots[i]
            if arr.dtype != dt or arr.shape != tuple(shape):
                continue
            buffers.binding.bind_output(layout.names[i], "cpu", 0, dt, list(shape), arr.ctypes.data)
            placed[cname] = arr
        return placed

    @staticmethod
    def _unplace(layout: _Layout, buffers: _Buffers, placed: Mapping[str, np.ndarray]) -> None:
        for cname in placed:  # back to the session's own buffer for the next run
            i = layout.index[cname]
            a, start, end, shape = buffers.slots[i]
            ptr = buffers.arenas[a].ctypes.data if start < 0 else buffers.arenas[a][start:end].ctypes.data
            buffers.binding.bind_output(layout.names[i], "cpu", 0, layout.slots[i][0], list(shape), ptr)

    def run(
        self,
        inputs: Mapping[str, np.ndarray] | None = None,
        *,
        random: bool = False,
        seed: int = 0,
        dims: Mapping[str, int] | None = None,
        out: Mapping[str, np.ndarray] | None = None,
    ) -> Capture:
        """Run once and return the :class:`Capture` (inputs are checked first, see :func:`capture`).

        The arrays are views into the buffers onnxruntime wrote (nothing is copied); a buffer is written again
        only once no capture or array of this run refers to it any more. ``out`` maps tensor names to arrays of
        the caller's (C-contiguous, writable) that onnxruntime writes those outputs into directly, when they have
        the dtype and shape of the run and the outputs are bound (from the second run of an input signature on);
        ``np.shares_memory(cap[name], out[name])`` tells whether it did.
        """
        if self._sess is None:
            from onnxscope.errors import UnsupportedError

            raise UnsupportedError(
                f"this capture session of {label_of(self.model)} is closed; open a new one"
            )
        feeds = self._feeds(inputs, random, seed, dims)
        while True:
            try:
                arrays = self._run(feeds, out)
                break
            except _RuntimeFailure as failure:
                e = failure.error
                plain = self._plain_failure(feeds)
                if plain is not None:  # the model itself fails on these inputs: nothing to do with capture
                    hint = ""
                    if random:
                        sizes = resolve_dims(self.model, inputs, dims)
                        hint = (
                            " (random inputs with "
                            + ", ".join(f"{k}={v}" for k, v in sizes.items())
                            + "; set sizes with --dim, or pass real inputs)"
                        )
                    raise CaptureError(
                        f"onnxruntime cannot run {label_of(self.model)} on these inputs (the model itself fails, "
                        f"not the capture){hint}: {first_line(plain)}"
                    ) from e
                error = CaptureError(f"onnxruntime failed to run {label_of(self.model)}: {first_line(e)}")
                if not self._downgrade(error):
                    raise error from e
                self._open()
                self._checked = _signature(feeds)
        fed = tuple(k for k, v in feeds.items() if isinstance(v, np.ndarray))
        provenance = self._provenance.get(fed)
        if provenance is None:
            provenance = self._provenance[fed] = self._describe(fed, arrays)
        storage = Storage(
            arrays=arrays,
            lazy=self._lazy,
            hidden=self._hidden,
            order=tuple(provenance.meta),
            recomputer=self._recomputer,
            model=self.model,
            conditions=self._conditions,
        )
        return Capture(storage=storage, provenance=provenance, model=self.model)

    def _plain_failure(self, feeds: dict[str, Any]) -> Exception | None:
        """What onnxruntime raises running the unchanged model on ``feeds`` (``None`` if it runs)."""
        so = session_options(self.optimization, self.threads)
        try:
            plain = make_session(serialize(self.model.ir), self._folder, so, self.providers)
        except CaptureError as e:
            return e
        try:
            plain.run(None, feeds)
        except Exception as e:  # only onnxruntime runs here
            return e
        return None

    def _describe(self, fed: tuple[str, ...], arrays: Mapping[str, Any]) -> Provenance:
        plan: Plan = self.plan
        skipped = dict(plan.skipped)
        if self._failures:
            for name, why in skipped.items():
                if "subgraph" in why:
                    skipped[name] = f"{why} (with it: {self._failures[0]})"
        meta = {k: TensorMeta(k, k, None, None, source="input") for k in fed}
        for k, m in plan.meta.items():
            if m.source != "captured" or k in arrays:
                meta.setdefault(k, m)
        for k in plan.meta:
            if k not in meta and k not in skipped:
                skipped[k] = "onnxruntime returned a sequence or optional, not a tensor"
        return Provenance(
            meta=meta,
            inputs=fed,
            outputs=tuple(plan.real_outputs),
            nodes=plan.nodes,
            skipped=skipped,
            model_path=self.model.path,
            optimization=self.optimization,
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
    optimization: str = "all",
    threads: int | None = None,
) -> Capture:
    """Run the model once with onnxruntime and capture the chosen tensors (default: every tensor).

    Parameters:
        model: a :class:`Model` or a path.
        inputs: arrays by input name; missing ones are generated when ``random`` (with ``seed`` and ``dims``).
        select, exclude: what to capture — a tensor name, a glob (``"layer1.*"``), ``"re:REGEX"``, ``"op:Conv"``,
            ``"node:NAME"``, ``"module:encoder.layer.0"``, a list of those, or a predicate on
            :class:`~onnxscope.expose.TensorMeta`. A selected tensor of an If branch brings the If conditions
            that say whether it ran.
        providers: onnxruntime execution providers (default CPU).
        optimization: onnxruntime's graph optimization level, ``"all"`` by default (the deployed session's):
            what its optimizations keep is captured from the run, what they remove is recomputed on read from the
            captured tensors (``cap.info(name).source`` says which).
        threads: ``intra_op_num_threads`` (``None``: onnxruntime's default).

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
    session = CaptureSession(model, select, exclude, providers, optimization=optimization, threads=threads)
    return session.run(inputs, random=random, seed=seed, dims=dims)
