# The two commands a newcomer needs: `make run` (serve) and `make test` (pass the tests).
# Both create .venv and install what is needed; nothing else is required.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

PORT ?= 8080
# Gateways for other device families: `make run TCP_PORT=5001 PULL_DEVICES=devices.tsv
# WS_PORT=8765` (empty: as the ini's [co2unit] settings say; off by default).
TCP_PORT ?=
PULL_DEVICES ?=
WS_PORT ?=
REMOTE_DATA_DIR ?= ./remote_data
VAR_DIR ?= ./var
# Your own server.ini when there is one, else the documented example.
INI ?= $(firstword $(wildcard server.ini) server.ini.example)

.PHONY: venv run test demo lint clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

run: $(STAMP)
	$(BIN)/co2unit-server serve --ini $(INI) --port $(PORT) \
		--remote-data-dir $(REMOTE_DATA_DIR) --var-dir $(VAR_DIR) \
		$(if $(TCP_PORT),--tcp-port $(TCP_PORT)) $(if $(PULL_DEVICES),--pull-devices $(PULL_DEVICES)) \
		$(if $(WS_PORT),--ws-port $(WS_PORT))

test: $(STAMP)
	scripts/ensure-chromium.sh
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports
	$(BIN)/pytest

# Ten simulated units push a month of data to a local server; prints the pages to open.
demo: $(STAMP)
	$(BIN)/python -m co2unit_server.simulator.demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) build src/*.egg-info
