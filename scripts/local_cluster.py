"""A three-node RabbitMQ cluster built from the machine's own RabbitMQ installation: each
node with its own ports, data directory and (through HOME) Erlang cookie, joined with
`join_cluster`. Used by tests/python/test_cluster.py (stopping nodes under load) and by
`make bench-ceiling` (the queue's ceiling on three replicas).

    python3 scripts/local_cluster.py up DIR     starts it, prints {"urls": [...], "pids": [...]}
    python3 scripts/local_cluster.py node DIR [ADVANCED]
                                                starts its first node alone, with ADVANCED as
                                                its advanced.config (Erlang terms), prints the same
    python3 scripts/local_cluster.py ctl DIR ARGS...
                                                rabbitmqctl ARGS on its first node
    python3 scripts/local_cluster.py down DIR   stops it

DIR keeps the nodes' data and `cluster.json` (names and ports), so `down` finds them."""

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

RABBIT = Path("/usr/lib/rabbitmq/bin")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, root, state=None, advanced="[]."):
        self.root = Path(root)
        (self.root / "home").mkdir(parents=True, exist_ok=True)
        if state is None:
            cluster_id = uuid.uuid4().hex[:6]
            state = {
                "nodes": [f"warren-c{i}-{cluster_id}@localhost" for i in range(3)],
                "ports": [free_port() for _ in range(3)],
                "dist": [free_port() for _ in range(3)],
                "advanced": advanced,
            }
        self.nodes, self.ports, self.dist = state["nodes"], state["ports"], state["dist"]
        # Erlang terms for advanced.config (e.g. ra's WAL settings, which rabbitmq.conf lacks).
        self.advanced = state.get("advanced", "[].")
        self.urls = [f"amqp://guest:guest@127.0.0.1:{port}/%2f" for port in self.ports]
        # The nodes this object stopped and has not started again.
        self.stopped = set()

    @classmethod
    def load(cls, root):
        return cls(root, json.loads((Path(root) / "cluster.json").read_text()))

    def save(self):
        state = {"nodes": self.nodes, "ports": self.ports, "dist": self.dist, "advanced": self.advanced}
        (self.root / "cluster.json").write_text(json.dumps(state))

    def env(self, i):
        base = self.root / f"n{i}"
        base.mkdir(exist_ok=True)
        (base / "rabbitmq.conf").write_text(f"listeners.tcp.default = {self.ports[i]}\n")
        (base / "advanced.config").write_text(self.advanced + "\n")
        (base / "enabled_plugins").write_text("[rabbitmq_consistent_hash_exchange].\n")
        (base / "env").write_text("")
        return {
            **os.environ,
            "HOME": str(self.root / "home"),
            "PATH": f"/usr/lib/erlang/bin:{os.environ['PATH']}",
            "RABBITMQ_NODENAME": self.nodes[i],
            "RABBITMQ_NODE_PORT": str(self.ports[i]),
            "RABBITMQ_DIST_PORT": str(self.dist[i]),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "env"),
        }

    def ctl(self, i, *args, check=True):
        done = subprocess.run([str(RABBIT / "rabbitmqctl"), "-n", self.nodes[i], *args], env=self.env(i),
                              capture_output=True, text=True, timeout=120)
        if check:
            assert done.returncode == 0, f"rabbitmqctl {args} on node {i}: {done.stdout}{done.stderr}"
        return done.stdout

    def start(self, i):
        self.launch(i)
        self.await_started(i)
        self.stopped.discard(i)

    def start_stopped(self):
        """Starts again, at once, every node this object stopped (each rejoins the cluster)."""
        down = sorted(self.stopped)
        for i in down:
            self.launch(i)
        for i in down:
            self.await_started(i)
        self.stopped.clear()

    def launch(self, i):
        subprocess.Popen([str(RABBIT / "rabbitmq-server")], env=self.env(i),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def await_started(self, i):
        # await_startup fails at once while the node has not registered with epmd yet.
        deadline = time.monotonic() + 120
        while True:
            done = subprocess.run([str(RABBIT / "rabbitmqctl"), "-n", self.nodes[i], "await_startup"],
                                  env=self.env(i), capture_output=True, text=True, timeout=130)
            if done.returncode == 0:
                return
            assert time.monotonic() < deadline, f"node {i} never started: {done.stdout}{done.stderr}"
            time.sleep(1)

    def start_all(self):
        """Starts the three nodes at once, then joins nodes 1 and 2 to node 0 one at a time
        (each join changes the cluster's schema)."""
        if not (RABBIT / "rabbitmq-server").exists():
            raise AssertionError("the local RabbitMQ installation is missing (make setup)")
        self.save()
        for i in range(3):
            self.launch(i)
        for i in range(3):
            self.await_started(i)
        for i in (1, 2):
            self.ctl(i, "stop_app")
            self.ctl(i, "join_cluster", self.nodes[0])
            self.ctl(i, "start_app")

    def stop(self, i):
        self.ctl(i, "stop", check=False)
        self.stopped.add(i)

    def stop_all(self):
        for i in range(len(self.nodes)):
            self.stop(i)

    def pids(self):
        """The nodes' Erlang VM (beam.smp) process ids."""
        return [int(self.ctl(i, "eval", "list_to_integer(os:getpid()).").strip()) for i in range(3)]

    def live(self, down):
        return next(i for i in range(3) if i not in down)

    def queues(self, i):
        return json.loads(self.ctl(i, "list_queues", "-q", "name", "consumers", "messages", "leader",
                                   "members", "--formatter", "json"))

    def queue(self, i, name):
        return next(q for q in self.queues(i) if q["name"] == name)

    def port_of_worker(self, i):
        connections = json.loads(self.ctl(i, "list_connections", "-q", "port", "client_properties",
                                          "--formatter", "json"))
        # The worker names its connection (client property connection_name) warren-worker@….
        return next(c["port"] for c in connections if "warren-worker@" in json.dumps(c))


def main(argv):
    if len(argv) >= 4 and argv[1] == "ctl":
        print(Cluster.load(argv[2]).ctl(0, *argv[3:]), end="")
        return
    if len(argv) not in (3, 4) or argv[1] not in ("up", "node", "down"):
        sys.exit(__doc__)
    if argv[1] == "up":
        cluster = Cluster(argv[2])
        try:
            cluster.start_all()
        except BaseException:
            cluster.stop_all()
            raise
        print(json.dumps({"urls": cluster.urls, "pids": cluster.pids()}))
    elif argv[1] == "node":
        node = Cluster(argv[2], advanced=argv[3] if len(argv) == 4 else "[].")
        # One node: `down` then stops only it.
        node.nodes, node.ports, node.dist = node.nodes[:1], node.ports[:1], node.dist[:1]
        node.save()
        try:
            node.start(0)
        except BaseException:
            node.stop(0)
            raise
        pid = int(node.ctl(0, "eval", "list_to_integer(os:getpid()).").strip())
        print(json.dumps({"urls": node.urls[:1], "pids": [pid]}))
    else:
        Cluster.load(argv[2]).stop_all()


if __name__ == "__main__":
    main(sys.argv)
