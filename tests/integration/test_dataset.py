"""Dataset capture: Zarr store, statistics equal to numpy's over the whole dataset (also merged from shards),
and a run killed with SIGKILL leaves a store that opens, holds complete batches, and resumes to the same end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import onnxscope
from onnxscope.dataset import capture_dataset, merge_stats, open_store
from onnxscope.testing import mlp_model, save

pytest.importorskip("zarr")
pytest.importorskip("onnxruntime")


def _batches(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((4, 3)).astype(np.float32)} for _ in range(n)]


def test_store_and_statistics_equal_numpy_over_the_dataset(tmp_path):
    m = onnxscope.Model(mlp_model())
    batches = _batches(6)
    store = capture_dataset(m, batches, out=tmp_path / "run.zarr", progress=False)
    caps = [onnxscope.capture(m, b) for b in batches]
    for name in ("x", "h", "a", "y"):
        whole = np.concatenate([c[name] for c in caps])
        np.testing.assert_array_equal(store[name], whole)
        s = store.stats(name)
        assert s.count == whole.size and s.mean == pytest.approx(whole.mean(), rel=1e-6)
        assert s.std == pytest.approx(whole.astype(np.float64).std(), rel=1e-6)
        np.testing.assert_allclose(s.unit_mean, whole.astype(np.float64).mean(axis=0), rtol=1e-6)
    import zarr

    attrs = zarr.open_group(str(tmp_path / "run.zarr"), mode="r").attrs["onnxscope"]
    assert attrs["inputs"] == ["x"] and attrs["select"] == "None" and len(attrs["model_sha256"]) == 16
    relu = store.stats("a")
    assert (
        relu.dead_units.tolist()
        == np.flatnonzero(np.concatenate([c["a"] for c in caps]).max(axis=0) <= 0).tolist()
    )


def test_shard_statistics_merge_to_the_whole(tmp_path):
    m = onnxscope.Model(mlp_model())
    batches = _batches(6, seed=1)
    a = capture_dataset(m, batches[:2], out=tmp_path / "a.zarr", stats_only=True, progress=False)
    b = capture_dataset(m, batches[2:], out=tmp_path / "b.zarr", stats_only=True, progress=False)
    assert len(a) == 0, "stats-only writes no tensors"
    merged = merge_stats(a, b)
    whole = np.concatenate([onnxscope.capture(m, x)["h"] for x in batches]).astype(np.float64)
    assert merged["h"].mean == pytest.approx(whole.mean(), rel=1e-9)
    assert merged["h"].std == pytest.approx(whole.std(), rel=1e-9)
    np.testing.assert_allclose(merged["h"].unit_std, whole.std(axis=0), rtol=1e-9)


def test_an_existing_store_needs_resume_and_the_same_model(tmp_path):
    m = onnxscope.Model(mlp_model())
    capture_dataset(m, _batches(1), out=tmp_path / "s.zarr", progress=False)
    with pytest.raises(onnxscope.InputError, match="exists; pass resume=True"):
        capture_dataset(m, _batches(1), out=tmp_path / "s.zarr", progress=False)
    with pytest.raises(onnxscope.InputError, match="another model or selection"):
        capture_dataset(
            m, _batches(1), select="op:Relu", out=tmp_path / "s.zarr", resume=True, progress=False
        )
    other = onnxscope.Model(mlp_model(seed=1))  # same graph, other weights
    with pytest.raises(onnxscope.InputError, match="another model or selection"):
        capture_dataset(other, _batches(1), out=tmp_path / "s.zarr", resume=True, progress=False)


RUNNER = r"""
import sys, time, numpy as np
from onnxscope.dataset import capture_dataset
model, out, n, delay = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
rng = np.random.default_rng(0)
data = [{"x": rng.standard_normal((4, 3)).astype(np.float32)} for _ in range(n)]
def slow():
    for b in data:
        time.sleep(delay)
        yield b
capture_dataset(model, slow(), out=out, resume="--resume" in sys.argv, progress=False)
"""


def test_a_killed_run_leaves_complete_batches_and_resumes_to_the_same_content(tmp_path):
    model = save(mlp_model(), tmp_path / "mlp.onnx")
    out, ref = tmp_path / "killed.zarr", tmp_path / "ref.zarr"
    cmd = [sys.executable, "-c", RUNNER, model, str(out), "12"]
    proc = subprocess.Popen([*cmd, "0.3"])
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if json.loads((out / "onnxscope-progress.json").read_text())["batches"] >= 3:
                break
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.02)
    time.sleep(0.15)  # land somewhere inside the next batch
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    store = open_store(out)
    assert 3 <= store.batches < 12
    assert store["h"].shape[0] == store.samples == 4 * store.batches
    assert store.stats("h").count == store.samples * 16
    subprocess.run([*cmd, "0", "--resume"], check=True)
    subprocess.run([sys.executable, "-c", RUNNER, model, str(ref), "12", "0"], check=True)
    done, full = open_store(out), open_store(ref)
    assert done.batches == full.batches == 12
    for name in full:
        np.testing.assert_array_equal(done[name], full[name])
    a, b = done.stats("y"), full.stats("y")
    assert (a.count, a.min, a.max, a.dead_units.tolist()) == (b.count, b.min, b.max, b.dead_units.tolist())
    assert a.mean == pytest.approx(b.mean, rel=1e-12) and a.std == pytest.approx(b.std, rel=1e-12)


def test_a_memory_budget_splits_the_tensors_across_runs_with_the_same_result(tmp_path):
    m = onnxscope.Model(mlp_model(hidden=64))
    batches = _batches(3, seed=5)
    whole = capture_dataset(m, batches, out=tmp_path / "whole.zarr", progress=False)
    per_batch = sum(np.asarray(onnxscope.capture(m, batches[0])[k]).nbytes for k in ("h", "a", "y"))
    from onnxscope.dataset import _partition
    from onnxscope.session import CaptureSession

    parts = _partition(CaptureSession(m), batches[0], per_batch // 2, None, None)
    assert len(parts) == 3, "over budget: h, a and y (1024 + 1024 + 64 bytes, budget 1056) take a run each"
    split = capture_dataset(
        m, batches, out=tmp_path / "split.zarr", progress=False, max_memory=per_batch // 2
    )
    assert sorted(split) == sorted(whole)
    for name in whole:
        np.testing.assert_array_equal(split[name], whole[name])
        assert split.stats(name).summary() == whole.stats(name).summary()
    with pytest.raises(onnxscope.InputError, match="alone takes .* bytes per batch, over --max-memory 64"):
        capture_dataset(m, batches, out=tmp_path / "tiny.zarr", progress=False, max_memory=64)
