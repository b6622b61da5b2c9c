"""The Helm chart (deploy/helm/warren) as helm renders it, with its defaults and with a fleet
(deploy/helm/check/fleet-values.yaml): what each worker consumes, as warren itself derives it
from the rendered environment, is the queue its ScaledObject watches and one the topology Job
declares; references resolve; workers scale from zero; bad values fail with a clear message.
Schema validation of the same renders is `scripts/check-chart.sh` (make lint)."""

import os
import re
import subprocess
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx
import pytest
import yaml

from conftest import REPO, WARREN, BlankNode, Names, free_port, start_gateway

CHART = REPO / "deploy/helm/warren"
HELM = REPO / "target/k8s/venv/bin/helm"
CARGO_VERSION = next(
    line.split('"')[1] for line in (REPO / "Cargo.toml").read_text().splitlines() if line.startswith("version")
)


@pytest.fixture(scope="module")
def renders(tmp_path_factory):
    """Both renders; the script installs helm into target/k8s first where it is missing."""
    out = tmp_path_factory.mktemp("chart")
    subprocess.run([str(REPO / "scripts/check-chart.sh"), "render", str(out)], check=True, capture_output=True)
    return {name: [d for d in yaml.safe_load_all((out / f"{name}.yaml").read_text()) if d] for name in ("default", "fleet")}


def render(*args):
    """The chart rendered with `args` (helm's --set and -f), as objects."""
    out = subprocess.run([str(HELM), "template", "warren", str(CHART), *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def find(objects, kind, name=None):
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert found, f"no {kind} {name or ''}"
    return found


def secret_data(objects):
    return find(objects, "Secret")[0]["stringData"]


def consumed_queue(objects, container, tmp_path):
    """The requests queue warren derives from this container's configuration file and env."""
    return dry_run(objects, container, tmp_path).splitlines()[0].split()[1]


def dry_run(objects, container, tmp_path):
    """What `warren topology --dry-run` describes with this container's configuration and env."""
    config = find(objects, "ConfigMap")[0]["data"]["warren.toml"]
    (tmp_path / "warren.toml").write_text(config)
    for key, value in secret_data(objects).items():  # the secret, as mounted
        (tmp_path / key).write_text(value)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"].replace("/etc/warren/secret/", f"{tmp_path}/")
        else:
            env[var["name"]] = secret_data(objects)[var["valueFrom"]["secretKeyRef"]["key"]]
    out = subprocess.run(
        [str(WARREN), "topology", "--dry-run", "--config", str(tmp_path / "warren.toml")],
        env=env, capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].split()[0] == "queue", out.stdout
    return out.stdout


def task_queues(described, batch):
    """The queues of one tier a worker consumes, as warren's dry run lists them (its shards,
    when sharded)."""
    queues = []
    for line in described.splitlines():
        fields = line.split()
        if fields[0] != "queue" or "x-dead-letter-exchange=" not in line or "x-message-ttl" in line:
            continue
        if line.endswith(": the batch tier, taken when a slot is free") == batch:
            queues.append(fields[1])
    return queues


def declared_queues(described):
    """Every queue a worker's dry run declares (its tiers, shards, delay and dead-letter queues)."""
    return {line.split()[1] for line in described.splitlines() if line.split()[0] == "queue"}


def watches(trigger, queues, others):
    """Whether a KEDA trigger counts the tasks of exactly `queues`: the one queue by name, or
    the sum over several (both tiers, their shards) by a pattern that matches them and none
    of `others` (the rest a worker declares, other workers' queues, near misses)."""
    metadata = trigger["metadata"]
    if len(queues) == 1:
        return metadata["queueName"] == queues[0] and "useRegex" not in metadata
    pattern = re.compile(metadata["queueName"])
    others = set(others) | {f"{q}x" for q in queues} | {f"x{q}" for q in queues}
    return (metadata["useRegex"] == "true" and metadata["operation"] == "sum"
            and int(metadata["pageSize"]) >= len(queues)
            and all(pattern.search(q) for q in queues)
            and not any(pattern.search(o) for o in others - set(queues)))


@pytest.mark.parametrize("values", ["default", "fleet"])
def test_each_worker_consumes_the_queue_its_scaler_watches_and_the_topology_job_declares(renders, values, tmp_path):
    objects = renders[values]
    scalers = {s["spec"]["scaleTargetRef"]["name"]: s for s in find(objects, "ScaledObject")}
    job = next(j for j in find(objects, "Job") if "-topology-" in j["metadata"]["name"])
    declared = {consumed_queue(objects, c, tmp_path) for c in job["spec"]["template"]["spec"]["containers"]}
    workers = [d for d in find(objects, "Deployment") if d["metadata"]["labels"]["app.kubernetes.io/component"] in ("worker", "embedder")]
    assert len(workers) == len(scalers) == len(declared)
    described = {w["metadata"]["name"]: dry_run(objects, w["spec"]["template"]["spec"]["containers"][0], tmp_path) for w in workers}
    everything = set().union(*(declared_queues(d) for d in described.values()))
    for worker in workers:
        container = worker["spec"]["template"]["spec"]["containers"][0]
        # The startup probe waits for the model (readiness), not for the process (health).
        assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        queue = consumed_queue(objects, container, tmp_path)
        tiers = task_queues(described[worker["metadata"]["name"]], batch=False)
        if worker["metadata"]["labels"]["app.kubernetes.io/component"] == "worker":
            # A generation worker also serves its queue's batch tier: it scales on both, one
            # trigger (KEDA takes the largest of several triggers, not their sum).
            tiers += task_queues(described[worker["metadata"]["name"]], batch=True)
            # The fleet spreads each model over four shards; the defaults keep one queue.
            assert len(tiers) == (8 if values == "fleet" else 2)
        triggers = scalers[worker["metadata"]["name"]]["spec"]["triggers"]
        assert len(triggers) == 1
        assert watches(triggers[0], tiers, everything)
        assert queue in declared, f"{queue} is not declared before a worker exists"


@pytest.mark.parametrize("values", ["default", "fleet"])
def test_the_gateway_serves_exactly_the_models_workers_serve_and_its_configuration_loads(renders, values, tmp_path):
    objects = renders[values]
    gateway = find(objects, "Deployment", "warren-warren-gateway")[0]["spec"]["template"]["spec"]["containers"][0]
    env = {v["name"]: v.get("value") for v in gateway["env"]}
    served = env["WARREN__GATEWAY__MODELS"].split(",")
    models = [
        v["value"]
        for d in find(objects, "Deployment")
        for v in d["spec"]["template"]["spec"]["containers"][0]["env"]
        if v["name"] == "WARREN__ENGINE__MODEL_NAME"
    ]
    assert sorted(served) == sorted(models)
    # warren accepts the gateway's rendered configuration (the dry run loads and checks it),
    # and it publishes to the exchange the workers' queues are bound to.
    consumed_queue(objects, gateway, tmp_path)
    assert env["WARREN__TOPOLOGY__TASKS_EXCHANGE"] == "warren.tasks"
    probes = (gateway["readinessProbe"]["httpGet"]["path"], gateway["livenessProbe"]["httpGet"]["path"])
    assert probes == ("/readyz", "/healthz")
    service = find(objects, "Service", "warren-warren-gateway")[0]
    assert service["spec"]["ports"][0]["targetPort"] == gateway["ports"][0]["name"]
    hpa = find(objects, "HorizontalPodAutoscaler")[0]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "warren-warren-gateway"
    # A sync request to an idle model waits for a cold start; the pod outlives its longest wait.
    timeout_s = int(env["WARREN__GATEWAY__REQUEST_TIMEOUT_MS"]) // 1000
    pod = find(objects, "Deployment", "warren-warren-gateway")[0]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > timeout_s + 5, "beyond the preStop pause too"
    assert gateway["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]


@pytest.mark.parametrize("values", ["default", "fleet"])
def test_workers_scale_from_zero_and_everything_referenced_is_rendered(renders, values):
    objects = renders[values]
    secret = secret_data(objects)
    secret_name = find(objects, "Secret")[0]["metadata"]["name"]
    for scaler in find(objects, "ScaledObject"):
        assert scaler["spec"]["minReplicaCount"] == 0
        assert scaler["spec"]["triggers"][0]["metadata"]["activationValue"].isdigit()
        auth = find(objects, "TriggerAuthentication", scaler["spec"]["triggers"][0]["authenticationRef"]["name"])[0]
        for target in auth["spec"]["secretTargetRef"]:
            assert target["name"] == secret_name and target["key"] in secret
        assert secret["management-url"].startswith("http")
        # KEDA looks for the queue in the virtual host the workers connect to.
        vhost = unquote(urlparse(secret["amqp-url"]).path[1:]) or "/"
        assert scaler["spec"]["triggers"][0]["metadata"]["vhostName"] == vhost
    for kind in ("Deployment", "StatefulSet", "Job"):
        for workload in [o for o in objects if o["kind"] == kind]:
            pod = workload["spec"]["template"]["spec"]
            if workload["metadata"]["labels"].get("app.kubernetes.io/component") in ("worker", "embedder"):
                assert "replicas" not in workload["spec"], "KEDA owns a worker's replicas"
                # A task of the default length finishes on a stopping worker rather than
                # starting again elsewhere; the pod outlives that grace.
                worker_env = {v["name"]: v.get("value") for v in pod["containers"][0]["env"]}
                grace_ms = int(worker_env["WARREN__WORKER__SHUTDOWN_GRACE_MS"])
                assert grace_ms >= 120_000, "at least limits.default_timeout_ms"
                assert pod["terminationGracePeriodSeconds"] > grace_ms // 1000 + 15
                name = workload["metadata"]["name"]
                pdb = find(objects, "PodDisruptionBudget", name)[0]
                assert pdb["spec"]["selector"]["matchLabels"] == workload["spec"]["selector"]["matchLabels"]
            for volume in pod.get("volumes", []):
                if "configMap" in volume:
                    find(objects, "ConfigMap", volume["configMap"]["name"])
                if "secret" in volume:
                    assert volume["secret"]["secretName"] == secret_name
                claim = volume.get("persistentVolumeClaim", {}).get("claimName")
                if claim and values == "default":
                    find(objects, "PersistentVolumeClaim", claim)
            for container in pod.get("initContainers", []) + pod["containers"]:
                for var in container.get("env", []):
                    ref = var.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        assert ref["name"] == secret_name and ref["key"] in secret, var
                if container["image"].startswith("warren:"):
                    assert container["image"] in (f"warren:{CARGO_VERSION}", f"warren:{CARGO_VERSION}-cuda")


def test_every_worker_records_finished_tasks_in_the_charts_redis_and_names_its_model(renders):
    for values in ("default", "fleet"):
        objects = renders[values]
        for worker in find(objects, "Deployment"):
            if worker["metadata"]["labels"]["app.kubernetes.io/component"] not in ("worker", "embedder"):
                continue
            pod = worker["spec"]["template"]
            env = {v["name"]: v for v in pod["spec"]["containers"][0]["env"]}
            assert env["WARREN__WORKER__REDIS_URL"]["valueFrom"]["secretKeyRef"]["key"] == "redis-url"
            model = env.get("WARREN__ENGINE__MODEL_NAME", {}).get("value")
            assert pod["metadata"]["annotations"].get("warren.dev/model-name") == model
    off = render("--set", "rabbitmq.password=x", "--set", "redis.password=y", "--set", "finishedMarks=false")
    worker = find(off, "Deployment", "warren-warren-worker-gemma3-270m")[0]
    assert "WARREN__WORKER__REDIS_URL" not in {v["name"] for v in worker["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_a_model_entry_overrides_worker_defaults_with_false_and_zero_too(renders):
    objects = render(
        "--set", "rabbitmq.password=x", "--set", "redis.password=y",
        "--set", "workerDefaults.gpu=true,workerDefaults.minReplicas=1,workerDefaults.activationTasks=3",
        "--set", "models[0].name=m,models[0].file=m.gguf,models[0].gpu=false,models[0].minReplicas=0",
        "--set", "models[0].activationTasks=0,models[0].resources.limits.memory=5Gi",
    )
    scaler = find(objects, "ScaledObject", "warren-warren-worker-m")[0]
    assert scaler["spec"]["minReplicaCount"] == 0
    assert scaler["spec"]["triggers"][0]["metadata"]["activationValue"] == "0"
    pod = find(objects, "Deployment", "warren-warren-worker-m")[0]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert "nodeSelector" not in pod and not container["image"].endswith("-cuda")
    assert {"name": "WARREN__ENGINE__N_GPU_LAYERS", "value": "0"} in container["env"]
    # Nested keys merge one by one: the model's limit, the defaults' requests.
    assert container["resources"] == {"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"memory": "5Gi"}}


def test_gateway_replicas_are_the_autoscalers_and_the_old_key_is_refused(renders):
    gateway = find(renders["default"], "Deployment", "warren-warren-gateway")[0]
    assert "replicas" not in gateway["spec"]
    out = subprocess.run([str(HELM), "template", "warren", str(CHART), "--set", "rabbitmq.password=x", "--set", "redis.password=y", "--set", "gateway.replicas=3"],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "gateway.replicas: the gateway's HorizontalPodAutoscaler" in out.stderr, out.stderr
    # The key's old default, which `helm upgrade --reuse-values` from such a release keeps.
    reused = render("--set", "rabbitmq.password=x", "--set", "redis.password=y", "--set", "gateway.replicas=2", "--set", "finishedMarks=null")
    assert "replicas" not in find(reused, "Deployment", "warren-warren-gateway")[0]["spec"]
    # A key the reused values lack takes its default: finished-task marks on.
    worker = find(reused, "Deployment", "warren-warren-worker-gemma3-270m")[0]
    assert "WARREN__WORKER__REDIS_URL" in {v["name"] for v in worker["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_the_in_chart_broker_makes_the_virtual_host_its_url_names(renders, tmp_path):
    """The rendered broker's environment on a blank node of the local RabbitMQ: warren
    connects with the Secret's URL and declares its queues in that virtual host."""
    objects = render("--set", "rabbitmq.password=pass/word", "--set", "redis.password=y", "--set", "rabbitmq.vhost=prod")
    secret = secret_data(objects)
    container = find(objects, "StatefulSet", "warren-warren-rabbitmq")[0]["spec"]["template"]["spec"]["containers"][0]
    env = {v["name"]: v["value"] if "value" in v else secret[v["valueFrom"]["secretKeyRef"]["key"]] for v in container["env"]}
    node = BlankNode(tmp_path, env=env)
    node.start()
    try:
        node.wait_for_user("warren", "pass/word")
        url = secret["amqp-url"].replace("warren-warren-rabbitmq:5672", f"127.0.0.1:{node.amqp}")
        assert urlparse(url).path == "/prod"
        declared = subprocess.run([str(WARREN), "topology"], env={"PATH": "/usr/bin:/bin", "WARREN__BROKER__URL": url},
                                  capture_output=True, text=True, timeout=60)
        assert declared.returncode == 0, declared.stderr
        queue = httpx.get(f"http://127.0.0.1:{node.management}/api/queues/prod/warren.requests", auth=("warren", "pass/word"), timeout=5)
        assert queue.status_code == 200, queue.text
    finally:
        node.stop()


def test_gpu_models_get_a_gpu_the_cuda_image_and_gpu_nodes_and_cpu_models_do_not(renders):
    pods = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]
        for d in find(renders["fleet"], "Deployment")
        if "-worker-" in d["metadata"]["name"]
    }
    gpu, cpu = pods["warren-warren-worker-llama-3-1-8b"], pods["warren-warren-worker-gemma3-270m"]
    container = gpu["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].endswith("-cuda")
    assert {"name": "WARREN__ENGINE__N_GPU_LAYERS", "value": "99"} in container["env"]
    assert gpu["nodeSelector"] and gpu["tolerations"]
    assert "nvidia.com/gpu" not in cpu["containers"][0]["resources"].get("limits", {})
    assert "nodeSelector" not in cpu and not cpu["containers"][0]["image"].endswith("-cuda")


def test_the_default_stack_has_its_own_broker_and_redis_with_volumes(renders):
    objects = renders["default"]
    secret = secret_data(objects)
    rabbit = find(objects, "StatefulSet", "warren-warren-rabbitmq")[0]
    redis = find(objects, "StatefulSet", "warren-warren-redis")[0]
    assert secret["amqp-url"] == "amqp://warren:check-only@warren-warren-rabbitmq:5672/%2F"
    assert secret["redis-password"] == "check-only"
    assert secret["redis-url"] == "redis://:check-only@warren-warren-redis:6379/"
    for workload, service in ((rabbit, "warren-warren-rabbitmq"), (redis, "warren-warren-redis")):
        assert workload["spec"]["volumeClaimTemplates"], "persistent"
        find(objects, "Service", service)
    redis_container = redis["spec"]["template"]["spec"]["containers"][0]
    assert "--appendonly yes" in redis_container["command"][2]
    env = {v["name"]: v["valueFrom"]["secretKeyRef"]["key"] for v in redis_container["env"]}
    assert env == {"REDIS_PASSWORD": "redis-password", "REDISCLI_AUTH": "redis-password"}
    # Nothing of the in-chart broker or Redis is rendered for an external one.
    names = {o["metadata"]["name"] for o in renders["fleet"]}
    assert not {"warren-warren-rabbitmq", "warren-warren-redis"} & names


def test_the_in_chart_redis_asks_for_its_password_and_warren_gives_it(tmp_path):
    """The rendered Redis command, run with a real redis-server (its data directory and port
    moved here) and a password that needs escaping in a URL: without the password nothing is
    served, the probe's redis-cli gets in, and a gateway given the rendered `redis-url`
    stores a file."""
    password = "s3cret pass/+:@"
    objects = render("--set", "rabbitmq.password=x", "--set-string", f"redis.password={password}")
    secret = secret_data(objects)
    assert secret["redis-password"] == password
    redis = find(objects, "StatefulSet", "warren-warren-redis")[0]
    container = redis["spec"]["template"]["spec"]["containers"][0]
    port = free_port()
    line = container["command"][2].replace("--dir /data", f"--dir {tmp_path}") + f" --port {port} --bind 127.0.0.1"
    server = subprocess.Popen([*container["command"][:2], line], env={**os.environ, "REDIS_PASSWORD": password},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    names = Names("chart-redis")
    gateway = None
    try:
        probe = container["readinessProbe"]["exec"]["command"]
        probe = [probe[0], "-p", str(port), *probe[1:]]
        deadline = time.monotonic() + 30
        while subprocess.run(probe, env={**os.environ, "REDISCLI_AUTH": password}, capture_output=True).stdout.strip() != b"PONG":
            assert time.monotonic() < deadline, "redis-server did not start with the password"
            time.sleep(0.1)
        anonymous = subprocess.run(probe, capture_output=True, text=True)
        assert "NOAUTH" in anonymous.stdout + anonymous.stderr
        url = secret["redis-url"].replace("warren-warren-redis:6379", f"127.0.0.1:{port}")
        gateway = start_gateway(names, gateway__redis_url=url)
        stored = httpx.post(f"{gateway.base_url}/files", files={"file": ("in.jsonl", b"{}\n"), "purpose": (None, "batch")}, timeout=10)
        assert stored.status_code == 200, stored.text
    finally:
        if gateway is not None:
            gateway.stop()
        names.delete()
        server.terminate()
        server.wait(timeout=30)


def test_the_models_job_fills_the_volume_as_make_model_does(renders):
    job = next(j for j in find(renders["default"], "Job") if "-models-fetch-" in j["metadata"]["name"])
    pod = job["spec"]["template"]["spec"]
    script = pod["containers"][0]["args"][0]
    sha = (REPO / "scripts/fetch-model.sh").read_text().split('SHA256="')[1].split('"')[0]
    assert sha in script
    assert subprocess.run(["sh", "-n", "-c", script]).returncode == 0
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "warren-warren-models"


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "rabbitmq.password is required"),
        (["--set", "rabbitmq.enabled=false"], "rabbitmq.url is required"),
        (["--set", "rabbitmq.password=x"], "redis.password is required"),
        (["--set", "rabbitmq.password=x", "--set", "redis.password=y", "--set", "redis.enabled=false"], "redis.url is required"),
        (["--set", "rabbitmq.password=x", "--set", "redis.password=y", "--set", "models[0].name=bad name"], "a model name is letters, digits"),
        (["--set", "rabbitmq.password=x", "--set", "redis.password=y", "--set", "models[0].name=embed"], "not be `embed`"),
        (["--set", "rabbitmq.password=x", "--set", "redis.password=y", "--set", "models[0].name=m,models[0].file="], "needs a `file`"),
        (["--set", "rabbitmq.password=x", "--set", "redis.password=y", "--set", "models[0].file=m.gguf"], "every entry needs a `name`"),
        (["--set", "rabbitmq.password=x", "--set", "redis.password=y", "--set", "shards=0"], "shards: 0: spread each model over 1 to 64"),
    ],
)
def test_bad_values_fail_with_a_message_that_names_the_key(renders, args, message):
    out = subprocess.run([str(HELM), "template", "warren", str(CHART), *args], capture_output=True, text=True)
    assert out.returncode != 0
    assert message in out.stderr, out.stderr


def test_two_models_that_collide_as_kubernetes_names_are_refused(renders):
    out = subprocess.run(
        [str(HELM), "template", "warren", str(CHART), "--set", "rabbitmq.password=x", "--set", "redis.password=y",
         "--set", "models[0].name=a.b,models[0].file=a.gguf", "--set", "models[1].name=a_b,models[1].file=b.gguf"],
        capture_output=True, text=True,
    )
    assert out.returncode != 0 and "must stay distinct" in out.stderr, out.stderr
