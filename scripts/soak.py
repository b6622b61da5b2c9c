#!/usr/bin/env python3
"""`make soak`: a long run that would show leaks, slow drift and lost or doubled work.

TASKS tasks (10,000 by default, short ones) go through two `warren worker` processes on the
local RabbitMQ and the default model, with finished-task marks in Redis: 10% hostile (bad JSON,
wrong types, impossible values), some streamed, some cancelled after publishing, some with a
timeout too short to finish (retried, then dead-lettered). Worker B is killed (SIGKILL, at a
random moment within a second) and restarted every KILL_EVERY replies; worker A runs throughout, so its resident memory shows a
leak if there is one. Every SAMPLE_S seconds it prints A's RSS, the broker's connection and
channel counts and the queue depths. At the end every task must be accounted for (its final
reply, and a dead letter where one is due), duplicated replies are counted, and the figures go
to bench/soak-latest.md. Exits non-zero when a task is missing or answered twice, a failed
task was not dead-lettered, the requests queue is not shown empty at the end, or A's memory
grew by more than RSS_GROWTH_MIB after the first minute.

Uses pika (the test virtualenv) and the management API. Tunables: TASKS, KILL_EVERY, WINDOW
(tasks in flight), SAMPLE_S, PREFIX_CACHE (the workers' engine.prefix_cache, "true"), and
WARREN_BIN (another warren binary, to compare builds).
"""

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pika

REPO = Path(__file__).resolve().parents[1]
WARREN = Path(os.environ.get("WARREN_BIN", REPO / "target/release/warren"))
MODEL = REPO / "models/gemma3-270m-q4_k_m.gguf"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2f"
MANAGEMENT = "http://127.0.0.1:15672/api"
TASKS = int(os.environ.get("TASKS", "10000"))
KILL_EVERY = int(os.environ.get("KILL_EVERY", "300"))
WINDOW = int(os.environ.get("WINDOW", "24"))
SAMPLE_S = float(os.environ.get("SAMPLE_S", "30"))
PREFIX_CACHE = os.environ.get("PREFIX_CACHE", "true")

RUN = f"soak.{uuid.uuid4().hex[:6]}"
NAMES = {
    "WARREN__TOPOLOGY__REQUESTS_QUEUE": f"{RUN}.requests",
    "WARREN__TOPOLOGY__DEAD_LETTER_EXCHANGE": f"{RUN}.dlx",
    "WARREN__TOPOLOGY__DEAD_LETTER_QUEUE": f"{RUN}.dead",
    "WARREN__TOPOLOGY__RESULTS_QUEUE": f"{RUN}.results",
    "WARREN__TOPOLOGY__CONTROL_EXCHANGE": f"{RUN}.control",
    "WARREN__RETRY__QUEUE_PREFIX": f"{RUN}.retry",
}
REQUESTS, DEAD, CONTROL, REPLIES = NAMES["WARREN__TOPOLOGY__REQUESTS_QUEUE"], f"{RUN}.dead", f"{RUN}.control", f"{RUN}.replies"

HOSTILE = [
    b"{not json",
    b'{"prompt": 42}',
    b'{"prompt": "x", "max_tokens": -1}',
    b'{"prompt": "x", "max_tokens": 1000000}',
    b'{"messages": [{"role": "wizard", "content": "hi"}]}',
    b'{"prompt": "x", "temperature": "hot"}',
    b"\xff\xfe\x00garbage",
    b"[]",
    b'{"prompt": "x", "stop": [' + b'"s",' * 100 + b'"s"]}',
    b'{"prompt": "x", "top_p": 7}',
]


def kind_of(n):
    """The task mix: 10% hostile, 5% streamed, 2% cancelled, 2% timing out, the rest plain."""
    r = n % 100
    if r < 10:
        return "hostile"
    if r < 15:
        return "stream"
    if r < 17:
        return "cancel"
    if r < 19:
        return "timeout"
    return "plain"


def body_of(n, kind):
    if kind == "hostile":
        return HOSTILE[(n // 100) % len(HOSTILE)]
    task = {"prompt": f"Item {n}: the next word is", "max_tokens": 2}
    if kind == "stream":
        task.update(stream=True, max_tokens=6)
    if kind == "cancel":
        task.update(max_tokens=200)
    if kind == "timeout":
        task.update(max_tokens=200, timeout_ms=50)
    return json.dumps(task).encode()


class Worker:
    def __init__(self, label, port):
        self.label, self.port, self.process, self.restarts = label, port, None, 0
        self.log = Path(tempfile.mkstemp(prefix=f"warren-soak-{label}-", suffix=".log")[1])

    def start(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("WARREN")}
        env.update(NAMES)
        env.update({
            "WARREN__BROKER__URL": AMQP_URL,
            "WARREN__ENGINE__MODEL_PATH": str(MODEL),
            "WARREN__ENGINE__THREADS": "1",
            "WARREN__ENGINE__SLOTS": "2",
            "WARREN__ENGINE__CONTEXT_SIZE": "512",
            "WARREN__ENGINE__BATCH_SIZE": "64",
            "WARREN__METRICS__LISTEN": f"127.0.0.1:{self.port}",
            "WARREN__WORKER__REDIS_URL": "redis://127.0.0.1:6379/0",
            "WARREN__RETRY__INITIAL_DELAY_MS": "200",
            "WARREN__LOG__LEVEL": "warn",
            "WARREN__ENGINE__PREFIX_CACHE": PREFIX_CACHE,
        })
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([str(WARREN), "worker"], env=env, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                sys.exit(f"worker {self.label} exited: {self.log.read_text()[-2000:]}")
            time.sleep(0.2)
        sys.exit(f"worker {self.label} never became ready")

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.restarts += 1

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def rss_mib(self):
        """Resident anonymous memory (the heap: the model's file pages can be evicted and would
        hide growth); NaN when the process cannot be read, which fails the run's check."""
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return float("nan")


# Worker A's resident memory may grow by this much after its first minute: llama.cpp's and
# the allocator's working sets settle by then, so steady growth beyond it is a leak.
RSS_GROWTH_MIB = 32


def management(path):
    return httpx.get(f"{MANAGEMENT}/{path}", auth=("guest", "guest"), timeout=10).json()


def depth(queue):
    try:
        return management(f"queues/%2F/{queue}").get("messages", 0)
    except (httpx.HTTPError, ValueError):
        return -1


def delete_run_queues():
    """Only this run's queues, exchanges and the queue bound policy its workers set, named
    after RUN."""
    auth = ("guest", "guest")
    for queue in management("queues/%2F?columns=name"):
        if queue["name"].startswith(RUN + "."):
            httpx.delete(f"{MANAGEMENT}/queues/%2F/{queue['name']}", auth=auth, timeout=10)
    for exchange in (f"{RUN}.dlx", CONTROL):
        httpx.delete(f"{MANAGEMENT}/exchanges/%2F/{exchange}", auth=auth, timeout=10)
    for policy in management("policies/%2F"):
        if policy["name"].startswith(f"warren-bound-{RUN}."):
            httpx.delete(f"{MANAGEMENT}/policies/%2F/{policy['name']}", auth=auth, timeout=10)


def sample(started, done, worker):
    return {
        "t_s": round(time.monotonic() - started),
        "done": done,
        "rss_a_mib": round(worker.rss_mib(), 1),
        "connections": len(management("connections")),
        "channels": len(management("channels")),
        "requests": depth(REQUESTS),
        "dead": depth(DEAD),
    }


def main():
    workers = [Worker("a", 19431), Worker("b", 19432)]
    for worker in workers:
        worker.start()
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    channel.queue_declare(REPLIES, durable=True, arguments={"x-queue-type": "classic"})
    channel.confirm_delivery()
    kinds, finals, chunks = {}, Counter(), Counter()
    statuses, every_reply = {}, {}
    in_flight, sent, done, since_kill, kill_at = set(), 0, 0, 0, None
    samples, started, next_sample = [], time.monotonic(), 0.0
    published = {}

    def count(task_id, message):
        nonlocal done, since_kill
        if message.get("status") == "chunk":
            chunks[task_id] += 1
            return
        finals[task_id] += 1
        outcome = (message.get("status"), (message.get("error") or {}).get("code"))
        statuses.setdefault(task_id, outcome)
        every_reply.setdefault(task_id, []).append(outcome)
        if task_id in in_flight:
            in_flight.discard(task_id)
            done += 1
            since_kill += 1

    def on_reply(ch, method, properties, body):
        # Acked once counted: a reply delivered to a connection that then dropped comes back
        # instead of being lost to the count.
        count(properties.correlation_id, json.loads(body))
        ch.basic_ack(method.delivery_tag)

    channel.basic_consume(REPLIES, on_reply)
    try:
        while done < TASKS:
            while sent < TASKS and len(in_flight) < WINDOW:
                task_id = f"{RUN}-{sent}"
                kind = kind_of(sent)
                kinds[task_id] = kind
                channel.basic_publish("", REQUESTS, body_of(sent, kind), pika.BasicProperties(
                    message_id=task_id, correlation_id=task_id, reply_to=REPLIES, delivery_mode=2,
                    content_type="application/json"))
                published[task_id] = time.monotonic()
                if kind == "cancel":
                    channel.basic_publish(CONTROL, "", json.dumps({"type": "cancel", "id": task_id}),
                                          pika.BasicProperties(type="warren.cancel", content_type="application/json"))
                in_flight.add(task_id)
                sent += 1
            connection.process_data_events(time_limit=0.2)
            if since_kill >= KILL_EVERY and kill_at is None:
                # At a random moment, as a real crash comes, not right on a reply's heels.
                kill_at = time.monotonic() + random.uniform(0.0, 1.0)
            if kill_at is not None and time.monotonic() >= kill_at:
                since_kill, kill_at = 0, None
                workers[1].kill()
                workers[1].start()
            stuck = [t for t in in_flight if time.monotonic() - published[t] > 300]
            if stuck:
                sys.exit(f"no final reply in 5 minutes for {len(stuck)} tasks, e.g. {stuck[:3]}")
            if time.monotonic() >= next_sample:
                samples.append(sample(started, done, workers[0]))
                print(json.dumps(samples[-1]), flush=True)
                next_sample = time.monotonic() + SAMPLE_S
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            connection.process_data_events(time_limit=0.5)
        samples.append(sample(started, done, workers[0]))
        print(json.dumps(samples[-1]), flush=True)
        dead_ids = Counter()
        while True:
            method, properties, _ = channel.basic_get(DEAD, auto_ack=True)
            if method is None:
                break
            dead_ids[properties.message_id or properties.correlation_id] += 1
    finally:
        for worker in workers:
            worker.stop()
        delete_run_queues()
    return report(kinds, finals, statuses, every_reply, dead_ids, chunks, samples, workers, time.monotonic() - started)


def report(kinds, finals, statuses, every_reply, dead_ids, chunks, samples, workers, wall):
    missing = [t for t in kinds if finals[t] == 0 and dead_ids[t] == 0]
    duplicates = sum(1 for t in kinds if finals[t] > 1)
    by_kind = Counter(kinds.values())
    outcome = Counter((kinds[t], statuses.get(t, ("none", None))[0], statuses.get(t, (None, None))[1] or "") for t in kinds)
    hostile_not_parked = [t for t, k in kinds.items() if k == "hostile" and dead_ids[t] == 0]
    # Every failure but a cancel is dead-lettered with its error reply (timeouts once their
    # retries are spent, poison tasks too).
    failed_not_parked = [t for t in kinds if statuses.get(t, (None, None))[0] == "error"
                         and statuses[t][1] != "cancelled" and dead_ids[t] == 0]
    warm = [s for s in samples if s["t_s"] >= 60] or samples
    rss = [s["rss_a_mib"] for s in warm]
    lines = [
        f"## Soak: {time.strftime('%Y-%m-%d', time.gmtime())}, {os.cpu_count()} CPU cores, no GPU",
        "",
        f"{len(kinds)} tasks in {wall / 60:.1f} min ({len(kinds) / wall:.1f} tasks/s) through two workers (2 slots, 1 thread "
        f"each, Redis marks on); worker B killed and restarted {workers[1].restarts} times (every {KILL_EVERY} replies).",
        "",
        "| kind | tasks | outcomes (status/code: count) |",
        "|---|---|---|",
    ]
    for kind in ("plain", "stream", "hostile", "cancel", "timeout"):
        counts = ", ".join(f"{s}/{c or '-'}: {n}" for (k, s, c), n in sorted(outcome.items()) if k == kind)
        lines.append(f"| {kind} | {by_kind[kind]} | {counts} |")
    lines += [
        "",
        f"- tasks with neither a final reply nor a dead letter: **{len(missing)}**",
        f"- tasks answered more than once: **{duplicates}**"
        + "".join(f"; {kinds[t]} {t}: {every_reply[t]}, {dead_ids[t]} dead letter(s)" for t in kinds if finals[t] > 1),
        f"- hostile tasks without their dead-letter copy: **{len(hostile_not_parked)}**; "
        f"failed tasks (all kinds, cancels aside) without it: **{len(failed_not_parked)}**",
        f"- dead letters in all: {sum(dead_ids.values())}; streamed chunks: {sum(chunks.values())}",
        f"- worker A resident anonymous memory after the first minute: {min(rss):.1f}–{max(rss):.1f} MiB "
        f"(first {rss[0]:.1f}, last {rss[-1]:.1f}; more than {RSS_GROWTH_MIB} MiB of growth fails the run)",
        f"- broker connections {min(s['connections'] for s in warm)}–{max(s['connections'] for s in warm)}, "
        f"channels {min(s['channels'] for s in warm)}–{max(s['channels'] for s in warm)} after the first minute",
        f"- requests queue depth at the end: {samples[-1]['requests']}",
        "",
        "| t (s) | replies | worker A RSS MiB | connections | channels | requests queue | dead letters |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {s['t_s']} | {s['done']} | {s['rss_a_mib']} | {s['connections']} | {s['channels']} | {s['requests']} | {s['dead']} |" for s in samples]
    text = "\n".join(lines) + "\n"
    print(text)
    (REPO / "bench").mkdir(exist_ok=True)
    (REPO / "bench/soak-latest.md").write_text(text)
    # An unreadable depth (-1) fails too: the queue's emptiness was not shown.
    # NaN (worker A gone or unreadable) fails the memory check.
    memory_held = all(r == r for r in rss) and rss[-1] - rss[0] <= RSS_GROWTH_MIB
    failed = (missing or duplicates or hostile_not_parked or failed_not_parked
              or samples[-1]["requests"] != 0 or not memory_held)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
