"""The result of a run: :class:`Capture`, a read-only mapping from tensor name to array.

A capture is three things kept apart: its **storage** (:class:`Storage`: the arrays onnxruntime handed over, plus
the tensors computed on first read — recomputed from captured ones, or folded from the weights), its
**provenance** (:class:`Provenance`: where every tensor comes from and how it was obtained, what was not captured
and why), and **views** joining it with the model (``node``, ``neuron``, ``attention``; see
:mod:`onnxscope.views`). Saving lives in :mod:`onnxscope.persist`, table rows in the CLI.

Example:
    >>> import numpy as np, onnxscope
    >>> from onnxscope.testing import mlp_model
    >>> m = onnxscope.Model(mlp_model(in_features=3, hidden=4, out_features=2))
    >>> cap = onnxscope.capture(m, {"x": np.ones((1, 3), np.float32)})
    >>> sorted(cap), cap["h"].shape, list(cap.outputs)
    (['a', 'h', 'x', 'y'], (1, 4), ['y'])
    >>> bool((cap["a"] == np.maximum(cap["h"], 0)).all())
    True

Shapes: each array is what onnxruntime computes for that tensor, with one extra leading axis per enclosing
Loop/Scan (the iteration). Arrays are read-only.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from onnxscope.errors import NotFoundError, UnsupportedError, closest
from onnxscope.expose import TensorMeta

if TYPE_CHECKING:
    from onnxscope.model import Model
    from onnxscope.views import NeuronValues, NodeValues

__all__ = ["Capture", "Provenance", "Recomputer", "Storage"]


class Recomputer(Protocol):
    """What a :class:`Storage` asks to rebuild a tensor onnxruntime's optimizations removed."""

    def compute(self, name: str, get: Any) -> dict[str, np.ndarray]:
        """The arrays of the recomputation that yields ``name``; ``get(n)`` reads a captured tensor."""


class Storage(Mapping[str, np.ndarray]):
    """Arrays by tensor name: those onnxruntime handed over (``arrays``, possibly views into a buffer the run
    wrote), and those computed on first read and then kept — ``recomputed`` by ``recomputer``, ``folded`` from
    ``model``'s weights. ``hidden`` names are kept only to feed recomputation and are not listed.

    ``lazy`` maps each tensor computed on first read to ``"recomputed"`` or ``"folded"``; ``order`` (optional) is
    the order of iteration.

    Example:
        >>> s = Storage(arrays={"x": np.ones(2)})
        >>> list(s), s["x"].flags.writeable
        (['x'], False)
    """

    def __init__(
        self,
        *,
        arrays: Mapping[str, np.ndarray],
        lazy: Mapping[str, str] | None = None,
        hidden: frozenset[str] = frozenset(),
        order: Sequence[str] | None = None,
        recomputer: Recomputer | None = None,
        model: Model | None = None,
        conditions: Mapping[str, tuple[tuple[str, bool], ...]] | None = None,
    ) -> None:
        self._arrays = arrays
        self._conditions = conditions or {}  # lazy tensors of If branches: listed only when their branch ran
        self._ran: dict[tuple[tuple[str, bool], ...], bool] = {}
        self._hidden = hidden
        self._lazy = lazy or {}
        self._order = order
        self._done: dict[str, np.ndarray] = {}
        self._recomputer = recomputer
        self._model = model

    def __getitem__(self, name: str) -> np.ndarray:
        a = self._arrays.get(name)
        if a is None:
            a = self._done.get(name)
        if a is None:
            how = self._lazy.get(name)
            if how is None:
                raise KeyError(name)
            a = self._compute(name, how)
        if a.flags.writeable:
            a = a.view()
            a.flags.writeable = False
        return a

    def _compute(self, name: str, how: str) -> np.ndarray:
        if how == "folded":
            if self._model is None:
                raise NotFoundError(
                    f"tensor {name!r} is computed from the model's weights alone; load the capture with its model "
                    "(load_capture(path, model=...)) to read it"
                )
            from onnxscope.recompute import fold

            found = fold(self._model.value(name))
            if found is None:  # pragma: no cover - expose() folds only what const_array folds
                raise NotFoundError(f"tensor {name!r} cannot be folded from the weights")
            self._done[name] = found
            return found
        if self._recomputer is None:
            raise NotFoundError(
                f"tensor {name!r} was removed by onnxruntime's optimizations and this capture cannot recompute it "
                "(no session); read it before saving, or capture with optimization='disable'"
            )
        self._done.update(self._recomputer.compute(name, self.__getitem__))
        return self._done[name]

    def materialize(self, names: Collection[str] | None = None) -> None:
        """Compute every lazy tensor (or those of ``names``) now, e.g. before saving: the main graph's
        recomputations in one run, then the rest (If branches that ran, folded weights)."""
        wanted = self._lazy if names is None else [k for k in names if k in self._lazy]
        pending = [k for k in wanted if self._lazy[k] == "recomputed" and k not in self._done]
        if len(pending) > 1 and self._recomputer is not None and hasattr(self._recomputer, "compute_all"):
            self._done.update(
                self._recomputer.compute_all(self.__getitem__, None if names is None else pending)
            )
        for name in wanted:
            if name not in self._done and self.ran(name):
                self[name]

    def captured(self, name: str) -> bool:
        """Whether ``name`` was handed over by the run (or computed already), i.e. reading it costs nothing."""
        return name in self._arrays or name in self._done

    def __iter__(self) -> Iterator[str]:
        if self._order is not None:
            yield from (k for k in self._order if k in self)
            return
        yield from (k for k in self._arrays if k not in self._hidden)
        yield from (k for k in self._lazy if k not in self._arrays)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __contains__(self, name: object) -> bool:
        if name in self._arrays:
            return name not in self._hidden
        return name in self._lazy and self.ran(name)  # type: ignore[arg-type]

    def ran(self, name: str) -> bool:
        """Whether the If branches around ``name`` ran (``True`` outside If branches)."""
        conds = self._conditions.get(name)
        if not conds:
            return True
        done = self._ran.get(conds)
        if done is None:
            done = True
            for cond, branch in conds:  # outermost first
                try:
                    value = np.asarray(self[cond])
                except (NotFoundError, KeyError):
                    done = False
                    break
                if value.size == 0 or bool(value.reshape(-1)[0]) != branch:
                    done = False
                    break
            self._ran[conds] = done
        return done


@dataclass(frozen=True)
class Provenance:
    """Where each tensor of a capture comes from (:class:`~onnxscope.expose.TensorMeta`, whose ``source`` says
    how it was obtained), the model's inputs and outputs, every node's inputs and outputs by tensor name, and the
    tensors that could not be captured with the reason."""

    meta: Mapping[str, TensorMeta]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    nodes: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    skipped: Mapping[str, str] = field(default_factory=dict)
    model_path: str | None = None
    optimization: str | None = None


class Capture(Mapping[str, np.ndarray]):
    """Captured tensors of one run: a read-only mapping from tensor name to array.

    Keys are ONNX tensor names for the main graph and ``node/attr/tensor`` paths inside If/Loop/Scan bodies; the
    model's inputs are included. ``info(name).source`` says how a tensor was obtained: ``captured`` from the run at
    the deployed optimization level, ``recomputed`` on first read from captured tensors by the original nodes
    (onnxruntime's fusions removed it), ``folded`` from the weights, or ``input``. Weights are not copied in.
    """

    def __init__(self, *, storage: Storage, provenance: Provenance, model: Model | None = None) -> None:
        self.storage = storage
        self.provenance = provenance
        self.model = model

    # -- mapping ---------------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.storage[name]
        except NotFoundError:
            raise
        except KeyError:
            if name in self.provenance.skipped:
                raise NotFoundError(
                    f"tensor {name!r} was not captured: {self.provenance.skipped[name]}"
                ) from None
            raise NotFoundError(f"no captured tensor {name!r}; {closest(name, self.storage)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.storage)

    def __len__(self) -> int:
        return len(self.storage)

    def __contains__(self, name: object) -> bool:
        return name in self.storage

    def __repr__(self) -> str:
        return f"<onnxscope.Capture: {len(self)} tensors, outputs {list(self.provenance.outputs)}>"

    # -- provenance ------------------------------------------------------------------------------------
    @property
    def outputs(self) -> dict[str, np.ndarray]:
        """The model's real outputs, in order."""
        return {k: self[k] for k in self.provenance.outputs if k in self.storage}

    @property
    def inputs(self) -> dict[str, np.ndarray]:
        """The inputs the run was fed."""
        return {k: self[k] for k in self.provenance.inputs}

    @property
    def skipped(self) -> dict[str, str]:
        """Tensors that could not be had, each with the reason."""
        return dict(self.provenance.skipped)

    @property
    def model_path(self) -> str | None:
        """The file of the model that was run, if it came from one."""
        return self.provenance.model_path

    def info(self, name: str) -> TensorMeta:
        """Where tensor ``name`` comes from (node, op, module path, enclosing bodies) and how it was obtained
        (``source``: captured, recomputed, folded or input)."""
        meta = self.provenance.meta.get(name)
        if meta is None:
            raise NotFoundError(f"no captured tensor {name!r}; {closest(name, self.provenance.meta)}")
        return meta

    def executed(self, name: str) -> bool | np.ndarray:
        """Whether ``name`` was computed: ``True`` outside If branches; inside them, from the captured
        conditions (an array over iterations when the If sits in a Loop/Scan)."""
        meta = self.info(name)
        result: bool | np.ndarray = True
        for cond, branch in meta.conditions:  # outermost first
            try:
                value = np.asarray(self.storage[cond]).astype(bool)
            except KeyError:  # NotFoundError too: the condition sits in a branch that did not run
                if cond in self.provenance.meta:
                    return False
                raise NotFoundError(
                    f"the condition {cond!r} of {name!r} was not captured; capture it too"
                ) from None
            if value.size == 0:  # a placeholder: the condition sits in a branch that did not run
                return False
            k = self.info(cond).iteration_axes  # the condition is a one-element tensor per iteration
            value = value.reshape(value.shape[:k]) if k else value.reshape(-1)[0]
            result = np.logical_and(result, value == branch)
            if not np.any(result):
                return False
        return result if isinstance(result, np.ndarray) and result.ndim else bool(result)

    def materialize(self, names: Collection[str] | None = None) -> Capture:
        """Compute now every tensor (or those of ``names``) that is otherwise computed on first read (recomputed
        ones in one run of onnxruntime for the main graph); returns the capture.

        Example:
            >>> import numpy as np, onnxscope
            >>> from onnxscope.testing import mlp_model
            >>> cap = onnxscope.capture(onnxscope.Model(mlp_model()), {"x": np.ones((1, 3), np.float32)})
            >>> cap.storage.captured("h"), cap.materialize(["h"]).storage.captured("h")
            (False, True)
        """
        self.storage.materialize(names)
        return self

    # -- views (joins with the model; see onnxscope.views) ---------------------------------------------
    def _need_model(self) -> Model:
        if self.model is None:
            raise UnsupportedError("this capture has no model attached; use load_capture(path, model=...)")
        return self.model

    def node(self, name: str) -> NodeValues:
        """A node's input and output arrays (initializers read lazily from the model, not copied)."""
        from onnxscope.views import node_values

        return node_values(self, name)

    def neuron(self, layer: str, index: int) -> NeuronValues:
        """Pre- and post-activation values of unit ``index`` of ``layer`` (any name the neuron view takes)."""
        from onnxscope.views import neuron_values

        return neuron_values(self, self._need_model(), layer, index)

    def attention(self, block: Any) -> np.ndarray:
        """Attention probabilities of ``block`` (an :class:`~onnxscope.patterns.AttentionBlock` or its name) as
        ``[batch, heads, query, key]`` (with leading iteration axes if the block sits in a loop)."""
        from onnxscope.views import attention_map

        return attention_map(self, block)

    def stats(self, name: str) -> Any:
        """:class:`~onnxscope.stats.RunningStats` of one tensor of this run (per unit too), mergeable with others."""
        from onnxscope.stats import RunningStats, unit_axis_for

        a = np.asarray(self[name])
        return RunningStats.of(a, unit_axis_for(a.shape), self.info(name).op)

    # -- persistence -----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> str:
        """Write the capture to one ``.npz`` keyed by tensor name (see :func:`onnxscope.persist.save_capture`)."""
        from onnxscope.persist import save_capture

        return save_capture(self, path)
