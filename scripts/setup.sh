#!/usr/bin/env bash
# Installs what building and running warren needs, when it is missing (Debian/Ubuntu):
# cmake and libclang-dev (to build llama.cpp through llama-cpp-2), pip (to fetch the model),
# redis-server (the gateway's background state),
# and RabbitMQ when neither rabbitmq-server nor a Docker engine is available.
set -euo pipefail
# RabbitMQ's commands live in /usr/sbin, which Debian leaves off a user's PATH (sudo has it).
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
command -v c++ >/dev/null 2>&1 || missing+=(g++)
command -v pip3 >/dev/null 2>&1 || command -v pip >/dev/null 2>&1 || missing+=(python3-pip)
command -v curl >/dev/null 2>&1 || missing+=(curl)
# The TLS test: openssl makes a throwaway CA, socat terminates TLS in front of RabbitMQ.
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v socat >/dev/null 2>&1 || missing+=(socat)
# The gateway's background responses keep their state in Redis (tests start it if needed).
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# The Node client example's test installs amqplib with npm.
command -v npm >/dev/null 2>&1 || missing+=(npm)
# The alert rules in deploy/prometheus are checked and unit-tested with promtool
# (Debian's prometheus package; its service is not started here).
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
# The Go client example is checked with gofmt.
command -v gofmt >/dev/null 2>&1 || missing+=(golang-go)
# The Python tests (pika example, openai SDK against the gateway) run in a virtual
# environment. `venv --help` succeeds even without ensurepip, so really create one.
venv_probe=$(mktemp -d)
python3 -m venv "$venv_probe/v" >/dev/null 2>&1 || missing+=(python3-venv)
rm -rf "$venv_probe"
if ! command -v rabbitmq-server >/dev/null 2>&1 && ! docker info >/dev/null 2>&1; then
  missing+=(rabbitmq-server)
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo is missing: install Rust with rustup (https://rustup.rs)" >&2
  exit 1
fi

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: everything is installed"
  exit 0
fi
echo "setup: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
echo "setup: done"
