# Set-up and the two commands of README.md. Needs python3 (3.11+) and Java 17 on PATH.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# pandas UDFs run in Python workers; they must use this environment's interpreter.
export PYSPARK_PYTHON        := $(abspath $(BIN)/python)
export PYSPARK_DRIVER_PYTHON := $(abspath $(BIN)/python)
export HF_HUB_OFFLINE        := 1

.PHONY: demo test test-fast lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.run-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.test-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,text]'
	touch $@ $(VENV)/.run-deps

## demo: install, then run the whole pipeline on the embedded default profile
demo: $(VENV)/.run-deps
	$(BIN)/sampleimp run

# Two pytest workers, one per core, each with its own SparkSession; a module stays on one worker
# (its fixtures are built once), in the order conftest.py sorts them (the longest first). Small
# Spark jobs leave a core idle while the driver plans.
PYTEST := $(BIN)/pytest -n 2 --dist loadfile --no-loadscope-reorder

## test: install what the tests need, lint, type-check, run every test
test: lint
	$(PYTEST)

## test-fast: the fast tier (no whole-pipeline or cluster runs)
test-fast: lint
	$(PYTEST) -m "not slow"

lint: $(VENV)/.test-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf lakehouse runs spark-warehouse .pytest_cache
