# Every target creates .venv if missing; nothing is installed outside it.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench lint install clean

$(BIN)/python:
	@command -v $(PY) >/dev/null 2>&1 || { echo "error: $(PY) not found"; exit 2; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/shindan demo --out demo-output

test: install
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest

bench: install
	PY=$(PY) bench/setup_tiatoolbox.sh
	$(BIN)/python bench/run.py --out BENCHMARKS.md

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

clean:
	rm -rf $(VENV) bench/.venv-tia demo-output .pytest_cache
