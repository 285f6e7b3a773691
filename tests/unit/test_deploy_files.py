"""Static checks of deploy/: the Dockerfile (BuildKit's own parser), compose.yaml (its
structure, and `docker-compose config` when installed) and the Kubernetes manifests
(against the Kubernetes API schemas shipped by kubernetes-validate, offline).

Docker cannot run on the development machines, so nothing here builds an image or
starts a container: docs/deployment.md says what was and was not run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import dockerfile
import kubernetes_validate
import pytest
import yaml

from modelcert.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
IMAGE = "modelcert:0.1.0"
# The Kubernetes version the manifests are validated against (schemas in the package).
KUBERNETES_VERSION = "1.30"
# CI sets this so that the `docker-compose config` check fails instead of skipping.
REQUIRE_COMPOSE = os.environ.get("MODELCERT_REQUIRE_COMPOSE") == "1"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|ACCESS_KEY|DATABASE_URL", re.IGNORECASE)
HEALTH_PORT = Settings.model_fields["worker_health_port"].default


# Dockerfile


def stages() -> list[list[dockerfile.Command]]:
    """The Dockerfile's build stages, each a list of its instructions."""
    found: list[list[dockerfile.Command]] = []
    for command in dockerfile.parse_file(str(DEPLOY / "Dockerfile")):
        if command.cmd == "FROM":
            found.append([])
        if found:
            found[-1].append(command)
    return found


def test_the_dockerfile_builds_a_wheel_then_a_slim_runtime() -> None:
    build, runtime = stages()
    assert build[0].value[-2:] == ("AS", "build")
    assert any("build --wheel" in " ".join(c.value) for c in build if c.cmd == "RUN")
    # The runtime stage gets only the wheels from the build stage, no sources or tools.
    assert not any(c.cmd in ("COPY", "ADD") for c in runtime)
    installs = [c for c in runtime if c.cmd == "RUN" and "pip install" in c.value[0]]
    assert len(installs) == 1
    assert "--mount=type=bind,from=build,source=/wheels,target=/wheels" in installs[0].flags
    assert "--no-index" in installs[0].value[0]
    base = next(c for c in dockerfile.parse_file(str(DEPLOY / "Dockerfile")) if c.cmd == "ARG")
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.1[1-9]-slim-\w+", base.value[0])


def test_the_runtime_runs_as_a_non_root_user_with_a_healthcheck() -> None:
    runtime = stages()[-1]
    users = [c.value[0] for c in runtime if c.cmd == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert [c.value for c in runtime if c.cmd == "EXPOSE"] == [("8000", str(HEALTH_PORT))]
    (check,) = [c for c in runtime if c.cmd == "HEALTHCHECK"]
    kind, *command = check.value
    assert kind == "CMD" and command[:2] == ["python", "-c"]  # no curl in slim images
    assert "urllib.request.urlopen" in command[2]
    assert any(flag.startswith("--timeout=") for flag in check.flags)
    env = " ".join(" ".join(c.value) for c in runtime if c.cmd == "ENV")
    # The API's health by default; workers override it with their /live.
    assert "MODELCERT_HEALTHCHECK_URL http://127.0.0.1:8000/api/health" in env
    assert [c.value for c in runtime if c.cmd == "ENTRYPOINT"] == [("modelcert",)]


# compose.yaml


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def env_of(service: dict[str, Any]) -> dict[str, Any]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "environment as a mapping, please"
    return env


def test_compose_has_the_stack_with_two_distinct_workers() -> None:
    services = compose()["services"]
    assert set(services) == {
        "postgres",
        "migrate",
        "api",
        "worker-1",
        "worker-2",
        "prometheus",
        "grafana",
    }
    assert services["postgres"]["image"] == "postgres:15"
    roles = {name: services[name]["command"][0] for name in ("migrate", "api", "worker-1")}
    assert roles == {"migrate": "db", "api": "api", "worker-1": "worker"}
    for name in ("migrate", "api", "worker-1", "worker-2"):
        assert services[name]["image"] == IMAGE, name
    assert services["migrate"]["build"]["dockerfile"] == "deploy/Dockerfile"
    executors = {env_of(services[w])["MODELCERT_EXECUTOR_ID"] for w in ("worker-1", "worker-2")}
    assert executors == {"worker-1", "worker-2"}
    for worker in ("worker-1", "worker-2"):
        env = env_of(services[worker])
        assert env["WORKER_HEALTH_PORT"] == str(HEALTH_PORT)
        assert env["MODELCERT_HEALTHCHECK_URL"] == f"http://127.0.0.1:{HEALTH_PORT}/live"
        depends = services[worker]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"


def test_compose_mounts_the_monitoring_files_that_exist() -> None:
    services = compose()["services"]
    mounts = {
        (name, source, target)
        for name in ("prometheus", "grafana")
        for source, target, *_ in (v.split(":") for v in services[name]["volumes"])
        if source.startswith("./")
    }
    assert mounts == {
        ("prometheus", "./prometheus", "/etc/prometheus"),
        ("grafana", "./grafana/provisioning", "/etc/grafana/provisioning"),
        ("grafana", "./grafana/dashboards", "/var/lib/grafana/dashboards"),
    }
    for _, source, _ in mounts:
        assert (DEPLOY / source).is_dir(), source
    provider = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/modelcert.yaml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_compose_writes_no_secret_in_plain_text() -> None:
    for name, service in compose()["services"].items():
        for key, value in env_of(service).items():
            if not SECRET_NAME.search(key) or value is None:
                continue  # None: passed through from the shell running compose
            # Only references to the environment, and a URL's password only as one.
            plain = re.sub(r"\$\{[^}]*\}", "", str(value))
            assert "${" in str(value), f"{name}: {key} is not read from the environment"
            assert not re.search(r"://[^:/@]+:[^@$]+@", plain), f"{name}: {key} has a password"


@pytest.fixture(scope="module")
def docker_compose() -> str:
    path = shutil.which("docker-compose")
    if path is None:
        reason = "docker-compose is not installed (apt-get install docker-compose; .ci/run)"
        if REQUIRE_COMPOSE:
            pytest.fail(f"MODELCERT_REQUIRE_COMPOSE=1 but {reason}")
        pytest.skip(reason)
    return path


def compose_config(docker_compose: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.endswith("_PASSWORD")}
    return subprocess.run(
        [docker_compose, "-p", "modelcert", "-f", str(DEPLOY / "compose.yaml"), "config"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **env},
    )


def test_docker_compose_accepts_the_file(docker_compose: str) -> None:
    done = compose_config(docker_compose, POSTGRES_PASSWORD="pg-pw", GRAFANA_ADMIN_PASSWORD="g")
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)["services"]
    url = resolved["worker-2"]["environment"]["MODELCERT_DATABASE_URL"]
    assert url == "postgresql+psycopg://modelcert:pg-pw@postgres:5432/modelcert"


def test_docker_compose_refuses_to_run_without_the_passwords(docker_compose: str) -> None:
    done = compose_config(docker_compose, GRAFANA_ADMIN_PASSWORD="g")
    assert done.returncode != 0
    assert "set POSTGRES_PASSWORD" in done.stderr


# Kubernetes


def manifests() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                found.append((path.name, document))
    return found


def resource(kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for _, d in manifests() if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    pod = doc["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]


def test_every_manifest_is_valid_against_the_kubernetes_schemas() -> None:
    kinds = set()
    for filename, document in manifests():
        kinds.add(document["kind"])
        if document["kind"] == "Kustomization":
            continue  # a kustomize file, not a Kubernetes API object
        # strict: unknown fields (a typo in a probe, say) are errors too.
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        assert document["metadata"]["name"], filename
    assert {"ConfigMap", "Secret", "Deployment", "Service", "StatefulSet", "Job"} <= kinds


def test_the_schema_validation_catches_a_mistake() -> None:
    broken = resource("StatefulSet", "modelcert-worker")
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGett"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_workers_are_a_statefulset_named_by_pod_with_health_probes() -> None:
    workers = resource("StatefulSet", "modelcert-worker")
    service = resource("Service", workers["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"  # headless
    assert [p["port"] for p in service["spec"]["ports"]] == [HEALTH_PORT]
    (worker,) = containers(workers)
    assert worker["args"] == ["worker"]
    ports = {p["name"]: p["containerPort"] for p in worker["ports"]}
    assert ports == {"health": HEALTH_PORT}
    config = resource("ConfigMap", "modelcert-config")["data"]
    assert config["WORKER_HEALTH_PORT"] == str(HEALTH_PORT)
    probes = {
        kind: (worker[kind]["httpGet"]["path"], ports[worker[kind]["httpGet"]["port"]])
        for kind in ("livenessProbe", "readinessProbe")
    }
    assert probes == {
        "livenessProbe": ("/live", HEALTH_PORT),
        "readinessProbe": ("/ready", HEALTH_PORT),
    }
    executor = {e["name"]: e for e in worker["env"]}["MODELCERT_EXECUTOR_ID"]
    assert executor["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # The grace period covers the worker's own shutdown grace for in-flight work.
    grace = workers["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > Settings.model_fields["shutdown_grace_s"].default


def test_the_api_deployment_and_service() -> None:
    api = resource("Deployment", "modelcert-api")
    (container,) = containers(api)
    assert container["args"][0] == "api" and "0.0.0.0" in container["args"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/api/health"
    assert "livenessProbe" in container
    service = resource("Service", "modelcert-api")
    assert service["spec"]["selector"] == api["spec"]["selector"]["matchLabels"]
    assert [p["port"] for p in service["spec"]["ports"]] == [8000]
    annotations = api["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics"


def test_a_migration_job_runs_db_upgrade_with_the_same_image() -> None:
    (job,) = [d for _, d in manifests() if d["kind"] == "Job"]
    (migrate,) = containers(job)
    assert migrate["args"] == ["db", "upgrade"]
    images = {
        c["image"]
        for _, doc in manifests()
        if doc["kind"] in ("Deployment", "StatefulSet", "Job")
        for c in containers(doc)
    }
    assert images == {IMAGE}


def test_secrets_are_placeholders_and_only_reach_containers_by_reference() -> None:
    secrets = [d for _, d in manifests() if d["kind"] == "Secret"]
    assert {s["metadata"]["name"] for s in secrets} == {
        "modelcert-database",
        "modelcert-provider-credentials",
    }
    for secret in secrets:
        assert "data" not in secret  # base64 is not a placeholder anyone can read
        for key, value in secret["stringData"].items():
            assert value == "REPLACE_ME", f"{secret['metadata']['name']}.{key}"
    config = resource("ConfigMap", "modelcert-config")["data"]
    assert not [key for key in config if SECRET_NAME.search(key)]
    for _, doc in manifests():
        if doc["kind"] not in ("Deployment", "StatefulSet", "Job"):
            continue
        for container in containers(doc):
            for env in container.get("env", []):
                assert not (SECRET_NAME.search(env["name"]) and "value" in env), env["name"]
            refs = {r["secretRef"]["name"] for r in container["envFrom"] if "secretRef" in r}
            assert "modelcert-database" in refs
