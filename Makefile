# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba-cache

.PHONY: install demo test bench plugin clean-demo

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	@echo "==> creating the virtualenv in $(VENV) and installing ccxt, vectorbt, dspy and the rest (first time only:"
	@echo "    about 5 minutes on a 2-core machine with a fresh pip cache; 296 s measured, most of it pip)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --progress-bar off -c constraints.txt -e '.[test]'
	@echo "==> compiling the numba kernels and the vectorbt referee into $(NUMBA_CACHE_DIR) (once, ~1 min)"
	$(BIN)/python -m qts.research.warmup --referee
	@touch $(STAMP)

install: $(STAMP)

demo: install
	@$(BIN)/python -m qts.research.warmup
	@echo "==> paper trading on the embedded (generated, offline) market: no keys, no network (about 10 s once installed)"
	QTS_HOME=$(CURDIR)/.demo $(BIN)/qts run --fresh
	QTS_HOME=$(CURDIR)/.demo $(BIN)/qts verify
	QTS_HOME=$(CURDIR)/.demo $(BIN)/qts report --out $(CURDIR)/.demo/report.html --png

test: install
	@# the red-team suite runs the trading agent and its attacker as one unprivileged user (the agent refuses
	@# root): as root, create it and let it execute this Python (a no-op for a normal user)
	@sh tests/support/prepare_test_user.sh $(BIN)/python $(CURDIR) || true
	$(BIN)/python -m pytest -q

bench: install
	@# backtesting.py is a yardstick for the backtest benchmark only, not a dependency of the project
	$(BIN)/python -m pip install --quiet 'backtesting>=0.6' || echo "backtesting.py unavailable: its row is skipped"
	$(BIN)/python bench/run.py

plugin:
	@# the plugin's tracked files, outside this checkout, for `claude plugin marketplace add` (see README)
	@bash scripts/export_plugin.sh $(PLUGIN_DIR)

clean-demo:
	rm -rf .demo
