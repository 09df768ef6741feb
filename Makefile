# relaydesk: `make run` and `make test` work on a fresh machine with only python3 (3.11+).
# Installs come from the hashed locks in requirements/ (`make lock` refreshes them from pyproject.toml).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SHELL  := /bin/bash
.SHELLFLAGS := -o pipefail -c
# pip's note about local package mirrors this machine kind configures, which do not hold every package
PIP_QUIET := { grep -v "is ignored: it is neither a file nor a directory" >&2 || true; }

.PHONY: run test soak lint typecheck bench check migrate lock lock-check clean axe compose-schema

# install LOCK: the venv, then exactly the locked packages (hashes checked), then relaydesk itself
define install_lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "relaydesk needs Python 3.11 or newer")'
	@$(if $(NO_LOCK_CHECK),true,$(PYTHON) requirements/lock.py check $(1))
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing relaydesk and its locked dependencies (requirements/$(1)) into $(VENV) ..."
	@$(BIN)/python -m pip install --quiet --no-input --require-hashes --no-deps -r requirements/$(1) 2>&1 | $(PIP_QUIET)
	@PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install --quiet --no-input --no-deps --no-build-isolation -e . 2>&1 | $(PIP_QUIET)
endef

$(VENV)/.run-installed: pyproject.toml requirements/run.txt
	$(call install_lock,run.txt)
	@touch $@

$(VENV)/.dev-installed: pyproject.toml requirements/dev.txt
	$(call install_lock,dev.txt)
	@touch $@ $(VENV)/.run-installed

run: $(VENV)/.run-installed   ## set up and run relaydesk with plugins.yaml (SQLite, in-process bus)
	@$(BIN)/relaydesk check plugins.yaml >/dev/null
	@$(BIN)/relaydesk migrate -c plugins.yaml >/dev/null
	@exec $(BIN)/relaydesk run -c plugins.yaml

lock-check:                   ## the locks match pyproject.toml
	@$(PYTHON) requirements/lock.py check

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.dev-installed  ## strict for bot_core/ and storage/ (see pyproject.toml)
	$(BIN)/mypy bot_core storage bridge plugins tests

# axe-core for the widget's accessibility test: from npm, pinned (with its hash) by the lock in
# tests/fixtures/axe; installed there, never committed. Without npm that test skips (fails in CI).
AXE_DIR := tests/fixtures/axe
$(AXE_DIR)/node_modules/.installed: $(AXE_DIR)/package.json $(AXE_DIR)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  echo "Installing axe-core (npm ci in $(AXE_DIR)) for the accessibility test ..."; \
	  (cd $(AXE_DIR) && npm ci --silent --no-audit --no-fund --ignore-scripts) && touch $@; \
	else echo "npm not found: the widget's accessibility test will be skipped (apt-get install npm)" >&2; fi

axe: $(AXE_DIR)/node_modules/.installed

# the Compose specification's schema (inside the docker-compose v1 wheel, hash-pinned), for tests/docker/
COMPOSE_SCHEMA_DIR := $(VENV)/compose-schema
$(COMPOSE_SCHEMA_DIR)/.downloaded: requirements/compose-schema.txt | $(VENV)/.dev-installed
	@$(BIN)/python -m pip download --quiet --no-input --no-deps --require-hashes -r $< -d $(COMPOSE_SCHEMA_DIR) 2>&1 | $(PIP_QUIET)
	@touch $@

compose-schema: $(COMPOSE_SCHEMA_DIR)/.downloaded

test: lock-check lint typecheck axe compose-schema    ## set up and run everything CI runs
	$(BIN)/pytest -q $(PYTEST_ARGS)

# the fault tests of tests/scale (3 workers, their own PostgreSQL and Redis killed and restarted) with
# 2,000 messages each way per scenario instead of make test's 200
soak: $(VENV)/.dev-installed  ## faults with several workers, at 2,000 messages each way (tests/scale)
	RELAYDESK_FAULT_MESSAGES=2000 $(BIN)/pytest -q -s $(PYTEST_ARGS) tests/scale

bench: $(VENV)/.dev-installed  ## core throughput/latency (SQLite; PostgreSQL+Redis), relaydesk vs bare nio into Synapse, FAQ matching, the handoff's quoted wait, the Slack burst
	$(BIN)/python -m bench.relay
	$(BIN)/python -m bench.matrix
	$(BIN)/python -m bench.faq
	$(BIN)/python -m bench.queue
	$(BIN)/python -m bench.slack_burst

check: $(VENV)/.run-installed
	$(BIN)/relaydesk check plugins.yaml

migrate: $(VENV)/.run-installed
	$(BIN)/relaydesk migrate -c plugins.yaml

lock:                         ## refresh requirements/*.txt from pyproject.toml (UPGRADE=1: newest allowed versions)
	@$(MAKE) --no-print-directory NO_LOCK_CHECK=1 $(VENV)/.dev-installed
	$(BIN)/python requirements/lock.py lock $(BIN)/pip-compile $(if $(UPGRADE),--upgrade)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache relaydesk.db* $(AXE_DIR)/node_modules
