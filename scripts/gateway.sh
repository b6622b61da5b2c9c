#!/usr/bin/env bash
# `make gateway`: the OpenAI-compatible gateway on gateway.listen (127.0.0.1:8080), with a
# worker on the default model started beside it when no worker consumes warren.requests yet.
# Ctrl-C stops both (the worker only if this script started it).
set -euo pipefail
cd "$(dirname "$0")/.."
WARREN=${WARREN:-target/release/warren}
MODEL=${MODEL:-models/gemma3-270m-q4_k_m.gguf}
QUEUE=${WARREN__TOPOLOGY__REQUESTS_QUEUE:-warren.requests}

consumers() {
  curl -fsS -u guest:guest "http://127.0.0.1:15672/api/queues/%2F/${QUEUE}" 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin).get("consumers", 0))' 2>/dev/null || echo 0
}

worker_pid=""
cleanup() {
  if [ -n "$worker_pid" ] && kill -0 "$worker_pid" 2>/dev/null; then
    kill -TERM "$worker_pid" && wait "$worker_pid" || true
  fi
}
trap cleanup EXIT INT TERM

if [ "$(consumers)" = "0" ]; then
  echo "gateway: no worker consumes ${QUEUE}; starting one (log: target/worker.log)"
  WARREN__ENGINE__MODEL_PATH=$MODEL "$WARREN" worker >target/worker.log 2>&1 &
  worker_pid=$!
  for _ in $(seq 1 120); do
    [ "$(consumers)" != "0" ] && break
    kill -0 "$worker_pid" 2>/dev/null || { echo "gateway: the worker exited; see target/worker.log" >&2; exit 1; }
    sleep 0.5
  done
fi
"$WARREN" gateway
