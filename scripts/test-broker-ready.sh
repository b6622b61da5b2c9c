#!/usr/bin/env bash
# Before `make test`: the local broker must be fit to test against. Deletes what an earlier,
# interrupted run left behind (worker and gateway processes on test queues; queues,
# exchanges and policies named `test.*`: each leftover
# quorum queue keeps running inside the broker, and they add up run after run), then fails
# at once, naming the cause, if the broker has an alarm set or few sockets left: a blocked
# broker makes every publish in the tests wait instead of fail.
#
# Only the test suite names things `test.*`; do not run this while tests are running (it
# would delete their queues and kill their workers).
set -euo pipefail

# Worker and gateway processes an earlier run left serving test queues (each holds a copy of
# the model and a consumer); named by the queue in their environment.
strays=0
for pid in $(pgrep -f 'warren (worker|gateway)' || true); do
  if tr '\0' '\n' 2>/dev/null < "/proc/$pid/environ" |
      grep '^WARREN__TOPOLOGY__REQUESTS_QUEUE=test\.' >/dev/null; then
    if kill -9 "$pid" 2>/dev/null; then strays=$((strays + 1)); fi
  fi
done
if [ "$strays" -gt 0 ]; then
  echo "test-broker-ready: killed $strays warren process(es) an earlier test run left running"
fi

API=http://127.0.0.1:15672/api
get() { curl -fsS -m 30 -u guest:guest "$API/$1"; }
delete() { curl -fsS -m 30 -u guest:guest -X DELETE "$API/$1" >/dev/null || true; }
names() { python3 -c 'import json,sys; [print(x["name"]) for x in json.load(sys.stdin)]'; }

left=0
for queue in $(get "queues/%2F?columns=name" | names | grep '^test\.' || true); do
  delete "queues/%2F/$queue"; left=$((left + 1))
done
for exchange in $(get "exchanges/%2F?columns=name" | names | grep '^test\.' || true); do
  delete "exchanges/%2F/$exchange"
done
for policy in $(get "policies/%2F" | names | grep '^warren-bound-test\.' || true); do
  delete "policies/%2F/$policy"
done
if [ "$left" -gt 0 ]; then
  echo "test-broker-ready: deleted $left queue(s) an earlier test run left behind"
fi

NODES=$(get nodes) python3 - <<'PY'
import json, os, sys

node = json.loads(os.environ["NODES"])[0]
used, limit = node["mem_used"], node["mem_limit"]
problems = []
if node.get("mem_alarm"):
    problems.append(f"memory alarm (uses {used} of {limit} bytes)")
if node.get("disk_free_alarm"):
    problems.append(f"disk alarm ({node['disk_free']} bytes free, limit {node['disk_free_limit']})")
free_sockets = node["sockets_total"] - node["sockets_used"]
if free_sockets < 200:
    problems.append(f"only {free_sockets} sockets left of {node['sockets_total']}")
if problems:
    sys.exit("test-broker-ready: RabbitMQ is not fit to test against: " + "; ".join(problems))
print(
    f"test-broker-ready: RabbitMQ ok ({node['sockets_used']}/{node['sockets_total']} sockets, "
    f"{used // 2**20} MiB of {limit // 2**20} MiB, {node['disk_free'] // 2**30} GiB disk free)"
)
PY
