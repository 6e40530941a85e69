# Jobcast. `make help` lists the targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help run test check fmt bench clean

help: ## List the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP) ## Serve on http://127.0.0.1:8000 (settings: JOBS_* environment variables)
	$(BIN)/python -m app

test: $(STAMP) ## Run the whole test suite
	$(BIN)/python -m pytest $(PYTEST_ARGS)

check: $(STAMP) ## Lint, format check and type check
	$(BIN)/ruff check app tests bench
	$(BIN)/ruff format --check app tests bench
	$(BIN)/mypy app

bench: $(STAMP) ## Benchmark fan-out, latency, polling and memory against references (BENCH_ARGS=--quick)
	$(BIN)/python -m bench $(BENCH_ARGS)

fmt: $(STAMP) ## Format the code and fix what the linter can
	$(BIN)/ruff format app tests bench
	$(BIN)/ruff check --fix app tests bench

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov
