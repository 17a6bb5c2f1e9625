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

# Debian packages the tests (promtool) and the dashboard's screenshots (chromium) need,
# installed with apt-get when missing (sudo unless root)
PROMTOOL := /usr/bin/promtool
CHROMIUM := /usr/bin/chromium
APT_INSTALL = command -v apt-get >/dev/null || { echo "$@ is missing and there is no apt-get: install Debian package $(1)" >&2; exit 1; }; \
	sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); echo "installing $@ (apt package $(1))"; \
	$$sudo apt-get update && $$sudo apt-get install -y --no-install-recommends $(1)
$(PROMTOOL):
	@$(call APT_INSTALL,prometheus)
$(CHROMIUM):
	@$(call APT_INSTALL,chromium)

## demo: every stage that exists, end to end on the embedded simulator (no exchange, no key)
# Everything goes to $(DEMO_DIR): panel, features, MLflow store, Optuna study, plots.
# the demo trains on core@v2: the core features plus the options family the simulator's
# Deribit-like venue fills (implied volatility, skew, put/call and options OI)
DEMO_SPEC ?= core@v2
DEMO_ENV := OIHEDGE_MLFLOW__TRACKING_URI=sqlite:///$(DEMO_DIR)/mlflow/mlflow.db \
	OIHEDGE_MLFLOW__ARTIFACT_ROOT=$(DEMO_DIR)/mlflow/artifacts \
	OIHEDGE_TRAIN__STORAGE=sqlite:///$(DEMO_DIR)/mlflow/optuna.db \
	OIHEDGE_DATA__PANEL_DIR=$(DEMO_DIR)/panel \
	OIHEDGE_LIVE__STATE_DB=$(DEMO_DIR)/live/state.sqlite \
	OIHEDGE_LIVE__DECISION_LOG=$(DEMO_DIR)/live/decisions.jsonl \
	OIHEDGE_LIVE__KILL_SWITCH_FILE=$(DEMO_DIR)/live/KILL \
	OIHEDGE_LIVE__PANEL_DIR=$(DEMO_DIR)/live/panel \
	OIHEDGE_TRAIN__FEATURE_SPEC=$(DEMO_SPEC)
DEMO_DAYS ?= 60
DEMO_TRIALS ?= 10
demo: $(STAMP) $(CHROMIUM)
	rm -rf $(DEMO_DIR)
	$(DEMO_ENV) $(BIN)/oihedge simulate --days $(DEMO_DAYS) --seed 7 --out $(DEMO_DIR)/panel --json $(DEMO_DIR)/simulate.json
	$(DEMO_ENV) $(BIN)/oihedge data report --json $(DEMO_DIR)/data-report.json
	$(DEMO_ENV) $(BIN)/oihedge features --spec $(DEMO_SPEC) --out $(DEMO_DIR)/features.parquet
	$(DEMO_ENV) $(BIN)/oihedge train --trials $(DEMO_TRIALS) --out $(DEMO_DIR)/train --json $(DEMO_DIR)/train.json
	$(DEMO_ENV) $(BIN)/oihedge promote --json $(DEMO_DIR)/promote.json
	$(DEMO_ENV) $(BIN)/oihedge models list
	$(DEMO_ENV) $(BIN)/oihedge backtest --model champion --out $(DEMO_DIR)/backtest --json $(DEMO_DIR)/backtest.json
	@# the live loop over 30 simulated days (8,640 five-minute bars) of the panel, paper broker
	$(DEMO_ENV) $(BIN)/oihedge live --replay $(DEMO_DIR)/panel --max-bars 8640 --json $(DEMO_DIR)/live.json
	@# a screenshot of every dashboard page over the replay's state and log
	$(DEMO_ENV) $(BIN)/oihedge dashboard --screenshots $(DEMO_DIR)/dashboard --panel $(DEMO_DIR)/panel --backtest-dir $(DEMO_DIR)/backtest
	@echo "demo outputs: $(abspath $(DEMO_DIR)) (panel/, features.parquet, train/plots/, backtest/, live/, dashboard/, mlflow/, *.json)"
	@echo "open the dashboard:  $(DEMO_ENV) $(BIN)/oihedge dashboard --panel $(DEMO_DIR)/panel --backtest-dir $(DEMO_DIR)/backtest"
	@echo "open the MLflow UI:  $(BIN)/mlflow ui --backend-store-uri sqlite:///$(DEMO_DIR)/mlflow/mlflow.db --port 5000"

## test: the whole test suite (CI runs exactly this)
# The monitoring tests run promtool (Debian package prometheus), the dashboard's browser
# tests Debian's chromium (Playwright never downloads a browser): installed when missing.
test: $(STAMP) $(PROMTOOL) $(CHROMIUM)
	@# pytest exits 5 when a selection collects no test: that is not a failure of the suite.
	@# -n auto: one worker per core (pytest-xdist; on the 2-core reference machine the
	@# suite takes 404 s instead of 566 s serially)
	$(BIN)/python -m pytest -q -n auto --timeout=600 $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

## bench: the measurements quoted in README.md (not part of the timed tests)
bench: $(STAMP)
	$(BIN)/python tests/benchmarks/run.py

lint: $(STAMP)
	$(BIN)/ruff check pipelines features models serving tests

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
