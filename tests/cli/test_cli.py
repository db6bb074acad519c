"""The commands as a user types them: output, --json, exit codes, one-line errors, no heavy imports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "fixtures" / "small_cnn.onnx"
EXE = Path(sys.executable).parent / "onnxscope"


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [str(EXE)] if EXE.exists() else [sys.executable, "-m", "onnxscope"]
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.fixture
def model_copy(tmp_path):
    for name in ("small_cnn.onnx", "small_cnn.onnx.data"):
        shutil.copy(FIXTURE.parent / name, tmp_path / name)
    return tmp_path / "small_cnn.onnx"


def test_help_imports_neither_torch_nor_tensorflow():
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "onnxscope", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and "summary" in r.stdout
    imported = {line.split("|")[-1].strip().split(".")[0] for line in r.stderr.splitlines() if "|" in line}
    assert "onnxscope" in imported
    assert not imported & {"torch", "tensorflow", "keras", "onnxruntime"}


def test_summary_prints_io_ops_and_parameters():
    r = run("summary", FIXTURE)
    assert r.returncode == 0, r.stderr
    assert "image" in r.stdout and "logits" in r.stdout and "BatchNormalization" in r.stdout
    assert "2,130 parameters" in r.stdout and "small_cnn.onnx.data" in r.stdout


def test_summary_json_matches_the_onnx_file():
    r = run("summary", FIXTURE, "--json")
    s = json.loads(r.stdout)
    proto = onnx.load(str(FIXTURE))
    assert s["parameters"] == sum(int(np.prod(t.dims)) for t in proto.graph.initializer)
    assert s["inputs"] == [{"name": "image", "dtype": "float32", "shape": [1, 3, 4, 4]}]
    assert s["ops"]["Conv"] == sum(n.op_type == "Conv" for n in proto.graph.node)


def test_weights_stats_json_and_save(tmp_path):
    out = tmp_path / "w.npz"
    r = run("weights", FIXTURE, "--name", "conv.*", "--stats", "--json", "--save", out)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    names = sorted(w["name"] for w in d["weights"])
    assert names == ["conv.bias", "conv.weight"]
    proto = onnx.load(str(FIXTURE))
    expected = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    with np.load(out, allow_pickle=False) as z:
        for name in names:
            np.testing.assert_array_equal(z[name], expected[name])
    stats = {w["name"]: w["stats"] for w in d["weights"]}
    assert stats["conv.weight"]["max"] == pytest.approx(float(expected["conv.weight"].max()))
    assert stats["conv.weight"]["std"] == pytest.approx(
        float(expected["conv.weight"].astype(np.float64).std())
    )


def test_weights_table_shows_roles():
    r = run("weights", FIXTURE, "--op", "BatchNormalization")
    assert r.returncode == 0, r.stderr
    assert "BatchNormalization:running_mean" in r.stdout and "BatchNormalization:scale" in r.stdout


def test_neuron_by_module_path_prints_incoming_and_outgoing():
    r = run("neuron", FIXTURE, "conv", "3")
    assert r.returncode == 0, r.stderr
    assert "conv.weight" in r.stdout and "conv2.weight" in r.stdout and "fc.weight" in r.stdout


def test_neuron_json_equals_the_stored_weights():
    d = json.loads(run("neuron", FIXTURE, "conv", "3", "--json").stdout)
    proto = onnx.load(str(FIXTURE))
    w = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    np.testing.assert_array_equal(np.array(d["incoming"], np.float32), w["conv.weight"][3])
    out = {o["weight"]: np.array(o["weights"], np.float32) for o in d["outgoing"]}
    np.testing.assert_array_equal(out["conv2.weight"], w["conv2.weight"][:, 3])
    np.testing.assert_array_equal(out["fc.weight"], w["fc.weight"][:, 48:64])


def _assert_one_line_error(r: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    assert r.returncode == code, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("onnxscope: error: ")
    assert "Traceback" not in r.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def test_not_an_onnx_file(tmp_path):
    p = tmp_path / "readme.onnx"
    p.write_text("hello\n" * 100)
    _assert_one_line_error(run("summary", p), 2, "readme.onnx", "not")


def test_truncated_file(tmp_path):
    p = tmp_path / "cut.onnx"
    p.write_bytes(FIXTURE.read_bytes()[:3000])
    _assert_one_line_error(run("summary", p), 2, "cut.onnx", "not a readable ONNX model")


def test_missing_external_data_file(model_copy):
    os.remove(model_copy.parent / "small_cnn.onnx.data")
    _assert_one_line_error(run("weights", model_copy), 2, "small_cnn.onnx.data", "not found")


def test_escaping_external_data_path(model_copy):
    proto = onnx.load(str(model_copy), load_external_data=False)
    for t in proto.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../../etc/passwd"
    onnx.save(proto, str(model_copy))
    _assert_one_line_error(run("summary", model_copy), 2, "../../etc/passwd", "outside the model's folder")


def test_unknown_layer_suggests_close_names():
    _assert_one_line_error(
        run("neuron", FIXTURE, "conv3", "0"), 3, "no layer 'conv3'", "did you mean", "'conv2'"
    )


def test_index_out_of_range():
    _assert_one_line_error(run("neuron", FIXTURE, "fc", "10"), 4, "index 10", "valid indices 0..9")


def test_unsupported_op_for_a_neuron_query():
    relu = next(n.name for n in onnx.load(str(FIXTURE)).graph.node if n.op_type == "Relu")
    _assert_one_line_error(run("neuron", FIXTURE, relu, "0"), 5, "is a Relu", "Gemm, MatMul, Conv")


def test_unknown_weight_filter_lists_the_ops():
    _assert_one_line_error(run("weights", FIXTURE, "--op", "LSTM"), 4, "op 'LSTM'", "Conv")


def test_save_refuses_a_missing_folder(tmp_path):
    _assert_one_line_error(run("weights", FIXTURE, "--save", tmp_path / "no" / "w.npz"), 10, "does not exist")


def test_verbose_shows_the_traceback(tmp_path):
    r = run("summary", tmp_path / "absent.onnx", "--verbose")
    assert r.returncode == 2 and "Traceback" in r.stderr and "no such file" in r.stderr


def test_capture_then_show_round_trip(tmp_path):
    out = tmp_path / "run.npz"
    x = np.random.default_rng(0).standard_normal((1, 3, 4, 4)).astype(np.float32)
    np.save(tmp_path / "image.npy", x)
    r = run("capture", FIXTURE, "--input", f"image={tmp_path / 'image.npy'}", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "relu" in r.stdout and "Conv" in r.stdout and f"saved to {out}" in r.stdout
    d = json.loads(run("show", out, "relu", "--json").stdout)
    assert d["info"]["op"] == "Relu" and d["shape"] == [1, 8, 4, 4]
    assert min(np.ravel(d["values"])) >= 0
    table = json.loads(run("show", out, "--json").stdout)
    assert {t["tensor"] for t in table["tensors"]} >= {"image", "conv2d", "relu", "logits"}


def test_capture_select_json():
    d = json.loads(run("capture", FIXTURE, "--random", "--select", "op:Relu", "--json").stdout)
    assert sorted(t["tensor"] for t in d["tensors"]) == ["image", "logits", "relu", "relu_1"]


def test_capture_wrong_input_shape(tmp_path):
    np.save(tmp_path / "bad.npy", np.zeros((1, 3, 5, 5), np.float32))
    _assert_one_line_error(
        run("capture", FIXTURE, "--input", f"image={tmp_path / 'bad.npy'}"),
        4,
        "input 'image'",
        "float32 [1, 3, 4, 4]",
        "[1, 3, 5, 5]",
    )


def test_capture_wrong_input_dtype(tmp_path):
    np.save(tmp_path / "bad.npy", np.zeros((1, 3, 4, 4), np.float64))
    _assert_one_line_error(
        run("capture", FIXTURE, "--input", f"image={tmp_path / 'bad.npy'}"),
        4,
        "input 'image'",
        "expects float32",
        "got float64",
    )


def test_capture_wrong_input_name(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 4, 4), np.float32))
    _assert_one_line_error(
        run("capture", FIXTURE, "--input", f"pixels={tmp_path / 'x.npy'}"),
        4,
        "no input 'pixels'",
        "its inputs are image",
    )


def test_capture_unknown_tensor_in_select():
    _assert_one_line_error(
        run("capture", FIXTURE, "--random", "--select", "relu_9"),
        3,
        "select 'relu_9'",
        "did you mean",
        "'relu_1'",
    )


def test_capture_a_model_onnxruntime_cannot_load(tmp_path):
    proto = onnx.parser.parse_model("""<ir_version: 9, opset_import: ["": 17, "custom.domain": 1]>
        g (float[2] x) => (float[2] y) { y = custom.domain.Frobnicate(x) }""")
    onnx.save(proto, tmp_path / "custom.onnx")
    _assert_one_line_error(
        run("capture", tmp_path / "custom.onnx", "--random"),
        6,
        "onnxruntime cannot load the model",
        "Frobnicate",
    )


def test_show_a_file_that_is_not_a_capture(tmp_path):
    np.savez(tmp_path / "plain.npz", a=np.ones(2))
    _assert_one_line_error(run("show", tmp_path / "plain.npz"), 2, "not an onnxscope capture")


def test_paths_between_two_tensors_and_extract(tmp_path):
    r = run("paths", FIXTURE, "image", "logits", "--json", "--extract", tmp_path / "sub.onnx")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["paths"][0][0] == "image" and d["paths"][0][-1] == "logits" and len(d["paths"]) == 2
    assert (tmp_path / "sub.onnx").exists()


def test_paths_in_the_wrong_direction_is_a_one_line_error():
    _assert_one_line_error(run("paths", FIXTURE, "logits", "image"), 3, "no path from 'logits' to 'image'")


def test_residuals_of_the_fixture():
    d = json.loads(run("residuals", FIXTURE, "--json").stdout)
    (r,) = d["residuals"]
    assert r["fork"] == "relu" and r["skip"] == [] and r["kind"] == "residual"
    assert "1 residual connection(s)" in run("residuals", FIXTURE).stdout


def test_attention_blocks_maps_and_heatmaps(tmp_path):
    proto = onnx.parser.parse_model("""<ir_version: 9, opset_import: ["": 17]>
        g (float[1, 2, 4, 8] q, float[1, 2, 4, 8] k, float[1, 2, 4, 8] v) => (float[1, 2, 4, 8] y) {
            kt = Transpose <perm = [0, 1, 3, 2]> (k)
            s = MatMul(q, kt)
            p = Softmax <axis = -1> (s)
            y = MatMul(p, v)
        }""")
    onnx.save(proto, tmp_path / "att.onnx")
    pngs = tmp_path / "maps"
    pngs.mkdir()
    r = run("attention", tmp_path / "att.onnx", "--random", "--png", pngs, "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    (block,) = d["attention"]
    assert block["heads"] == 2 and block["map_shape"] == [1, 2, 4, 4] and block["causal"] is False
    assert sorted(p.name for p in pngs.iterdir()) == ["p_head0.png", "p_head1.png"]
    assert (pngs / "p_head0.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_attention_png_needs_an_existing_folder(tmp_path):
    _assert_one_line_error(
        run("attention", FIXTURE, "--random", "--png", tmp_path / "nope"), 4, "no such folder"
    )


def test_export_torch_with_check(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "mlp.onnx"
    r = run(
        "export", "torch", ROOT / "fixtures" / "models.py:mlp", "--input-shape", "2,10", "-o", out, "--check"
    )
    assert r.returncode == 0, r.stderr
    assert "3 layers mapped" in r.stdout and "all layers within tolerance" in r.stdout
    d = json.loads(run("neuron", out, "0", "1", "--json").stdout)  # the torch module path as the layer name
    assert d["module"] == "0" and len(d["incoming"]) == 10


def test_export_with_a_bad_factory_is_a_one_line_error(tmp_path):
    _assert_one_line_error(
        run(
            "export",
            "torch",
            ROOT / "fixtures" / "models.py:nope",
            "--input-shape",
            "2,10",
            "-o",
            tmp_path / "x.onnx",
        ),
        4,
        "has no function 'nope'",
        "mlp",
    )
    _assert_one_line_error(
        run("export", "torch", "no_colon", "--input-shape", "2,10", "-o", tmp_path / "x.onnx"),
        4,
        "expected MODULE:FACTORY",
    )
    _assert_one_line_error(
        run(
            "export",
            "torch",
            ROOT / "fixtures" / "models.py:mlp",
            "--input-shape",
            "2,x",
            "-o",
            tmp_path / "x.onnx",
        ),
        4,
        "--input-shape '2,x'",
    )


def test_dataset_then_stats(tmp_path):
    pytest.importorskip("zarr")
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    images = [rng.standard_normal((1, 3, 4, 4)).astype(np.float32) for _ in range(3)]
    for i, x in enumerate(images):
        np.savez(data / f"batch{i}.npz", image=x)
    r = run("dataset", FIXTURE, data, "--out", tmp_path / "run.zarr", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["batches"] == 3
    d = json.loads(run("stats", tmp_path / "run.zarr", "image", "--json").stdout)
    allx = np.concatenate(images).astype(np.float64)
    assert d["image"]["mean"] == pytest.approx(allx.mean(), rel=1e-9) and d["image"]["units"] == 3
    assert "relu" in run("stats", tmp_path / "run.zarr").stdout
    _assert_one_line_error(
        run("dataset", FIXTURE, data, "--out", tmp_path / "run.zarr"), 4, "exists; pass resume"
    )
    _assert_one_line_error(run("stats", tmp_path / "nowhere"), 2, "not an onnxscope dataset store")
