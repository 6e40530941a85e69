# Jobcast. `make help` lists the targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# What each target needs installed: serving only, or serving and the development tools.
SERVING := $(VENV)/.serving
DEVELOPING := $(VENV)/.developing

.DEFAULT_GOAL := help
.PHONY: help run test check fmt bench docs js clean

help: ## List the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(SERVING): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[redis]'
	touch $(SERVING)

$(DEVELOPING): pyproject.toml clients/python/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[redis,dev]' -e clients/python
	touch $(SERVING) $(DEVELOPING)

run: $(SERVING) ## Serve on http://127.0.0.1:8000 (settings: JOBS_* environment variables)
	$(BIN)/python -m app

# Many tests wait on a server process, a browser or a socket rather than compute, and
# the slow ones (marked slow: they wait out real timeouts) start first and hold one test
# process for minutes: four processes keep two cores busy meanwhile. worksteal: a process
# that runs out of tests takes some of another's, so none is left alone with a queue.
TEST_WORKERS ?= 4

# The suite starts hundreds of Python processes (servers, the jobcast command). Where
# PYTHONDONTWRITEBYTECODE is set, as in some containers, each would compile the packages
# again (a seventh of a server's start): compile them once, first.
test: $(DEVELOPING) ## Run the whole test suite, with branch coverage (fails under its floor)
	$(BIN)/python -m compileall -q app clients/python/jobcast_client
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS) --cov

check: $(DEVELOPING) ## Lint, format check and type check
	$(BIN)/ruff check app clients tests bench
	$(BIN)/ruff format --check app clients tests bench
	$(BIN)/mypy app clients/python/jobcast_client tests

bench: $(DEVELOPING) ## Benchmark fan-out, latency, polling and memory against references (BENCH_ARGS=--quick)
	$(BIN)/python -m bench $(BENCH_ARGS)

docs: $(DEVELOPING) ## Rewrite the generated parts of docs/ (the settings table)
	$(BIN)/python -m app.settings docs/deployment.md

js: ## Copy the JavaScript package's module to the page (static/jobcast.js is clients/js/jobcast.js)
	cp clients/js/jobcast.js static/jobcast.js

fmt: $(DEVELOPING) ## Format the code and fix what the linter can
	$(BIN)/ruff format app clients tests bench
	$(BIN)/ruff check --fix app clients tests bench

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* htmlcov clients/js/node_modules
