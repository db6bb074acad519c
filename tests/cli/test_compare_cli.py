"""``onnxscope compare`` as a user types it, in process: tables, JSON the report takes, --data folders, --kernels,
one-line errors."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxscope.cli.main import main
from onnxscope.testing import mlp_model, save

pytest.importorskip("onnxruntime")

REPORT_FIELDS = [
    "a_tensor",
    "b_tensor",
    "node",
    "op",
    "alignment",
    "max_abs",
    "mean_abs",
    "max_rel",
    "cosine",
    "sqnr_db",
    "frac_outside_tol",
    "introduced_error",
]


@pytest.fixture
def mlps(tmp_path):
    a = save(mlp_model(), tmp_path / "a.onnx")
    b = save(mlp_model(seed=1), tmp_path / "b.onnx")
    return a, b


def qdq_model(path):
    """x → Q → DQ → MatMul(DQ(int8 weight)) → Q → DQ: onnxruntime runs it as one QLinearMatMul."""
    rng = np.random.default_rng(0)
    init = [
        numpy_helper.from_array(np.float32(0.02), "xs"),
        numpy_helper.from_array(np.uint8(128), "xz"),
        numpy_helper.from_array(rng.integers(-100, 100, (4, 3)).astype(np.int8), "wq"),
        numpy_helper.from_array(np.float32(0.01), "ws"),
        numpy_helper.from_array(np.int8(0), "wz"),
        numpy_helper.from_array(np.float32(0.05), "ys"),
        numpy_helper.from_array(np.uint8(128), "yz"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"]),
        helper.make_node("MatMul", ["xd", "wd"], ["y"]),
        helper.make_node("QuantizeLinear", ["y", "ys", "yz"], ["yq"]),
        helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 3])],
        init,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9), str(path))
    return str(path)


def test_json_rows_have_exactly_the_fields_the_report_takes(mlps, capsys):
    assert main(["compare", *mlps, "--random", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["a_tensor"] for r in data["rows"]] == ["h", "a", "y"]
    assert all(list(r) == REPORT_FIELDS for r in data["rows"])
    assert data["first_divergence"] == "h" and data["tolerance"] == {"rtol": 0.001, "atol": 0.0001}
    assert data["alignment"]["coverage_a"] == 1.0
    # both Gemms' weights differ, so both introduce error; the Relu between them only passes it on
    assert sorted(data["ranked"][:2]) == ["h", "y"] and data["ranked"][2] == "a"
    assert [r["introduced_error"] > 0 for r in data["rows"]] == [True, False, True]
    assert data["a"] == "a.onnx (disable)" and data["b"] == "b.onnx (all)"


def test_a_data_folder_streams_every_batch_and_names_the_worst_samples(mlps, tmp_path, capsys):
    rng = np.random.default_rng(0)
    (tmp_path / "data").mkdir()
    for i in range(3):
        np.savez(tmp_path / "data" / f"{i}.npz", x=rng.standard_normal((2, 3)).astype(np.float32))
    assert main(["compare", *mlps, "--data", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert "6 sample(s) in 3 batch(es)" in out
    assert "first divergence: h (Gemm, node fc1)" in out and "worst samples" in out
    assert "error introduced by each layer" in out


def test_one_model_under_two_settings_written_to_a_file(mlps, tmp_path, capsys):
    np.savez(tmp_path / "x.npz", x=np.ones((2, 3), np.float32))
    out_file = tmp_path / "cmp.json"
    code = main(
        [
            "compare",
            mlps[0],
            "--b-threads",
            "1",
            "--inputs",
            str(tmp_path / "x.npz"),
            "--out",
            str(out_file),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "no divergence" in out and "A: a.onnx (disable)" in out and "B: a.onnx (all, 1 thread)" in out
    assert f"saved to {out_file}" in out
    assert json.loads(out_file.read_text())["first_divergence"] is None


def test_kernels_table_for_a_qdq_model(tmp_path, capsys):
    q = qdq_model(tmp_path / "q.onnx")
    assert main(["compare", q, "--kernels", "--random", "--reference", "evaluator"]) == 0
    out = capsys.readouterr().out
    assert "quantized tensors differ" in out and "yq" in out and "fused int8 kernels" in out
    assert main(["compare", q, "--kernels", "--random", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "kernels" and [r["a_tensor"] for r in data["rows"]] == ["xq", "yq"]


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["{a}", "{b}"], 4, "compare needs inputs"),
        (
            ["{a}", "--random", "--a-optimization", "all"],
            4,
            "one model against itself under the same settings",
        ),
        (["{a}", "{b}", "--kernels", "--random"], 4, "--kernels checks one QDQ model"),
        (["{a}", "--kernels", "--random"], 5, "check_kernels needs a QDQ model"),
        (["{a}", "{b}", "--random", "--data", "x"], 4, "--data DIR replaces"),
    ],
)
def test_errors_are_one_line(mlps, capsys, args, code, message):
    argv = ["compare", *(x.format(a=mlps[0], b=mlps[1]) for x in args)]
    assert main(argv) == code
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
