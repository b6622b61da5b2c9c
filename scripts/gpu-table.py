"""The tables of scripts/gpu-check.sh, from the reports of its runs (a missing run is "-").

Usage: gpu-table.py RESULTS_FOLDER "SLOTS" MAX_TOKENS [GPU_NAME]
"""
import json, os, sys
results, slots, max_tokens = sys.argv[1], sys.argv[2].split(), sys.argv[3]
gpu = sys.argv[4] if len(sys.argv) > 4 else "(GPU not recorded)"

def load(name):
    try:
        return json.load(open(f"{results}/{name}.json"))
    except (OSError, ValueError):
        return None

def gpu_busy(name):
    """Mean GPU utilisation (%) nvidia-smi sampled during the run NAME, or None."""
    try:
        samples = [float(line.split(",")[0]) for line in open(f"{results}/{name}.gpu") if line.strip()]
    except (OSError, ValueError):
        return None
    return sum(samples) / len(samples) if samples else None

def batched_bench():
    """llama-batched-bench's generation tokens/s by sequences decoded together."""
    speeds = {}
    for file in ("batched-bench.jsonl", "batched-bench.log"):
        try:
            lines = open(f"{results}/{file}").read().splitlines()
        except OSError:
            continue
        for line in lines:
            if line.startswith('{"n_kv_max"'):
                record = json.loads(line)
                speeds[str(record["pl"])] = {"tokens_per_s": record["speed_tg"], "errors": 0}
    return speeds

ceiling = batched_bench()

def tps(r):
    return f"{r['tokens_per_s']:.0f}" + (f" ({r['errors']} errors)" if r["errors"] else "") if r else "-"
def ratio(a, b):
    return f"{a['tokens_per_s'] / b['tokens_per_s']:.2f}x" if a and b and b["tokens_per_s"] else "-"
def percent(x):
    return f"{x:.0f}%" if x is not None else "-"
def table(columns, rows):
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(row) + " |")

def greedy_row(n):
    host, device, warren = load(f"engine-host-{n}"), load(f"engine-device-{n}"), load(f"warren-{n}")
    ls_host, ls_backend = load(f"llama-server-host-greedy-{n}"), load(f"llama-server-backend-greedy-{n}")
    return [n, tps(host), tps(device), tps(warren), tps(ls_host), tps(ls_backend), tps(ceiling.get(n)),
            ratio(warren, ls_host), ratio(warren, ls_backend)]

def step_row(n):
    device = load(f"engine-device-{n}")
    profile = (device or {}).get("step_profile")
    if not profile:
        return None
    step = profile["schedule_ms"] + profile["decode_ms"] + profile["sample_ms"] + profile["emit_ms"]
    ms = lambda x: f"{x:.3f}"
    return [n, f"{profile['tokens_per_step']:.1f}", ms(step), ms(profile["schedule_ms"]), ms(profile["decode_ms"]),
            ms(profile["sample_ms"]), ms(profile["emit_ms"]), percent(profile["host_share"] * 100),
            percent(gpu_busy(f"engine-device-{n}")), percent(gpu_busy(f"warren-{n}")),
            percent(gpu_busy(f"llama-server-backend-greedy-{n}"))]

def sampled_row(n):
    host, device = load(f"engine-host-sampled-{n}"), load(f"engine-device-sampled-{n}")
    ls_host, ls_backend = load(f"llama-server-host-sampled-{n}"), load(f"llama-server-backend-sampled-{n}")
    return [n, tps(host), tps(device), ratio(device, load(f"engine-device-{n}")), tps(ls_host), tps(ls_backend),
            ratio(device, ls_host), ratio(device, ls_backend)]

def layout_row(n):
    one, streams = load(f"engine-device-unified-{n}"), load(f"engine-device-{n}")
    one_mixed, streams_mixed = load(f"engine-device-unified-mixed-{n}"), load(f"engine-device-mixed-{n}")
    return [n, tps(one), tps(streams), ratio(one, streams), tps(one_mixed), tps(streams_mixed), ratio(one_mixed, streams_mixed)]

print(f"## GPU check: {gpu}, {max_tokens} tokens per task, tokens/s")
print()
table(["slots", "engine, host sampling", "engine, device sampling", "warren via RabbitMQ", "llama-server",
       "llama-server --backend-sampling", "llama-batched-bench (decode only)", "warren (RabbitMQ) / llama-server",
       "/ llama-server --backend-sampling"],
      [greedy_row(n) for n in slots])
steps = [row for row in (step_row(n) for n in slots) if row]
if steps:
    print()
    print("Where a step's time goes (engine alone, device sampling, greedy; ms per step) and how busy the GPU was:")
    print()
    table(["slots", "tokens per step", "step", "schedule", "decode", "sample", "emit", "warren's host work",
           "GPU busy: engine", "warren via RabbitMQ", "llama-server --backend-sampling"], steps)
sampled = [n for n in slots if load(f"engine-device-sampled-{n}") or load(f"engine-host-sampled-{n}")]
if sampled:
    print()
    print("Sampled (temperature 0.7, top-k 40, top-p 0.95):")
    print()
    table(["slots", "engine, host sampling", "engine, device sampling", "device: sampled / greedy", "llama-server",
           "llama-server --backend-sampling", "engine (device) / llama-server", "/ llama-server --backend-sampling"],
          [sampled_row(n) for n in sampled])
layouts = [n for n in slots if load(f"engine-device-unified-{n}")]
if layouts:
    print()
    print("KV cache layout (engine, device sampling, greedy; mixed: tasks of eight lengths, --mixed-lengths):")
    print()
    table(["slots", "one cache", "a stream per slot", "one cache / streams", "one cache, mixed", "streams, mixed",
           "one cache / streams, mixed"], [layout_row(n) for n in layouts])
fa_off = [n for n in slots if load(f"engine-device-fa-off-{n}")]
if fa_off:
    print()
    print("Flash attention (engine, device sampling, greedy; same build):")
    print()
    table(["slots", "on", "off", "on / off"],
          [[n, tps(load(f"engine-device-{n}")), tps(load(f"engine-device-fa-off-{n}")),
            ratio(load(f"engine-device-{n}"), load(f"engine-device-fa-off-{n}"))] for n in fa_off])
batch = [(f[:-5], load(f[:-5])) for f in sorted(os.listdir(results))
         if f.endswith(".json") and f.startswith(("batch128-", "prefix-batch"))]
if batch:
    print()
    print("engine.batch_size (device sampling): " + ", ".join(
        f"{name} {r['tokens_per_s']:.0f} tokens/s, {r.get('tasks_per_s', 0):.2f} tasks/s, ttft p50 {r['ttft_ms']['p50']:.0f} ms"
        for name, r in batch if r))
