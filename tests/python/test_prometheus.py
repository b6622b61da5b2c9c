"""The alert rules and the Grafana dashboard against a real Prometheus scraping a live worker
and gateway: after the events the rules watch (a task, a dead letter, a failing webhook),
every metric that deploy/prometheus/alerts.yml names has series in Prometheus and every rule
evaluates; after the events the dashboard shows (load, a dead letter, a kept reply, a 429, a
failing webhook, a backlog), every query of deploy/grafana/warren.json returns non-zero data."""

import json

import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pika
import pytest

from conftest import Amqp, Names, free_port, metric, sdk, start_gateway, start_worker

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "warren.json"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def rule_metrics():
    """The metric names the alert rules read (histograms by their series' names)."""
    return sorted(set(re.findall(r"\b(warren_[a-z_]+)", RULES.read_text())))


@pytest.fixture
def prometheus():
    """Starts Prometheus with the rules, scraping the targets given to `start` every second."""
    if not shutil.which("prometheus"):
        pytest.fail("prometheus is not installed: run `make setup`")
    folder = Path(tempfile.mkdtemp(prefix="warren-prometheus-"))
    state = {}

    def start(targets, labels=None):
        """Scrapes `targets` (host:port); `labels` maps a target to its target labels."""
        port = free_port()
        shutil.copy(RULES, folder / "alerts.yml")
        configs = [{"targets": [t], "labels": (labels or {}).get(t, {})} for t in targets]
        (folder / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "rule_files: [alerts.yml]\n"
            "scrape_configs:\n"
            "  - job_name: warren\n"
            f"    static_configs: {json.dumps(configs)}\n")
        state["process"] = subprocess.Popen(
            ["prometheus", f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=open(folder / "log", "wb"))
        state["url"] = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{state['url']}/-/ready", timeout=2).status_code == 200:
                    return state["url"]
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError((folder / "log").read_text())

    yield start
    if "process" in state:
        state["process"].terminate()
        state["process"].wait(timeout=30)
    shutil.rmtree(folder, ignore_errors=True)


def test_every_metric_the_alert_rules_read_is_scraped_and_every_rule_evaluates(prometheus):
    names = Names("prometheus")
    worker = start_worker(names)
    gateway = start_gateway(names, gateway__webhook_secret=SECRET, gateway__webhook_max_attempts=1)
    gateway_up = time.monotonic()
    amqp = Amqp(names)
    try:
        url = prometheus([worker.metrics_url.split("/")[2], gateway.metrics_url.split("/")[2]])
        # The events the rules watch: a task, a dead letter, a webhook that fails.
        assert amqp.reply(amqp.send({"prompt": "Hello", "max_tokens": 2}))["status"] == "ok"
        bad = amqp.send({"prompt": 42})
        assert amqp.reply(bad)["status"] == "error"
        amqp.dead_letter(bad)
        closed = f"http://127.0.0.1:{free_port()}/hook"
        client = sdk(gateway.base_url)
        created = client.responses.create(model="m", input="Hi", max_output_tokens=2, background=True,
                                          metadata={"callback_url": closed})
        missing = rule_metrics()
        assert "warren_dead_letters_total" in missing and len(missing) >= 6, missing
        deadline = time.monotonic() + 90
        while missing and time.monotonic() < deadline:
            missing = [name for name in missing
                       if not httpx.get(f"{url}/api/v1/series", params={"match[]": name}, timeout=5).json()["data"]]
            time.sleep(1)
        assert not missing, f"no series in Prometheus for {missing} (response {created.id})"
        # The gateway sees the worker consuming its queue, and nobody consuming the
        # embeddings queue (no embed worker runs here: it does not exist, 0 and 0).
        deadline = time.monotonic() + 30
        while metric(gateway.metrics_url, "warren_queue_consumers", queue=names.requests) != 1:
            assert time.monotonic() < deadline, "the gateway never saw the worker consuming"
            time.sleep(0.5)
        assert metric(gateway.metrics_url, "warren_queue_messages", queue=names.requests) == 0
        assert metric(gateway.metrics_url, "warren_queue_consumers", queue=names.embeddings) == 0
        # A missing queue is declared once, then not while the management API answers 404 for
        # it: each passive declare that misses is an ERROR line in the gateway's log. After
        # 11 s, a gateway that declared it every 5 s would have logged two or three.
        time.sleep(max(0.0, gateway_up + 11 - time.monotonic()))
        misses = [line for line in gateway.log().splitlines()
                  if f"NOT_FOUND - no queue '{names.embeddings}'" in line]
        assert len(misses) <= 1, misses
        # Requests are counted by API key name: no keys configured, so all are anonymous.
        assert metric(gateway.metrics_url, "warren_gateway_key_requests_total", key="anonymous", status="200") >= 1
        # Prometheus loaded the rules and evaluates every one of them without error.
        groups = httpx.get(f"{url}/api/v1/rules", timeout=5).json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        assert len(rules) == len(re.findall(r"- alert:", RULES.read_text()))
        deadline = time.monotonic() + 30
        while any(rule.get("health") != "ok" for rule in rules) and time.monotonic() < deadline:
            time.sleep(1)
            groups = httpx.get(f"{url}/api/v1/rules", timeout=5).json()["data"]["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
        assert all(rule.get("health") == "ok" for rule in rules), rules
    finally:
        amqp.connection.close()
        gateway.stop()
        worker.stop()
        names.delete()


def dashboard_queries():
    """Every query of the dashboard, with Grafana's variables as a live Grafana fills them."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    # $__rate_interval: a window that still holds the events while the test waits for them.
    return [(panel["title"], target["expr"].replace("$__rate_interval", "3m").replace("$model", ".*"))
            for panel in panels for target in panel["targets"]]


def test_every_dashboard_query_returns_data_after_the_events_it_shows(prometheus):
    names = Names("dashboard")
    # Four deliveries for one slot: a burst leaves tasks waiting in the engine.
    worker = start_worker(names, broker__prefetch=4)
    key = f"sk-{names.base}"  # its own rate-limit bucket in the shared Redis
    gateway = start_gateway(names, gateway__webhook_secret=SECRET, gateway__webhook_max_attempts=1,
                            gateway__requests_per_minute=4, gateway__api_keys=key)
    amqp = Amqp(names)
    try:
        worker_target, gateway_target = worker.metrics_url.split("/")[2], gateway.metrics_url.split("/")[2]
        # The model label is a target label, as the Helm chart's pods carry it.
        url = prometheus([worker_target, gateway_target], labels={worker_target: {"model": "gemma3-270m"}})
        # Rates need a sample from before the events: wait for both targets' first scrapes.
        deadline = time.monotonic() + 30
        while sum(float(r["value"][1]) for r in httpx.get(f"{url}/api/v1/query", params={"query": "up"},
                                                           timeout=5).json()["data"]["result"]) < 2:
            assert time.monotonic() < deadline, "Prometheus never scraped both targets"
            time.sleep(0.5)
        # Load: a burst of tasks; dead letters; kept replies; failing webhooks; 429s. A labelled counter's
        # series appears at its first increment, and a rate needs two samples of it: each
        # event happens twice, more than a scrape apart.
        burst = [amqp.send({"prompt": f"Count to {n}:", "max_tokens": 24}) for n in range(6)]
        for task in burst:
            assert amqp.reply(task)["status"] == "ok"
        client = sdk(gateway.base_url, api_key=key)
        for repeat in range(2):
            bad = amqp.send({"prompt": 42})
            assert amqp.reply(bad)["status"] == "error"
            # A reply to a queue that does not exist: the worker keeps it in the results queue.
            amqp.channel.basic_publish("", names.requests, json.dumps({"prompt": "Hi", "max_tokens": 2}),
                                       pika.BasicProperties(reply_to=f"{names.base}.nobody-listens",
                                                            content_type="application/json"))
            closed = f"http://127.0.0.1:{free_port()}/hook"
            client.responses.create(model="m", input="Hi", max_output_tokens=2, background=True,
                                    metadata={"callback_url": closed})
            if repeat == 0:
                time.sleep(2.5)

        def chat():
            return httpx.post(f"{gateway.base_url}/chat/completions", timeout=60, headers={
                "Authorization": f"Bearer {key}"}, json={
                "model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "Hi"}]}).status_code

        # 429s, twice more than a scrape apart: requests until the key's bucket (4 a minute)
        # refuses one, then, a scrape later each time, until it refuses another (a refill of
        # the bucket in between may let one through).
        statuses = [chat()]
        while statuses[-1] != 429 and len(statuses) < 6:
            statuses.append(chat())
        for _ in range(4):
            time.sleep(1.5)
            statuses.append(chat())
            if statuses[-1] == 429:
                break
        assert statuses.count(429) >= 2, statuses
        amqp.channel.queue_declare(names.embeddings, durable=True)
        amqp.send({"input": "a backlog nobody consumes"}, queue=names.embeddings)

        queries = dashboard_queries()
        assert len(queries) >= 14, queries
        used = sorted(set(re.findall(r"\b(warren_[a-z_]+?)(?:_bucket)?\b", DASHBOARD.read_text())))

        def missing():
            """Metric names absent from a live scrape, and queries without a non-zero value."""
            scraped = httpx.get(worker.metrics_url, timeout=5).text + httpx.get(gateway.metrics_url, timeout=5).text
            absent = [name for name in used if name not in scraped]
            empty = []
            for title, expr in queries:
                result = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=5).json()
                assert result["status"] == "success", (title, expr, result)
                values = [float(sample["value"][1]) for sample in result["data"]["result"]]
                if not any(v > 0 for v in values):
                    empty.append((title, expr, values))
            return absent + empty

        deadline = time.monotonic() + 60
        problems = missing()
        while problems and time.monotonic() < deadline:
            time.sleep(1)
            problems = missing()
        assert not problems, problems
    finally:
        amqp.connection.close()
        gateway.stop()
        worker.stop()
        names.delete()
