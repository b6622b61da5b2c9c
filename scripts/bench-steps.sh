#!/usr/bin/env bash
# `make bench-steps`: what the engine's step loop costs on the host, per step, at many slots.
# The engine alone on this machine's CPU with tokens chosen in llama.cpp's graph
# (engine.device_sampling "on", as on a GPU: no logits scanned on the host), SLOTS concurrent
# tasks (default 64 and 256) of MAX_TOKENS tokens; each run's step_profile splits the step into
# warren's host work (schedule: admitting, reaping, building the batch; emit: pieces, stop
# checks, replies) and llama.cpp's (decode, sample). On a CPU the decode dominates; what this
# guards is the host work per sequence, which a GPU's short decode leaves exposed.
# Writes bench/results-steps-latest.md.
set -euo pipefail
cd "$(dirname "$0")/.."
SLOTS="${SLOTS:-64 256}"
MAX_TOKENS="${MAX_TOKENS:-8}"
THREADS="${THREADS:-$(nproc)}"
WARREN="$(pwd)/target/release/warren"
OUT="$(mktemp -d)"
export WARREN__ENGINE__MODEL_PATH="$(pwd)/models/gemma3-270m-q4_k_m.gguf"
export WARREN__ENGINE__THREADS="$THREADS" WARREN__ENGINE__CONTEXT_SIZE=256
export WARREN__ENGINE__DEVICE_SAMPLING=on WARREN__LOG__LEVEL=warn WARREN__METRICS__LISTEN=""
for n in $SLOTS; do
  echo "-- engine alone, $n slots" >&2
  WARREN__ENGINE__SLOTS="$n" "$WARREN" bench --in-process --concurrency "$n" --tasks "$n" \
    --max-tokens "$MAX_TOKENS" --json --label "steps-$n" > "$OUT/steps-$n.json"
done
mkdir -p bench
python3 - "$OUT" "$SLOTS" <<PY | tee bench/results-steps-latest.md
import json, sys
out, slots = sys.argv[1], sys.argv[2].split()
print("## Step loop: $(date -u +%Y-%m-%d), $(nproc) CPU cores, no GPU")
print()
print("Engine alone, device_sampling on, threads $THREADS, one task per slot, max_tokens $MAX_TOKENS, greedy, context 256 per slot.")
print("Host work = schedule + emit (warren's own); decode and sample are llama.cpp's.")
print()
print("| slots | steps | tokens per step | step ms | decode + sample ms | host work ms | host work per sequence µs | host share |")
print("|---|---|---|---|---|---|---|---|")
for n in slots:
    p = json.load(open(f"{out}/steps-{n}.json"))["step_profile"]
    host = p["schedule_ms"] + p["emit_ms"]
    llama = p["decode_ms"] + p["sample_ms"]
    print(f"| {n} | {p['steps']} | {p['tokens_per_step']:.1f} | {host + llama:.1f} | {llama:.1f} | {host:.3f} | "
          f"{host * 1000 / int(n):.2f} | {p['host_share'] * 100:.2f}% |")
PY
