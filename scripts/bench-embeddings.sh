#!/usr/bin/env bash
# `make bench-embeddings`: embeddings/s and latency of warren (a worker with
# engine.role = "embed" behind `warren gateway`, through RabbitMQ) against llama-server
# --embeddings (mean pooling, the same threads, context and batch), on the same model and
# CPU, side by side in one run: REQUESTS requests of INPUTS texts each from
# bench/embeddings/corpus.txt, CONCURRENCY in flight (= warren's inputs per decode and
# llama-server's slots), through HTTP /v1/embeddings on both sides (scripts/bench-embeddings.py),
# for each of SHAPES: texts of that many consecutive sentences (1: short texts; 8:
# paragraph-sized chunks, as retrieval pipelines embed). ROUNDS rounds, interleaved; the table
# gives each side's median. Writes bench/results-embeddings-latest.md. Tunables: REQUESTS
# (200), CONCURRENCY (8), INPUTS (1), SHAPES ("1 8"), ROUNDS (3), THREADS (cores).
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS="${REQUESTS:-200}"
CONCURRENCY="${CONCURRENCY:-8}"
INPUTS="${INPUTS:-1}"
SHAPES="${SHAPES:-1 8}"
ROUNDS="${ROUNDS:-3}"
THREADS="${THREADS:-$(nproc)}"
CONTEXT=512
BATCH=512
MODEL="$(pwd)/models/gemma3-270m-q4_k_m.gguf"
WARREN="$(pwd)/target/release/warren"
PYTHON="${PYTHON:-target/pyenv/bin/python}"
PORT="${LLAMA_SERVER_PORT:-8089}"
GATEWAY_PORT="${GATEWAY_PORT:-8094}"
CORPUS=bench/embeddings/corpus.txt
OUT="$(mktemp -d)"
RUN_ID="bench-embeddings.$(date +%s)"

LLAMA_SERVER="$(scripts/build-llama-server.sh | tail -n1)"
LLAMA_COMMIT="$("$LLAMA_SERVER" --version 2>&1 | grep -o 'commit [0-9a-f]*' | head -n1 || echo "commit unknown")"

export WARREN__ENGINE__MODEL_PATH="$MODEL" WARREN__ENGINE__THREADS="$THREADS"
export WARREN__ENGINE__CONTEXT_SIZE="$CONTEXT" WARREN__ENGINE__SLOTS="$CONCURRENCY"
export WARREN__ENGINE__ROLE=embed WARREN__TOPOLOGY__EMBEDDINGS_QUEUE="$RUN_ID.embeddings"
export WARREN__METRICS__LISTEN="" WARREN__LOG__LEVEL=warn
export WARREN__GATEWAY__LISTEN="127.0.0.1:$GATEWAY_PORT" WARREN__GATEWAY__RESULTS_QUEUE="$RUN_ID.gateway-results"

# shellcheck source=scripts/bench-run.sh
source scripts/bench-run.sh

# load URL NAME ROUND: every shape against URL, one report each in $OUT/NAME-SHAPE-ROUND.json.
load() {
  for shape in $SHAPES; do
    "$PYTHON" scripts/bench-embeddings.py "$1" "$CORPUS" "$REQUESTS" "$CONCURRENCY" "$INPUTS" "$shape" "$2" \
      > "$OUT/$2-$shape-$3.json"
  done
}

for r in $(seq "$ROUNDS"); do
  echo "== round $r: warren (gateway, RabbitMQ, embed worker)" >&2
  start_worker "$OUT/worker-$r.log"
  start_gateway "$OUT/gateway-$r.log"
  load "http://127.0.0.1:$GATEWAY_PORT/v1" warren "$r"
  kill -TERM "$gateway" "$worker"; wait "$gateway" "$worker" || true; gateway="" worker=""

  echo "== round $r: llama-server --embeddings" >&2
  "$LLAMA_SERVER" -m "$MODEL" -t "$THREADS" -tb "$THREADS" -np "$CONCURRENCY" -c $((CONTEXT * CONCURRENCY)) \
    -b "$BATCH" -ub "$BATCH" --embeddings --pooling mean --port "$PORT" --host 127.0.0.1 > "$OUT/llama-$r.log" 2>&1 &
  server=$!
  until curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1; do
    kill -0 "$server" 2>/dev/null || { cat "$OUT/llama-$r.log" >&2; exit 1; }
    sleep 0.3
  done
  load "http://127.0.0.1:$PORT/v1" llama "$r"
  kill -TERM "$server"; wait "$server" 2>/dev/null || true; server=""
done

mkdir -p bench
HEADER="Embeddings benchmark: $(date -u +%Y-%m-%d), $(nproc) CPU cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), no GPU"
SETUP="Model gemma3-270m Q4_K_M (mean pooling), threads $THREADS, $REQUESTS requests of $INPUTS text(s) from $CORPUS, $CONCURRENCY in flight (warren: inputs per decode; llama-server: -np), context $CONTEXT per input, batch $BATCH; both through HTTP /v1/embeddings (warren: gateway, RabbitMQ, embed worker). llama-server: llama.cpp $LLAMA_COMMIT."
python3 scripts/bench-embeddings-table.py "$OUT" "$ROUNDS" "$SHAPES" "$HEADER" "$SETUP" | tee bench/results-embeddings-latest.md
