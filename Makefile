# mentorflow: `make run` serves the demo on the embedded default, `make test` runs every tier.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export MENTORFLOW_INSTANCE_PATH ?= $(CURDIR)/instance
HOST ?= 127.0.0.1
PORT ?= 5000

.PHONY: install run test lint format bench clean

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("mentorflow needs Python 3.11 or newer") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/.installed ## create .venv and install mentorflow with its dev extras

run: install ## upgrade the SQLite database, seed the demo, serve + worker + beat on $(HOST):$(PORT)
	$(BIN)/mentorflow db upgrade
	$(BIN)/mentorflow demo --base-url http://$(HOST):$(PORT)
	$(BIN)/mentorflow up --host $(HOST) --port $(PORT)

test: install ## run the test suite (PostgreSQL/Redis tiers skip with a reason when absent)
	$(BIN)/pytest

lint: install ## ruff lint and format check
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: install
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache test-output

bench: install ## benchmarks on PostgreSQL + Redis: step commits vs the floor, deliveries (bench/README.md)
	$(BIN)/python bench/run.py
