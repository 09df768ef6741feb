# relaydesk: `make run` and `make test` work on a fresh machine with only python3 (3.11+).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck bench check migrate clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "relaydesk needs Python 3.11 or newer")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing relaydesk and its dependencies into $(VENV) ..."
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)                 ## set up and run relaydesk with plugins.yaml (SQLite, in-process bus)
	$(BIN)/relaydesk check plugins.yaml
	$(BIN)/relaydesk migrate -c plugins.yaml
	$(BIN)/relaydesk run -c plugins.yaml

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)           ## strict for bot_core/ and storage/ (see pyproject.toml)
	$(BIN)/mypy bot_core storage bridge plugins tests

test: lint typecheck          ## set up and run everything CI runs
	$(BIN)/pytest -q $(PYTEST_ARGS)

bench: $(STAMP)               ## core throughput/latency (SQLite; PostgreSQL+Redis), then relaydesk vs bare nio into Synapse, then FAQ matching
	$(BIN)/python -m bench.relay
	$(BIN)/python -m bench.matrix
	$(BIN)/python -m bench.faq

check: $(STAMP)
	$(BIN)/relaydesk check plugins.yaml

migrate: $(STAMP)
	$(BIN)/relaydesk migrate -c plugins.yaml

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache relaydesk.db*
