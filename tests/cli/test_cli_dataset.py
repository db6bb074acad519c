"""``onnxscope dataset`` as typed, in-process: a local Dask cluster writes what one process writes, compression
is reported, and a resume with another selection, setting or weights is refused in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from onnxscope.cli.main import main

pytest.importorskip("zarr")
pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "fixtures" / "small_cnn.onnx"


def tree(path) -> dict[str, bytes]:
    root = Path(path)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def setup(tmp_path):
    for name in ("small_cnn.onnx", "small_cnn.onnx.data"):
        shutil.copy(FIXTURE.parent / name, tmp_path / name)
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        np.savez(data / f"batch{i}.npz", image=rng.standard_normal((1, 3, 4, 4)).astype(np.float32))
    return tmp_path / "small_cnn.onnx", data


def _one_line_error(capsys, code: int, argv: list, *fragments: str) -> None:
    assert main([str(a) for a in argv]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("onnxscope: error: "), err
    for f in fragments:
        assert f in err[0], (f, err[0])


def test_a_local_cluster_writes_the_store_one_process_writes(setup, tmp_path, capsys):
    pytest.importorskip("distributed")
    model, data = setup
    common = [model, data, "--shard-batches", "2", "--compression", "zstd", "--threads", "1", "--json"]
    assert main(["dataset", *map(str, common), "--out", str(tmp_path / "one.zarr")]) == 0
    one = json.loads(capsys.readouterr().out)
    assert main(["dataset", *map(str, common), "--out", str(tmp_path / "two.zarr"), "--workers", "2"]) == 0
    two = json.loads(capsys.readouterr().out)
    assert one["samples"] == two["samples"] == 6 and one["compression"] == "zstd" and one["ratio"] > 0
    assert tree(tmp_path / "one.zarr") == tree(tmp_path / "two.zarr")


def test_the_summary_reports_the_compression_ratio(setup, tmp_path, capsys):
    model, data = setup
    out = tmp_path / "s.zarr"
    assert main(["dataset", str(model), str(data), "--out", str(out), "--compression", "gzip:1"]) == 0
    text = capsys.readouterr().out
    assert "6 batches, 6 samples" in text and "gzip:1:" in text and "ratio" in text


def test_resume_with_another_selection_setting_or_weights_is_refused_in_one_line(setup, tmp_path, capsys):
    model, data = setup
    out = tmp_path / "s.zarr"
    assert main(["dataset", str(model), str(data), "--out", str(out), "--json"]) == 0
    capsys.readouterr()
    before = tree(out)
    _one_line_error(
        capsys,
        4,
        ["dataset", model, data, "--out", out, "--resume", "--select", "op:Relu"],
        "the selection changed",
    )
    _one_line_error(
        capsys,
        4,
        ["dataset", model, data, "--out", out, "--resume", "--recompute"],
        "the settings changed",
        "recompute False -> True",
    )
    weights = model.parent / "small_cnn.onnx.data"
    raw = bytearray(weights.read_bytes())
    raw[-4:] = bytes(4)
    weights.write_bytes(bytes(raw))
    _one_line_error(
        capsys,
        4,
        ["dataset", model, data, "--out", out, "--resume"],
        "the model's weights (external data) changed",
        "'small_cnn.onnx.data' differs",
    )
    assert tree(out) == before
    _one_line_error(  # refused as the arguments are parsed (a usage error: exit 2)
        capsys,
        2,
        ["dataset", model, data, "--out", tmp_path / "x.zarr", "--chunk-size", "4Q"],
        "--chunk-size: '4Q'",
    )
    assert not (tmp_path / "x.zarr").exists()
