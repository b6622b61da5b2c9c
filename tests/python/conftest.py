"""Harness for the gateway's end-to-end tests: real `warren worker` and `warren gateway`
processes on the real model and the local RabbitMQ, on queue names that belong to one test
module and are deleted afterwards. Clients are the official `openai` SDK and httpx (its own
HTTP client), as any caller of the gateway would use."""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

REPO = Path(__file__).resolve().parents[2]
WARREN = Path(os.environ.get("WARREN_BIN", REPO / "target/release/warren"))
MODEL = Path(os.environ.get("WARREN_TEST_MODEL", REPO / "models/gemma3-270m-q4_k_m.gguf"))
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2f"
MANAGEMENT = "http://127.0.0.1:15672/api"
PATIENCE = 90.0

# RabbitMQ nodes of the tests' own, from the machine's installation (stdlib only, so the
# agents' virtualenv can load this file too).
sys.path.insert(0, str(REPO / "scripts"))
from local_cluster import Cluster  # noqa: E402


def management(method, path, **kwargs):
    return httpx.request(method, f"{MANAGEMENT}/{path}", auth=("guest", "guest"), timeout=10, **kwargs)


def queue_depth(queue):
    """The messages ready in `queue` as the broker counts them now (a passive declare): the
    management API's counts lag by its statistics interval (5 s by default). With no consumer
    on the queue, or none holding a message, that is every message in it."""
    import pika  # the agents' virtualenv has no pika and uses no AMQP

    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        return connection.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        connection.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Names:
    """Queue and exchange names of one test module, on the shared broker or on `broker` (a
    test's own node, see `private_broker`)."""

    def __init__(self, tag, broker=None):
        base = f"test.py.{tag}.{uuid.uuid4().hex[:8]}"
        self.base = base
        self.broker = broker
        self.amqp_url = broker.urls[0] if broker else AMQP_URL
        self.requests = f"{base}.requests"
        self.dlx = f"{base}.dlx"
        self.dead = f"{base}.dead"
        self.results = f"{base}.results"
        self.control = f"{base}.control"
        self.retry_prefix = f"{base}.retry"
        self.gateway_results = f"{base}.gateway-results"
        self.embeddings = f"{base}.embeddings"

    def env(self):
        own_broker = {
            # Its node runs no management plugin; "auto" would find the shared broker's API
            # and put the queue bound policy there, on a broker without this queue.
            "WARREN__BROKER__MANAGEMENT_URL": "",
        } if self.broker else {}
        return {
            **own_broker,
            "WARREN__BROKER__URL": self.amqp_url,
            "WARREN__TOPOLOGY__REQUESTS_QUEUE": self.requests,
            "WARREN__TOPOLOGY__DEAD_LETTER_EXCHANGE": self.dlx,
            "WARREN__TOPOLOGY__DEAD_LETTER_QUEUE": self.dead,
            "WARREN__TOPOLOGY__RESULTS_QUEUE": self.results,
            "WARREN__TOPOLOGY__CONTROL_EXCHANGE": self.control,
            "WARREN__RETRY__QUEUE_PREFIX": self.retry_prefix,
            "WARREN__GATEWAY__RESULTS_QUEUE": self.gateway_results,
            "WARREN__TOPOLOGY__EMBEDDINGS_QUEUE": self.embeddings,
        }

    def delete(self):
        if self.broker:
            return  # the node goes with its test
        queues = management("GET", "queues/%2F?columns=name").json()
        for queue in queues:
            name = queue["name"]
            if name.startswith(self.base + "."):
                management("DELETE", f"queues/%2F/{name}")
        for exchange in (self.dlx, self.control):
            management("DELETE", f"exchanges/%2F/{exchange}")
        # The queue bound policies workers put for this test's queues.
        for policy in management("GET", "policies/%2F").json():
            if policy["name"].startswith(f"warren-bound-{self.base}."):
                management("DELETE", f"policies/%2F/{policy['name']}")


class Process:
    """A `warren` subcommand running as its own process, its log in a temp file."""

    def __init__(self, args, env, ready_url):
        self.args, self.env, self.ready_url = args, env, ready_url
        self.log_path = Path(tempfile.mkstemp(prefix="warren-py-", suffix=".log")[1])
        self.start()

    def start(self):
        environment = {k: v for k, v in os.environ.items() if not k.startswith("WARREN") and k != "RUST_LOG"}
        environment.update(self.env)
        environment["RUST_LOG"] = "info,warren=debug"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([str(WARREN), *self.args], env=environment, stdout=subprocess.DEVNULL, stderr=log)
        self.wait_ready()

    def wait_ready(self):
        deadline = time.monotonic() + PATIENCE
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.args[0]} exited early ({self.process.returncode}):\n{self.log()}")
            try:
                if httpx.get(self.ready_url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.args[0]} never became ready:\n{self.log()}")

    def log(self):
        return self.log_path.read_text(errors="replace")

    def kill(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=45)
            except subprocess.TimeoutExpired:
                self.kill()


def start_redis(directory, port, *options):
    """A Redis of our own that keeps its data (append-only file), as production would."""
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--appendonly", "yes",
         "--appendfsync", "always", "--save", "", "--dir", str(directory), *options],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip() != b"PONG":
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.1)
    return process


def start_worker(names, **settings):
    assert MODEL.is_file(), f"model {MODEL} is missing: run `make model`"
    port = free_port()
    env = {
        **names.env(),
        "WARREN__ENGINE__MODEL_PATH": str(MODEL),
        "WARREN__ENGINE__THREADS": "1",
        "WARREN__ENGINE__CONTEXT_SIZE": "1024",
        "WARREN__ENGINE__BATCH_SIZE": "64",
        "WARREN__METRICS__LISTEN": f"127.0.0.1:{port}",
        **{f"WARREN__{k.upper()}": str(v) for k, v in settings.items()},
    }
    worker = Process(["worker"], env, f"http://127.0.0.1:{port}/readyz")
    worker.metrics_url = f"http://127.0.0.1:{port}/metrics"
    return worker


def start_gateway(names, port=None, **settings):
    port = port or free_port()
    env = {
        **names.env(),
        "WARREN__GATEWAY__LISTEN": f"127.0.0.1:{port}",
        **{f"WARREN__{k.upper()}": str(v) for k, v in settings.items()},
    }
    gateway = Process(["gateway"], env, f"http://127.0.0.1:{port}/readyz")
    gateway.port = port
    gateway.base_url = f"http://127.0.0.1:{port}/v1"
    gateway.metrics_url = f"http://127.0.0.1:{port}/metrics"
    return gateway


def metric(url, name, **labels):
    """The value of one sample of a Prometheus text page, 0 when absent."""
    text = httpx.get(url, timeout=5).text
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        series, _, label_text = head.partition("{")
        if series != name:
            continue
        if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            return float(value)
    return 0.0


def wait_for(check, what, seconds=60, every=0.2):
    """Polls `check` until it holds and returns when it did (`time.monotonic()`); fails the
    test after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        time.sleep(every)
    pytest.fail(f"{what} did not happen within {seconds} s")


def sdk(base_url, api_key="unused", **options):
    # No SDK retries unless a test asks for them: the tests count requests.
    options.setdefault("max_retries", 0)
    return OpenAI(base_url=base_url, api_key=api_key, **options)


@pytest.fixture(scope="module")
def stack(request):
    """A worker with two slots and a gateway in front of it, for one test module."""
    names = Names(request.module.__name__.removeprefix("test_"))
    worker = start_worker(names, engine__slots=2)
    gateway = start_gateway(names)
    yield type("Stack", (), {"names": names, "worker": worker, "gateway": gateway})
    gateway.stop()
    worker.stop()
    names.delete()


@pytest.fixture(scope="module")
def embed_stack(request):
    """A worker that embeds (engine.role = "embed", four inputs per decode) and a gateway in
    front of it, for one test module."""
    names = Names(request.module.__name__.removeprefix("test_") + "-embed")
    worker = start_worker(names, engine__role="embed", engine__slots=4)
    gateway = start_gateway(names)
    yield type("Stack", (), {"names": names, "worker": worker, "gateway": gateway})
    gateway.stop()
    worker.stop()
    names.delete()


@pytest.fixture(scope="module")
def cluster_nodes(tmp_path_factory):
    """A three-node RabbitMQ cluster of the local installation (scripts/local_cluster.py), one
    per test module, torn down after the module's tests."""
    cluster = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start_all()
        yield cluster
    finally:
        cluster.stop_all()


@pytest.fixture(scope="module")
def private_broker(tmp_path_factory):
    """A RabbitMQ node of the test module's own (the local installation's, its own ports and
    data, scripts/local_cluster.py), for tests that stop the broker or raise its alarms: they
    run beside the other modules without touching the shared broker. `ctl(0, ...)` runs
    rabbitmqctl against it."""
    node = Cluster(tmp_path_factory.mktemp("node"))
    try:
        node.start(0)
        yield node
    finally:
        node.stop(0)


@pytest.fixture
def cluster(cluster_nodes):
    """The module's cluster with its three nodes running: a node an earlier test stopped is
    started again (it rejoins; booting one node is a fraction of building the cluster)."""
    cluster_nodes.start_stopped()
    return cluster_nodes


@pytest.fixture
def client(stack):
    return sdk(stack.gateway.base_url)


class Amqp:
    """A pika connection that sends tasks to a module's queue and reads their replies and
    dead letters."""

    def __init__(self, names):
        self.names = names
        import pika  # the agents' virtualenv has no pika and uses no AMQP

        self._pika = pika
        self.connection = pika.BlockingConnection(pika.URLParameters(names.amqp_url))
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()
        self.replies = self.channel.queue_declare("", exclusive=True).method.queue
        self.arrived = {}
        self.reply_properties = {}
        self.chunks = {}

    def send(self, task, queue=None, headers=None):
        task_id = str(uuid.uuid4())
        self.channel.basic_publish("", queue or self.names.requests, json.dumps(task), self._pika.BasicProperties(
            message_id=task_id, correlation_id=task_id, reply_to=self.replies, delivery_mode=2,
            content_type="application/json", headers=headers))
        return task_id

    def reply(self, task_id, seconds=120):
        """The final reply to `task_id`; replies to other tasks are kept for their turn, and
        every task's chunks in `self.chunks` (by task id, in arrival order), every final
        reply's AMQP properties in `self.reply_properties`."""
        deadline = time.monotonic() + seconds
        while task_id not in self.arrived and time.monotonic() < deadline:
            if not self._take_one():
                time.sleep(0.1)
        if task_id not in self.arrived:
            raise AssertionError(f"no reply to {task_id}")
        return self.arrived.pop(task_id)

    def take_waiting(self):
        """Takes every reply already in the reply queue (kept as `reply` keeps them)."""
        while self._take_one():
            pass

    def _take_one(self):
        method, properties, body = self.channel.basic_get(self.replies, auto_ack=True)
        if method is None:
            return False
        reply = json.loads(body)
        if reply["status"] == "chunk":
            self.chunks.setdefault(reply["id"], []).append(reply)
        elif reply["status"] != "started":
            self.arrived[reply["id"]] = reply
            self.reply_properties[reply["id"]] = properties
        return True

    def dead_letter(self, task_id, seconds=30):
        """The dead letter of `task_id` (taken); the others are put back when it is found."""
        deadline = time.monotonic() + seconds
        passed_over = []
        try:
            while time.monotonic() < deadline:
                method, properties, body = self.channel.basic_get(self.names.dead, auto_ack=False)
                if method is None:
                    # Put back what was seen, so that a dead letter still on its way is met.
                    for tag in passed_over:
                        self.channel.basic_nack(tag, requeue=True)
                    passed_over = []
                    time.sleep(0.1)
                    continue
                if properties.message_id == task_id:
                    self.channel.basic_ack(method.delivery_tag)
                    return properties.headers, json.loads(body)
                passed_over.append(method.delivery_tag)
        finally:
            for tag in passed_over:
                self.channel.basic_nack(tag, requeue=True)
        raise AssertionError(f"no dead letter for {task_id}")


@pytest.fixture
def amqp(stack):
    connection = Amqp(stack.names)
    yield connection
    connection.connection.close()


RABBIT = Path("/usr/lib/rabbitmq/bin")


class BlankNode:
    """A throwaway RabbitMQ node of the local installation, blank (its own ports and data in
    `directory`): `conf` is the rabbitmq.conf to add to its ports, `env` more environment
    (RABBITMQ_DEFAULT_USER and the like). `start()` boots it, `wait_for_user()` waits for
    its management API to accept a user; the test stops it with `stop()`."""

    def __init__(self, directory, conf="", plugins="[rabbitmq_management].", env=None):
        if not (RABBIT / "rabbitmq-server").exists():
            pytest.fail("the local RabbitMQ installation is missing (make setup)")
        self.amqp, self.management, dist = free_port(), free_port(), free_port()
        self.dir = Path(directory)
        (self.dir / "rabbitmq.conf").write_text(f"{conf}\nlisteners.tcp.default = {self.amqp}\nmanagement.tcp.port = {self.management}\n")
        (self.dir / "enabled_plugins").write_text(f"{plugins}\n")
        (self.dir / "env").write_text("")
        self.node = f"warren-blank-{uuid.uuid4().hex[:8]}@localhost"
        self.env = {
            **os.environ,
            "HOME": str(self.dir),
            "PATH": f"/usr/lib/erlang/bin:{os.environ['PATH']}",
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.amqp),
            "RABBITMQ_DIST_PORT": str(dist),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "env"),
            **(env or {}),
        }

    def start(self):
        subprocess.Popen([str(RABBIT / "rabbitmq-server")], env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_for_user(self, user, password, seconds=90):
        """The management API's answer to `user` (whoami) once the node is up."""
        whoami = f"http://127.0.0.1:{self.management}/api/whoami"
        deadline = time.monotonic() + seconds
        while True:
            try:
                answer = httpx.get(whoami, auth=(user, password), timeout=5)
                if answer.status_code == 200:
                    return answer
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the node did not come up"
            time.sleep(0.5)

    def stop(self):
        subprocess.run([str(RABBIT / "rabbitmqctl"), "-n", self.node, "stop"], env=self.env, capture_output=True, timeout=60)

