#!/usr/bin/env python3
"""Load for `make bench-embeddings`: POST /v1/embeddings to BASE_URL with CONCURRENCY
requests in flight until REQUESTS are answered, each INPUTS texts (each text JOIN consecutive
lines of the corpus: 1 for sentences, more for paragraph-sized chunks), in turn,
and prints one JSON report: embeddings/s, requests/s, latency p50/p99 (ms), errors, and a
fingerprint of the vectors (the first request's first values, which the table puts side by side
with the other target's)."""

import json
import statistics
import sys
import threading
import time

import httpx


def main(base_url, corpus_path, requests, concurrency, inputs, join, label):
    lines = [line for line in open(corpus_path).read().splitlines() if line]
    texts = [" ".join(lines[(i + k) % len(lines)] for k in range(join)) for i in range(len(lines))]
    latencies, errors, first = [], [], []
    lock = threading.Lock()
    counter = iter(range(requests))

    def worker():
        with httpx.Client(timeout=300) as client:
            while True:
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                batch = [texts[(index * inputs + k) % len(texts)] for k in range(inputs)]
                started = time.monotonic()
                try:
                    response = client.post(f"{base_url}/embeddings", json={"model": "m", "input": batch, "encoding_format": "float"})
                except httpx.HTTPError as e:
                    # A request that fails in transport (one left unanswered past the
                    # timeout) is an error of the run, and this loop goes on.
                    with lock:
                        errors.append(f"{type(e).__name__}: {e}"[:200])
                    continue
                elapsed = time.monotonic() - started
                with lock:
                    if response.status_code != 200 or len(response.json().get("data", [])) != inputs:
                        errors.append(response.text[:200])
                    else:
                        latencies.append(elapsed)
                        if index == 0:
                            first.append(response.json()["data"][0]["embedding"][:3])

    # One request first, alone: loads caches on both sides the same way.
    httpx.post(f"{base_url}/embeddings", json={"model": "m", "input": texts[0]}, timeout=300)
    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - started
    done = len(latencies)
    ordered = sorted(latencies) or [0.0]
    report = {
        "label": label,
        "requests": requests,
        "concurrency": concurrency,
        "inputs_per_request": inputs,
        "lines_per_input": join,
        "embeddings_per_s": done * inputs / wall,
        "requests_per_s": done / wall,
        "latency_ms": {
            "p50": statistics.median(ordered) * 1000,
            "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        },
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "fingerprint": first[0] if first else None,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    base_url, corpus, requests, concurrency, inputs, join, label = sys.argv[1:8]
    main(base_url, corpus, int(requests), int(concurrency), int(inputs), int(join), label)
