# Two commands for a new machine: `make run` (the main job) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run demo test lint bench fuzz clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

## Set up and run the main job: the repository host on http://127.0.0.1:2583, its data in ./data and
## its own PLC directory on :2582 (no configuration needed; Ctrl-C stops it cleanly).
run: $(STAMP)
	$(BIN)/atrepo serve

## Build a sample repository and firehose in sample/ and verify both (no server).
demo: $(STAMP)
	$(BIN)/atrepo demo --out sample

## Set up and run the whole test suite.
test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench fuzz
	$(BIN)/ruff format --check src tests bench fuzz
	$(BIN)/mypy src
	$(BIN)/lint-imports

## Fuzz every target in turn (coverage-guided with atheris when installed):
## `make fuzz FUZZ_SECONDS=60 FUZZ_TARGETS="cbor car"`. New inputs go to fuzz/work/.
FUZZ_SECONDS ?= 300
FUZZ_TARGETS ?= cbor cid car car_index mst_node mst_native mst_invert firehose plc did_document syntax datamodel lexicon
fuzz: $(STAMP)
	@for target in $(FUZZ_TARGETS); do \
		echo "== fuzz $$target for $(FUZZ_SECONDS) s"; \
		$(BIN)/python -m fuzz.run $$target --seconds $(FUZZ_SECONDS) || exit 1; \
	done

## Benchmarks beside peer implementations (installs them into .venv-bench).
bench:
	$(MAKE) -C . -f bench/bench.mk bench

clean:
	rm -rf $(VENV) .venv-bench build *.egg-info
