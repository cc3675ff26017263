# Set-up and everyday commands. Needs only Python 3.11+ and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.fastcls: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e .
	touch $@

$(VENV)/.fastcls-test: $(VENV)/.fastcls
	$(PIP) -e ".[test]"
	touch $@

## demo: install, then train the scratch CNN on builtin:digits and score it on the test split
demo: $(VENV)/.fastcls
	$(BIN)/fastcls train builtin:digits --name digits-demo --exist-ok
	$(BIN)/fastcls evaluate runs/digits-demo

## test: install with test extras, lint (ruff, the import layers), and run the whole suite
test: $(VENV)/.fastcls-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/pytest -q

bench: $(VENV)/.fastcls
	$(BIN)/python benchmarks/train_overhead.py
	$(BIN)/python benchmarks/digits_demo.py
	$(BIN)/python benchmarks/finetune_strategies.py
	$(BIN)/python benchmarks/data_pipeline.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
