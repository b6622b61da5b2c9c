"""deploy/rabbitmq as a new user's blank broker gets it: a throwaway node of the local RabbitMQ
installation (its own ports and data), configured with deploy/rabbitmq/rabbitmq.conf, loading
definitions.json and the users render-users.sh writes from the environment, laid out as
docker-compose.yml mounts them. Then connect as the compose worker would and log into the
management API as ops would."""

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from conftest import REPO, WARREN, free_port

RABBIT = Path("/usr/lib/rabbitmq/bin")


@pytest.fixture
def blank_node(tmp_path):
    if not (RABBIT / "rabbitmq-server").exists():
        pytest.fail("the local RabbitMQ installation is missing (make setup)")
    amqp, management, dist = free_port(), free_port(), free_port()
    definitions = tmp_path / "definitions.d"
    definitions.mkdir()
    shutil.copy(REPO / "deploy/rabbitmq/definitions.json", definitions / "topology.json")
    conf = (REPO / "deploy/rabbitmq/rabbitmq.conf").read_text()
    conf = conf.replace("/etc/rabbitmq/definitions.d", str(definitions))
    conf += f"\nlisteners.tcp.default = {amqp}\nmanagement.tcp.port = {management}\n"
    (tmp_path / "rabbitmq.conf").write_text(conf)
    (tmp_path / "enabled_plugins").write_text("[rabbitmq_management].\n")
    (tmp_path / "env").write_text("")
    node = f"warren-deploy-{uuid.uuid4().hex[:8]}@localhost"
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "PATH": f"/usr/lib/erlang/bin:{os.environ['PATH']}",
        "RABBITMQ_NODENAME": node,
        "RABBITMQ_NODE_PORT": str(amqp),
        "RABBITMQ_DIST_PORT": str(dist),
        "RABBITMQ_MNESIA_BASE": str(tmp_path / "mnesia"),
        "RABBITMQ_LOG_BASE": str(tmp_path / "log"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(tmp_path / "enabled_plugins"),
        "RABBITMQ_CONFIG_FILE": str(tmp_path / "rabbitmq.conf"),
        "RABBITMQ_CONF_ENV_FILE": str(tmp_path / "env"),
    }
    yield type("Node", (), {"amqp": amqp, "management": management, "definitions": definitions, "env": env, "dir": tmp_path})
    subprocess.run([str(RABBIT / "rabbitmqctl"), "-n", node, "stop"], env=env, capture_output=True, timeout=60)


def render_users(definitions, **passwords):
    env = {k: v for k, v in os.environ.items() if not k.endswith("_RABBITMQ_PASSWORD")}
    env.update(passwords, DEFINITIONS_DIR=str(definitions))
    return subprocess.run(["sh", str(REPO / "deploy/rabbitmq/render-users.sh"), "true"], env=env, capture_output=True, text=True)


def test_a_blank_compose_broker_has_the_deployment_users_and_warren_connects(blank_node):
    rendered = render_users(blank_node.definitions, WARREN_RABBITMQ_PASSWORD="w-pass-1", OPS_RABBITMQ_PASSWORD="o-pass-2")
    assert rendered.returncode == 0, rendered.stderr
    subprocess.Popen([str(RABBIT / "rabbitmq-server")], env=blank_node.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    whoami = f"http://127.0.0.1:{blank_node.management}/api/whoami"
    deadline = time.monotonic() + 90
    while True:
        try:
            answer = httpx.get(whoami, auth=("ops", "o-pass-2"), timeout=5)
            if answer.status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the node did not come up"
        time.sleep(0.5)
    assert answer.json()["tags"] == ["administrator"], "ops logs into the management UI"
    assert httpx.get(whoami, auth=("guest", "guest"), timeout=5).status_code == 401, "no guest"
    # The topology came from definitions.json ...
    queue = httpx.get(f"http://127.0.0.1:{blank_node.management}/api/queues/%2F/warren.requests", auth=("ops", "o-pass-2"), timeout=5)
    assert queue.status_code == 200
    # ... and the worker's user connects and declares the very same topology.
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARREN")}
    env["WARREN__BROKER__URL"] = f"amqp://warren:w-pass-1@127.0.0.1:{blank_node.amqp}/%2f"
    declared = subprocess.run([str(WARREN), "topology"], env=env, capture_output=True, text=True, timeout=60)
    assert declared.returncode == 0, declared.stderr
    wrong = subprocess.run([str(WARREN), "topology"], env={**env, "WARREN__BROKER__URL": f"amqp://warren:nope@127.0.0.1:{blank_node.amqp}/%2f"}, capture_output=True, text=True, timeout=60)
    assert wrong.returncode != 0


def test_render_users_refuses_missing_or_unsafe_passwords(tmp_path):
    missing = render_users(tmp_path, OPS_RABBITMQ_PASSWORD="x")
    assert missing.returncode == 64 and "WARREN_RABBITMQ_PASSWORD" in missing.stderr
    quoted = render_users(tmp_path, WARREN_RABBITMQ_PASSWORD='a"b', OPS_RABBITMQ_PASSWORD="x")
    assert quoted.returncode == 64
    assert not (tmp_path / "users.json").exists()
