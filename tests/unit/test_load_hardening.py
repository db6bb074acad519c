"""The loading edge refuses every malformed model with one ModelLoadError line — and still loads models as they ship.

Each test builds a small model with ``onnx.helper``, breaks one thing the way a hostile or careless file would,
and checks both the error class and that the message names the offender. The other half checks that unusual but
valid graphs (nodes out of order, unused initializers, initializers shadowing inputs, hard-linked weights) load.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxscope
from onnxscope.errors import ModelLoadError, ResourceError
from onnxscope.limits import memory_budget
from onnxscope.testing import mlp_model, save


def _mlp_proto() -> onnx.ModelProto:
    """x → Gemm(fc1) → h → Relu → a → Gemm(fc2) → y, four float initializers."""
    import onnx_ir as ir

    return ir.to_proto(mlp_model(in_features=3, hidden=4, out_features=2))


def _save(proto: onnx.ModelProto, folder, name: str = "m.onnx") -> str:
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())
    return path


def _refused(proto: onnx.ModelProto, folder, *fragments: str) -> str:
    with pytest.raises(ModelLoadError) as info:
        onnxscope.load(_save(proto, folder))
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def _within(seconds: float, fn, unblock: str | None = None):
    """Run ``fn`` in a thread; fail (after releasing a FIFO reader) if it does not return in time."""
    out: dict[str, object] = {}

    def target() -> None:
        try:
            out["value"] = fn()
        except BaseException as e:
            out["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        if unblock:  # open the write end so that a blocked open() for reading returns, then fail
            fd = os.open(unblock, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        pytest.fail(f"did not return within {seconds} s (blocked on a non-regular file?)")
    if "error" in out:
        raise out["error"]  # type: ignore[misc]
    return out.get("value")


# -- text, types and payloads -----------------------------------------------------------------------------


def test_a_name_that_is_not_utf8_is_refused_naming_the_field(tmp_path):
    data = _mlp_proto().SerializeToString().replace(b"fc2.bias", b"fc2.b\xffas")
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    with pytest.raises(ModelLoadError, match=r"is not valid UTF-8 \(b'fc2\.b\\xffas'\)"):
        onnxscope.load(path)


@pytest.mark.parametrize(("data_type", "said"), [(0, "UNDEFINED"), (99, "99, which ONNX does not define")])
def test_an_undefined_or_unknown_element_type_is_refused(tmp_path, data_type, said):
    p = _mlp_proto()
    p.graph.initializer[0].data_type = data_type
    _refused(p, tmp_path, f"initializer {p.graph.initializer[0].name!r}", said)


def test_a_payload_shorter_than_its_shape_is_refused(tmp_path):
    p = _mlp_proto()
    t = p.graph.initializer[0]
    t.raw_data = t.raw_data[:-4]
    _refused(p, tmp_path, repr(t.name), "payload bytes", "needs 48")


def test_data_in_the_wrong_field_for_its_type_is_refused(tmp_path):
    p = _mlp_proto()
    t = p.graph.initializer[1]
    t.ClearField("raw_data")
    t.int64_data.extend([1, 2, 3, 4])
    _refused(p, tmp_path, "holds its data in int64_data", "FLOAT tensor uses float_data")


def test_a_declared_size_without_data_is_refused_before_anything_is_allocated(tmp_path):
    p = _mlp_proto()
    t = p.graph.initializer[1]
    t.ClearField("raw_data")
    del t.dims[:]
    t.dims.extend([2**62])
    _refused(p, tmp_path, "holds no data", "4611686018427387904")


def test_dims_whose_product_overflows_int64_are_refused_not_wrapped(tmp_path):
    p = _mlp_proto()
    t = p.graph.initializer[1]
    del t.dims[:]
    t.dims.extend([2**32, 2**32])
    _refused(p, tmp_path, "payload bytes")


def test_an_attribute_of_the_wrong_type_is_refused(tmp_path):
    p = helper.make_model(
        helper.make_graph(
            [helper.make_node("Transpose", ["x"], ["y"], "t", perm=[1, 0])],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    p.graph.node[0].attribute[0].type = onnx.AttributeProto.FLOAT
    _refused(p, tmp_path, "node 't' (Transpose)", "attribute 'perm' is FLOAT", "takes INTS")


def test_a_graph_attribute_without_a_graph_is_refused(tmp_path):
    then = helper.make_graph([], "then", [], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])])
    node = helper.make_node("If", ["c"], ["y"], "if", then_branch=then, else_branch=then)
    p = helper.make_model(
        helper.make_graph(
            [node],
            "g",
            [
                helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
            ],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    p.graph.node[0].attribute[1].ClearField("g")
    _refused(p, tmp_path, "node 'if' (If)", "is declared GRAPH but holds none")


def test_a_node_with_too_few_inputs_for_its_schema_is_refused(tmp_path):
    p = _mlp_proto()
    del p.graph.node[0].input[1:]
    _refused(p, tmp_path, "node 'fc1' (Gemm) has 1 input(s); Gemm takes 2 to 3")


def test_an_onnx_domain_op_onnxruntime_registers_before_its_opset_still_loads(tmp_path):
    """onnxruntime's transformer optimizer writes LayerNormalization at opset 14 (it is ONNX only from 17)."""
    p = helper.make_model(
        helper.make_graph(
            [helper.make_node("LayerNormalization", ["x", "g"], ["y"], "ln", axis=-1)],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
            [numpy_helper.from_array(np.ones(4, np.float32), "g")],
        ),
        opset_imports=[helper.make_opsetid("", 14)],
    )
    assert onnxscope.load(_save(p, tmp_path)).nodes[0].op_type == "LayerNormalization"


# -- structure ---------------------------------------------------------------------------------------------


def test_a_dangling_input_is_refused_naming_node_and_tensor(tmp_path):
    p = _mlp_proto()
    p.graph.node[1].input[0] = "ghost"
    _refused(p, tmp_path, "node 'relu' (Relu) reads 'ghost' (input 0)", "no graph input, initializer or node")


def test_a_graph_output_nothing_produces_is_refused(tmp_path):
    p = _mlp_proto()
    p.graph.output[0].name = "nowhere"
    _refused(p, tmp_path, "graph output 'nowhere' is produced by no node")


def test_a_body_output_nothing_produces_is_refused(tmp_path):
    body = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], "inner")],
        "then",
        [],
        [helper.make_tensor_value_info("q", 1, [2])],
    )
    p = helper.make_model(
        helper.make_graph(
            [helper.make_node("If", ["c"], ["y"], "if", then_branch=body, else_branch=body)],
            "g",
            [
                helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                helper.make_tensor_value_info("x", 1, [2]),
            ],
            [helper.make_tensor_value_info("y", 1, [2])],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    _refused(p, tmp_path, "node 'if' (If) ", "_branch: graph output 'q' is produced by no node")


def test_a_cycle_is_refused_naming_its_nodes(tmp_path):
    p = _mlp_proto()
    p.graph.node[0].input[0] = "a"  # fc1 reads relu's output, relu reads fc1's
    message = _refused(p, tmp_path, "the graph has a cycle")
    assert "'fc1'" in message and "'relu'" in message


def test_two_producers_of_one_tensor_are_refused(tmp_path):
    p = _mlp_proto()
    p.graph.node[2].output[0] = "h"
    _refused(
        p, tmp_path, "tensor 'h' is produced by node 'fc1' (Gemm) and also produced by node 'fc2' (Gemm)"
    )


def test_nodes_out_of_order_are_sorted_at_load(tmp_path):
    p = _mlp_proto()
    nodes = list(p.graph.node)
    del p.graph.node[:]
    p.graph.node.extend(reversed(nodes))
    m = onnxscope.load(_save(p, tmp_path))
    assert [n.name for n in m.nodes] == ["fc1", "relu", "fc2"]
    assert m.neuron("fc1", 0).outgoing[0].node == "fc2"


def test_a_body_reading_an_outer_value_produced_later_loads_and_is_sorted(tmp_path):
    then = helper.make_graph(
        [helper.make_node("Neg", ["r"], ["t"], "neg")],
        "then",
        [],
        [helper.make_tensor_value_info("t", 1, [2])],
    )
    other = helper.make_graph(
        [helper.make_node("Abs", ["r"], ["e"], "abs")],
        "else",
        [],
        [helper.make_tensor_value_info("e", 1, [2])],
    )
    p = helper.make_model(
        helper.make_graph(
            [
                helper.make_node("If", ["c"], ["y"], "if", then_branch=then, else_branch=other),
                helper.make_node("Relu", ["x"], ["r"], "relu"),
            ],
            "g",
            [
                helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                helper.make_tensor_value_info("x", 1, [2]),
            ],
            [helper.make_tensor_value_info("y", 1, [2])],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    m = onnxscope.load(_save(p, tmp_path))
    assert [n.name for n in m.nodes] == ["relu", "if"]


def test_graphs_as_they_ship_still_load(tmp_path):
    """Unused initializers, an initializer that is also a graph input (a default), no value_info, -1 dims."""
    p = _mlp_proto()
    p.graph.initializer.append(numpy_helper.from_array(np.ones(3, np.float32), "unused"))
    t = p.graph.initializer[1]
    p.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    del p.graph.value_info[:]
    p.graph.value_info.append(helper.make_tensor_value_info("h", TensorProto.FLOAT, [-1, 4]))
    p.graph.value_info.append(helper.make_tensor_value_info("a", TensorProto.UNDEFINED, [1, 4]))
    m = onnxscope.load(_save(p, tmp_path))
    assert "unused" in m.weights and m.weights["unused"].role == "unused"
    h = next(v for n in m.ir.graph for v in n.outputs if v.name == "h")
    a = next(v for n in m.ir.graph for v in n.outputs if v.name == "a")
    assert [d if isinstance(d, int) else getattr(d, "value", None) for d in h.shape] == [
        None,
        4,
    ]  # -1: unknown
    assert a.dtype is None  # an UNDEFINED element type is an unknown one


def test_a_graph_input_without_element_type_is_refused(tmp_path):
    p = _mlp_proto()
    p.graph.input[0].type.tensor_type.elem_type = 0
    _refused(p, tmp_path, "graph input 'x' declares no element type")


# -- files ---------------------------------------------------------------------------------------------------


def test_a_fifo_given_as_the_model_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "m.onnx"
    os.mkfifo(fifo)
    with pytest.raises(ModelLoadError, match=r"is a FIFO \(named pipe\), not a regular file"):
        _within(10, lambda: onnxscope.load(fifo), unblock=str(fifo))


@pytest.mark.parametrize("target", ["/dev/zero", "/dev/null"])
def test_a_device_given_as_the_model_is_refused(tmp_path, target):
    link = tmp_path / "m.onnx"
    os.symlink(target, link)
    with pytest.raises(ModelLoadError, match="is a character device, not a regular file"):
        _within(10, lambda: onnxscope.load(link))


def test_a_model_file_over_the_memory_budget_is_refused_before_reading(tmp_path):
    path = save(mlp_model(hidden=64), tmp_path / "m.onnx")
    with (
        memory_budget(1024),
        pytest.raises(ResourceError, match=r"reading .*m\.onnx needs .* over the memory budget"),
    ):
        onnxscope.load(path)


@pytest.fixture
def external(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    return folder, save(mlp_model(hidden=64), folder / "m.onnx", external_data="m.onnx.data")


def _set_entry(path: str, key: str, value: str) -> None:
    proto = onnx.load(path, load_external_data=False)
    for t in proto.graph.initializer:
        for e in t.external_data:
            if e.key == key:
                e.value = value
    onnx.save(proto, path)


def test_a_fifo_as_external_data_is_refused_before_it_is_opened(external):
    folder, path = external
    os.remove(folder / "m.onnx.data")
    os.mkfifo(folder / "m.onnx.data")
    with pytest.raises(ModelLoadError, match=r"external-data file 'm\.onnx\.data' is a FIFO"):
        _within(10, lambda: onnxscope.load(path), unblock=str(folder / "m.onnx.data"))


def test_a_nul_byte_in_an_external_data_location_is_refused(external):
    _, path = external
    _set_entry(path, "location", "m.onnx\0.data")
    with pytest.raises(ModelLoadError, match="contains a NUL byte"):
        onnxscope.load(path)


@pytest.mark.parametrize("offset", ["-1", "abc", "1.5"])
def test_a_malformed_external_data_offset_is_refused(external, offset):
    _, path = external
    _set_entry(path, "offset", offset)
    with pytest.raises(ModelLoadError, match="is not a non-negative whole number"):
        onnxscope.load(path)


def test_hard_linked_external_data_loads_and_gives_statistics(external):
    folder, path = external
    os.replace(folder / "m.onnx.data", folder / "weights.orig")
    os.link(folder / "weights.orig", folder / "m.onnx.data")  # two names, one file inside the folder
    assert os.stat(folder / "m.onnx.data").st_nlink == 2
    m = onnxscope.load(path)
    expected = mlp_model(hidden=64).graph.initializers["fc1.weight"].const_value.numpy()
    np.testing.assert_array_equal(m.weights["fc1.weight"].numpy(), expected)
    assert m.weights["fc1.weight"].stats().max == pytest.approx(float(expected.max()))
    assert m.weights.duplicates() == []


def test_a_file_swapped_for_a_symlink_leading_out_after_loading_is_refused_when_read(external, tmp_path):
    folder, path = external
    m = onnxscope.load(path)  # checked and fine
    outside = tmp_path / "secret.bin"
    outside.write_bytes((folder / "m.onnx.data").read_bytes())
    os.remove(folder / "m.onnx.data")
    os.symlink(outside, folder / "m.onnx.data")
    with pytest.raises(ModelLoadError, match="outside the model's folder"):
        m.weights["fc1.weight"].numpy()


# -- dequantization within the budget ----------------------------------------------------------------------


def test_dequantizing_over_the_memory_budget_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    q = rng.integers(-100, 100, (64, 64)).astype(np.int8)
    p = helper.make_model(
        helper.make_graph(
            [
                helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["w"], "dq"),
                helper.make_node("MatMul", ["x", "w"], ["y"], "mm"),
            ],
            "g",
            [helper.make_tensor_value_info("x", 1, [1, 64])],
            [helper.make_tensor_value_info("y", 1, [1, 64])],
            [
                numpy_helper.from_array(q, "wq"),
                numpy_helper.from_array(np.array(0.1, np.float32), "s"),
                numpy_helper.from_array(np.array(0, np.int8), "z"),
            ],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    m = onnxscope.load(_save(p, tmp_path))
    np.testing.assert_allclose(m.weights["wq"].dequantize(), q.astype(np.float32) * np.float32(0.1))
    with memory_budget(4096), pytest.raises(ResourceError, match="dequantizing weight 'wq'"):
        m.weights["wq"].dequantize()


def test_quantization_parameters_that_do_not_fit_the_weight_are_a_model_error(tmp_path):
    p = helper.make_model(
        helper.make_graph(
            [
                helper.make_node("DequantizeLinear", ["wq", "s"], ["w"], "dq", axis=0),
                helper.make_node("MatMul", ["x", "w"], ["y"], "mm"),
            ],
            "g",
            [helper.make_tensor_value_info("x", 1, [1, 4])],
            [helper.make_tensor_value_info("y", 1, [1, 3])],
            [
                numpy_helper.from_array(np.ones((4, 3), np.int8), "wq"),
                numpy_helper.from_array(np.ones(5, np.float32), "s"),  # 5 scales for 4 rows
            ],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    m = onnxscope.load(_save(p, tmp_path))
    with pytest.raises(ModelLoadError, match=r"QDQ node 'dq': .* shape \[5\] does not fit axis 0 .*\[4, 3\]"):
        m.weights["wq"].dequantize()


def test_a_sparse_initializer_is_unsupported_not_misread(tmp_path):
    p = _mlp_proto()
    p.graph.sparse_initializer.append(
        helper.make_sparse_tensor(
            numpy_helper.from_array(np.array([1.0], np.float32), "sparse_w"),
            numpy_helper.from_array(np.array([3], np.int64), "idx"),
            [2, 2],
        )
    )
    with pytest.raises(onnxscope.UnsupportedError, match="sparse initializer 'sparse_w'.*densify"):
        onnxscope.load(_save(p, tmp_path))


def test_a_body_output_taken_straight_from_the_enclosing_graph_is_refused(tmp_path):
    """ONNX wants an Identity in the body; onnx_ir cannot copy a body whose output belongs to its parent."""
    body = helper.make_graph([], "then", [], [helper.make_tensor_value_info("x", 1, [2])])
    p = helper.make_model(
        helper.make_graph(
            [helper.make_node("If", ["c"], ["y"], "if", then_branch=body, else_branch=body)],
            "g",
            [
                helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                helper.make_tensor_value_info("x", 1, [2]),
            ],
            [helper.make_tensor_value_info("y", 1, [2])],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    _refused(p, tmp_path, "graph output 'x' is a value of the enclosing graph", "Identity")


@pytest.mark.parametrize(
    ("op", "attrs", "said"),
    [
        ("Transpose", {"perm": [0, 5]}, "is not a permutation"),
        ("Transpose", {"perm": [1, 1]}, "is not a permutation"),
        ("Cast", {"to": 0}, "no ONNX element type"),
    ],
)
def test_attribute_values_onnxscope_computes_with_are_checked(tmp_path, op, attrs, said):
    p = helper.make_model(
        helper.make_graph(
            [helper.make_node(op, ["x"], ["y"], "n", **attrs)],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    _refused(p, tmp_path, f"node 'n' ({op})", said)


def test_a_convolution_with_group_zero_is_refused(tmp_path):
    p = helper.make_model(
        helper.make_graph(
            [helper.make_node("Conv", ["x", "w"], ["y"], "conv", group=0)],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 3])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            [numpy_helper.from_array(np.ones((2, 2, 1, 1), np.float32), "w")],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    _refused(p, tmp_path, "node 'conv' (Conv): group is 0")


def test_onnx_nodes_of_a_model_importing_no_onnx_opset_are_checked_as_onnxruntime_runs_them(tmp_path):
    """onnxruntime runs a model that imports no ONNX opset (at its latest); its nodes are checked against that
    opset's schemas, so a Transpose left without its input (found by the fuzzer) is refused at loading."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    ms = [helper.make_opsetid("com.microsoft", 1)]
    fine = helper.make_model(
        helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
        opset_imports=ms,
        ir_version=9,
    )
    onnx.save(fine, tmp_path / "fine.onnx")
    assert [n.op_type for n in onnxscope.load(tmp_path / "fine.onnx").nodes] == ["Relu"]
    broken = helper.make_model(
        helper.make_graph([helper.make_node("Transpose", [], ["y"])], "g", [x], [y]),
        opset_imports=ms,
        ir_version=9,
    )
    onnx.save(broken, tmp_path / "broken.onnx")
    with pytest.raises(ModelLoadError, match="has 0 input"):
        onnxscope.load(tmp_path / "broken.onnx")
    body = helper.make_graph(  # a Scan body is checked against that opset's Scan too
        [helper.make_node("Add", ["s", "e"], ["s_out"]), helper.make_node("Identity", ["e"], ["e_out"])],
        "body",
        [
            helper.make_tensor_value_info("s", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("e", TensorProto.FLOAT, [2]),
        ],
        [
            helper.make_tensor_value_info("s_out", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("e_out", TensorProto.FLOAT, [2]),
        ],
    )
    scan = helper.make_node("Scan", ["x", "xs"], ["y", "ys"], body=body, num_scan_inputs=1)
    g = helper.make_graph(
        [scan],
        "g",
        [x, helper.make_tensor_value_info("xs", TensorProto.FLOAT, [3, 2])],
        [y, helper.make_tensor_value_info("ys", TensorProto.FLOAT, [3, 2])],
    )
    onnx.save(helper.make_model(g, opset_imports=ms, ir_version=9), tmp_path / "scan.onnx")
    assert [n.op_type for n in onnxscope.load(tmp_path / "scan.onnx").nodes] == ["Scan"]


def test_only_a_layer_norms_trailing_empty_inputs_are_dropped(tmp_path):
    """LayerNormalization(x, w, "") loses its empty bias at loading (onnxruntime 1.32 crashes on it); any other
    node keeps an empty input in its place (the fuzzer found code reading ``inputs[0]`` of a node whose only
    input was empty, in a model whose opset has no schema to refuse it)."""
    proto = onnx.parser.parse_model(
        """<ir_version: 9, opset_import: ["": 17]>
        g (float[2, 4] x, float[4] w) => (float[2, 4] y) {
            n = LayerNormalization <axis = -1> (x, w, "")
            y = Clip(n, "", "")
        }"""
    )
    onnx.save(proto, tmp_path / "m.onnx")
    ln, clip = onnxscope.load(tmp_path / "m.onnx").nodes
    assert len(ln.inputs) == 2 and [i is None for i in clip.inputs] == [False, True, True]
