# Every target creates .venv if missing; nothing is installed outside it.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast bench lint install install-dev clean

$(BIN)/python:
	@command -v $(PY) >/dev/null 2>&1 || { echo "error: $(PY) not found"; exit 2; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The base install (ONNX Runtime analysis, no torch) is all the demo needs.
$(VENV)/.installed-base: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e .
	touch $@

# Tests, lint and benchmarks also train and export models: the train extra (torch) and test tools.
$(VENV)/.installed-dev: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[test,train]'
	touch $@ $(VENV)/.installed-base

install: $(VENV)/.installed-base

install-dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/shindan demo --out demo-output

# Every test, slow ones included (CI runs this). pytest exits non-zero when nothing ran.
test: install-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest --durations=20

# The quick loop while developing: everything but the tests marked slow.
test-fast: install-dev
	$(BIN)/python -m pytest -m "not slow"

bench: install-dev
	PY=$(PY) bench/setup_tiatoolbox.sh
	$(BIN)/python bench/run.py --out BENCHMARKS.md

lint: install-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

clean:
	rm -rf $(VENV) bench/.venv-tia demo-output .pytest_cache
