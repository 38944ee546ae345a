# The README's two commands: `make test` and `make demo`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.bitlaw-installed
LOCK   := requirements.lock
PIP    := --disable-pip-version-check --no-input

.PHONY: install test test-fast lint lock demo clean slurm-up slurm-down

# The environment is locked: requirements.lock pins every package, transitive ones included, and is applied
# as constraints, so a new machine installs what the suite last passed with (an unpinned transitive update,
# e.g. cloudpickle 3.1.3, once broke a fresh machine's `make test`). torch==2.13.0 first: it resolves to the
# CPU wheel on disk; an unpinned torch would pull several GB of CUDA packages.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(PIP) -c $(LOCK) torch==2.13.0
	$(BIN)/pip install -q $(PIP) -c $(LOCK) -e '.[dev,bench]'
	$(BIN)/pip check
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check .

# The full suite, every tier (unit, integration, slow, Slurm; 846 tests, 13 min 30 s of pytest on 2 idle cores,
# docs/performance.md), with its 15
# slowest tests listed.
test: lint slurm-up
	$(BIN)/pytest -q --durations=15

# The unit tier, fast feedback while editing: no slow, Slurm or integration tests (pyproject.toml's markers).
# 688 tests, 1 min 40 s of CPU (user 89.0 s + sys 11.2 s, `/usr/bin/time -v`, subprocesses included), 1 min 35 s
# wall, on the idle 2-core AMD EPYC machine (2026-12-03); the old `-m "not slow and not slurm"`: 2 min 53 s of CPU.
test-fast: lint
	$(BIN)/pytest -q -m "not slow and not slurm and not integration" --durations=5

# Refresh the lock: the newest versions pyproject.toml admits, resolved in a fresh venv, then the full suite
# in the project venv rebuilt from the new lock. Commit requirements.lock only if `make test` passed.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install -q $(PIP) torch==2.13.0
	.lock-venv/bin/pip install -q $(PIP) -e '.[dev,bench]'
	{ sed -n '/^#/p' $(LOCK); .lock-venv/bin/pip freeze --exclude-editable | sed 's/+cpu$$//'; } > $(LOCK).new
	mv $(LOCK).new $(LOCK) && rm -rf .lock-venv $(STAMP)
	$(MAKE) test

# The Slurm tests run against a real single-node cluster on this machine (scripts/slurm-up.sh: apt
# packages + daemons, idempotent, ~1 s when already up). Starting it needs root, as in CI; elsewhere
# the Slurm tests skip unless the cluster is up. With CI=true a skipped Slurm test fails (tests/conftest.py).
slurm-up:
	@if [ "$$(id -u)" = 0 ]; then scripts/slurm-up.sh; \
	elif [ "$${CI:-}" = true ]; then echo "make slurm-up: CI must run as root to start Slurm" >&2; exit 1; \
	else echo "make slurm-up: not root, cluster not started (sudo scripts/slurm-up.sh to run the Slurm tests)"; fi

slurm-down:
	scripts/slurm-down.sh

# The main job: plan -> real CPU sweep -> fits -> backtest -> report -> the forecast tested at two budgets
# (scripts/demo.sh; from scratch on 2 idle cores: results/demo/README.md has the time).
demo: install
	BIN=$(BIN) scripts/demo.sh

clean:
	rm -rf $(VENV) .lock-venv .pytest_cache .ruff_cache
