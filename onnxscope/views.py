"""Views joining a :class:`~onnxscope.result.Capture` with its model: a node's values, a neuron's values, an
attention map. Pure functions over the capture; nothing here is stored in it.

Example:
    >>> import numpy as np, onnxscope
    >>> from onnxscope.testing import mlp_model
    >>> m = onnxscope.Model(mlp_model(in_features=3, hidden=4))
    >>> cap = onnxscope.capture(m, {"x": np.ones((2, 3), np.float32)})
    >>> v = neuron_values(cap, m, "fc1", 1)
    >>> v.pre_tensor, v.post_tensor, v.pre.shape
    ('h', 'a', (2,))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from onnxscope.errors import NotFoundError, UnsupportedError, closest
from onnxscope.neurons import _ELEMENTWISE, neuron

if TYPE_CHECKING:
    from onnxscope.model import Model
    from onnxscope.result import Capture

__all__ = ["NeuronValues", "NodeValues", "attention_map", "neuron_values", "node_values"]


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


def _value(cap: Capture, name: str | None) -> np.ndarray | None:
    if name is None:
        return None
    if name in cap:
        return cap[name]
    model = cap.model
    if model is not None and name in model.weights:
        return model.weights[name].numpy()
    return None


def node_values(cap: Capture, name: str) -> NodeValues:
    """A node's input and output arrays (initializers read lazily from the model, not copied).

    Raises:
        NotFoundError: no node of that name (close names are suggested).

    Example:
        >>> import numpy as np, onnxscope
        >>> from onnxscope.testing import mlp_model
        >>> cap = onnxscope.capture(onnxscope.Model(mlp_model()), {"x": np.ones((1, 3), np.float32)})
        >>> sorted(node_values(cap, "relu").outputs)
        ['a']
    """
    nodes = cap.provenance.nodes
    if name not in nodes:
        raise NotFoundError(f"no node {name!r}; {closest(name, nodes)}")
    n = nodes[name]
    return NodeValues(
        name,
        n["op"],
        {k: _value(cap, k) for k in n["inputs"] if k},
        {k: _value(cap, k) for k in n["outputs"] if k},
    )


_BINARY = ("Add", "Sub", "Mul", "Div", "Sum", "Max", "Min", "Mean", "Where", "Pow")


def neuron_values(cap: Capture, model: Model, layer: str, index: int) -> NeuronValues:
    """Pre- and post-activation values of unit ``index`` of ``layer``: the layer's output after its bias, and
    after the single chain of element-wise ops that follows (activation, BatchNorm, Q/DQ…).

    Example:
        >>> import numpy as np, onnxscope
        >>> from onnxscope.testing import mlp_model
        >>> m = onnxscope.Model(mlp_model())
        >>> cap = onnxscope.capture(m, {"x": np.ones((1, 3), np.float32)})
        >>> v = neuron_values(cap, m, "fc1", 0)
        >>> bool(v.post == max(v.pre, 0))
        True
    """
    n = neuron(model, layer, index)
    pre_name = post_name = n.output
    value = model.value(pre_name)
    while True:
        uses = list(value.uses())
        if len(uses) != 1 or value.is_graph_output():
            break
        user, i = uses[0]
        if user.op_type not in _ELEMENTWISE or user.op_type in _BINARY or int(i) != 0:
            break
        value = user.outputs[0]
        post_name = value.name or post_name
    pre, post = cap[pre_name], cap[post_name]
    return NeuronValues(
        n.layer,
        index,
        pre_name,
        np.take(pre, index, axis=n.axis),
        post_name,
        np.take(post, index, axis=n.axis),
    )


def attention_map(cap: Capture, block: Any) -> np.ndarray:
    """Attention probabilities of ``block`` (an :class:`~onnxscope.patterns.AttentionBlock` or its name) as
    ``[batch, heads, query, key]`` (with leading iteration axes if the block sits in a loop).

    Decomposed attention gives its Softmax output; fused ONNX ``Attention`` its probabilities output; fused
    onnxruntime ops (``Attention``, ``MultiHeadAttention``, ``GroupQueryAttention``) a decomposition of the op run
    on its captured inputs.

    Raises:
        NotFoundError: no block of that name.
        UnsupportedError: the block has no probabilities onnxscope can give.
    """
    from onnxscope.patterns import find_attention

    if isinstance(block, str):
        if cap.model is None:
            raise UnsupportedError("this capture has no model attached; use load_capture(path, model=...)")
        blocks = {b.name: b for b in find_attention(cap.model)}
        if block not in blocks:
            raise NotFoundError(f"no attention block {block!r}; {closest(block, blocks)}")
        block = blocks[block]
    if block.probabilities is None:
        raise UnsupportedError(f"attention block {block.name!r} ({block.op}) has no probabilities to give")
    a = cap[block.probabilities]
    if a.ndim == 3 and block.heads:  # [batch*heads, query, key]
        a = a.reshape(-1, block.heads, *a.shape[1:])
    return a
