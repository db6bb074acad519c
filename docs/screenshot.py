"""Regenerate docs/report.png, the README's picture of a report, with the browser machinery of the tests.

The page is the bundled model's report with a capture (random input, seed 0) and a comparison with its QDQ
quantization (onnxruntime's quantize_static), so every section is there; the picture is its top.
Run: ``.venv/bin/python docs/screenshot.py`` (needs the [dev] extras, chromium and chromium-driver).
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))


def main() -> None:
    import browser
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    import onnxscope
    from onnxscope._simple_compare import compare_by_name

    fixture = os.path.join(ROOT, "fixtures", "small_cnn.onnx")
    rng = np.random.default_rng(0)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(
                [{"image": rng.standard_normal((1, 3, 4, 4)).astype(np.float32)} for _ in range(8)]
            )

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as tmp:
        qdq = os.path.join(tmp, "small_cnn.qdq.onnx")
        quantize_static(fixture, qdq, Reader(), quant_format=QuantFormat.QDQ)
        m = onnxscope.load(fixture)
        x = {"image": rng.standard_normal((1, 3, 4, 4)).astype(np.float32)}
        cap = onnxscope.capture(m, x)
        cmp = compare_by_name(cap, onnxscope.capture(onnxscope.load(qdq), x), m, labels=("fp32", "QDQ int8"))
        page = onnxscope.report(m, os.path.join(tmp, "report.html"), capture=cap, comparison=cmp)
        with browser.chromium() as driver:
            browser.load(driver, page)
            out = browser.screenshot(driver, os.path.join(HERE, "report.png"), width=1280, height=1500)
    print("wrote", out)


if __name__ == "__main__":
    main()
