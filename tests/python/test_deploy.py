"""deploy/rabbitmq as a new user's blank broker gets it: a throwaway node of the local RabbitMQ
installation (its own ports and data), configured with deploy/rabbitmq/rabbitmq.conf, loading
definitions.json and the users render-users.sh writes from the environment, laid out as
docker-compose.yml mounts them. Then connect as the compose worker would and log into the
management API as ops would."""

import os
import shutil
import subprocess

import httpx
import pytest

from conftest import REPO, WARREN, BlankNode


@pytest.fixture
def blank_node(tmp_path):
    """A blank node configured as docker-compose.yml mounts deploy/rabbitmq."""
    definitions = tmp_path / "definitions.d"
    definitions.mkdir()
    shutil.copy(REPO / "deploy/rabbitmq/definitions.json", definitions / "topology.json")
    conf = (REPO / "deploy/rabbitmq/rabbitmq.conf").read_text()
    node = BlankNode(tmp_path, conf.replace("/etc/rabbitmq/definitions.d", str(definitions)))
    node.definitions = definitions
    yield node
    node.stop()


def render_users(definitions, **passwords):
    env = {k: v for k, v in os.environ.items() if not k.endswith("_RABBITMQ_PASSWORD")}
    env.update(passwords, DEFINITIONS_DIR=str(definitions))
    return subprocess.run(["sh", str(REPO / "deploy/rabbitmq/render-users.sh"), "true"], env=env, capture_output=True, text=True)


def test_a_blank_compose_broker_has_the_deployment_users_and_warren_connects(blank_node):
    rendered = render_users(blank_node.definitions, WARREN_RABBITMQ_PASSWORD="w-pass-1", OPS_RABBITMQ_PASSWORD="o-pass-2")
    assert rendered.returncode == 0, rendered.stderr
    blank_node.start()
    answer = blank_node.wait_for_user("ops", "o-pass-2")
    assert answer.json()["tags"] == ["administrator"], "ops logs into the management UI"
    whoami = f"http://127.0.0.1:{blank_node.management}/api/whoami"
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
