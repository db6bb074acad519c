"""``onnxscope report`` as a user types it (in-process through main()): the page, its sections, one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import onnxscope
from onnxscope.cli.main import main
from onnxscope.testing import mlp_model, save

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "fixtures" / "small_cnn.onnx"
pytest.importorskip("matplotlib")


def sections(path) -> list[str]:
    return re.findall(
        r'<section id="[^"]+" class="report-section" data-section="([^"]+)"', Path(path).read_text()
    )


def test_report_of_the_bundled_model(tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", str(FIXTURE), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"wrote {out} (") and printed.rstrip().endswith(
        "model card, weights, structure"
    )
    assert sections(out) == ["model-card", "weights", "structure"]
    text = out.read_text()
    assert "Content-Security-Policy" in text and "2,114</b> learnable" in text  # conv, bn, conv2, fc


def test_random_inputs_add_the_activations_and_json_says_so(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "r.html"
    assert main(["report", str(FIXTURE), "--random", "--seed", "3", "-o", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["sections"][-1] == "activations" and info["bytes"] == out.stat().st_size
    assert sections(out)[-1] == "activations"


def test_a_saved_capture_and_a_comparison_with_a_quantized_model(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.items = iter(
                [{"image": rng.standard_normal((1, 3, 4, 4)).astype(np.float32)} for _ in range(4)]
            )

        def get_next(self):
            return next(self.items, None)

    qdq = tmp_path / "qdq.onnx"
    quantize_static(str(FIXTURE), str(qdq), Reader(), quant_format=QuantFormat.QDQ)
    run = tmp_path / "run.npz"
    assert main(["capture", str(FIXTURE), "--random", "--out", str(run)]) == 0
    capsys.readouterr()
    out = tmp_path / "cmp.html"
    assert main(["report", str(FIXTURE), "--capture", str(run), "--compare", str(qdq), "-o", str(out)]) == 0
    assert "activations, comparison" in capsys.readouterr().out
    assert sections(out) == ["model-card", "weights", "structure", "activations", "comparison"]
    # the QDQ model's own page names its format and quantization parameters
    assert main(["report", str(qdq), "-o", str(tmp_path / "q.html")]) == 0
    text = (tmp_path / "q.html").read_text()
    assert "QDQ — weights: int8" in text and "Quantization parameters" in text


def test_a_dataset_store_adds_the_activations(tmp_path, capsys):
    pytest.importorskip("zarr")
    from onnxscope.dataset import capture_dataset

    rng = np.random.default_rng(0)
    batches = [{"image": rng.standard_normal((1, 3, 4, 4)).astype(np.float32)} for _ in range(3)]
    store = tmp_path / "run.zarr"
    capture_dataset(onnxscope.load(FIXTURE), batches, out=store, stats_only=True, progress=False)
    out = tmp_path / "r.html"
    assert main(["report", str(FIXTURE), "--store", str(store), "-o", str(out)]) == 0
    assert sections(out)[-1] == "activations"
    assert "running statistics of a dataset store" in out.read_text()


def test_symbolic_dims_default_to_one_with_a_note_or_take_dim(tmp_path, capsys):
    model = save(mlp_model(in_features=3, hidden=16, out_features=4), tmp_path / "mlp.onnx")
    out = tmp_path / "r.html"
    assert main(["report", model, "-o", str(out)]) == 0
    text = out.read_text()
    assert "Free input dimensions batch taken as 1" in text and "112 MACs" in text  # 3·16 + 16·4
    assert main(["report", model, "--dim", "batch=4", "-o", str(out)]) == 0
    text = out.read_text()
    assert "448 MACs" in text and "taken as 1" not in text


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["-o", "r.txt"], 4, "must end in .html"),
        (["--capture", "run.npz", "--random", "-o", "r.html"], 4, "--capture already fixes the inputs"),
        (["--compare", "other.onnx", "-o", "r.html"], 4, "--compare needs inputs"),
        (["--capture", "missing.npz", "-o", "r.html"], 2, "no such capture file"),
    ],
)
def test_mistakes_are_one_line_errors(tmp_path, capsys, monkeypatch, args, code, message):
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(FIXTURE), *args]) == code
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
