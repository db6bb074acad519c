"""Every command, asked the wrong way, answers with one line on stderr and a non-zero exit — never a traceback.

One table describes each command's arguments with a subject file; the tests swap the subject for a missing file,
a directory, an unreadable file (as a non-root user), and the output for a path in a missing folder, and also try
missing and malformed arguments. A test checks that the table covers every registered command.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from onnxscope.cli import main as cli_main
from onnxscope.errors import InternalError

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "fixtures" / "small_cnn.onnx"
NOBODY = 65534

# command -> (argv with {subject} and {out}, what the subject is, whether {out} is an output path)
TABLE: dict[str, tuple[list[str], str]] = {
    "summary": (["summary", "{subject}"], "model"),
    "weights": (["weights", "{subject}", "--save", "{out}/w.npz"], "model"),
    "neuron": (["neuron", "{subject}", "conv", "0"], "model"),
    "capture": (["capture", "{subject}", "--random", "--out", "{out}/c.npz"], "model"),
    "show": (["show", "{subject}"], "capture"),
    "dataset": (["dataset", "{subject}", "{data}", "--out", "{out}/run.zarr"], "model"),
    "stats": (["stats", "{subject}"], "store"),
    "paths": (["paths", "{subject}", "image", "logits", "--extract", "{out}/sub.onnx"], "model"),
    "residuals": (["residuals", "{subject}"], "model"),
    "attention": (["attention", "{subject}", "--random", "--png", "{out}"], "model"),
    "report": (["report", "{subject}", "-o", "{out}/report.html"], "model"),
    "compare": (["compare", "{subject}", "--random", "--out", "{out}/cmp.json"], "model"),
    "export torch": (
        ["export", "torch", "{subject}:mlp", "--input-shape", "1,10", "-o", "{out}/t.onnx"],
        "factory",
    ),
    "export keras": (["export", "keras", "{subject}", "-o", "{out}/k.onnx"], "keras"),
}

MALFORMED = {
    "summary": ["summary", str(FIXTURE), "--bogus"],
    "weights": ["weights", str(FIXTURE), "--stats=yes"],
    "neuron": ["neuron", str(FIXTURE), "conv", "three"],
    "capture": ["capture", str(FIXTURE), "--random", "--dim", "batch=²"],
    "show": ["show"],
    "dataset": ["dataset", str(FIXTURE), ".", "--out", "x.zarr", "--max-memory", "nanG"],
    "stats": ["stats", "a", "b", "c"],
    "paths": ["paths", str(FIXTURE), "image", "logits", "--limit", "-1"],
    "residuals": ["residuals", str(FIXTURE), "extra"],
    "attention": ["attention", str(FIXTURE), "--random", "--seed", "-5"],
    "report": ["report", str(FIXTURE), "-o", "r.html", "--rtol", "nan"],
    "compare": ["compare", str(FIXTURE), "--random", "--limit", "-3"],
    "export torch": ["export", "torch", "m.py:f", "--input-shape", "1,3", "-o", "x.onnx", "--opset", "0"],
    "export keras": ["export", "keras", "m.keras", "-o", "x.onnx", "--seed", "x"],
}


def _commands() -> set[str]:
    parser = cli_main.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    names = set()
    for name, p in sub.choices.items():
        inner = [a for a in p._actions if getattr(a, "choices", None) and a.dest == "framework"]
        names.update(f"{name} {k}" for k in inner[0].choices) if inner else names.add(name)
    return names


def test_the_table_covers_every_command():
    assert _commands() == set(TABLE) == set(MALFORMED)


def _one_line_error(code: int, err: str, out: str = "") -> str:
    assert code != 0, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err and "internal error" not in err, err
    assert lines[0].startswith("onnxscope"), err
    return lines[0]


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = cli_main.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _argv(command: str, subject: str, out: str, data: str = ".") -> list[str]:
    return [a.format(subject=subject, out=out, data=data) for a in TABLE[command][0]]


@pytest.fixture(scope="module")
def subjects(tmp_path_factory):
    """A valid file of each kind a command reads (small), to copy and spoil."""
    folder = tmp_path_factory.mktemp("subjects")
    for name in ("small_cnn.onnx", "small_cnn.onnx.data"):
        shutil.copy(FIXTURE.parent / name, folder / name)
    (folder / "factory.py").write_text("def mlp():\n    raise SystemExit('never called')\n")
    (folder / "model.keras").write_bytes(b"not opened")
    (folder / "capture.npz").write_bytes(b"not opened")
    return folder


@pytest.mark.parametrize("command", sorted(TABLE))
def test_no_arguments_is_one_line_with_exit_2(command, capsys):
    code, out, err = _run(command.split(), capsys)
    assert code == 2
    line = _one_line_error(code, err)
    assert "required" in line and "--help" in line


@pytest.mark.parametrize("command", sorted(MALFORMED))
def test_a_malformed_argument_is_one_line_with_exit_2(command, capsys):
    code, _, err = _run(MALFORMED[command], capsys)
    assert code == 2, err
    _one_line_error(code, err)


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["capture", str(FIXTURE), "--random", "--dim", "batch=²"], "expected NAME=SIZE"),
        (["capture", str(FIXTURE), "--random", "--seed", "-5"], "must be 0 or more"),
        (["paths", str(FIXTURE), "image", "logits", "--limit", "-1"], "must be 1 or more"),
        (["paths", str(FIXTURE), "image", "logits", "--limit", "0"], "must be 1 or more"),
        (["capture", str(FIXTURE), "--input", "x"], "expected NAME=FILE"),
    ],
)
def test_the_values_the_issue_names_are_refused_as_they_are_parsed(argv, said, capsys):
    code, _, err = _run(argv, capsys)
    assert code == 2 and said in _one_line_error(code, err)


def _subject(kind: str, folder: Path) -> str:
    return {
        "model": str(folder / "small_cnn.onnx"),
        "capture": str(folder / "capture.npz"),
        "store": str(folder),
        "factory": str(folder / "factory.py"),
        "keras": str(folder / "model.keras"),
    }[kind]


@pytest.mark.parametrize("command", sorted(TABLE))
def test_a_missing_file_is_one_line(command, tmp_path, capsys):
    argv = _argv(command, str(tmp_path / "absent.file"), str(tmp_path))
    code, _, err = _run(argv, capsys)
    line = _one_line_error(code, err)
    assert "absent.file" in line


@pytest.mark.parametrize("command", sorted(set(TABLE) - {"export keras", "stats"}))  # a folder is valid there
def test_a_directory_instead_of_a_file_is_one_line(command, tmp_path, capsys):
    (tmp_path / "folder.onnx").mkdir()
    code, _, err = _run(_argv(command, str(tmp_path / "folder.onnx"), str(tmp_path)), capsys)
    assert "is a directory" in _one_line_error(code, err) or "not an onnxscope dataset store" in err


def test_a_folder_that_is_no_store_is_one_line(tmp_path, capsys):
    code, _, err = _run(["stats", str(tmp_path)], capsys)
    assert "not an onnxscope dataset store" in _one_line_error(code, err)


@pytest.mark.parametrize("command", sorted(c for c in TABLE if "{out}" in " ".join(TABLE[c][0])))
def test_an_output_in_a_missing_folder_is_one_line_before_any_work(command, subjects, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    np.savez(data / "b0.npz", image=np.zeros((1, 3, 4, 4), np.float32))
    argv = _argv(
        command, _subject(TABLE[command][1], subjects), str(tmp_path / "missing" / "deeper"), str(data)
    )
    code, _, err = _run(argv, capsys)
    line = _one_line_error(code, err)
    assert "does not exist" in line or "no such folder" in line, line


def test_an_out_that_is_a_directory_is_an_output_error(tmp_path, capsys):
    (tmp_path / "w.npz").mkdir()
    code, _, err = _run(["weights", str(FIXTURE), "--save", str(tmp_path / "w.npz")], capsys)
    assert code == 10 and "it is a directory" in _one_line_error(code, err)


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, capsys):
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, hard))  # the weights' .npz is larger: EFBIG
    try:
        code, _, err = _run(["weights", str(FIXTURE), "--save", str(tmp_path / "w.npz")], capsys)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert code == 10 and "File too large" in _one_line_error(code, err)
    assert os.listdir(tmp_path) == []


def test_saved_files_follow_the_umask(tmp_path, capsys):
    old = os.umask(0o002)
    try:
        code, _, err = _run(["weights", str(FIXTURE), "--save", str(tmp_path / "w.npz")], capsys)
    finally:
        os.umask(old)
    assert code == 0, err
    assert stat.S_IMODE(os.stat(tmp_path / "w.npz").st_mode) == 0o664


@pytest.mark.parametrize("error", [InternalError("an invariant broke"), RuntimeError("unexpected")])
def test_a_bug_is_an_internal_error_with_exit_70(monkeypatch, capsys, error):
    from onnxscope.cli import summary

    def boom(args):
        raise error

    monkeypatch.setattr(summary, "run", boom)
    code, _, err = _run(["summary", str(FIXTURE)], capsys)
    assert code == 70
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "internal error" in lines[0] and type(error).__name__ in lines[0]


# -- as a user without privileges -------------------------------------------------------------------------------

_AS_NOBODY = """
import json, sys
from onnxscope.cli.main import main
import io, contextlib
results = {}
for name, argv in json.loads(sys.argv[1]).items():
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    results[name] = [code, err.getvalue()]
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def shared_folder():
    """A folder a non-root user can enter (pytest's own tmp folders are private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="onnxscope-nobody-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _as_nobody(runs: dict[str, list[str]], cwd: Path) -> dict[str, list]:
    command = [sys.executable, "-c", _AS_NOBODY, json.dumps(runs)]
    drop: dict[str, object] = {"user": NOBODY, "group": NOBODY, "extra_groups": []}
    if shutil.which("setpriv"):  # util-linux: drops uid, gid, groups and capabilities, then execs
        command = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command]
        drop = {}
    r = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={**os.environ, "HOME": str(cwd)},
        **drop,  # type: ignore[arg-type]
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_unreadable_files_and_read_only_folders_are_one_line_errors(shared_folder):
    """Run as the unprivileged ``nobody`` (root reads anything, so only a non-root user can show this)."""
    unreadable = shared_folder / "locked"
    unreadable.mkdir(mode=0o755)
    for name in ("small_cnn.onnx", "factory.py", "model.keras"):
        (unreadable / name).write_bytes(b"x" * 64)
    shutil.copy(FIXTURE.parent / "small_cnn.onnx.data", unreadable / "small_cnn.onnx.data")
    np.savez(unreadable / "capture.npz", x=np.ones(2))
    (unreadable / "store" / "onnxscope").mkdir(parents=True)
    for name in ("progress.json", "run.json"):
        (unreadable / "store" / "onnxscope" / name).write_text("{}")
    for p in unreadable.rglob("*"):
        p.chmod(0o000 if p.is_file() else 0o755)
    readonly = shared_folder / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    readable = shared_folder / "readable"
    readable.mkdir(mode=0o755)
    for name in ("small_cnn.onnx", "small_cnn.onnx.data"):
        shutil.copy(FIXTURE.parent / name, readable / name)
        (readable / name).chmod(0o644)
    subjects = {
        "model": unreadable / "small_cnn.onnx",
        "capture": unreadable / "capture.npz",
        "store": unreadable / "store",
        "factory": unreadable / "factory.py",
        "keras": unreadable / "model.keras",
    }
    writable = shared_folder / "out"
    writable.mkdir()
    writable.chmod(0o777)  # outputs are fine: the unreadable input is what must be reported
    runs = {c: _argv(c, str(subjects[kind]), str(writable)) for c, (_, kind) in TABLE.items()}
    runs["read-only out"] = ["weights", str(readable / "small_cnn.onnx"), "--save", str(readonly / "w.npz")]
    runs["read-only png"] = [
        "attention",
        str(readable / "small_cnn.onnx"),
        "--random",
        "--png",
        str(readonly),
    ]
    results = _as_nobody(runs, shared_folder)
    for name, (code, err) in results.items():
        line = _one_line_error(code, err)
        assert "permission denied" in line.lower() or "not writable" in line, (name, line)
    assert os.listdir(readonly) == [] and os.listdir(writable) == []
