# warren's entry points. `make run` and `make test` install whatever is missing first.
CARGO        ?= cargo
MODEL        ?= models/gemma3-270m-q4_k_m.gguf
WARREN       := target/release/warren
PROMPT       ?= The capital of France is
MAX_TOKENS   ?= 32

CUDA_ARCHITECTURES ?= 80;86;89;90

.PHONY: help setup model build build-cuda gpu-check broker-up broker-down redis-up run embedder gateway submit test test-unit test-python bench bench-prefix bench-structured bench-kv bench-invariant bench-steps bench-embeddings bench-overload bench-ceiling soak docs lint fmt clean

help:
	@echo "make run      - a worker on the default model against the local broker (installs what is missing)"
	@echo "make test     - the whole test suite (unit + integration against a real broker and model)"
	@echo "make test-unit - the fast tier: unit tests that need no broker, Redis or model"
	@echo "make gateway  - the OpenAI-compatible HTTP API on 127.0.0.1:8080 (starts a worker if none runs)"
	@echo "make embedder - a worker that embeds (serves /v1/embeddings and warren.embeddings)"
	@echo "make submit PROMPT='...' - send one task to the running worker and print the reply"
	@echo "make bench    - warren vs llama-server vs the engine alone (tokens/s, latency, RSS), then every other bench-* below"
	@echo "make bench-prefix - the shared-prefix workload: warren prefix cache vs llama-server cache_prompt"
	@echo "make bench-structured - what a JSON Schema costs per token: warren engine vs llama-server, with and without"
	@echo "make bench-steps - the step loop's host work per step at 64 and 256 slots (engine alone)"
	@echo "make bench-kv - the KV cache's layout: one cache for every slot vs a stream per slot, tasks of mixed lengths"
	@echo "make bench-invariant - what batch-invariant generation costs: per worker at 1, 4, 8, 16 slots, one task in 8 at 8, 16"
	@echo "make bench-overload - past capacity through the gateway: a bounded queue's 429s vs the unbounded baseline"
	@echo "make bench-ceiling  - how many tasks/s one queue carries: synthetic workers (no model) at rising concurrency"
	@echo "make soak     - 10,000 tasks through two workers, one killed every 300 replies (leaks, losses, duplicates)"
	@echo "make build-cuda | gpu-check  - a CUDA build (target-cuda/) and the GPU measurements"
	@echo "make docs     - the book (docs/ with mdBook, into docs/book/), its links and the README's checked"
	@echo "make setup | model | build | broker-up | broker-down | redis-up | lint | fmt | clean"

setup:
	@scripts/setup.sh

model:
	@scripts/fetch-model.sh $(MODEL)

build: setup
	$(CARGO) build --release --locked

# A CUDA build in target-cuda/ (the CPU build in target/ stays): needs the CUDA toolkit (nvcc).
# CUDA_ARCHITECTURES: the compute capabilities compiled for (80 A100, 86 A10/RTX 30xx,
# 89 L4/RTX 40xx, 90 H100/H200), passed to llama.cpp's CMake.
build-cuda: setup
	@command -v nvcc >/dev/null 2>&1 || { echo "build-cuda: nvcc not found: install the CUDA toolkit" >&2; exit 1; }
	CMAKE_CUDA_ARCHITECTURES="$(CUDA_ARCHITECTURES)" CARGO_TARGET_DIR=target-cuda $(CARGO) build --release --locked --features cuda

# Engine alone on CPU and GPU, and warren through RabbitMQ on the GPU, in one table.
gpu-check: model broker-up
	scripts/gpu-check.sh

broker-up:
	@scripts/broker.sh up

broker-down:
	@scripts/broker.sh down

redis-up:
	@scripts/redis.sh up

run: setup model broker-up build
	WARREN__ENGINE__MODEL_PATH=$(MODEL) $(WARREN) worker

# A worker that embeds (engine.role = "embed": /v1/embeddings and warren.embeddings).
embedder: setup model broker-up build
	WARREN__ENGINE__MODEL_PATH=$(MODEL) WARREN__ENGINE__ROLE=embed $(WARREN) worker

gateway: setup model broker-up redis-up build
	@MODEL=$(MODEL) scripts/gateway.sh

submit: build
	$(WARREN) submit --max-tokens $(MAX_TOKENS) "$(PROMPT)"

# The fast tier: the unit tests that need no broker, no Redis and no model (those that load the
# model are named needs_model_*; every integration test in tests/ needs all three).
test-unit: setup
	$(CARGO) test --release --locked --lib --bins -- --skip needs_model_

# One cargo profile (release) for the binary and the tests: llama.cpp is built once.
# Model-using tests start worker processes; two at a time keeps 2 cores from thrashing.
test: setup model broker-up redis-up
	@scripts/test-broker-ready.sh
	@scripts/timed.sh "release build" $(CARGO) build --release --locked
	@scripts/timed.sh "test build" $(CARGO) test --release --locked --no-run
	@scripts/timed.sh "cargo tests" env WARREN_TEST_MODEL=$(abspath $(MODEL)) $(CARGO) test --release --locked -- --test-threads=2
	@scripts/test-broker-ready.sh
	@scripts/timed.sh "python tests" $(MAKE) test-python

# The gateway's end-to-end tests: the official `openai` SDK against real gateway and worker
# processes (run after `cargo build --release`). target/pyenv links to a virtualenv installed
# once per machine and set of pins (scripts/cached-tools.sh): a fresh clone reuses it. The
# stamp stays in this clone (beside the link, not in the shared virtualenv).
PYENV := target/pyenv
$(PYENV).installed: tests/python/requirements.txt examples/python/requirements.txt
	scripts/cached-tools.sh venv $(PYENV) $^
	touch $@

# Agent frameworks (langchain-openai, instructor) resolve to an older `openai` SDK than the
# gateway tests pin: they get their own virtualenv.
AGENTSENV := target/agents-venv
$(AGENTSENV).installed: tests/python/agents/requirements.txt
	scripts/cached-tools.sh venv $(AGENTSENV) $^
	touch $@

# Two test files at a time (pytest-xdist, a file's tests on one process). The tests that stop
# the broker or raise its alarm do so on a RabbitMQ node of their own (the private_broker
# fixture), so no file needs the machine alone. The agent frameworks' tests run in their
# virtualenv, after. Each run prints its slowest
# steps (where the phase's time goes, in CI's log too).
PYTEST := -m pytest -q -p no:cacheprovider --timeout 900 --durations=8
test-python: $(PYENV).installed $(AGENTSENV).installed
	WARREN_TEST_MODEL=$(abspath $(MODEL)) $(PYENV)/bin/python $(PYTEST) \
		-n 2 --dist loadfile --ignore tests/python/agents tests/python
	WARREN_TEST_MODEL=$(abspath $(MODEL)) $(AGENTSENV)/bin/python $(PYTEST) tests/python/agents

# Side-by-side benchmark: warren (1/4/8/16 slots) vs llama-server vs the engine alone.
# Run it with nothing else on the machine; results go to bench/results-latest.md.
bench: setup model broker-up redis-up build $(PYENV).installed
	scripts/bench.sh
	scripts/bench-prefix.sh
	scripts/bench-structured.sh
	scripts/bench-kv.sh
	scripts/bench-invariant.sh
	scripts/bench-steps.sh
	scripts/bench-embeddings.sh
	scripts/bench-overload.sh
	scripts/bench-ceiling.sh

# What the step loop costs on the host per step at 64 and 256 slots (engine alone, CPU).
bench-steps: setup model build
	scripts/bench-steps.sh

# The KV cache's layout: one cache for every slot against a stream per slot, on tasks of mixed lengths.
bench-kv: setup model build
	scripts/bench-kv.sh

# What batch-invariant generation costs (engine alone): per worker at 1, 4, 8, 16 slots; one task in 8 at 8, 16.
bench-invariant: setup model build
	scripts/bench-invariant.sh

# What a JSON Schema costs per generated token: warren's engine and llama-server, with and without.
bench-structured: setup model build
	scripts/bench-structured.sh

bench-prefix: setup model broker-up build
	scripts/bench-prefix.sh

# Past capacity through the gateway: a bounded queue's 429s against the unbounded baseline.
bench-overload: setup model broker-up redis-up build
	scripts/bench-overload.sh

# The queue's ceiling with the model out of the way: synthetic workers (engine.backend =
# "synthetic") on one queue, quorum and classic, AMQP and through the gateway.
bench-ceiling: setup broker-up redis-up build
	scripts/bench-ceiling.sh

# Embeddings/s and latency: an embed worker behind the gateway against llama-server --embeddings.
bench-embeddings: setup model broker-up redis-up build $(PYENV).installed
	scripts/bench-embeddings.sh

# Long run (about 10 minutes at 10,000 tasks): leaks, drift, lost or doubled work.
soak: setup model broker-up redis-up build $(PYENV).installed
	$(PYENV)/bin/python scripts/soak.py

# The book: docs/src built with mdBook into docs/book/, then every link and anchor in it and
# every relative link in README.md checked, offline. Installs mdbook (cargo install) and the
# link checker (a virtualenv under target/) the first time (scripts/docs-tools.sh).
docs:
	@scripts/docs.sh

lint: setup
	$(CARGO) fmt --check
	scripts/check-circles.py
	$(CARGO) clippy --release --all-targets --locked -- -D warnings
	$(MAKE) docs
	cd deploy/prometheus && promtool check rules alerts.yml && promtool test rules alerts.test.yml
	scripts/check-chart.sh
	scripts/check-dashboard.sh

fmt:
	$(CARGO) fmt

clean:
	$(CARGO) clean
