# mentorflow: `make run` serves the demo on the embedded default, `make test` runs every tier.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export MENTORFLOW_INSTANCE_PATH ?= $(CURDIR)/instance
HOST ?= 127.0.0.1
PORT ?= 5000
VERBOSE ?=

.PHONY: install lock run test lint format bench clean

$(BIN)/.installed: pyproject.toml requirements-dev.lock
	@$(PYTHON) -c 'import sys; sys.exit("mentorflow needs Python 3.11 or newer") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.lock
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $@

# The TypeScript client check (tests/test_clients.py) uses the npm tools pinned in clients/ts.
TS_TOOLS := clients/ts/node_modules/.package-lock.json

$(TS_TOOLS): clients/ts/package.json clients/ts/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix clients/ts --no-audit --no-fund --loglevel=error; \
	else \
		echo "npm not found: the TypeScript client check of tests/test_clients.py will be skipped"; \
	fi

install: $(BIN)/.installed $(TS_TOOLS) ## create .venv (requirements-dev.lock, then mentorflow) and clients/ts/node_modules

# pip-tools resolves with pip itself, so with the same index settings `make install` uses.
# requirements.lock is what production installs; the dev lock adds the dev extras on top of it.
LOCK_BIN := $(VENV)/lock-tools/bin
PIP_COMPILE = CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_BIN)/pip-compile --quiet --upgrade \
	--strip-extras --no-allow-unsafe --no-emit-options

lock: ## refresh requirements.lock and requirements-dev.lock: newest versions pyproject.toml allows
	$(PYTHON) -m venv $(VENV)/lock-tools
	$(LOCK_BIN)/pip install --quiet --upgrade pip pip-tools
	$(PIP_COMPILE) -o requirements.lock pyproject.toml
	$(PIP_COMPILE) --extra dev -c requirements.lock -o requirements-dev.lock pyproject.toml

run: install ## upgrade the SQLite database, seed the demo, serve + worker + beat on $(HOST):$(PORT)
	$(BIN)/mentorflow db upgrade
	$(BIN)/mentorflow demo --base-url http://$(HOST):$(PORT)
	$(BIN)/mentorflow up --host $(HOST) --port $(PORT)$(if $(filter 1,$(VERBOSE)), --verbose)

test: install ## run the test suite (PostgreSQL/Redis tiers skip with a reason when absent)
	$(BIN)/pytest

lint: install ## ruff lint and format check
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: install
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache test-output clients/ts/node_modules

bench: install ## benchmarks on PostgreSQL + Redis: step commits vs floors outside the product, deliveries (bench/README.md)
	$(BIN)/python bench/run.py
