"""Static checks of the Kubernetes manifests in deploy/k8s (parsed, not applied)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
NAME = "live-commerce-streams"
WEB_PORT = 6066
EXAMPLE_ONLY = {"secret-example.yaml"}  # never applied by kustomize: it holds example credentials


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.y*ml") if p.name != "kustomization.yaml")


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    out = []
    for path in manifest_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                doc["__file__"] = path.name
                out.append(doc)
    return out


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "Deployment", NAME)


@pytest.fixture(scope="module")
def pod(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]


@pytest.fixture(scope="module")
def container(pod: dict[str, Any]) -> dict[str, Any]:
    (c,) = pod["spec"]["containers"]
    return c


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e}


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_kinds_present(docs: list[dict[str, Any]]) -> None:
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap", "Secret"} <= kinds
    assert kinds & {"PodMonitor", "ServiceMonitor"}
    for d in docs:
        assert d.get("apiVersion") and d["metadata"].get("name"), d["__file__"]


def test_deployment_shape(
    deployment: dict[str, Any], pod: dict[str, Any], container: dict[str, Any]
) -> None:
    assert deployment["spec"]["replicas"] == 2
    assert container["image"] == f"{NAME}:0.1.0"
    assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == NAME
    assert pod["spec"]["terminationGracePeriodSeconds"] >= 30
    resources = container["resources"]
    assert resources["requests"] == {"cpu": "500m", "memory": "512Mi"}
    assert resources["limits"] == {"cpu": "1", "memory": "1Gi"}


def test_image_version_matches_the_project_and_compose(container: dict[str, Any]) -> None:
    import tomllib

    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert container["image"] == f"{NAME}:{version}"
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert compose["services"]["worker"]["image"] == container["image"]


def test_web_port_is_consistent(docs: list[dict[str, Any]], container: dict[str, Any]) -> None:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["web"] == WEB_PORT
    assert env_of(container)["STREAMS_WEB_PORT"] == str(WEB_PORT)
    service = one(docs, "Service", NAME)
    (sport,) = service["spec"]["ports"]
    assert sport["name"] == "web"
    assert sport["targetPort"] in ("web", ports["web"])
    monitors = [d for d in docs if d["kind"] in ("PodMonitor", "ServiceMonitor")]
    assert monitors
    for monitor in monitors:
        endpoints = monitor["spec"].get("podMetricsEndpoints") or monitor["spec"]["endpoints"]
        for endpoint in endpoints:
            assert endpoint["port"] == "web"
            assert endpoint["path"] == "/metrics"
            assert endpoint["interval"] == "15s"
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"


def test_probes(container: dict[str, Any]) -> None:
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "web"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "web"}


def test_selectors_match_pod_labels(
    docs: list[dict[str, Any]], deployment: dict[str, Any], pod: dict[str, Any]
) -> None:
    labels = pod["metadata"]["labels"]
    assert matches(deployment["spec"]["selector"]["matchLabels"], labels)
    assert matches(one(docs, "Service", NAME)["spec"]["selector"], labels)
    for d in docs:
        if d["kind"] in ("PodMonitor", "PodDisruptionBudget"):
            assert matches(d["spec"]["selector"]["matchLabels"], labels), d["__file__"]
        if d["kind"] == "ServiceMonitor":
            service = one(docs, "Service", NAME)
            assert matches(d["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])


def test_monitor_sets_the_job_name_the_alerts_use(
    docs: list[dict[str, Any]], pod: dict[str, Any]
) -> None:
    for monitor in (d for d in docs if d["kind"] == "PodMonitor"):
        job_label = monitor["spec"]["jobLabel"]
        assert pod["metadata"]["labels"][job_label] == NAME
    alerts = (REPO / "deploy" / "prometheus" / "alert_rules.yml").read_text()
    assert f'job="{NAME}"' in alerts


def test_security_context(pod: dict[str, Any], container: dict[str, Any]) -> None:
    psc, csc = pod["spec"]["securityContext"], container["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 10001
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"]["drop"] == ["ALL"]
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert re.search(r"^USER 10001", dockerfile, flags=re.M)


def test_data_dir_is_a_writable_empty_dir(pod: dict[str, Any], container: dict[str, Any]) -> None:
    data_dir = env_of(container)["STREAMS_DATA_DIR"]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == data_dir)
    assert not mount.get("readOnly")
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
    assert "emptyDir" in volume
    assert f"STREAMS_DATA_DIR={data_dir}" in (REPO / "deploy" / "Dockerfile").read_text()


def test_policy_configmap_is_mounted_at_streams_policy_file(
    docs: list[dict[str, Any]], pod: dict[str, Any], container: dict[str, Any]
) -> None:
    policy_file = PurePosixPath(env_of(container)["STREAMS_POLICY_FILE"])
    assert str(policy_file) == "/etc/live-commerce-streams/policy.toml"
    mount = next(m for m in container["volumeMounts"] if policy_file.is_relative_to(m["mountPath"]))
    relative = str(policy_file.relative_to(mount["mountPath"]))
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
    config_map = volume["configMap"]
    if "subPath" in mount:
        key = mount["subPath"]
    else:
        items = {i["path"]: i["key"] for i in config_map.get("items", [])}
        key = items.get(relative, relative)
    cm = one(docs, "ConfigMap", config_map["name"])
    assert key in cm["data"], f"ConfigMap {cm['metadata']['name']} has no key {key}"


def test_policy_configmap_loads_with_the_workers_parser(docs: list[dict[str, Any]]) -> None:
    from streams.policy.policy_file import parse_policy

    cm = one(docs, "ConfigMap", f"{NAME}-policy")
    policy = parse_policy(cm["data"]["policy.toml"], "configmap-policy.yaml")
    assert policy.version


def test_env_sources_exist_and_name_known_settings(
    docs: list[dict[str, Any]], container: dict[str, Any]
) -> None:
    known = set(re.findall(r"STREAMS_[A-Z_]+", (REPO / "streams" / "config.py").read_text()))
    names = set(env_of(container))
    for source in container["envFrom"]:
        if "configMapRef" in source:
            names |= set(one(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            secret = one(docs, "Secret", source["secretRef"]["name"])
            keys = set(secret.get("stringData") or secret.get("data"))
            assert keys == {"STREAMS_BROKER_SASL_USERNAME", "STREAMS_BROKER_SASL_PASSWORD"}
            names |= keys
    assert not names - known, f"settings the worker does not read: {names - known}"


def test_example_secret_is_marked_as_example(docs: list[dict[str, Any]]) -> None:
    secret = one(docs, "Secret")
    assert secret["__file__"] in EXAMPLE_ONLY
    assert all("EXAMPLE" in v for v in secret["stringData"].values())
    assert "EXAMPLE" in (K8S / secret["__file__"]).read_text().splitlines()[0]


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    resources = kustomization["resources"]
    assert len(resources) == len(set(resources))
    for resource in resources:
        assert (K8S / resource).is_file(), resource
    expected = {p.name for p in manifest_files()} - EXAMPLE_ONLY
    assert set(resources) == expected
    assert not EXAMPLE_ONLY & set(resources), "example credentials must not be applied"


def test_kustomize_build() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed (optional: renders the kustomization)")
    proc = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    rendered = list(yaml.safe_load_all(proc.stdout))
    kinds = sorted(d["kind"] for d in rendered)
    assert "Deployment" in kinds and "Secret" not in kinds
    assert all(
        d["metadata"].get("namespace") == "live-commerce"
        for d in rendered
        if d["kind"] != "Namespace"
    )
