"""Oracles the tests share: onnxruntime itself, driven through raw onnx (never through onnxscope's code).

- :func:`ort_marking` — plain onnxruntime at an optimization level with the named tensors appended as graph
  outputs (what Polygraphy's ``mark all`` does): the oracle of every captured tensor.
- :func:`ort_subgraph` — the original nodes between some tensors and others, cut out with
  ``onnx.utils.Extractor`` and run by onnxruntime on given values: the oracle of every recomputed tensor.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnx.utils

LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def _session(proto: onnx.ModelProto, folder: str | None, level: str, threads: int | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[level])
    so.log_severity_level = 3
    if threads is not None:
        so.intra_op_num_threads = threads
    if folder:
        so.add_session_config_entry("session.model_external_initializers_file_folder_path", folder)
    return ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])


def load_proto(path: str | os.PathLike) -> onnx.ModelProto:
    return onnx.load(os.fspath(path), load_external_data=False)


def ort_marking(path, feeds: dict, names, level: str = "all") -> dict[str, np.ndarray]:
    """Plain onnxruntime at ``level`` with ``names`` (main-graph tensors) marked as outputs; returns those (and
    the model's own outputs) by name."""
    proto = load_proto(path)
    have = {o.name for o in proto.graph.output}
    for n in names:
        if n not in have:
            proto.graph.output.append(onnx.ValueInfoProto(name=n))
            have.add(n)
    sess = _session(proto, os.path.dirname(os.path.abspath(path)), level)
    outs = [o.name for o in sess.get_outputs()]
    return dict(zip(outs, sess.run(outs, feeds), strict=True))


def ort_plain(path, feeds: dict, level: str = "all") -> dict[str, np.ndarray]:
    """Plain onnxruntime at ``level``: the model's own outputs."""
    return ort_marking(path, feeds, [], level)


def ort_subgraph(
    path, values: dict[str, np.ndarray], outputs: list[str], level: str = "all"
) -> dict[str, np.ndarray]:
    """The original nodes computing ``outputs`` from the tensors in ``values``, run by onnxruntime on them."""
    proto = onnx.load(os.fspath(path))  # the Extractor needs the weights in memory
    inferred = onnx.shape_inference.infer_shapes(proto)
    sub = onnx.utils.Extractor(inferred).extract_model(list(values), outputs)
    sess = _session(sub, None, level)
    wanted = [i.name for i in sess.get_inputs()]
    return dict(zip(outputs, sess.run(outputs, {k: values[k] for k in wanted}), strict=True))
