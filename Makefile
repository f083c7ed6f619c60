# The one place the project's commands live; README and .ci/run call these targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch 2.13.0 is the release this project is tested with. The install keeps any torch already
# in the venv (a GPU user's CUDA build stays); on a CPU-only machine elsewhere, point pip at the
# CPU wheels: make TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
PYTEST_ARGS ?=

.PHONY: help install demo test check lint format typecheck contracts pytest bench clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml examples/plugins/pyproject.toml | $(BIN)/python
	@if $(BIN)/python -c "import torch" 2>/dev/null; then \
		echo "keeping installed torch $$($(BIN)/python -c 'import torch; print(torch.__version__)')"; \
	else \
		$(BIN)/python -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"; \
	fi
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	# The example plugin package (a model and a dataset) that the tests submit studies with.
	$(BIN)/python -m pip install --quiet --no-deps -e examples/plugins
	@touch $@

install: $(VENV)/.installed ## Create .venv (if missing) and install the project with dev tools

DEMO_ARGS ?=

demo: install ## The main job: server + workers on SQLite, the example study, its leaderboard
	$(BIN)/hpsearch demo $(DEMO_ARGS)

check: lint typecheck contracts ## ruff, mypy and the import contracts

lint: install ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install ## Apply ruff's formatting and safe fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: install ## mypy (strict on trainer and service)
	$(BIN)/mypy

contracts: install ## import-linter: trainer never imports service, SQL, HTTP or Optuna
	$(BIN)/lint-imports

pytest: install ## The test suite only
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test: check pytest ## Static checks, then the test suite

bench: install ## Trial-overhead benchmark (run by hand; see bench/README.md)
	$(BIN)/python bench/trial_overhead.py

clean: ## Remove caches (keeps .venv)
	rm -rf .mypy_cache .ruff_cache .pytest_cache test-artifacts
