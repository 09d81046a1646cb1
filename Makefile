# Two commands: `make run` (the whole stack) and `make test` (everything CI checks).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Reinstall whenever pyproject.toml changes.
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install run test lint unit integration e2e demo nats-defs bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is needed (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

run: install
	$(BIN)/tlr up

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared services
	$(BIN)/tlr nats-defs --check
	$(BIN)/tlr asyncapi --check
	$(BIN)/tlr postman --check

test: lint
	$(BIN)/pytest --cov --cov-report=term --cov-fail-under=70

unit: install
	$(BIN)/pytest tests/unit

integration: install
	$(BIN)/pytest tests/integration

e2e: install
	$(BIN)/pytest tests/e2e

demo: install
	$(BIN)/tlr demo

nats-defs: install
	$(BIN)/tlr nats-defs

clean:
	rm -rf var .coverage .coverage.* .pytest_cache .mypy_cache .ruff_cache
