# The README's two commands: `make test` and `make demo`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.bitlaw-installed

.PHONY: install test lint demo clean slurm-up slurm-down

# torch==2.13.0 first: it resolves to the CPU wheel on disk; an unpinned torch would pull CUDA packages.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev,bench]'
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check .

test: lint slurm-up
	$(BIN)/pytest -q

# The Slurm tests run against a real single-node cluster on this machine (scripts/slurm-up.sh: apt
# packages + daemons, idempotent, ~1 s when already up). Starting it needs root, as in CI; elsewhere
# the Slurm tests skip unless the cluster is up. With CI=true a skipped Slurm test fails (tests/conftest.py).
slurm-up:
	@if [ "$$(id -u)" = 0 ]; then scripts/slurm-up.sh; \
	elif [ "$${CI:-}" = true ]; then echo "make slurm-up: CI must run as root to start Slurm" >&2; exit 1; \
	else echo "make slurm-up: not root, cluster not started (sudo scripts/slurm-up.sh to run the Slurm tests)"; fi

slurm-down:
	scripts/slurm-down.sh

# The main job: real CPU sweep -> fit -> report -> recommendation (scripts/demo.sh; ~10 min on 2 cores).
demo: install
	BIN=$(BIN) scripts/demo.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
