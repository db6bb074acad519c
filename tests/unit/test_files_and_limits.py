"""Files a user hands onnxscope, and files it writes: containment, non-regular files, the memory budget, umask,
write failures, broken captures — each ends in one OnnxscopeError line, never a hang or a leak."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import stat
import threading
import zipfile

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxscope import errors
from onnxscope.errors import (
    InputError,
    InternalError,
    ModelLoadError,
    OnnxscopeError,
    OutputError,
    ResourceError,
)
from onnxscope.inputs import read_inputs
from onnxscope.limits import check_alloc, check_array, max_bytes, memory_budget, parse_size, set_max_bytes
from onnxscope.persist import load_capture
from onnxscope.render import atomic_write, save_npz

CANARY = np.arange(16, dtype=np.float32) + 1000.0


def _within(seconds: float, fn, unblock: str | None = None):
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
        if unblock:
            os.close(os.open(unblock, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"did not return within {seconds} s")
    if "error" in out:
        raise out["error"]  # type: ignore[misc]
    return out.get("value")


# -- errors and the budget -----------------------------------------------------------------------------------


def test_internal_errors_are_not_user_errors():
    assert not issubclass(InternalError, OnnxscopeError)
    assert issubclass(OutputError, (OnnxscopeError, OSError)) and issubclass(ResourceError, OnnxscopeError)
    codes = [
        c.exit_code for c in vars(errors).values() if isinstance(c, type) and issubclass(c, OnnxscopeError)
    ]
    assert OutputError.exit_code not in (1, 2) and InternalError.exit_code == 70
    assert len(set(codes)) >= 10


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4096", 4096),
        ("512M", 512 << 20),
        ("2G", 2 << 30),
        ("1.5GiB", 3 << 29),
        ("8k", 8192),
        (" 3 T ", 3 << 40),
    ],
)
def test_sizes_parse(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["-5", "²", "nan", "infG", "", "5X", "1e3"])
def test_malformed_sizes_are_input_errors(text):
    with pytest.raises(InputError, match="expected a size"):
        parse_size(text)


def test_the_budget_comes_from_context_then_process_then_environment(monkeypatch):
    monkeypatch.setenv("ONNXSCOPE_MAX_BYTES", "1M")
    assert max_bytes() == 1 << 20
    set_max_bytes("2M")
    try:
        assert max_bytes() == 2 << 20
        with memory_budget("3M"):
            assert max_bytes() == 3 << 20
        assert max_bytes() == 2 << 20
    finally:
        set_max_bytes(None)
    monkeypatch.setenv("ONNXSCOPE_MAX_BYTES", "unlimited")
    assert max_bytes() is None
    check_alloc(1 << 62, "anything")  # unlimited: no refusal


def test_an_allocation_over_the_budget_is_a_one_line_resource_error():
    with memory_budget("1G"), pytest.raises(ResourceError) as info:
        check_array((3_000_000_000, 3), 4, "random input 'x' float32 [3000000000, 3]")
    message = str(info.value)
    assert "\n" not in message and "33.5 GiB" in message and "ONNXSCOPE_MAX_BYTES=64G" in message


def test_array_sizes_are_exact_beyond_int64():
    with memory_budget(0):  # unlimited: only the arithmetic is checked
        assert check_array((2**40, 2**40), 4, "x") == 2**82


# -- test-data tensors with external data stay in their folder --------------------------------------------------


def _pb(folder, name: str, location: str | None, data: np.ndarray) -> None:
    t = numpy_helper.from_array(data, name)
    if location is not None:
        t.ClearField("raw_data")
        t.data_location = onnx.TensorProto.EXTERNAL
        t.external_data.add(key="location", value=location)
        t.external_data.add(key="length", value=str(data.nbytes))
    (folder / "input_0.pb").write_bytes(t.SerializeToString())


@pytest.mark.parametrize("location", ["secret.bin", "../cwd/secret.bin", "./../cwd/secret.bin"])
def test_test_data_external_data_never_resolves_against_the_working_directory(
    tmp_path, monkeypatch, location
):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "secret.bin").write_bytes(CANARY.tobytes())  # the canary
    monkeypatch.chdir(cwd)
    data = tmp_path / "test_data_set_0"
    data.mkdir()
    _pb(data, "x", location, np.zeros(16, np.float32))
    with pytest.raises(InputError) as info:
        read_inputs(bundle=data)
    assert "\n" not in str(info.value)
    assert "not found in" in str(info.value) or "outside the tensor file's folder" in str(info.value)


def test_test_data_external_data_inside_its_folder_is_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "test_data_set_0"
    data.mkdir()
    values = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    (data / "x.bin").write_bytes(values.tobytes())
    _pb(data, "x", "x.bin", values)
    np.testing.assert_array_equal(read_inputs(bundle=data)["x"], values)


def test_test_data_external_data_with_an_absolute_path_is_refused(tmp_path):
    data = tmp_path / "test_data_set_0"
    data.mkdir()
    (tmp_path / "x.bin").write_bytes(CANARY.tobytes())
    _pb(data, "x", str(tmp_path / "x.bin"), CANARY)
    with pytest.raises(InputError, match="is an absolute path"):
        read_inputs(bundle=data)


# -- non-regular input files ----------------------------------------------------------------------------------


def test_a_fifo_given_as_an_input_file_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "x.npy"
    os.mkfifo(fifo)
    with pytest.raises(
        InputError, match=r"input file .*x\.npy.*: is a FIFO \(named pipe\), not a regular file"
    ):
        _within(10, lambda: read_inputs([f"x={fifo}"]), unblock=str(fifo))


def test_a_fifo_in_a_test_data_folder_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "input_0.pb")
    with pytest.raises(InputError, match="is a FIFO"):
        _within(10, lambda: read_inputs(bundle=tmp_path), unblock=str(tmp_path / "input_0.pb"))


def test_a_device_given_as_an_input_file_is_refused(tmp_path):
    with pytest.raises(InputError, match="is a character device"):
        _within(10, lambda: read_inputs(bundle="/dev/zero"))


# -- broken array files -------------------------------------------------------------------------------------


def test_a_truncated_npz_is_an_input_error(tmp_path):
    np.savez(tmp_path / "all.npz", x=np.ones((4, 4), np.float32))
    data = (tmp_path / "all.npz").read_bytes()
    (tmp_path / "all.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"is not a readable \.npy, \.npz or \.pb file"):
        read_inputs(bundle=tmp_path / "all.npz")


def test_an_npz_of_python_objects_is_refused_unpickled(tmp_path):
    np.savez(tmp_path / "all.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputError, match="pickled data is never loaded"):
        read_inputs(bundle=tmp_path / "all.npz")


def test_an_npz_member_declaring_a_huge_array_is_refused_from_its_header(tmp_path):
    header = {"descr": "<f4", "fortran_order": False, "shape": (2**40,)}
    with zipfile.ZipFile(tmp_path / "all.npz", "w") as z, z.open("x.npy", "w") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(b"\0" * 64)
    with memory_budget("1G"), pytest.raises(ResourceError, match="array 'x' needs 4.0 TiB"):
        read_inputs(bundle=tmp_path / "all.npz")


# -- captures on disk -----------------------------------------------------------------------------------------


def _capture_file(path, meta: object, arrays: dict[str, np.ndarray] | None = None) -> str:
    arrays = {"t0": np.ones(3, np.float32)} if arrays is None else arrays
    np.savez(path, __onnxscope__=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    return str(path)


GOOD_META = {
    "format": 1,
    "model": None,
    "inputs": ["x"],
    "outputs": ["x"],
    "tensors": {},
    "nodes": {},
    "skipped": {},
    "keys": ["x"],
    "constants": [],
    "derived": {},
}


def test_a_well_formed_capture_file_reads_back(tmp_path):
    cap = load_capture(_capture_file(tmp_path / "c.npz", GOOD_META))
    np.testing.assert_array_equal(cap["x"], np.ones(3, np.float32))


@pytest.mark.parametrize(
    "breakage",
    [
        {"tensors": 5},
        {"keys": ["x", "y"]},
        {"inputs": [1]},
        {"format": 99},
        {"tensors": {"x": {"name": "x"}}},
        {"nodes": {"n": {"op": 3}}},
        {"skipped": []},
    ],
)
def test_a_capture_with_broken_metadata_is_a_model_load_error(tmp_path, breakage):
    path = _capture_file(tmp_path / "c.npz", {**GOOD_META, **breakage})
    with pytest.raises(ModelLoadError, match="broken metadata") as info:
        load_capture(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("meta", [[1, 2], "text", None])
def test_a_capture_whose_metadata_is_not_an_object_is_refused(tmp_path, meta):
    with pytest.raises(ModelLoadError, match="not a readable onnxscope capture"):
        load_capture(_capture_file(tmp_path / "c.npz", meta))


def test_a_capture_that_is_not_a_zip_is_refused(tmp_path):
    (tmp_path / "c.npz").write_bytes(b"PK\x03\x04 but not a zip at all")
    with pytest.raises(ModelLoadError, match="not a readable onnxscope capture"):
        load_capture(tmp_path / "c.npz")
    np.save(tmp_path / "plain.npy", np.ones(2))
    with pytest.raises(ModelLoadError, match="not an onnxscope capture"):
        load_capture(tmp_path / "plain.npy")


def test_a_fifo_given_as_a_capture_is_refused(tmp_path):
    os.mkfifo(tmp_path / "c.npz")
    with pytest.raises(ModelLoadError, match="is a FIFO"):
        _within(10, lambda: load_capture(tmp_path / "c.npz"), unblock=str(tmp_path / "c.npz"))


# -- writing: umask, failures, nothing half-written ----------------------------------------------------------


@contextlib.contextmanager
def _umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_are_written_with_the_users_umask(tmp_path, mask, mode):
    with _umask(mask):
        atomic_write(tmp_path / "a.txt", lambda tmp: open(tmp, "w").write("x"))
        save_npz(tmp_path / "w.npz", {"a": np.ones(2)})
    for name in ("a.txt", "w.npz"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == mode, name


def _leftovers(folder) -> list[str]:
    return sorted(p for p in os.listdir(folder) if p.startswith(".onnxscope-"))


def test_a_full_disk_is_an_output_error_and_leaves_nothing_behind(tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, hard))  # files over 64 KiB fail with EFBIG
    try:
        with pytest.raises(OutputError, match=r"cannot write .*w\.npz.*: File too large"):
            save_npz(tmp_path / "w.npz", {"a": np.zeros(1 << 20, np.float32)})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert not (tmp_path / "w.npz").exists() and _leftovers(tmp_path) == []


def test_a_failing_writer_keeps_the_old_file(tmp_path):
    target = tmp_path / "w.txt"
    target.write_text("old")

    def fail(tmp: str) -> None:
        open(tmp, "w").write("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputError, match="No space left on device"):
        atomic_write(target, fail)
    assert target.read_text() == "old" and _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("target", "said"),
    [
        ("dir.npz", "it is a directory"),
        ("fifo.npz", "is a FIFO"),
        ("missing/w.npz", "does not exist"),
        ("n\0.npz", "NUL"),
    ],
)
def test_what_cannot_be_written_over_is_refused_before_writing(tmp_path, target, said):
    (tmp_path / "dir.npz").mkdir()
    os.mkfifo(tmp_path / "fifo.npz")
    path = os.path.join(tmp_path, target)
    with pytest.raises(OutputError, match=said):
        _within(10, lambda: save_npz(path, {}))
    with pytest.raises(OutputError, match=said):
        _within(10, lambda: atomic_write(path, lambda tmp: None))
    assert _leftovers(tmp_path) == []
