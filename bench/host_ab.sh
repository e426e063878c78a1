#!/usr/bin/env bash
# refpds's bench.mjs against the reference PDS and `atrepo serve`, in alternating runs (ref, ours, ref, ours ...).
#   bench/host_ab.sh REFPDS_DIR OUT_DIR [RUNS] [extra bench.mjs args...]
# REFPDS_DIR: an installed copy of /work/shared/refpds (see its README: cp -r, ./install.sh).
# Both servers keep their data in a fresh temp dir on the same disk (/tmp) and answer durably; the reference
# uses `atrepo plc serve` as its PLC directory (as its README does), ours its embedded one.
# Ports: PLC 2682, reference 2683, ours 2783 (+ embedded PLC 2782). Everything started is stopped.
set -euo pipefail
ref=$(cd "$1" && pwd); mkdir -p "$2"; out=$(cd "$2" && pwd); runs=${3:-2}
shift $(( $# < 3 ? $# : 3 ))
root=$(cd "$(dirname "$0")/.." && pwd)
atrepo=$root/.venv-bench/bin/atrepo
node=$ref/node_modules/.bin/node
tmp=$(mktemp -d /tmp/host-ab.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
wait_http() { for _ in $(seq 150); do curl -sf -o /dev/null "$1" && return 0; sleep 0.2; done; echo "no answer: $1" >&2; return 1; }

"$atrepo" plc serve --port 2682 --data "$tmp/plc" > "$tmp/plc.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:2682/_health"

for i in $(seq "$runs"); do
  echo "run $i: reference" >&2
  PDS_BENCH_PORT=2683 "$ref/bench-ref.sh" "$tmp/ref-$i" "$out/ref-$i.json" --plc http://127.0.0.1:2682 "$@"
  rm -rf "$tmp/ref-$i"
  echo "run $i: atrepo serve" >&2
  # --no-rate-limits: refpds's run-pds.mjs starts the reference with PDS_RATE_LIMITS_ENABLED=false, so
  # both sides run without limits (bench.mjs writes thousands of records from one account and address).
  "$atrepo" serve --data "$tmp/ours-$i" --port 2783 --plc-port 2782 --no-rate-limits > "$tmp/ours-$i.log" 2>&1 &
  p=$!; pids+=("$p")
  wait_http "http://127.0.0.1:2783/xrpc/_health"
  "$node" "$ref/bench.mjs" --url http://127.0.0.1:2783 --pid "$p" --label "atrepo serve, data in /tmp" \
    --out "$out/ours-$i.json" "$@" > /dev/null
  kill -TERM "$p"; wait "$p" || true
  rm -rf "$tmp/ours-$i"
done
"$node" "$ref/summarize.mjs" "$out"/ref-*.json "$out"/ours-*.json
