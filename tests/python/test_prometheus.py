"""The alert rules against a real Prometheus scraping a live worker and gateway: after the
events the rules watch (a task, a dead letter, a failing webhook), every metric that
deploy/prometheus/alerts.yml names has series in Prometheus, and every rule evaluates."""

import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from conftest import Amqp, Names, free_port, metric, sdk, start_gateway, start_worker

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
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

    def start(targets):
        port = free_port()
        shutil.copy(RULES, folder / "alerts.yml")
        (folder / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "rule_files: [alerts.yml]\n"
            "scrape_configs:\n"
            "  - job_name: warren\n"
            f"    static_configs: [{{targets: [{', '.join(repr(t) for t in targets)}]}}]\n")
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
