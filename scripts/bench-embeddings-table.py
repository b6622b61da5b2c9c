#!/usr/bin/env python3
"""The table of `make bench-embeddings` (scripts/bench-embeddings.sh): for each text shape,
each side's median embeddings/s [range] over the rounds, latency p50 and p99, errors, and
warren / llama-server. Usage: bench-embeddings-table.py OUT ROUNDS SHAPES HEADER SETUP"""

import json
import statistics
import sys

out, rounds, shapes, header, setup = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4], sys.argv[5]
print(f"## {header}")
print()
print(f"{setup} Median of {rounds} interleaved rounds [range].")
print()
print("| text | target | embeddings/s | latency p50 ms | latency p99 ms | errors | warren / llama-server |")
print("|---|---|---|---|---|---|---|")
fingerprints = []
for shape in shapes:
    medians, rows = {}, []
    for kind, name in (("warren", "warren"), ("llama", "llama-server --embeddings")):
        runs = [json.load(open(f"{out}/{kind}-{shape}-{r}.json")) for r in range(1, rounds + 1)]
        rates = [run["embeddings_per_s"] for run in runs]
        medians[kind] = statistics.median(rates)
        p50 = statistics.median(run["latency_ms"]["p50"] for run in runs)
        p99 = statistics.median(run["latency_ms"]["p99"] for run in runs)
        errors = sum(run["errors"] for run in runs)
        first = next((run["first_error"] for run in runs if run["first_error"]), None)
        rows.append((name, medians[kind], rates, p50, p99, errors, first))
    text = "1 sentence" if shape == "1" else f"{shape} sentences"
    ratio = f"{medians['warren'] / max(medians['llama'], 1e-9):.2f}x"
    for i, (name, median, rates, p50, p99, errors, first) in enumerate(rows):
        print(f"| {text} | {name} | {median:.1f} [{min(rates):.1f}–{max(rates):.1f}] | {p50:.0f} | {p99:.0f} | {errors} | {ratio if i == 0 else ''} |")
        if first:
            print(f"<!-- {name} error: {first} -->")
    # The same first text on both sides: its vector's first values should agree.
    prints = [json.load(open(f"{out}/{kind}-{shape}-1.json"))["fingerprint"] for kind in ("warren", "llama")]
    if all(prints):
        gap = max(abs(a - b) for a, b in zip(*prints))
        fingerprints.append(f"{text}: warren {prints[0]}, llama-server {prints[1]} (largest difference {gap:.2g})")
if fingerprints:
    print()
    print("First values of the first vector, round 1: " + "; ".join(fingerprints) + ".")
