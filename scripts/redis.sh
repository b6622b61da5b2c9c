#!/usr/bin/env bash
# Makes sure a Redis answers on 127.0.0.1:6379 (the gateway's background state; the tests use
# it): starts the machine's redis-server when none answers. Usage: scripts/redis.sh up
set -euo pipefail
port="${REDIS_PORT:-6379}"
if redis-cli -p "$port" ping >/dev/null 2>&1; then
  echo "redis: up on 127.0.0.1:$port"
  exit 0
fi
if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis: redis-server is not installed (run make setup)" >&2
  exit 1
fi
echo "redis: starting redis-server on 127.0.0.1:$port"
redis-server --port "$port" --bind 127.0.0.1 --daemonize yes --save '' --appendonly no >/dev/null
for _ in $(seq 1 50); do
  redis-cli -p "$port" ping >/dev/null 2>&1 && { echo "redis: up"; exit 0; }
  sleep 0.2
done
echo "redis: did not come up on port $port" >&2
exit 1
