"""The audit report in a real headless Chromium (Debian's chromium + chromium-driver through Selenium).

For the bundled model, a torch CNN with a capture, a 2-layer BERT with attention maps and a fp32-vs-QDQ
comparison: the page loads with no console error and no request (DevTools network log), every expected section is
there, every chart has drawn, tables sort, filter and page, and a screenshot is written. The numbers the page
shows are checked against oracles computed here (torch, numpy), never against the report's own code.

`make test` installs the browser and sets ONNXSCOPE_REQUIRE_BROWSER=1, as CI does (CI=true): then a missing
browser fails these tests instead of skipping them.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import onnxscope
from onnxscope import audit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import browser  # tests/browser.py

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "fixtures" / "small_cnn.onnx"
pytest.importorskip("onnxruntime")
pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def driver():
    required = bool(os.environ.get("CI") or os.environ.get("ONNXSCOPE_REQUIRE_BROWSER"))
    try:
        import selenium  # noqa: F401
    except ImportError:
        if required:
            pytest.fail("selenium is not installed (pip install -e '.[dev]')")
        pytest.skip("selenium is not installed")
    if browser.chromium_paths() is None:
        if required:
            pytest.fail(
                "chromium/chromium-driver are not installed: apt-get install chromium chromium-driver"
            )
        pytest.skip("chromium/chromium-driver are not installed")
    with browser.chromium() as d:
        yield d


def check_page(driver, path, sections, shot, charted=None) -> browser.PageLoad:
    """The checks every report page passes (``charted``: the sections that must hold a chart; default all)."""
    page = browser.load(driver, path)
    assert page.ready == "1", "the tables' script did not finish"
    errors = [e for e in page.console if e["level"] in ("SEVERE", "WARNING")]
    assert errors == [], errors
    assert page.requests == [], page.requests
    found = driver.execute_script(
        "return [...document.querySelectorAll('section[data-section]')].map(s => s.dataset.section)"
    )
    assert found == sections
    charts = driver.execute_script(
        """return [...document.querySelectorAll('svg.chart')].map(s => {
             const r = s.getBoundingClientRect();
             return [s.closest('section').id, r.width, r.height,
                     s.querySelectorAll('path, use, image, rect, text').length];
           })"""
    )
    for sid in sections if charted is None else charted:
        assert any(c[0] == sid for c in charts), f"no chart in section {sid}"
    for sid, width, height, marks in charts:
        assert width > 100 and height > 50 and marks > 10, (sid, width, height, marks)
    tables = driver.execute_script(
        "return [...document.querySelectorAll('[data-table]')].map(h => [h.dataset.table, "
        "h.querySelectorAll('table.data tbody tr').length])"
    )
    assert tables and all(rows > 0 for _, rows in tables), tables
    browser.screenshot(driver, shot)
    assert os.path.getsize(shot) > 20_000
    return page


def column(driver, table: str, key: str) -> list[str]:
    return driver.execute_script(
        f"""const host = document.querySelector('[data-table="{table}"]');
            const i = [...host.querySelectorAll('th')].findIndex(th => th.dataset.key === '{key}');
            return [...host.querySelectorAll('tbody tr')].map(tr => tr.children[i].textContent);"""
    )


def click_header(driver, table: str, key: str) -> None:
    driver.find_element("css selector", f'[data-table="{table}"] th[data-key="{key}"] button').click()


# -- the bundled model -------------------------------------------------------------------------------------------
def test_bundled_model_page_loads_clean_and_its_tables_sort_and_filter(driver, tmp_path):
    out = onnxscope.report(FIXTURE, tmp_path / "small.html")
    check_page(driver, out, ["model-card", "weights", "structure"], tmp_path / "small.png")
    # sort the profile by MACs: the first click sorts numbers largest first, the second smallest first
    m = onnxscope.load(FIXTURE)
    want = sorted((r.macs for r in onnxscope.profile(m).layers if not r.folded), reverse=True)
    click_header(driver, "profile", "macs")
    shown = [int(t.replace(",", "")) for t in column(driver, "profile", "macs")]
    assert shown == want[: len(shown)] and shown[0] == max(want) > 0
    click_header(driver, "profile", "macs")
    shown = [int(t.replace(",", "")) for t in column(driver, "profile", "macs")]
    assert shown == sorted(want)[: len(shown)]
    # filter: only the Conv nodes
    box = driver.find_element("css selector", '[data-table="profile"] input[type=search]')
    box.send_keys("op:Conv")
    ops = column(driver, "profile", "op")
    assert ops == ["Conv"] * sum(n.op_type == "Conv" for n in m.nodes)
    count = driver.find_element("css selector", '[data-table="profile"] .tcount').text
    assert count == f"{len(ops)} of {len(want)} rows"
    box.clear()
    box.send_keys("macs>1000 flops<20000")  # numeric filters on two columns
    rows = onnxscope.profile(m).layers
    expected = sum(1 for r in rows if not r.folded and r.macs > 1000 and r.flops < 20000)
    count = driver.find_element("css selector", '[data-table="profile"] .tcount').text
    assert count == f"{expected} of {len(want)} rows" and expected > 0


def test_the_content_security_policy_blocks_requests_and_foreign_scripts(driver, tmp_path):
    out = onnxscope.report(FIXTURE, tmp_path / "r.html")
    text = Path(out).read_text(encoding="utf-8")
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', text).group(1)
    assert "default-src 'none'" in csp and "connect-src 'none'" in csp and "unsafe-eval" not in csp
    hostile = text.replace(
        "</body>",
        '<img src="http://127.0.0.1:9/leak.png"><script>document.title = "injected";</script></body>',
    )
    bad = tmp_path / "hostile.html"
    bad.write_text(hostile, encoding="utf-8")
    page = browser.load(driver, bad)
    assert driver.title.startswith("onnxscope report")  # the injected script never ran
    refused = [e["message"] for e in page.console if "Content Security Policy" in e["message"]]
    assert len(refused) >= 2, page.console  # the image and the script
    leaked = [u for u in page.requests if u.startswith("http")]
    assert all(any(u in b and "csp" in b for b in page.blocked) for u in leaked), (
        page.requests,
        page.blocked,
    )


def test_a_large_table_is_paginated(driver, tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from patterns import build  # the transformer-like synthetic graph of the benchmarks

    m = onnxscope.Model(build(120))  # 1,920 nodes
    out = onnxscope.report(m, tmp_path / "big.html")
    browser.load(driver, out)
    where = driver.find_element("css selector", '[data-table="profile"] .tpage').text
    assert where == f"page 1 / {-(-len(m.nodes) // 25)}"
    first = column(driver, "profile", "node")
    driver.find_element("css selector", '[data-table="profile"] button.next').click()
    second = column(driver, "profile", "node")
    assert len(first) == len(second) == 25 and not set(first) & set(second)
    assert driver.find_element("css selector", '[data-table="profile"] .tpage').text.startswith("page 2 /")


# -- a torch CNN with a capture ----------------------------------------------------------------------------------
def _torch_cnn():
    torch = pytest.importorskip("torch")

    class Amplify(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gain = torch.nn.Parameter(torch.tensor(1e30))

        def forward(self, x):
            return x * self.gain * self.gain  # overflows float32: the first Inf of the model

    class CNN(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.act1 = torch.nn.ReLU()
            self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)
            self.act2 = torch.nn.ReLU()
            self.pool = torch.nn.AdaptiveAvgPool2d(1)
            self.fc = torch.nn.Linear(8, 4)
            self.gate = torch.nn.Sigmoid()
            self.amp = Amplify()

        def forward(self, x):
            h = self.act2(self.conv2(self.act1(self.conv1(x))))
            g = self.gate(self.fc(torch.flatten(self.pool(h), 1)))
            return self.amp(g)

    torch.manual_seed(0)
    net = CNN().eval()
    with torch.no_grad():
        net.conv1.bias[:3] = -100.0  # three units of act1 can never fire: dead
    return torch, net


def test_torch_cnn_with_a_capture_shows_dead_units_and_the_first_inf(driver, tmp_path):
    torch, net = _torch_cnn()
    x = torch.randn(4, 3, 8, 8)
    path = tmp_path / "cnn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), str(path), dynamo=True, optimize=False, input_names=["x"])
    # the oracle: torch's own activations, module by module
    outs: dict[str, np.ndarray] = {}
    order: list[str] = []

    def keep(name):
        def hook(_module, _inputs, output) -> None:  # returns None: the output is left as it is
            order.append(name)
            outs[name] = output.numpy()

        return hook

    for name, mod in net.named_modules():
        if name and not list(mod.children()):
            mod.register_forward_hook(keep(name))
    with torch.no_grad(), np.errstate(over="ignore"):
        net(x)
    dead_torch = int((outs["act1"].max(axis=(0, 2, 3)) <= 0).sum())
    first_bad_module = next(n for n in order if not np.isfinite(outs[n]).all())
    assert dead_torch == 3 and first_bad_module == "amp"

    m = onnxscope.load(path)
    cap = onnxscope.capture(m, {"x": x.numpy()})
    cap_path = cap.save(tmp_path / "run.npz")
    out = onnxscope.report(m, tmp_path / "cnn.html", capture=cap_path)
    sections = ["model-card", "weights", "structure", "activations"]
    # one main-path segment only (no residual): the structure section lists it without a chart
    check_page(driver, out, sections, tmp_path / "cnn.png", charted=["model-card", "weights", "activations"])

    acts = audit.activations_from_capture(m, onnxscope.load_capture(cap_path, model=m))
    relu1 = next(r for r in acts["rows"] if r["module"] == "act1")
    assert relu1["dead_units"] == dead_torch and relu1["units"] == 8
    first = driver.find_element("css selector", "[data-first-nonfinite]").get_attribute(
        "data-first-nonfinite"
    )
    assert cap.info(first).module == first_bad_module
    sat = next(r for r in acts["rows"] if r["op"] == "Sigmoid")
    s = outs["gate"]
    assert sat["saturated_units"] == int((((s <= 0.01) | (s >= 0.99)).mean(axis=0) >= 0.99).sum())
    findings = driver.find_element("css selector", "#activations ul.findings").text
    assert f"{dead_torch} of 8 units never above zero (dead)" in findings


# -- a 2-layer BERT with attention maps --------------------------------------------------------------------------
def test_two_layer_bert_page_draws_one_heatmap_per_block_equal_to_torch_attentions(driver, tmp_path):
    torch = pytest.importorskip("torch")
    T = pytest.importorskip("transformers")
    cfg = T.BertConfig(
        num_hidden_layers=2,
        hidden_size=32,
        num_attention_heads=4,
        intermediate_size=64,
        vocab_size=100,
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    net = T.BertModel(cfg).eval()

    class Last(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = net

        def forward(self, x):
            return self.inner(x).last_hidden_state

    x = torch.randint(0, 100, (2, 9))
    path = tmp_path / "bert.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Last().eval(), (x,), str(path), dynamo=True, input_names=["x"])
    with torch.no_grad():
        want = [a.numpy() for a in net(x, output_attentions=True).attentions]
    m = onnxscope.load(path)
    cap = onnxscope.capture(m, {"x": x.numpy()})
    out = onnxscope.report(m, tmp_path / "bert.html", capture=cap, sample=1)
    check_page(driver, out, ["model-card", "weights", "structure", "activations"], tmp_path / "bert.png")
    maps = audit.activations_from_capture(m, cap, sample=1)["attention"]
    assert len(maps) == 2
    for got, ref in zip(maps, want, strict=True):
        np.testing.assert_allclose(got["map"], ref[1], atol=1e-5)
    drawn = driver.execute_script(
        "return [...document.querySelectorAll('.heatmaps svg.chart')].map(s => s.querySelectorAll('image').length)"
    )
    assert drawn == [1, 1]
    assert "input sample 1" in driver.find_element("css selector", "#activations").text


# -- fp32 versus QDQ ---------------------------------------------------------------------------------------------
def _numpy_rows(cap_a, cap_b, order, rtol=1e-3, atol=1e-4):
    """The comparison rows, computed here with numpy only (the oracle of the report's comparison)."""
    rows, rel = [], {}
    for name in sorted((n for n in cap_a if n not in cap_a.inputs), key=lambda n: order.get(n, -1)):
        b_name = name if name in cap_b else name + "_DequantizeLinear_Output"
        if b_name not in cap_b:
            continue
        a, b = np.asarray(cap_a[name], np.float64), np.asarray(cap_b[b_name], np.float64)
        if a.shape != b.shape or cap_a[name].dtype.kind != "f":
            continue
        d = a - b
        rel[name] = np.linalg.norm(d) / np.linalg.norm(a)
        node = cap_a.info(name).node
        inputs = [v.name for v in order["__model__"].node(node).inputs if v is not None] if node else []
        rows.append(
            {
                "a_tensor": name,
                "b_tensor": b_name,
                "node": node,
                "op": cap_a.info(name).op,
                "alignment": "name" if b_name == name else "name (dequantized)",
                "max_abs": np.abs(d).max(),
                "mean_abs": np.abs(d).mean(),
                "max_rel": np.abs(d).max() / np.abs(a).max(),
                "cosine": float(np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b))),
                "sqnr_db": 10 * np.log10(np.sum(a * a) / np.sum(d * d)),
                "frac_outside_tol": float(np.mean(~np.isclose(a, b, rtol=rtol, atol=atol))),
                "introduced_error": rel[name] - max([rel[i] for i in inputs if i in rel], default=0.0),
            }
        )
    first = next(r["a_tensor"] for r in rows if r["frac_outside_tol"] > 0)
    return rows, first


def test_fp32_versus_qdq_comparison_page(driver, tmp_path):
    from compare_models import quantize_qdq

    rng = np.random.default_rng(0)
    calib = [{"image": rng.standard_normal((1, 3, 4, 4)).astype(np.float32)} for _ in range(8)]
    qdq = tmp_path / "qdq.onnx"
    quantize_qdq(FIXTURE, qdq, calib)
    fp32 = onnxscope.load(FIXTURE)
    x = {"image": rng.standard_normal((1, 3, 4, 4)).astype(np.float32)}
    cap_a, cap_b = onnxscope.capture(fp32, x), onnxscope.capture(onnxscope.load(qdq), x)
    order = {**audit._order(fp32), "__model__": fp32}
    rows, first = _numpy_rows(cap_a, cap_b, order)
    assert len(rows) >= 4  # the Conv, ReLU and Gemm outputs pair up by name

    # the compare module's own comparison renders too (its metrics are checked against numpy in its tests)
    real = onnxscope.compare(fp32, onnxscope.load(qdq), x).to_dict()
    assert {r["a_tensor"] for r in rows} <= {r["a_tensor"] for r in real["rows"]}
    onnxscope.report(fp32, tmp_path / "real.html", comparison=real)

    data = {
        "a": "fp32",
        "b": "QDQ int8",
        "rows": rows,
        "first_divergence": first,
        "tolerance": {"rtol": 1e-3, "atol": 1e-4},
    }
    out = onnxscope.report(fp32, tmp_path / "cmp.html", capture=cap_a, comparison=data)
    check_page(
        driver, out, ["model-card", "weights", "structure", "activations", "comparison"], tmp_path / "cmp.png"
    )
    shown = driver.find_element("css selector", "[data-first-divergence]").get_attribute(
        "data-first-divergence"
    )
    assert shown == first
    # the ranking table opens sorted by introduced error, largest first
    ranked = column(driver, "comparison", "a_tensor")
    want = [r["a_tensor"] for r in sorted(rows, key=lambda r: -r["introduced_error"])]
    assert ranked == want[: len(ranked)]


def test_report_screenshot_for_the_readme_is_readable(driver, tmp_path):
    """The same machinery writes docs/report.png (see docs/screenshot.py); here: it produces a sane PNG."""
    from PIL import Image

    out = onnxscope.report(FIXTURE, tmp_path / "r.html")
    browser.load(driver, out)
    shot = browser.screenshot(driver, tmp_path / "shot.png", height=900)
    with Image.open(shot) as im:
        assert im.size == (1280, 900) or im.size[0] == 1280
        colours = len(set(im.convert("RGB").resize((160, 112)).getdata()))
    assert colours > 50  # text and charts, not a blank page
    shutil.rmtree(tmp_path, ignore_errors=True)


# -- models nobody on this team wrote (the real-model corpus, fetched by `make test`) -----------------------------
CORPUS = Path(os.environ.get("ONNXSCOPE_REAL_MODELS", ROOT / ".cache" / "real-models"))


@pytest.mark.parametrize("mid", ["minilm-l6-int8", "silero-vad", "voicefilter-lite-int8"])
def test_real_models_pages_load_clean_and_count_their_int8_weights(driver, tmp_path, mid):
    import json

    import onnx

    manifest = CORPUS / "manifest.json"
    if not manifest.exists():
        if os.environ.get("CI") or os.environ.get("ONNXSCOPE_REQUIRE_BROWSER"):
            pytest.fail(f"the real-model corpus is missing from {CORPUS}: run `make real-models`")
        pytest.skip("the real-model corpus is not fetched (make real-models)")
    from test_real_models import inputs_of  # the corpus' own input recipes

    entry = json.loads(manifest.read_text())[mid]
    path = CORPUS / entry["file"]
    m = onnxscope.load(path)
    cap = onnxscope.capture(m, inputs_of(entry["inputs"]))
    out = onnxscope.report(m, tmp_path / f"{mid}.html", capture=cap)
    check_page(
        driver,
        out,
        ["model-card", "weights", "structure", "activations"],
        tmp_path / f"{mid}.png",
        charted=["model-card", "weights", "activations"],
    )

    # weight-only (Cast·Mul) and DynamicQuantizeLSTM int8 weights are parameters too
    def tensors(graph):  # initializers and Constant values, subgraph bodies included (the oracle: raw onnx)
        yield from graph.initializer
        for node in graph.node:
            for a in node.attribute:
                if node.op_type == "Constant" and a.name == "value":
                    yield a.t
                for g in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
                    yield from tensors(g)

    stored_tensors = list(tensors(onnx.load(str(path), load_external_data=False).graph))
    int8 = sum(int(np.prod(t.dims)) for t in stored_tensors if t.data_type == onnx.TensorProto.INT8)
    stored = sum(int(np.prod(t.dims)) for t in stored_tensors)
    from onnxscope.costs import _input_dims

    params = onnxscope.profile(m, dims={k: 1 for k in _input_dims(m.ir)}).params
    assert int8 <= params <= stored
    assert (int8 > 0) == mid.endswith("int8")
