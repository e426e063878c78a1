# Two commands for a new machine: `make run` (the main job) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

## Set up and run the main job (for now: build a sample repository and firehose, verify both).
run: $(STAMP)
	$(BIN)/atrepo demo --out sample

## Set up and run the whole test suite.
test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy src

## Benchmarks beside peer implementations (installs them into .venv-bench).
bench:
	$(MAKE) -C . -f bench/bench.mk bench

clean:
	rm -rf $(VENV) .venv-bench build *.egg-info
