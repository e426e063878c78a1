# `make bench`: set up .venv-bench (atrepo editable + pinned peers) and run the benchmarks.
# Pass options with BENCH_ARGS, e.g. `make bench BENCH_ARGS="--only cbor --json"`.
PYTHON ?= python3
BENCH_VENV := .venv-bench
BENCH_BIN := $(BENCH_VENV)/bin
BENCH_STAMP := $(BENCH_VENV)/.installed
BENCH_ARGS ?=

.PHONY: bench bench-setup

# Our pinned deps (constraints.txt) are applied to the peers too; if that ever
# stops resolving, fall back to letting pip choose and say so.
$(BENCH_STAMP): pyproject.toml constraints.txt bench/requirements.txt
	@test -x $(BENCH_BIN)/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_BIN)/python -m pip install -q --upgrade pip
	$(BENCH_BIN)/python -m pip install -q -c constraints.txt -e . -r bench/requirements.txt || { \
	  echo "bench: peers conflict with constraints.txt; installing without it" >&2; \
	  $(BENCH_BIN)/python -m pip install -q -e . -r bench/requirements.txt; }
	$(BENCH_BIN)/python -m pip check || echo "bench: warning: pip check found conflicts (see above)" >&2
	@touch $@

bench-setup: $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BENCH_BIN)/python -m bench $(BENCH_ARGS)
	@test -n "$(BENCH_ARGS)" || $(BENCH_BIN)/python -m bench.bench_identity

# `make -f bench/bench.mk bench-host`: atrepo serve over HTTP, clients in separate processes
# (bench/host_bench.py; about 3 minutes; BENCH_ARGS="--quick" for a smoke run, "--json" for JSON).
.PHONY: bench-host
bench-host: $(BENCH_STAMP)
	$(BENCH_BIN)/python -m bench.host_bench $(BENCH_ARGS)

# `make -f bench/bench.mk bench-fanout`: firehose fan-out to 100 subscribers in client processes
# (bench/firehose_fanout.py; about 5 minutes; BENCH_ARGS="--quick" for a smoke run, "--refpds /tmp/refpds"
# to replay from the reference PDS too).
.PHONY: bench-fanout
bench-fanout: $(BENCH_STAMP)
	$(BENCH_BIN)/python -m bench.firehose_fanout $(BENCH_ARGS)

# `make -f bench/bench.mk bench-relay`: atrepo relay verifying three hosts' logs replayed from cursor 0,
# with --workers 0/1/2, then fan-out to 100 subscribers (bench/relay_bench.py; about 8 minutes;
# BENCH_ARGS="--quick" for a smoke run, "--profile /tmp/relay.raw" for a py-spy profile,
# "--refpds /tmp/refpds" to add the reference PDS as a fourth upstream).
.PHONY: bench-relay
bench-relay: $(BENCH_STAMP)
	$(BENCH_BIN)/python -m bench.relay_bench $(BENCH_ARGS)

# `make -f bench/bench.mk bench-sync`: atrepo sync backfilling ten 20k-record repos from an atrepo serve host,
# then mirroring live single-op commits from 4 writer processes (bench/sync_bench.py; about 4 minutes;
# BENCH_ARGS="--quick" for a smoke run, "--json" for JSON).
.PHONY: bench-sync
bench-sync: $(BENCH_STAMP)
	$(BENCH_BIN)/python -m bench.sync_bench $(BENCH_ARGS)

# `make -f bench/bench.mk bench-sync-scale`: atrepo sync --workers 1 and 2 on one PostgreSQL mirror (a
# throwaway cluster), catching up a host's log (bench/sync_scale.py; about 8 minutes; BENCH_ARGS="--quick").
.PHONY: bench-sync-scale
bench-sync-scale: $(BENCH_STAMP)
	$(BENCH_BIN)/python -m bench.sync_scale $(BENCH_ARGS)

# `make -f bench/bench.mk bench-host-scale`: createRecord/s of atrepo serve on SQLite and on PostgreSQL with
# --workers 1, 2 and 4 (a throwaway cluster; bench/host_scale.py; about 4 minutes; BENCH_ARGS="--quick").
.PHONY: bench-host-scale
bench-host-scale: $(BENCH_STAMP)
	$(BENCH_BIN)/python -m bench.host_scale $(BENCH_ARGS)

# `make -f bench/bench.mk bench-pg-driver`: psycopg 3 against asyncpg on the host's commit transaction, bulk
# rows and small reads (a throwaway cluster; bench/pg_driver.py; about 3 minutes; BENCH_ARGS="--quick").
.PHONY: bench-pg-driver
bench-pg-driver: $(BENCH_STAMP)
	$(BENCH_BIN)/python -m bench.pg_driver $(BENCH_ARGS)
