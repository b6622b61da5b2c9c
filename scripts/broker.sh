#!/usr/bin/env bash
# Starts or stops a local RabbitMQ with the management plugin (ports 5672 and 15672):
# the machine's rabbitmq-server when it has one, else docker compose (deploy/docker-compose.yml).
#
# Usage: scripts/broker.sh up|down|status
set -euo pipefail
# RabbitMQ's commands live in /usr/sbin, which Debian leaves off a user's PATH (sudo has it).
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
cd "$(dirname "$0")/.."

# Debian's RabbitMQ commands refuse anyone but root and the rabbitmq user: use sudo otherwise.
AS_ADMIN=""
if [ "$(id -u)" -ne 0 ]; then AS_ADMIN="sudo"; fi
ping_amqp() { $AS_ADMIN rabbitmq-diagnostics -q ping >/dev/null 2>&1; }
mgmt_up() { curl -fsS -u guest:guest http://127.0.0.1:15672/api/overview >/dev/null 2>&1; }

wait_for() {
  local what=$1 check=$2 seconds=$3
  for _ in $(seq 1 "$seconds"); do
    if $check; then return 0; fi
    sleep 1
  done
  echo "broker: $what did not come up within ${seconds}s" >&2
  return 1
}

up_local() {
  if ! ping_amqp; then
    echo "broker: starting rabbitmq-server"
    $AS_ADMIN rabbitmq-server -detached
    wait_for "RabbitMQ" ping_amqp 90
    $AS_ADMIN rabbitmqctl await_startup >/dev/null 2>&1 || true
  fi
  if ! mgmt_up; then
    echo "broker: enabling the management plugin"
    $AS_ADMIN rabbitmq-plugins enable rabbitmq_management >/dev/null
    wait_for "the management API" mgmt_up 60
  fi
  # Sharding (topology.shards) routes through the consistent-hash exchange.
  if ! $AS_ADMIN rabbitmq-plugins list -e -m 2>/dev/null | grep -qx rabbitmq_consistent_hash_exchange; then
    echo "broker: enabling the consistent-hash exchange plugin"
    $AS_ADMIN rabbitmq-plugins enable rabbitmq_consistent_hash_exchange >/dev/null
  fi
  echo "broker: RabbitMQ is up (amqp://127.0.0.1:5672, management http://127.0.0.1:15672)"
}

case "${1:-}" in
  up)
    if command -v rabbitmq-server >/dev/null 2>&1; then
      up_local
    elif docker info >/dev/null 2>&1; then
      # A development broker: guest/guest as the tests and `make run` expect, throwaway
      # passwords for the deployment's users unless deploy/.env sets them.
      DEV_GUEST=true WARREN_RABBITMQ_PASSWORD="${WARREN_RABBITMQ_PASSWORD:-dev-warren}" \
        OPS_RABBITMQ_PASSWORD="${OPS_RABBITMQ_PASSWORD:-dev-ops}" \
        docker compose -f deploy/docker-compose.yml up -d rabbitmq
      wait_for "the management API" mgmt_up 90
    else
      echo "broker: neither rabbitmq-server nor a Docker engine is available (run make setup)" >&2
      exit 1
    fi
    ;;
  down)
    if command -v rabbitmqctl >/dev/null 2>&1 && ping_amqp; then
      $AS_ADMIN rabbitmqctl stop >/dev/null && echo "broker: stopped"
    elif docker info >/dev/null 2>&1; then
      docker compose -f deploy/docker-compose.yml down
    else
      echo "broker: not running"
    fi
    ;;
  status)
    if ping_amqp || mgmt_up; then echo "broker: up"; else echo "broker: down"; exit 1; fi
    ;;
  *)
    echo "usage: $0 up|down|status" >&2
    exit 2
    ;;
esac
