# Sourced by the benchmark scripts: one run's broker names and its clean-up.
# Every queue and exchange of the run is named after RUN_ID; on exit only the processes the
# script still runs ($worker, $server, $gateway: each emptied once stopped) are stopped, and
# only this run's queues and exchanges are deleted (through the management API), whatever the
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
}
trap cleanup EXIT
