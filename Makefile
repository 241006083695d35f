# Strowger: the two commands a new user needs are `make run` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck services-up services-down services-status clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found (Strowger needs Python 3.11)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

## Run the whole platform embedded (SQLite under ./var) on http://127.0.0.1:8080
run: $(STAMP)
	$(BIN)/strowger run all

## Install, start PostgreSQL/Kafka/RabbitMQ, lint, type-check and run every test
test: $(STAMP) lint typecheck
	scripts/services up
	scripts/browser
	STROWGER_REQUIRE_SERVICES=$${CI:-false} $(BIN)/pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: $(STAMP)
	$(BIN)/mypy

services-up:
	scripts/services up
services-down:
	scripts/services down
services-status:
	scripts/services status

clean:
	rm -rf $(VENV) var/*.db var/*.db-* .pytest_cache .mypy_cache .ruff_cache
