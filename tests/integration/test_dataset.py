"""Dataset capture in one process: the store against onnxscope.capture and numpy, xarray and dask reading it,
resume after a kill to the same bytes, and a resume refused (with nothing written) when anything changed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import onnxscope
from onnxscope.dataset import capture_dataset, merge_stats, open_store
from onnxscope.testing import mlp_model, save

pytest.importorskip("zarr")
pytest.importorskip("onnxruntime")
from oracles import ort_marking


def _batches(n: int, seed: int = 0, size: int = 4, last: int | None = None):
    rng = np.random.default_rng(seed)
    sizes = [size] * n if last is None else [size] * (n - 1) + [last]
    return [{"x": rng.standard_normal((k, 3)).astype(np.float32)} for k in sizes]


def tree(path) -> dict[str, bytes]:
    """Every file of a store, by relative path: two stores are the same when these are equal."""
    root = Path(path)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _folder(path: Path, batches) -> Path:
    path.mkdir()
    for i, b in enumerate(batches):
        np.savez(path / f"b{i:03d}.npz", **b)
    return path


def test_store_and_statistics_equal_capture_and_numpy_over_the_dataset(tmp_path):
    m = onnxscope.Model(mlp_model())
    batches = _batches(7, last=2)  # the last batch may be smaller
    store = capture_dataset(m, batches, out=tmp_path / "run.zarr", progress=False, shard_batches=2)
    caps = [onnxscope.capture(m, b) for b in batches]
    assert (
        store.complete
        and store.batches == 7
        and store.samples == 26
        and sorted(store) == ["a", "h", "x", "y"]
    )
    for name in ("x", "h", "a", "y"):
        whole = np.concatenate([c[name] for c in caps])
        np.testing.assert_array_equal(store[name], whole)
        s = store.stats(name)
        w64 = whole.astype(np.float64)
        assert s.count == whole.size and s.mean == pytest.approx(w64.mean(), rel=1e-9)
        assert s.std == pytest.approx(w64.std(), rel=1e-9)
        np.testing.assert_allclose(s.unit_mean, w64.mean(axis=0), rtol=1e-9)
        np.testing.assert_allclose(s.unit_std, w64.std(axis=0), rtol=1e-7)
        np.testing.assert_array_equal(s.unit_max, whole.max(axis=0))
    relu = np.concatenate([c["a"] for c in caps])
    assert store.stats("a").dead_units.tolist() == np.flatnonzero(relu.max(axis=0) <= 0).tolist()
    import zarr

    attrs = zarr.open_group(str(tmp_path / "run.zarr"), mode="r").attrs["onnxscope"]
    assert attrs["inputs"] == ["x"] and attrs["select"] == "None" and attrs["batch_size"] == 4


def test_the_first_batch_is_run_once_and_every_batch_of_a_folder_is_stored_as_captured(tmp_path, monkeypatch):
    # the probe's run of the first batch is what the first shard stores (no second run of it); a folder's batches
    # differ, so a capture stored for the wrong batch would show
    from onnxscope.session import CaptureSession

    m = onnxscope.Model(mlp_model())
    batches = _batches(5, seed=3)
    data = _folder(tmp_path / "data", batches)
    caps = [onnxscope.capture(m, b) for b in batches]
    sizes: list[int] = []
    run = CaptureSession.run

    def counting(self, inputs=None, **kw):
        sizes.append(int(inputs["x"].shape[0]))
        return run(self, inputs, **kw)

    monkeypatch.setattr(CaptureSession, "run", counting)
    store = capture_dataset(m, data, out=tmp_path / "run.zarr", progress=False, shard_batches=2)
    assert sorted(sizes) == [1] + [4] * 5, "one run per batch, and the probe's one-sample run"
    for name in ("x", "h", "a", "y"):
        np.testing.assert_array_equal(store[name], np.concatenate([c[name] for c in caps]))


def test_xarray_and_dask_open_every_tensor_with_named_dimensions(tmp_path):
    xr = pytest.importorskip("xarray")
    da = pytest.importorskip("dask.array")
    m = onnxscope.Model(mlp_model())
    batches = _batches(5, seed=3, last=3)
    store = capture_dataset(m, batches, out=tmp_path / "run.zarr", progress=False)
    caps = [onnxscope.capture(m, b) for b in batches]
    ds = xr.open_zarr(tmp_path / "run.zarr", consolidated=False)
    assert sorted(ds.data_vars) == sorted(store.key(n) for n in store)
    for name in store:
        whole = np.concatenate([c[name] for c in caps])
        v = ds[store.key(name)]
        assert v.dims[0] == "sample" and v.shape == whole.shape and v.attrs["tensor"] == name
        np.testing.assert_array_equal(v.values, whole)
        np.testing.assert_array_equal(
            da.from_zarr(str(tmp_path / "run.zarr"), component=store.key(name)), whole
        )
    assert ds.sizes["sample"] == 19 and ds["h"].dims == ("sample", "h_1")


def test_chunks_follow_the_tensor_sizes_and_compression_keeps_the_values(tmp_path):
    m = onnxscope.Model(mlp_model(hidden=256))
    batches = [{"x": np.full((8, 3), i % 2, np.float32)} for i in range(16)]  # repetitive: compresses well
    plain = capture_dataset(m, batches, out=tmp_path / "plain.zarr", progress=False, chunk_size="16K")
    # h is 8 KiB per batch (8 x 256 float32): two batches per 16 KiB chunk; x (96 bytes) fills a whole shard
    assert plain.array("h").chunks == (16, 256)
    assert plain.array("x").chunks == (8 * plain.plan.shard_batches, 3)
    packed = capture_dataset(
        m, batches, out=tmp_path / "zstd.zarr", progress=False, chunk_size="16K", compression="zstd"
    )
    assert packed.compression == "zstd" and plain.compression is None
    for name in plain:
        np.testing.assert_array_equal(packed[name], plain[name])
    assert packed.nbytes == plain.nbytes and packed.nbytes_stored * 4 < packed.nbytes
    with pytest.raises(onnxscope.InputError, match="compression 'lz5': choose one of none, zstd"):
        capture_dataset(m, batches, out=tmp_path / "bad.zarr", compression="lz5")


def test_shard_statistics_merge_to_the_whole(tmp_path):
    m = onnxscope.Model(mlp_model())
    batches = _batches(6, seed=1)
    a = capture_dataset(m, batches[:2], out=tmp_path / "a.zarr", stats_only=True, progress=False)
    b = capture_dataset(m, batches[2:], out=tmp_path / "b.zarr", stats_only=True, progress=False)
    assert len(a) == 0 and not (tmp_path / "a.zarr" / "h").exists(), "stats-only writes no tensors"
    merged = merge_stats(a, b)
    whole = np.concatenate([onnxscope.capture(m, x)["h"] for x in batches]).astype(np.float64)
    assert merged["h"].mean == pytest.approx(whole.mean(), rel=1e-9)
    assert merged["h"].std == pytest.approx(whole.std(), rel=1e-9)
    np.testing.assert_allclose(merged["h"].unit_std, whole.std(axis=0), rtol=1e-9)


def test_batches_of_another_size_than_the_first_are_refused_except_the_last(tmp_path):
    m = onnxscope.Model(mlp_model())
    batches = _batches(4)
    batches[1] = {"x": batches[1]["x"][:3]}
    with pytest.raises(onnxscope.InputError, match="batch 1 has 3 samples but the first had 4"):
        capture_dataset(m, batches, out=tmp_path / "s.zarr", progress=False, shard_batches=2)
    assert not (tmp_path / "s.zarr").exists(), "nothing was committed: nothing is left"
    with pytest.raises(onnxscope.InputError, match="batch 1 has 3 samples"):
        capture_dataset(m, batches, out=tmp_path / "s.zarr", progress=False, shard_batches=1)
    assert open_store(tmp_path / "s.zarr").batches == 1, "the first shard was committed: it stays"


def test_a_run_refused_before_it_starts_leaves_nothing_and_the_retry_needs_no_resume(tmp_path):
    m = onnxscope.Model(mlp_model())
    out = tmp_path / "s.zarr"
    with pytest.raises(onnxscope.NotFoundError):
        capture_dataset(m, _batches(2), select="no_such_tensor", out=out, progress=False)
    assert not out.exists()
    with pytest.raises(onnxscope.InputError, match="no input 'image'"):
        capture_dataset(m, [{"image": np.zeros((4, 3), np.float32)}], out=out, progress=False)
    assert not out.exists()
    store = capture_dataset(m, _batches(2), select="op:Relu", out=out, progress=False)
    assert sorted(store) == ["a", "x", "y"]
    with pytest.raises(onnxscope.InputError, match="exists; pass resume=True"):
        capture_dataset(m, _batches(2), out=out, progress=False)


@pytest.fixture
def external(tmp_path):
    """A model with its weights in ``mlp.onnx.data``, a data folder, and a complete store of both."""
    model = save(mlp_model(hidden=512), tmp_path / "mlp.onnx", external_data="mlp.onnx.data")
    assert os.path.getsize(tmp_path / "mlp.onnx.data") > 0, "weights are stored outside the .onnx file"
    data = _folder(tmp_path / "data", _batches(6, seed=2))
    out = tmp_path / "s.zarr"
    capture_dataset(model, data, out=out, progress=False, shard_batches=2)
    return Path(model), data, out


def test_resume_after_the_weights_file_changed_is_refused_and_writes_nothing(external):
    model, data, out = external
    before = tree(out)
    raw = bytearray((model.parent / "mlp.onnx.data").read_bytes())
    raw[:4] = bytes(4)  # one weight changed; the .onnx file is untouched
    (model.parent / "mlp.onnx.data").write_bytes(bytes(raw))
    with pytest.raises(
        onnxscope.InputError, match=r"the model's weights \(external data\) changed.*'mlp.onnx.data' differs"
    ):
        capture_dataset(model, data, out=out, resume=True, progress=False)
    assert tree(out) == before


def test_resume_after_the_data_folder_changed_is_refused_and_writes_nothing(external):
    model, data, out = external
    before = tree(out)
    np.savez(data / "b006.npz", x=np.zeros((4, 3), np.float32))  # one more batch
    with pytest.raises(
        onnxscope.InputError, match=r"the data folder changed .*\(1 added files: 'b006.npz'\)"
    ):
        capture_dataset(model, data, out=out, resume=True, progress=False)
    os.unlink(data / "b006.npz")
    os.utime(data / "b002.npz", ns=(0, 0))  # same bytes, another mtime
    with pytest.raises(
        onnxscope.InputError, match=r"the data folder changed .*\(1 modified files: 'b002.npz'\)"
    ):
        capture_dataset(model, data, out=out, resume=True, progress=False)
    assert tree(out) == before


def test_resume_with_another_selection_is_refused_and_writes_nothing(external):
    model, data, out = external
    before = tree(out)
    with pytest.raises(onnxscope.InputError, match=r"the selection changed .*\(select None -> 'op:Relu'\)"):
        capture_dataset(model, data, select="op:Relu", out=out, resume=True, progress=False)
    assert tree(out) == before
    assert capture_dataset(model, data, out=out, resume=True, progress=False).complete, "unchanged: accepted"


def test_every_tensor_comes_from_the_run_and_resume_with_recompute_changed_is_refused(external):
    """A dataset reads every tensor of every batch, so the run computes them all (onnxruntime leaving out the
    Gemm+Relu fusion that removes ``h``; test_capture checks the session does so): the store equals onnxruntime
    at its default level with every tensor marked. Recomputing (``recompute=True``) is a setting of the store."""
    model, data, out = external
    batches = _batches(6, seed=2)
    store = open_store(out)
    for name in ("h", "a", "y"):
        expected = np.concatenate([ort_marking(model, b, ["h", "a"], "all")[name] for b in batches])
        np.testing.assert_array_equal(store[name], expected, err_msg=name)
    before = tree(out)
    with pytest.raises(onnxscope.InputError, match=r"the settings changed .*\(recompute False -> True\)"):
        capture_dataset(model, data, out=out, resume=True, progress=False, recompute=True)
    assert tree(out) == before


@pytest.mark.parametrize("recompute", [False, True])
def test_the_dataset_session_marks_or_recomputes_as_asked(tmp_path, monkeypatch, recompute):
    from onnxscope import _dataset_shard

    seen = []
    real = _dataset_shard.CaptureSession

    def recording(*args, **kwargs):
        seen.append(kwargs.get("recompute"))
        return real(*args, **kwargs)

    monkeypatch.setattr(_dataset_shard, "CaptureSession", recording)
    m = onnxscope.Model(mlp_model())
    kw = {} if not recompute else {"recompute": True}
    store = capture_dataset(m, _batches(3), out=tmp_path / "s.zarr", progress=False, **kw)
    assert store.complete and seen and set(seen) == {recompute}
    with pytest.raises(onnxscope.InputError, match=r"recompute 'no': choose True or False"):
        capture_dataset(m, _batches(1), out=tmp_path / "t.zarr", progress=False, recompute="no")
    assert not (tmp_path / "t.zarr").exists()
    with pytest.raises(onnxscope.InputError, match=r"recompute 0: choose True or False"):
        onnxscope.CaptureSession(m, recompute=0)


def test_a_store_made_before_the_recompute_setting_resumes_only_recomputing(external):
    """Stores written before the setting existed were made recomputing: they continue with recompute=True."""
    import json

    model, data, out = external
    run = json.loads((out / "onnxscope" / "run.json").read_text())
    del run["settings"]["recompute"]
    (out / "onnxscope" / "run.json").write_text(json.dumps(run))
    before = tree(out)
    with pytest.raises(onnxscope.InputError, match=r"the settings changed .*\(recompute True -> False\)"):
        capture_dataset(model, data, out=out, resume=True, progress=False)
    assert tree(out) == before
    assert capture_dataset(model, data, out=out, resume=True, progress=False, recompute=True).complete


class _Stop(Exception):
    pass


def _interrupted(batches, after: int):
    for i, b in enumerate(batches):
        if i == after:
            raise _Stop
        yield b


def test_an_iterable_resumes_only_with_the_same_batches(tmp_path):
    m = onnxscope.Model(mlp_model())
    batches = _batches(8, seed=4)
    out = tmp_path / "s.zarr"
    with pytest.raises(_Stop):
        capture_dataset(m, _interrupted(batches, 5), out=out, shard_batches=2, source_id="a", progress=False)
    assert open_store(out).batches == 4, "two shards of two batches were committed"
    before = tree(out)
    with pytest.raises(onnxscope.InputError, match=r"the data source changed .*source_id 'a' -> 'b'"):
        capture_dataset(m, batches, out=out, shard_batches=2, source_id="b", resume=True, progress=False)
    other = _batches(8, seed=5)
    with pytest.raises(onnxscope.InputError, match=r"the data source changed .*batches 0\.\.1 differ"):
        capture_dataset(m, other, out=out, shard_batches=2, source_id="a", resume=True, progress=False)
    assert tree(out) == before
    done = capture_dataset(m, batches, out=out, shard_batches=2, source_id="a", resume=True, progress=False)
    ref = capture_dataset(
        m, batches, out=tmp_path / "ref.zarr", shard_batches=2, source_id="a", progress=False
    )
    assert done.complete and tree(out) == tree(tmp_path / "ref.zarr")
    assert ref.samples == 32


RUNNER = r"""
import sys, threading, numpy as np
from onnxscope.dataset import capture_dataset
model, out, n, stop = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(0)
data = [{"x": rng.standard_normal((4, 3)).astype(np.float32)} for _ in range(n)]
def batches():
    for i, b in enumerate(data):
        if i == stop:
            threading.Event().wait()  # never returns: the test kills this process while it waits here
        yield b
capture_dataset(model, batches(), out=out, shard_batches=2, source_id="rng0", progress=False, threads=1)
"""


def test_a_killed_run_leaves_complete_shards_and_resumes_to_the_same_bytes(tmp_path):
    model = save(mlp_model(), tmp_path / "mlp.onnx")
    out, ref = tmp_path / "killed.zarr", tmp_path / "ref.zarr"
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, model, str(out), "12", "7"])
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # batches 0-5 (three shards) can commit; batch 7 never comes
            try:
                if open_store(out).batches == 6:
                    break
            except onnxscope.ModelLoadError:
                pass
            time.sleep(0.05)
        else:
            pytest.fail("the run did not commit its first shards")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    store = open_store(out)
    assert store.batches == 6 and not store.complete
    assert store["h"].shape[0] == store.samples == 24
    assert store.stats("h").count == 24 * 16
    rng = np.random.default_rng(0)
    data = [{"x": rng.standard_normal((4, 3)).astype(np.float32)} for _ in range(12)]
    kw = {"shard_batches": 2, "source_id": "rng0", "progress": False, "threads": 1}
    done = capture_dataset(model, iter(data), out=out, resume=True, **kw)
    capture_dataset(model, iter(data), out=ref, **kw)
    assert done.complete and done.batches == 12
    assert tree(out) == tree(ref), "the resumed store has the bytes of an uninterrupted run"


def test_a_memory_budget_splits_the_tensors_across_runs_with_the_same_result(tmp_path):
    m = onnxscope.Model(mlp_model(hidden=64))
    batches = _batches(3, seed=5)
    whole = capture_dataset(m, batches, out=tmp_path / "whole.zarr", progress=False)
    per_batch = sum(np.asarray(onnxscope.capture(m, batches[0])[k]).nbytes for k in ("h", "a", "y"))
    split = capture_dataset(
        m, batches, out=tmp_path / "split.zarr", progress=False, max_memory=per_batch // 2
    )
    assert split.plan.parts == (("h",), ("a",), ("y",)), "h, a and y (1024 + 1024 + 64 bytes, budget 1056)"
    assert sorted(split) == sorted(whole)
    for name in whole:
        np.testing.assert_array_equal(split[name], whole[name])
        assert split.stats(name).summary() == whole.stats(name).summary()
    with pytest.raises(onnxscope.InputError, match="alone takes .* bytes per batch, over --max-memory 64"):
        capture_dataset(m, batches, out=tmp_path / "tiny.zarr", progress=False, max_memory=64)
    assert not (tmp_path / "tiny.zarr").exists()


def test_any_fsspec_url_holds_the_same_store(tmp_path):
    m = onnxscope.Model(mlp_model())
    batches = _batches(5, seed=6, last=1)
    local = capture_dataset(m, batches, out=tmp_path / "a.zarr", shard_batches=2, progress=False)
    as_url = capture_dataset(m, batches, out=f"file://{tmp_path}/b.zarr", shard_batches=2, progress=False)
    assert tree(tmp_path / "a.zarr") == tree(tmp_path / "b.zarr")
    url = f"memory://onnxscope-test-{os.getpid()}/run.zarr"  # fsspec's in-memory file system: through Zarr's FsspecStore
    remote = capture_dataset(m, batches, out=url, shard_batches=2, progress=False)
    try:
        assert remote.complete and sorted(remote) == sorted(local) and remote.samples == local.samples == 17
        for name in local:
            np.testing.assert_array_equal(remote[name], local[name])
            assert remote.stats(name).summary() == as_url.stats(name).summary()
        with pytest.raises(onnxscope.InputError, match="exists; pass resume=True"):
            capture_dataset(m, batches, out=url, progress=False)
    finally:
        import fsspec

        fsspec.filesystem("memory").rm(f"/onnxscope-test-{os.getpid()}", recursive=True)


def test_chunks_written_as_files_have_the_bytes_zarr_writes(tmp_path):
    import zarr

    from onnxscope._dataset_shard import ChunkTarget, aligned_empty

    rng = np.random.default_rng(7)
    big = aligned_empty(
        (3, 3000), np.float32
    )  # chunks of 12,000 bytes: the first written directly, with a tail
    big[:] = rng.standard_normal(big.shape)
    pages = aligned_empty((2, 2048), np.float32)  # chunks of exactly two pages, both aligned
    pages[:] = rng.standard_normal(pages.shape)
    cases = [
        ("<f4", (4, 3, 2), rng.standard_normal((8, 3, 2)).astype(np.float32)),
        ("|b1", (4,), rng.random(8) > 0.5),
        ("<i8", (4, 5), rng.integers(-9, 9, (8, 5))),
        ("<f2", (4, 2), rng.standard_normal((8, 2)).astype(np.float16)),
        ("<f4", (1, 3000), big),
        ("<f4", (1, 2048), pages),
    ]
    for name, root in (("direct", tmp_path / "direct.zarr"), ("zarr", tmp_path / "zarr.zarr")):
        g = zarr.open_group(root, mode="w")
        for i, (dtype, chunks, data) in enumerate(cases):
            arr = g.create_array(
                f"a{i}",
                shape=data.shape,
                chunks=chunks,
                dtype=dtype,
                compressors=None,
                fill_value=0,
                chunk_key_encoding={"name": "default", "separator": "."},
            )
            target = ChunkTarget(arr, str(root) if name == "direct" else None)
            assert (target.folder is not None) == (name == "direct")
            for start in range(0, data.shape[0], chunks[0]):
                target.write(start, data[start : start + chunks[0]])
            np.testing.assert_array_equal(zarr.open_array(root / f"a{i}", mode="r")[:], data)
    assert tree(tmp_path / "direct.zarr") == tree(tmp_path / "zarr.zarr")


def test_chunk_files_are_written_past_the_page_cache_where_the_file_system_allows_it(tmp_path, monkeypatch):
    """An aligned buffer's aligned part goes out with O_DIRECT, the tail and unaligned buffers through the page
    cache; the file holds the same bytes either way (and a file system refusing O_DIRECT gets a plain write)."""
    fcntl = pytest.importorskip("fcntl")  # POSIX

    from onnxscope import _dataset_shard
    from onnxscope._dataset_shard import DIRECT_ALIGN, aligned_empty, write_file

    direct = getattr(os, "O_DIRECT", 0)
    try:
        os.close(os.open(tmp_path / "probe", os.O_WRONLY | os.O_CREAT | direct))
        supported = bool(direct)
    except OSError:
        supported = False
    flags: list[bool] = []
    real_write = os.write

    def spy(fd, data):
        flags.append(bool(fcntl.fcntl(fd, fcntl.F_GETFL) & direct))
        return real_write(fd, data)

    monkeypatch.setattr(_dataset_shard.os, "write", spy)
    rng = np.random.default_rng(0)
    for nbytes, aligned_start in (
        (3 * DIRECT_ALIGN, True),
        (3 * DIRECT_ALIGN + 100, True),
        (100, True),
        (3 * DIRECT_ALIGN, False),
    ):
        buf = aligned_empty((nbytes + 1,), np.uint8)
        data = buf[:nbytes] if aligned_start else buf[1:]
        data[:] = rng.integers(0, 255, data.shape, dtype=np.uint8)
        flags.clear()
        write_file(str(tmp_path / "f.bin"), data)
        assert (tmp_path / "f.bin").read_bytes() == data.tobytes()
        expect_direct = supported and aligned_start and nbytes >= DIRECT_ALIGN
        assert (flags[0] if flags else False) == expect_direct, (nbytes, aligned_start, flags)
        if expect_direct and nbytes % DIRECT_ALIGN:
            assert flags[-1] is False  # the tail through the page cache
    if not direct:
        return
    data = aligned_empty((3 * DIRECT_ALIGN + 7,), np.uint8)
    data[:] = rng.integers(0, 255, data.shape, dtype=np.uint8)
    real_open = os.open

    def no_direct_open(path, fl, *args):  # a file system refusing O_DIRECT when the file is opened
        if fl & direct:
            raise OSError(22, "Invalid argument")
        return real_open(path, fl, *args)

    monkeypatch.setattr(_dataset_shard.os, "open", no_direct_open)
    write_file(str(tmp_path / "g.bin"), data)
    assert (tmp_path / "g.bin").read_bytes() == data.tobytes()
    monkeypatch.setattr(_dataset_shard.os, "open", real_open)

    def no_direct_write(fd, chunk):  # ... or only when written to
        if fcntl.fcntl(fd, fcntl.F_GETFL) & direct:
            raise OSError(22, "Invalid argument")
        return real_write(fd, chunk)

    monkeypatch.setattr(_dataset_shard.os, "write", no_direct_write)
    write_file(str(tmp_path / "h.bin"), data)
    assert (tmp_path / "h.bin").read_bytes() == data.tobytes()
