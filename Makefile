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
demo: $(STAMP)
	$(BIN)/oihedge simulate --days 30 --seed 7 --out $(DEMO_DIR)/panel --overwrite --json $(DEMO_DIR)/simulate.json
	@echo "demo outputs: $(abspath $(DEMO_DIR))"

## test: the whole test suite (CI runs exactly this)
test: $(STAMP)
	@# pytest exits 5 when a selection collects no test: that is not a failure of the suite
	$(BIN)/python -m pytest -q --timeout=600 $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

## bench: the measurements quoted in README.md (not part of the timed tests)
bench: $(STAMP)
	$(BIN)/python tests/benchmarks/run.py

lint: $(STAMP)
	$(BIN)/ruff check pipelines features models serving tests

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
