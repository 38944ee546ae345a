# The README's two commands: `make test` and `make demo`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.bitlaw-installed

.PHONY: install test lint demo clean

# torch==2.13.0 first: it resolves to the CPU wheel on disk; an unpinned torch would pull CUDA packages.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev,bench]'
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check .

test: lint
	$(BIN)/pytest -q

demo: install
	$(BIN)/python -m sweep

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
