# Sourced by the benchmark scripts: one run's broker names, its clean-up, and how a worker and
# a llama-server are started and awaited.
# Every queue and exchange of the run is named after RUN_ID; on exit only the processes the
# script still runs ($worker, $server, $gateway: each emptied once stopped) are stopped, and
# only this run's queues, exchanges and queue bound policies are deleted (through the management API), whatever the
# retry ladder made of them.

RUN_ID="${RUN_ID:?set RUN_ID before sourcing scripts/bench-run.sh}"
export WARREN__TOPOLOGY__REQUESTS_QUEUE="$RUN_ID.requests" WARREN__TOPOLOGY__DEAD_LETTER_EXCHANGE="$RUN_ID.dlx"
export WARREN__TOPOLOGY__DEAD_LETTER_QUEUE="$RUN_ID.dead" WARREN__TOPOLOGY__RESULTS_QUEUE="$RUN_ID.results"
export WARREN__RETRY__QUEUE_PREFIX="$RUN_ID.retry" WARREN__TOPOLOGY__CONTROL_EXCHANGE="$RUN_ID.control"

MANAGEMENT="http://127.0.0.1:15672/api"
worker="" server="" gateway=""
cleanup() {
  for pid in $worker $server $gateway; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  curl -fsS -u guest:guest "$MANAGEMENT/queues/%2F?columns=name" 2>/dev/null \
    | python3 -c 'import json,sys; [print(q["name"]) for q in json.load(sys.stdin) if q["name"].startswith(sys.argv[1] + ".")]' "$RUN_ID" 2>/dev/null \
    | while read -r q; do curl -fsS -u guest:guest -X DELETE "$MANAGEMENT/queues/%2F/$q" >/dev/null || true; done || true
  for x in dlx control; do curl -fsS -u guest:guest -X DELETE "$MANAGEMENT/exchanges/%2F/$RUN_ID.$x" >/dev/null 2>&1 || true; done
  # The queue bound policies the run's workers put (the requests or the embeddings queue).
  curl -fsS -u guest:guest "$MANAGEMENT/policies/%2F" 2>/dev/null \
    | python3 -c 'import json,sys; [print(p["name"]) for p in json.load(sys.stdin) if p["name"].startswith("warren-bound-" + sys.argv[1] + ".")]' "$RUN_ID" 2>/dev/null \
    | while read -r p; do curl -fsS -u guest:guest -X DELETE "$MANAGEMENT/policies/%2F/$p" >/dev/null || true; done || true
}
trap cleanup EXIT

# Starts `warren worker` with extra environment ("KEY=value" arguments), its log in $1, and
# waits until it consumes; sets $worker. A worker that dies first ends the script.
start_worker() {
  local log="$1"; shift
  env "$@" WARREN__LOG__LEVEL=info "$WARREN" worker 2> "$log" &
  worker=$!
  until grep -q consuming "$log" 2>/dev/null; do
    kill -0 "$worker" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.2
  done
}

# Starts `warren gateway` on GATEWAY_PORT (its settings from the environment), its log in $1,
# and waits until it is ready; sets $gateway. A gateway that dies first ends the script.
start_gateway() {
  "$WARREN" gateway 2> "$1" &
  gateway=$!
  until curl -fsS "http://127.0.0.1:$GATEWAY_PORT/readyz" >/dev/null 2>&1; do
    kill -0 "$gateway" 2>/dev/null || { cat "$1" >&2; exit 1; }
    sleep 0.2
  done
}

# Starts llama-server with $1 slots (continuous batching, the same threads, context per slot
# and batch size as warren), its log in $2, and waits until it is healthy; sets $server.
start_llama_server() {
  "$LLAMA_SERVER" -m "$MODEL" -t "$THREADS" -tb "$THREADS" -np "$1" -c $((CONTEXT * $1)) \
    -b "$BATCH" -ub "$BATCH" --cont-batching --port "$PORT" --host 127.0.0.1 > "$2" 2>&1 &
  server=$!
  until curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1; do
    kill -0 "$server" 2>/dev/null || { cat "$2" >&2; exit 1; }
    sleep 0.3
  done
}
