"""Dataset capture on a local Dask cluster of two single-threaded workers: the store has the bytes of the
single-process store (statistics included), also when a worker is killed mid-run, and a client killed mid-run
leaves a store that resume completes to the same bytes. One cluster serves the whole module."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import onnxscope
from onnxscope.dataset import capture_dataset, open_store
from onnxscope.testing import mlp_model, save

pytest.importorskip("zarr")
pytest.importorskip("onnxruntime")
distributed = pytest.importorskip("distributed")

from distributed.diagnostics.plugin import WorkerPlugin  # noqa: E402

KW = {"shard_batches": 2, "progress": False, "threads": 1}


def tree(path) -> dict[str, bytes]:
    root = Path(path)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR
    )
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A model with external weights, 13 batches in a folder (the last smaller), and the single-process stores of
    the folder and of the same batches given as an iterable."""
    root = tmp_path_factory.mktemp("dask")
    model = save(mlp_model(hidden=512), root / "mlp.onnx", external_data="mlp.onnx.data")
    rng = np.random.default_rng(0)
    batches = [{"x": rng.standard_normal((4 if i < 12 else 3, 3)).astype(np.float32)} for i in range(13)]
    (root / "data").mkdir()
    for i, b in enumerate(batches):
        np.savez(root / "data" / f"b{i:03d}.npz", **b)
    capture_dataset(model, root / "data", out=root / "ref.zarr", **KW)
    capture_dataset(model, iter(batches), out=root / "ref-iter.zarr", source_id="rng0", **KW)
    return {"root": root, "model": model, "data": root / "data", "batches": batches}


def test_two_workers_write_the_bytes_of_one_process(client, setup, tmp_path):
    out = tmp_path / "dask.zarr"
    store = capture_dataset(setup["model"], setup["data"], out=out, client=client, **KW)
    ref = open_store(setup["root"] / "ref.zarr")
    assert store.complete and store.samples == ref.samples == 51
    assert tree(out) == tree(setup["root"] / "ref.zarr"), "every chunk, statistic and record is the same"
    for name in ref:
        np.testing.assert_array_equal(store[name], ref[name])
        a, b = store.stats(name), ref.stats(name)
        assert (a.mean, a.m2, a.min, a.max) == (b.mean, b.m2, b.min, b.max)
        np.testing.assert_array_equal(a.unit_m2, b.unit_m2)


def test_the_cli_runs_on_an_existing_cluster(client, setup, tmp_path, capsys):
    from onnxscope.cli.main import main

    address = client.scheduler.address
    args = ["dataset", setup["model"], setup["data"], "--out", tmp_path / "cli.zarr", "--shard-batches", "2"]
    assert main([*map(str, args), "--scheduler", address, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 51
    assert tree(tmp_path / "cli.zarr") == tree(setup["root"] / "ref.zarr")


class KillOnce(WorkerPlugin):
    """SIGKILLs the worker it runs in as it starts a shard, once a shard has been committed to ``store``."""

    name = "onnxscope-test-kill-once"

    def __init__(self, store: str, flag: str) -> None:
        self.store, self.flag = store, flag

    def transition(self, key, start, finish, **kwargs):
        if finish != "executing" or "onnxscope-shard" not in str(key):
            return
        meta = os.path.join(self.store, "onnxscope")
        shards = os.path.join(meta, "shards")
        committed = os.path.isdir(shards) and any(f.endswith(".npz") for f in os.listdir(shards))
        try:
            with open(os.path.join(meta, "progress.json")) as f:
                committed = committed or json.load(f)["shards"] > 0
        except (OSError, ValueError):
            pass
        if not committed:
            return
        try:
            os.close(os.open(self.flag, os.O_CREAT | os.O_EXCL))  # only the first time, on any worker
        except FileExistsError:
            return
        os.kill(os.getpid(), signal.SIGKILL)


def test_a_worker_killed_mid_run_is_retried_and_the_store_is_unchanged(client, setup, tmp_path):
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    out, flag = tmp_path / "killed.zarr", tmp_path / "killed.flag"
    plugin = KillOnce(str(out), str(flag))
    client.register_plugin(plugin)
    try:
        store = capture_dataset(setup["model"], setup["data"], out=out, client=client, **KW)
    finally:
        client.unregister_worker_plugin(plugin.name)
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert flag.exists(), "a worker was killed as it started a shard"
    assert store.complete and tree(out) == tree(setup["root"] / "ref.zarr")
    client.wait_for_workers(2, timeout=60)


CLIENT = r"""
import sys, threading, numpy as np
from distributed import Client
from onnxscope.dataset import capture_dataset
address, model, out, data, stop = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
import glob
batches = [{"x": np.load(p)["x"]} for p in sorted(glob.glob(data + "/*.npz"))]
def gen():
    for i, b in enumerate(batches):
        if i == stop:
            threading.Event().wait()  # never returns: the test kills this client while it waits here
        yield b
with Client(address) as c:
    capture_dataset(model, gen(), out=out, client=c, source_id="rng0", shard_batches=2, progress=False, threads=1)
"""


def test_a_client_killed_mid_run_leaves_a_store_that_resume_completes(client, setup, tmp_path):
    out = tmp_path / "client.zarr"
    cmd = [
        sys.executable,
        "-c",
        CLIENT,
        client.scheduler.address,
        setup["model"],
        str(out),
        str(setup["data"]),
        "7",
    ]
    proc = subprocess.Popen(cmd)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # shards 0-2 (batches 0-5) can commit; batch 7 never comes
            try:
                if open_store(out).batches == 6:
                    break
            except onnxscope.ModelLoadError:
                pass
            time.sleep(0.05)
        else:
            pytest.fail("the client's run did not commit its first shards")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not open_store(out).complete
    done = capture_dataset(
        setup["model"], iter(setup["batches"]), out=out, client=client, source_id="rng0", resume=True, **KW
    )
    assert done.complete and tree(out) == tree(setup["root"] / "ref-iter.zarr")


def test_warm_workers_follow_a_store_made_again_at_the_same_path_with_another_plan(client, setup, tmp_path):
    import shutil

    out = tmp_path / "again.zarr"
    capture_dataset(setup["model"], setup["data"], out=out, client=client, **KW)
    shutil.rmtree(out)
    kw = {**KW, "shard_batches": 4, "chunk_size": "1K"}  # other chunks: the workers' open arrays are stale
    capture_dataset(setup["model"], setup["data"], out=out, client=client, **kw)
    capture_dataset(setup["model"], setup["data"], out=tmp_path / "one.zarr", **kw)
    assert tree(out) == tree(tmp_path / "one.zarr")


def test_a_local_cluster_keeps_glibcs_own_memory_reuse(monkeypatch):
    """``local_client`` (``--workers N``) starts its workers without Dask's MALLOC_TRIM_THRESHOLD_, which would
    have every batch fault its arrays in afresh (docs/benchmarks.md: 3x the page faults); Dask's other
    settings (one BLAS/OpenMP thread per worker) stay."""
    from onnxscope.dataset import local_client

    # what a nanny started earlier in this process leaves in its environment (and workers would inherit)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    before = os.environ.get("MALLOC_TRIM_THRESHOLD_")
    with local_client(1) as c:
        env = next(iter(c.run(lambda: dict(os.environ)).values()))
    assert "MALLOC_TRIM_THRESHOLD_" not in env and env.get("OMP_NUM_THREADS") == "1"
    assert os.environ.get("MALLOC_TRIM_THRESHOLD_") == before  # this process's environment as it was


def test_a_later_run_from_a_folder_whose_first_file_changed_stores_the_new_file(
    client, tmp_path, monkeypatch
):
    # the probe runs on one worker and the first shard on the other, then the other way round; a worker's cached
    # context outlives a run, so nothing of an earlier run's first batch may be stored in a later one
    from onnxscope import _dataset_shard as shard

    model = save(mlp_model(), tmp_path / "mlp.onnx")
    data, out = tmp_path / "data", tmp_path / "run.zarr"
    data.mkdir()
    w1, w2 = sorted(client.scheduler_info()["workers"])
    submit = distributed.Client.submit
    for seed, (probe_on, shard_on) in ((1, (w1, w2)), (2, (w2, w1))):
        x = np.random.default_rng(seed).standard_normal((4, 3)).astype(np.float32)
        np.savez(data / "b000.npz", x=x)
        shutil.rmtree(out, ignore_errors=True)

        def pinned(self, func, *a, _p=probe_on, _s=shard_on, **kw):
            if func is shard.probe_task:
                kw["workers"] = [_p]
            elif func is shard.shard_task:
                kw["workers"] = [_s]
            return submit(self, func, *a, **kw)

        monkeypatch.setattr(distributed.Client, "submit", pinned)
        store = capture_dataset(model, data, out=out, client=client, shard_batches=1, progress=False)
        monkeypatch.setattr(distributed.Client, "submit", submit)
        cap = onnxscope.capture(onnxscope.load(model), {"x": x})
        for name in ("x", "h", "a", "y"):
            np.testing.assert_array_equal(store[name], cap[name])
