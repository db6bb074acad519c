"""Dataset planning and integrity checks without running anything: chunks and shards from tensor sizes, array
names, the one-line reasons a resume is refused, sizes, and identities of models and data folders."""

from __future__ import annotations

import os

import numpy as np
import pytest

from onnxscope._dataset_io import (
    describe_change,
    folder_entries,
    folder_fingerprint,
    model_identity,
    npz_bytes,
    parse_size,
)
from onnxscope.dataset import ROUND_BYTES, make_plan
from onnxscope.errors import InputError
from onnxscope.model import Model, load
from onnxscope.testing import mlp_model, save


def _probe(*tensors, batch=8):
    return {
        "batch_size": batch,
        "tensors": [
            {"name": n, "op": "Relu", "dtype": "<f4", "shape": list(s), "sample": True} for n, s in tensors
        ],
    }


def test_chunks_hold_a_power_of_two_of_batches_within_the_chunk_size_and_divide_the_shard():
    p = make_plan(_probe(("big", (8, 1 << 18)), ("mid", (8, 1 << 12)), ("tiny", (8, 3))), 4 << 20, None, None)
    sizes = {t.name: t.batch_bytes for t in p.tensors}
    assert sizes == {"big": 8 << 20, "mid": 128 << 10, "tiny": 96}
    chunks = {t.name: t.chunk_batches for t in p.tensors}
    assert chunks["big"] == 1, "a batch over the chunk size is a chunk alone"
    assert chunks["mid"] == chunks["tiny"] == p.shard_batches == 16, (
        "within 4 MiB (32 batches), capped by the shard"
    )
    assert all(p.shard_batches % t.chunk_batches == 0 for t in p.tensors)
    alone = make_plan(_probe(("mid", (8, 1 << 12))), 4 << 20, None, None)
    assert alone.shard_batches == 256 and alone.tensors[0].chunk_batches == 32, (
        "128 MiB is 1024 batches: at most 256"
    )
    assert make_plan(_probe(("mid", (8, 1 << 12))), 4 << 20, None, 40).shard_batches == 4, "at least 8 shards"
    assert make_plan(_probe(("mid", (8, 1 << 12))), 4 << 20, 6, None).tensors[0].chunk_batches == 6
    with pytest.raises(InputError, match="shard_batches 0"):
        make_plan(_probe(("mid", (8, 4))), 4 << 20, 0, None)


def test_many_tensors_get_smaller_chunks_so_the_buffers_being_filled_stay_bounded():
    many = [(f"t{i}", (8, 1 << 14)) for i in range(200)]  # 512 KiB per batch each
    p = make_plan(_probe(*many), 4 << 20, 64, None)
    filling = sum(t.batch_bytes * t.chunk_batches for t in p.tensors if t.chunk_batches > 1)
    assert filling <= ROUND_BYTES and min(t.chunk_batches for t in p.tensors) >= 1


def test_array_names_are_unique_zarr_names_and_dimensions_are_named():
    p = make_plan(
        _probe(
            ("/layer1/Relu_output_0", (8, 4, 2)),
            ("layer1.Relu_output_0", (8, 4)),
            ("onnxscope", (8, 1)),
            ("__x", (8, 1)),
        ),
        1 << 20,
        None,
        None,
    )
    keys = [t.key for t in p.tensors]
    assert keys == ["layer1.Relu_output_0", "layer1.Relu_output_0~2", "t.onnxscope", "t.__x"]
    assert p.tensors[0].dims == ("sample", "layer1.Relu_output_0_1", "layer1.Relu_output_0_2")
    not_samples = make_plan(
        {**_probe(("shape", (4,))), "tensors": [{**_probe(("shape", (4,)))["tensors"][0], "sample": False}]},
        1 << 20,
        None,
        None,
    )
    assert not_samples.tensors[0].dims == ("shape_0",)


def test_resume_refusals_name_what_changed():
    a = {"path": "/m/model.onnx", "files": {"model.onnx": "1", "model.onnx.data": "2"}}
    weights = describe_change(
        "model", a, {**a, "files": {"model.onnx": "1", "model.onnx.data": "3"}}, "model.onnx"
    )
    assert (
        weights.startswith("the model's weights (external data) changed")
        and "'model.onnx.data' differs" in weights
    )
    graph = describe_change(
        "model", a, {**a, "files": {"model.onnx": "9", "model.onnx.data": "2"}}, "model.onnx"
    )
    assert graph.startswith("the model changed") and "'model.onnx' differs" in graph
    assert describe_change("model", a, {**a, "path": "/elsewhere/model.onnx"}, "model.onnx") is None
    old = {"kind": "folder", "format": "npz", "files": [["a.npz", 1, 5], ["b.npz", 1, 5]]}
    new = {"kind": "folder", "format": "npz", "files": [["a.npz", 2, 5], ["c.npz", 1, 5]]}
    msg = describe_change("source", old, new)
    assert (
        msg
        == "the data folder changed since the store was made (1 added, 1 removed, 1 modified files: 'a.npz', 'c.npz', 'b.npz')"
    )
    sel = describe_change(
        "selection", {"select": None, "exclude": None}, {"select": ["op:Relu"], "exclude": None}
    )
    assert sel == "the selection changed since the store was made (select None -> ['op:Relu'])"
    assert describe_change("settings", {"compression": None}, {"compression": "zstd"}).startswith(
        "the settings changed"
    )


def test_sizes_parse_with_binary_units_and_refuse_nonsense():
    assert parse_size("512M") == 512 << 20 and parse_size("2G") == 2 << 30 and parse_size("100") == 100
    assert parse_size("4MiB") == 4 << 20 and parse_size("1.5k") == 1536
    for bad in ("lots", "-1M", "0"):
        with pytest.raises(InputError, match="expected a size|must be positive"):
            parse_size(bad, "--chunk-size")


def test_a_model_identity_covers_its_external_weights_and_a_folder_fingerprint_its_files(tmp_path):
    path = save(mlp_model(hidden=512), tmp_path / "m.onnx", external_data="m.onnx.data")
    ident = model_identity(load(path))
    assert sorted(ident["files"]) == ["m.onnx", "m.onnx.data"] and ident["path"] == str(tmp_path / "m.onnx")
    assert model_identity(Model(mlp_model()))["files"].keys() == {"<in-memory model>"}
    data = tmp_path / "data"
    (data / "test_data_set_0").mkdir(parents=True)
    (data / "test_data_set_0" / "input_0.pb").write_bytes(b"12")
    kind, entries = folder_entries(data)
    assert (kind, entries) == ("sets", ["test_data_set_0"])
    fp = folder_fingerprint(data, entries)
    assert fp[0][:2] == [os.path.join("test_data_set_0", "input_0.pb"), 2]
    with pytest.raises(InputError, match="has no .npz, .npy or test_data_set_"):
        folder_entries(tmp_path / "data" / "test_data_set_0")


def test_npz_bytes_depend_on_the_arrays_only():
    a = {"x": np.arange(4), "y": np.ones((2, 2))}
    assert npz_bytes(a) == npz_bytes({k: v.copy() for k, v in a.items()})
