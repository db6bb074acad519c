"""The result of a run: :class:`Capture`, a read-only mapping from tensor name to array, and its views.

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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxscope.errors import NotFoundError, UnsupportedError, closest
from onnxscope.expose import TensorMeta
from onnxscope.model import Model
from onnxscope.neurons import _ELEMENTWISE, neuron
from onnxscope.weights import const_array, dequantize_linear

__all__ = ["Capture", "NeuronValues", "NodeValues"]


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
        """Write every array and the metadata to one ``.npz`` (see :func:`onnxscope.persist.save_capture`)."""
        from onnxscope.persist import save_capture

        return save_capture(self, path)
