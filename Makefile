# oihedge — the two commands are `make demo` and `make test`; both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo-out

.PHONY: demo test bench lint clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

## demo: every stage that exists, end to end on the embedded simulator (no exchange, no key)
# Everything goes to $(DEMO_DIR): panel, features, MLflow store, Optuna study, plots.
DEMO_ENV := OIHEDGE_MLFLOW__TRACKING_URI=sqlite:///$(DEMO_DIR)/mlflow/mlflow.db \
	OIHEDGE_MLFLOW__ARTIFACT_ROOT=$(DEMO_DIR)/mlflow/artifacts \
	OIHEDGE_TRAIN__STORAGE=sqlite:///$(DEMO_DIR)/mlflow/optuna.db \
	OIHEDGE_DATA__PANEL_DIR=$(DEMO_DIR)/panel \
	OIHEDGE_LIVE__STATE_DB=$(DEMO_DIR)/live/state.sqlite \
	OIHEDGE_LIVE__DECISION_LOG=$(DEMO_DIR)/live/decisions.jsonl \
	OIHEDGE_LIVE__KILL_SWITCH_FILE=$(DEMO_DIR)/live/KILL \
	OIHEDGE_LIVE__PANEL_DIR=$(DEMO_DIR)/live/panel
DEMO_DAYS ?= 60
DEMO_TRIALS ?= 10
demo: $(STAMP)
	rm -rf $(DEMO_DIR)
	$(DEMO_ENV) $(BIN)/oihedge simulate --days $(DEMO_DAYS) --seed 7 --out $(DEMO_DIR)/panel --json $(DEMO_DIR)/simulate.json
	$(DEMO_ENV) $(BIN)/oihedge data report --json $(DEMO_DIR)/data-report.json
	$(DEMO_ENV) $(BIN)/oihedge features --out $(DEMO_DIR)/features.parquet
	$(DEMO_ENV) $(BIN)/oihedge train --trials $(DEMO_TRIALS) --out $(DEMO_DIR)/train --json $(DEMO_DIR)/train.json
	$(DEMO_ENV) $(BIN)/oihedge promote --json $(DEMO_DIR)/promote.json
	$(DEMO_ENV) $(BIN)/oihedge models list
	$(DEMO_ENV) $(BIN)/oihedge backtest --model champion --out $(DEMO_DIR)/backtest --json $(DEMO_DIR)/backtest.json
	@# the live loop over 30 simulated days (8,640 five-minute bars) of the panel, paper broker
	$(DEMO_ENV) $(BIN)/oihedge live --replay $(DEMO_DIR)/panel --max-bars 8640 --json $(DEMO_DIR)/live.json
	@echo "demo outputs: $(abspath $(DEMO_DIR)) (panel/, features.parquet, train/plots/, backtest/, live/, mlflow/, *.json)"

## test: the whole test suite (CI runs exactly this)
# The monitoring tests run promtool (Debian package prometheus), the dashboard's browser
# tests Debian's chromium at /usr/bin/chromium (Playwright never downloads a browser):
# each installed here when missing.
test: $(STAMP)
	@command -v promtool >/dev/null || { \
	  command -v apt-get >/dev/null || { echo "make test needs promtool: https://prometheus.io/download" >&2; exit 1; }; \
	  sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  echo "installing promtool (apt package prometheus)"; \
	  $$sudo apt-get update && $$sudo apt-get install -y --no-install-recommends prometheus; }
	@[ -x /usr/bin/chromium ] || { \
	  command -v apt-get >/dev/null || { echo "make test needs Debian's chromium at /usr/bin/chromium" >&2; exit 1; }; \
	  sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  echo "installing chromium (apt package chromium) for the dashboard's browser tests"; \
	  $$sudo apt-get update && $$sudo apt-get install -y --no-install-recommends chromium; }
	@# pytest exits 5 when a selection collects no test: that is not a failure of the suite
	$(BIN)/python -m pytest -q --timeout=600 $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

## bench: the measurements quoted in README.md (not part of the timed tests)
bench: $(STAMP)
	$(BIN)/python tests/benchmarks/run.py

lint: $(STAMP)
	$(BIN)/ruff check pipelines features models serving tests

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
