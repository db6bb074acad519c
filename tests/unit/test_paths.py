"""Path queries, residual detection without false positives, and extract() as a runnable sub-model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

import onnxscope
from onnxscope.paths import all_paths, ancestors, between, descendants, extract, op_graph, shortest_path
from onnxscope.patterns import find_residuals

RNG = np.random.default_rng(0)


def _model(text: str, tmp_path, **inits: np.ndarray) -> tuple[onnxscope.Model, onnx.ModelProto]:
    proto = onnx.parser.parse_model('<ir_version: 9, opset_import: ["": 17]>\n' + text)
    for name, arr in inits.items():
        proto.graph.initializer.append(numpy_helper.from_array(arr, name))
    onnx.save(proto, tmp_path / "m.onnx")
    return onnxscope.load(tmp_path / "m.onnx"), proto


BLOCK = """g (float[1, 4, 5, 5] x) => (float[1, 4, 5, 5] y) {
    c1 = Conv <pads = [1, 1, 1, 1]> (x, w1)
    r1 = Relu(c1)
    c2 = Conv <pads = [1, 1, 1, 1]> (r1, w2)
    s = Add(c2, x)
    y = Relu(s)
}"""


def _block(tmp_path):
    return _model(
        BLOCK,
        tmp_path,
        w1=RNG.standard_normal((4, 4, 3, 3)).astype(np.float32),
        w2=RNG.standard_normal((4, 4, 3, 3)).astype(np.float32),
    )


def test_paths_between_tensors(tmp_path):
    m, _ = _block(tmp_path)
    assert shortest_path(m, "x", "y") == ["x", "s", "y"]
    assert list(all_paths(m, "x", "y")) == [["x", "s", "y"], ["x", "c1", "r1", "c2", "s", "y"]]
    assert list(all_paths(m, "x", "y", limit=1)) == [["x", "s", "y"]]
    assert ancestors(m, "c2") == {"x", "w1", "c1", "r1", "w2"}
    assert descendants(m, "r1") == {"c2", "s", "y"}
    sub = between(m, ["x"], ["s"])
    assert sub.tensors == {"c1", "r1", "c2", "s"} and len(sub.nodes) == 4


def test_node_paths_and_the_networkx_view(tmp_path):
    m, _ = _block(tmp_path)
    g = op_graph(m)
    assert g.number_of_nodes() == 5 and g.nodes["s"]["op"] == "Add"
    assert shortest_path(m, "c1", "y") == ["c1", "r1", "c2", "s", "y"]


def test_no_path_and_unknown_names_are_clear_errors(tmp_path):
    m, _ = _block(tmp_path)
    with pytest.raises(onnxscope.NoPathError, match="no path from 'y' to 'x'"):
        shortest_path(m, "y", "x")
    with pytest.raises(onnxscope.NotFoundError, match="no tensor or node 'r2'; did you mean .*'r1'"):
        shortest_path(m, "x", "r2")


def test_extract_writes_a_runnable_sub_model(tmp_path):
    m, proto = _block(tmp_path)
    with pytest.raises(onnxscope.InputError, match="graph inputs are required but not provided: x"):
        extract(m, ["r1"], ["s"], tmp_path / "part.onnx")
    out = extract(m, ["r1", "x"], ["s"], tmp_path / "part.onnx")
    sub = onnxscope.load(out)
    assert [n.op_type for n in sub.nodes] == ["Conv", "Add"]
    x = RNG.standard_normal((1, 4, 5, 5)).astype(np.float32)
    full = ReferenceEvaluator(proto).run(None, {"x": x}, intermediate=True)
    got = ReferenceEvaluator(out).run(None, {"r1": full["r1"], "x": x})[0]
    np.testing.assert_allclose(got, full["s"], rtol=1e-5)


def test_identity_residual_is_found(tmp_path):
    m, _ = _block(tmp_path)
    (r,) = find_residuals(m)
    assert (r.fork, r.merge, r.skip, r.kind, r.projection) == ("x", "s", (), "residual", False)
    assert r.main == ("c1", "r1", "c2")


def test_projection_and_dense_connections(tmp_path):
    m, _ = _model(
        """g (float[1, 4, 5, 5] x) => (float[1, 16, 5, 5] y) {
            c1 = Conv(x, w1)
            p = Conv(x, wp)
            c2 = Conv(c1, w2)
            s = Add(c2, p)
            d = Conv(s, w3)
            y = Concat <axis = 1> (s, d)
        }""",
        tmp_path,
        w1=RNG.standard_normal((8, 4, 1, 1)).astype(np.float32),
        wp=RNG.standard_normal((8, 4, 1, 1)).astype(np.float32),
        w2=RNG.standard_normal((8, 8, 1, 1)).astype(np.float32),
        w3=RNG.standard_normal((8, 8, 1, 1)).astype(np.float32),
    )
    res, dense = find_residuals(m)
    assert (res.fork, res.merge, res.skip, res.projection) == ("x", "s", ("p",), True)
    assert (dense.fork, dense.kind, dense.skip, dense.main) == ("s", "dense", (), ("d",))


def test_no_false_positives_on_bias_adds_independent_inputs_or_elementwise_formulas(tmp_path):
    m, _ = _model(
        """g (float[2, 4] x, float[2, 4] z) => (float[2, 4] y, float[2, 4] u, float[2, 4] g3) {
            h = MatMul(x, w)
            y = Add(h, b)
            k = MatMul(z, w)
            u = Add(h, k)
            cube = Mul(h, h)
            g3 = Add(h, cube)
        }""",
        tmp_path,
        w=RNG.standard_normal((4, 4)).astype(np.float32),
        b=np.ones(4, np.float32),
    )
    assert find_residuals(m) == []


def test_masks_built_from_an_input_shape_are_not_residuals(tmp_path):
    m, _ = _model(
        """g (float[2, 4] x) => (float[2, 4] y) {
            h = MatMul(x, w)
            shp = Shape(x)
            mask = ConstantOfShape(shp)
            y = Add(h, mask)
        }""",
        tmp_path,
        w=RNG.standard_normal((4, 4)).astype(np.float32),
    )
    assert find_residuals(m) == []
