# Two commands: `make run` (the whole stack) and `make test` (everything CI checks).
# Both install exactly what uv.lock pins, into .venv, with the uv version pinned below.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# uv lives in a virtualenv of its own: `uv sync` makes .venv match the lock exactly, so it
# would uninstall itself from there. Keep UV_VERSION equal to tool.uv.required-version in
# pyproject.toml and to the Dockerfile's (tests/unit/test_install.py checks).
UV_VERSION := 0.13.9
UV_HOME    := .uv
UV         := $(UV_HOME)/bin/uv
UV_STAMP   := $(UV_HOME)/.version-$(UV_VERSION)
SYNCED     := $(VENV)/.synced
# Never a downloaded Python: the one named by PYTHON (3.11 or newer) runs everything.
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS := never

.PHONY: install run test lint unit integration e2e chaos demo generate lock upgrade nats-defs bench clean

$(UV_STAMP):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is needed (set PYTHON=...)")'
	rm -rf $(UV_HOME)
	$(PYTHON) -m venv $(UV_HOME)
	$(UV_HOME)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	touch $@

# --locked: refuse a uv.lock that no longer matches pyproject.toml (run `make lock`).
$(SYNCED): uv.lock pyproject.toml $(UV_STAMP)
	$(UV) sync --locked --extra local --python $(PYTHON)
	touch $@

install: $(SYNCED)

run: install
	$(BIN)/tlr up

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared services tlr
	$(BIN)/lint-imports
	$(BIN)/tlr nats-defs --check
	$(BIN)/tlr asyncapi --check
	$(BIN)/tlr postman --check

# The chaos scenarios take minutes each: `make test` runs only their short smoke subset.
test: lint
	$(BIN)/pytest -m "not chaos or chaos_smoke" --cov --cov-report=term --cov-fail-under=70

unit: install
	$(BIN)/pytest tests/unit

integration: install
	$(BIN)/pytest tests/integration

e2e: install
	$(BIN)/pytest tests/e2e

# Fault scenarios on a three-node NATS cluster (tests/chaos); the figures print at the end.
chaos: install
	$(BIN)/pytest -m chaos tests/chaos

demo: install
	$(BIN)/tlr demo

# The checked-in files generated from the code: NATS definitions, AsyncAPI, Postman.
generate: install
	$(BIN)/tlr nats-defs
	$(BIN)/tlr asyncapi
	$(BIN)/tlr postman

nats-defs: install
	$(BIN)/tlr nats-defs

# After editing the dependencies in pyproject.toml: lock them (keeping every other pin), install,
# regenerate. `make upgrade` moves every package to its newest allowed version the same way;
# review `git diff uv.lock docs/` and run `make test` before committing.
lock: $(UV_STAMP)
	$(UV) lock --python $(PYTHON)
	$(MAKE) generate

upgrade: $(UV_STAMP)
	$(UV) lock --upgrade --python $(PYTHON)
	$(MAKE) generate

clean:
	rm -rf var .coverage .coverage.* .pytest_cache .mypy_cache .ruff_cache
