"""The tables of scripts/gpu-check.sh, from the JSON reports of its runs.

Usage: gpu-table.py RESULTS_FOLDER "SLOTS" MAX_TOKENS [GPU_NAME]
"""
import json, os, sys
results, slots, max_tokens = sys.argv[1], sys.argv[2].split(), sys.argv[3]
gpu = sys.argv[4] if len(sys.argv) > 4 else "(GPU not recorded)"
def load(name):
    path = f"{results}/{name}.json"
    try:
        return json.load(open(path))
    except (OSError, ValueError):
        return None
def tps(r):
    return f"{r['tokens_per_s']:.0f}" + (f" ({r['errors']} errors)" if r["errors"] else "") if r else "-"
def ratio(a, b):
    return f"{a['tokens_per_s'] / b['tokens_per_s']:.2f}x" if a and b and b["tokens_per_s"] else "-"
def table(columns, rows):
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(row) + " |")

def greedy_row(n):
    host, device, warren = load(f"engine-host-{n}"), load(f"engine-device-{n}"), load(f"warren-{n}")
    ls_host, ls_backend = load(f"llama-server-host-greedy-{n}"), load(f"llama-server-backend-greedy-{n}")
    return [n, tps(host), tps(device), tps(warren), tps(ls_host), tps(ls_backend), ratio(warren, ls_host), ratio(warren, ls_backend)]

def sampled_row(n):
    host, device = load(f"engine-host-sampled-{n}"), load(f"engine-device-sampled-{n}")
    ls_host, ls_backend = load(f"llama-server-host-sampled-{n}"), load(f"llama-server-backend-sampled-{n}")
    return [n, tps(host), tps(device), ratio(device, load(f"engine-device-{n}")), tps(ls_host), tps(ls_backend), ratio(device, ls_host), ratio(device, ls_backend)]

def layout_row(n):
    one, streams = load(f"engine-device-unified-{n}"), load(f"engine-device-{n}")
    one_mixed, streams_mixed = load(f"engine-device-unified-mixed-{n}"), load(f"engine-device-mixed-{n}")
    return [n, tps(one), tps(streams), ratio(one, streams), tps(one_mixed), tps(streams_mixed), ratio(one_mixed, streams_mixed)]

print(f"## GPU check: {gpu}, {max_tokens} tokens per task, tokens/s")
print()
table(["slots", "engine, host sampling", "engine, device sampling", "warren via RabbitMQ", "llama-server",
       "llama-server --backend-sampling", "warren (RabbitMQ) / llama-server", "/ llama-server --backend-sampling"],
      [greedy_row(n) for n in slots])
print()
print("Sampled (temperature 0.7, top-k 40, top-p 0.95):")
print()
table(["slots", "engine, host sampling", "engine, device sampling", "device: sampled / greedy", "llama-server",
       "llama-server --backend-sampling", "engine (device) / llama-server", "/ llama-server --backend-sampling"],
      [sampled_row(n) for n in slots])
layouts = [n for n in slots if load(f"engine-device-unified-{n}")]
if layouts:
    print()
    print("KV cache layout (engine, device sampling, greedy; mixed: tasks of eight lengths, --mixed-lengths):")
    print()
    table(["slots", "one cache", "a stream per slot", "one cache / streams", "one cache, mixed", "streams, mixed",
           "one cache / streams, mixed"], [layout_row(n) for n in layouts])
batch = [(f[:-5], load(f[:-5])) for f in sorted(os.listdir(results))
         if f.endswith(".json") and f.startswith(("batch128-", "prefix-batch"))]
if batch:
    print()
    print("engine.batch_size (device sampling): " + ", ".join(
        f"{name} {r['tokens_per_s']:.0f} tokens/s, {r.get('tasks_per_s', 0):.2f} tasks/s, ttft p50 {r['ttft_ms']['p50']:.0f} ms"
        for name, r in batch if r))
