#!/usr/bin/env bash
# `make bench-ceiling`: how many tasks per second one queue carries on this machine, with the
# model taken out of the way: WORKERS synthetic workers (engine.backend = "synthetic", SLOTS
# slots each, FIRST_TOKEN_MS then TOKENS_PER_S tokens per second, MAX_TOKENS tokens a task)
# serve `warren bench --synthetic` at rising CONCURRENCY, so that the broker, the commit
# loop and the client set the pace. Runs, each TASKS tasks:
#   - one quorum queue (the default) at each concurrency, through AMQP;
#   - streamed (chunks published to the caller as the task goes: with the default chunking,
#     then a chunk per token), through the gateway, with finished marks in Redis
#     (worker.redis_url), on a classic queue, and on a 3-node cluster of the local RabbitMQ
#     (scripts/local_cluster.py; CLUSTER=0 skips it), and one model's tasks on one queue
#     against the same spread over SHARDS shards (topology.shards; on the cluster too), and
#     one quorum queue on a node of its own with and without its log synced to disk (SYNC=0
#     skips it), each at the highest concurrency;
# and for each, the CPU cores each process used over the run (RabbitMQ's beam.smp, the
# workers, the gateway, the bench client itself), from /proc. Writes
# bench/results-ceiling-latest.md. Tunables: WORKERS (2), SLOTS (64), TASKS (3000), CLUSTER (1),
# CONCURRENCY ("16 64 256"), MAX_TOKENS (8), FIRST_TOKEN_MS (5), TOKENS_PER_S (1000), SHARDS (4).
set -euo pipefail
# RabbitMQ's commands live in /usr/sbin, which Debian leaves off a user's PATH (sudo has it).
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
cd "$(dirname "$0")/.."

WORKERS="${WORKERS:-2}"
SLOTS="${SLOTS:-64}"
TASKS="${TASKS:-3000}"
CONCURRENCY="${CONCURRENCY:-16 64 256}"
MAX_TOKENS="${MAX_TOKENS:-8}"
FIRST_TOKEN_MS="${FIRST_TOKEN_MS:-5}"
TOKENS_PER_S="${TOKENS_PER_S:-1000}"
SHARDS="${SHARDS:-4}"
WARREN="${WARREN:-$(pwd)/target/release/warren}"
OUT="$(mktemp -d)"
RUN_ID="bench-ceiling.$(date +%s)"
GATEWAY_PORT="${GATEWAY_PORT:-8092}"

export WARREN__BROKER__URL="${WARREN__BROKER__URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
export WARREN__ENGINE__BACKEND=synthetic WARREN__ENGINE__SLOTS="$SLOTS"
export WARREN__ENGINE__SYNTHETIC__FIRST_TOKEN_MS="$FIRST_TOKEN_MS"
export WARREN__ENGINE__SYNTHETIC__TOKENS_PER_SECOND="$TOKENS_PER_S"
export WARREN__METRICS__LISTEN="" WARREN__LOG__LEVEL=warn WARREN__TOPOLOGY__QUEUE_BOUND=0
export WARREN__GATEWAY__LISTEN="127.0.0.1:$GATEWAY_PORT" GATEWAY_PORT
export WARREN__GATEWAY__RESULTS_QUEUE="$RUN_ID.gateway-results"

# shellcheck source=scripts/bench-run.sh
source scripts/bench-run.sh
workers=()
stop_workers() {
  for pid in "${workers[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${workers[@]}"; do wait "$pid" 2>/dev/null || true; done
  workers=()
}
cluster=""
stop_cluster() { if [ -n "$cluster" ]; then python3 scripts/local_cluster.py down "$cluster" || true; fi; }
# The tasks and shard exchanges of the sharding runs (bench-run.sh's cleanup deletes the queues).
delete_exchanges() {
  curl -fsS -u guest:guest "$MANAGEMENT/exchanges/%2F?columns=name" 2>/dev/null \
    | python3 -c 'import json,sys; [print(x["name"]) for x in json.load(sys.stdin) if x["name"].startswith(sys.argv[1] + ".")]' "$RUN_ID" 2>/dev/null \
    | while read -r x; do curl -fsS -u guest:guest -X DELETE "$MANAGEMENT/exchanges/%2F/$x" >/dev/null || true; done || true
}
trap 'stop_workers; stop_cluster; delete_exchanges; cleanup' EXIT

# Starts WORKERS workers with extra environment ("KEY=value" arguments).
start_workers() {
  local tag="$1"; shift
  for i in $(seq "$WORKERS"); do
    start_worker "$OUT/worker-$tag-$i.log" "$@"
    workers+=("$worker"); worker=""
  done
}

# Busy CPU ticks (user + system) of the processes named in $@ (pids), summed.
ticks() { python3 -c 'import sys
total = 0
for pid in sys.argv[1:]:
    try: fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError: continue
    total += int(fields[11]) + int(fields[12])
print(total)' "$@"; }

BEAM="$(pgrep -f beam.smp | head -1)"
HZ="$(getconf CLK_TCK)"

# One run: label, then `warren bench` arguments. Writes $OUT/<n>.json with the CPU cores each
# side used added.
runs=0
run() {
  local label="$1"; shift
  runs=$((runs + 1))
  echo "== $label" >&2
  local b0 w0 g0 start
  b0="$(ticks $BEAM)"; w0="$(ticks "${workers[@]}")"; g0="$(ticks ${gateway:-})"
  start="$(date +%s.%N)"
  /usr/bin/time -f "%U %S" -o "$OUT/client-$runs.time" \
    "$WARREN" bench --synthetic --tasks "$TASKS" --max-tokens "$MAX_TOKENS" --json --label "$label" "$@" \
    > "$OUT/$runs.json"
  python3 - "$OUT/$runs.json" "$start" "$HZ" "$(ticks $BEAM)" "$b0" "$(ticks "${workers[@]}")" "$w0" \
    "$(ticks ${gateway:-})" "$g0" "$OUT/client-$runs.time" <<'PY'
import json, sys, time
path, start, hz = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
wall = time.time() - start
b1, b0, w1, w0, g1, g0 = (int(x) for x in sys.argv[4:10])
user, system = (float(x) for x in open(sys.argv[10]).read().split()[-2:])
report = json.load(open(path))
report["cores"] = {"rabbitmq": (b1 - b0) / hz / wall, "workers": (w1 - w0) / hz / wall,
                   "gateway": (g1 - g0) / hz / wall, "client": (user + system) / wall}
json.dump(report, open(path, "w"))
PY
}

start_workers quorum
for c in $CONCURRENCY; do run "quorum, concurrency $c" --concurrency "$c"; done
HIGH="${CONCURRENCY##* }"
run "quorum, streamed (a chunk per 8 tokens), concurrency $HIGH" --concurrency "$HIGH" --stream
start_gateway "$OUT/gateway.log"
run "quorum, through the gateway, concurrency $HIGH" --concurrency "$HIGH" --gateway "http://127.0.0.1:$GATEWAY_PORT/v1"
kill -TERM "$gateway"; wait "$gateway" || true; gateway=""
stop_workers
start_workers redis WARREN__WORKER__REDIS_URL=redis://127.0.0.1:6379
run "quorum, finished marks in Redis, concurrency $HIGH" --concurrency "$HIGH"
stop_workers
start_workers per-token WARREN__STREAM__MAX_PIECES_PER_CHUNK=1
run "quorum, streamed (a chunk per token), concurrency $HIGH" --concurrency "$HIGH" --stream
stop_workers
export WARREN__TOPOLOGY__QUEUE_TYPE=classic WARREN__TOPOLOGY__REQUESTS_QUEUE="$RUN_ID.classic"
export WARREN__RETRY__QUEUE_PREFIX="$RUN_ID.classic-retry"
start_workers classic
run "classic, concurrency $HIGH" --concurrency "$HIGH"
stop_workers
unset WARREN__TOPOLOGY__QUEUE_TYPE WARREN__TOPOLOGY__REQUESTS_QUEUE WARREN__RETRY__QUEUE_PREFIX

# Sharding (topology.shards): one model's tasks spread over SHARDS quorum queues by a
# consistent-hash exchange, against the same model on one queue under routing by model (the
# same path but for the shards), both at the highest concurrency. Each run has its own names:
# a worker refuses a model whose routes another shard count left.
export WARREN__ENGINE__MODEL_NAME=bench
for shards in 1 $SHARDS; do
  export WARREN__TOPOLOGY__TASKS_EXCHANGE="$RUN_ID.tasks-$shards" WARREN__TOPOLOGY__SHARDS="$shards"
  export WARREN__TOPOLOGY__REQUESTS_QUEUE="$RUN_ID.shards-$shards" WARREN__RETRY__QUEUE_PREFIX="$RUN_ID.shards-$shards-retry"
  start_workers "shards-$shards"
  if [ "$shards" = 1 ]; then label="routed by model, one queue"; else label="routed by model, $shards shards"; fi
  run "quorum, $label, concurrency $HIGH" --concurrency "$HIGH"
  stop_workers
done
unset WARREN__ENGINE__MODEL_NAME WARREN__TOPOLOGY__TASKS_EXCHANGE WARREN__TOPOLOGY__SHARDS
export WARREN__TOPOLOGY__REQUESTS_QUEUE="$RUN_ID.requests" WARREN__RETRY__QUEUE_PREFIX="$RUN_ID.retry"

# A 3-node cluster of this machine's RabbitMQ (scripts/local_cluster.py): the quorum queue
# has three replicas, each commit waits for a majority; the workers' connections are spread
# over the nodes. Every node runs on the same cores, so this measures replication's cost,
# not the capacity three broker machines would add. CLUSTER=0 skips it.
if [ "${CLUSTER:-1}" = 1 ]; then
  cluster="$OUT/cluster"
  python3 scripts/local_cluster.py up "$cluster" > "$OUT/cluster.json"
  mapfile -t urls < <(python3 -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1]))["urls"]))' "$OUT/cluster.json")
  BEAM="$(python3 -c 'import json,sys; print(" ".join(map(str, json.load(open(sys.argv[1]))["pids"])))' "$OUT/cluster.json")"
  saved_url="$WARREN__BROKER__URL"
  export WARREN__BROKER__MANAGEMENT_URL="" WARREN__TOPOLOGY__PARKING_QUEUE_TYPE=quorum
  for i in $(seq "$WORKERS"); do
    first=$(( (i - 1) % 3 ))
    rotated="${urls[$first]},${urls[$(( (first + 1) % 3 ))]},${urls[$(( (first + 2) % 3 ))]}"
    start_worker "$OUT/worker-cluster-$i.log" "WARREN__BROKER__URL=$rotated"
    workers+=("$worker"); worker=""
  done
  export WARREN__BROKER__URL="$(IFS=,; echo "${urls[*]}")"
  run "quorum, 3-node cluster (3 replicas), concurrency $HIGH" --concurrency "$HIGH"
  stop_workers
  # The same model spread over SHARDS shards, their leaders spread over the nodes.
  export WARREN__ENGINE__MODEL_NAME=bench WARREN__TOPOLOGY__SHARDS="$SHARDS"
  export WARREN__TOPOLOGY__TASKS_EXCHANGE="$RUN_ID.tasks-cluster"
  for i in $(seq "$WORKERS"); do
    start_worker "$OUT/worker-cluster-shards-$i.log" "WARREN__BROKER__URL=${urls[$(( (i - 1) % 3 ))]},${urls[$(( i % 3 ))]},${urls[$(( (i + 1) % 3 ))]}"
    workers+=("$worker"); worker=""
  done
  run "quorum, 3-node cluster (3 replicas), $SHARDS shards, concurrency $HIGH" --concurrency "$HIGH"
  stop_workers
  unset WARREN__ENGINE__MODEL_NAME WARREN__TOPOLOGY__SHARDS WARREN__TOPOLOGY__TASKS_EXCHANGE
  export WARREN__BROKER__URL="$saved_url"
  stop_cluster; cluster=""
fi

# Disk sync: one quorum queue on a node of its own (scripts/local_cluster.py node), as it is
# and with its write-ahead log never synced to disk (ra's wal_sync_method = none: a test
# setting, which loses the last writes in a power cut), at the highest concurrency. The
# difference is what waiting for the disk costs at the knee. SYNC=0 skips it.
if [ "${SYNC:-1}" = 1 ]; then
  for sync in datasync none; do
    cluster="$OUT/node-$sync"
    python3 scripts/local_cluster.py node "$cluster" "[{ra, [{wal_sync_method, $sync}]}]." > "$OUT/node-$sync.json"
    node_url="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["urls"][0])' "$OUT/node-$sync.json")"
    BEAM="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pids"][0])' "$OUT/node-$sync.json")"
    saved_url="$WARREN__BROKER__URL"
    export WARREN__BROKER__URL="$node_url" WARREN__BROKER__MANAGEMENT_URL=""
    start_workers "node-$sync"
    run "quorum, a node of its own, WAL sync $sync, concurrency $HIGH" --concurrency "$HIGH"
    stop_workers
    export WARREN__BROKER__URL="$saved_url"
    unset WARREN__BROKER__MANAGEMENT_URL
    stop_cluster; cluster=""
  done
fi

mkdir -p bench
python3 - "$OUT" "$runs" <<PY | tee bench/results-ceiling-latest.md
import json, sys
out, runs = sys.argv[1], int(sys.argv[2])
print("## The queue's ceiling: $(date -u +%Y-%m-%d), $(nproc) CPU cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), RabbitMQ $(rabbitmqctl version 2>/dev/null || echo '?')")
print()
print("$WORKERS synthetic workers x $SLOTS slots ($FIRST_TOKEN_MS ms to a first token, then $TOKENS_PER_S tokens/s,")
print("$MAX_TOKENS tokens a task), $TASKS tasks a run, one RabbitMQ node (the cluster run: three), everything on this machine.")
print("Cores: CPU time over the run's wall time of RabbitMQ (beam.smp), the workers, the gateway and")
print("the bench client.")
print()
print("| run | tasks/s | p50 ms | p99 ms | errors | RabbitMQ cores | workers cores | gateway cores | client cores |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for n in range(1, runs + 1):
    r = json.load(open(f"{out}/{n}.json"))
    c = r["cores"]
    print(f"| {r['label']} | {r['tasks_per_s']:.0f} | {r['latency_ms']['p50']:.1f} | {r['latency_ms']['p99']:.1f} | "
          f"{r['errors']} | {c['rabbitmq']:.2f} | {c['workers']:.2f} | {c['gateway']:.2f} | {c['client']:.2f} |")
PY
