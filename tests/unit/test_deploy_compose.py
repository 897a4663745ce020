"""Static checks of docker-compose.yml, deploy/Dockerfile, .dockerignore and deploy/topic-init.sh.
No Docker engine is needed: the files are parsed, not run."""

from __future__ import annotations

import fnmatch
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.names import INPUT_TOPICS, OUTPUT_TOPICS, POLICIES

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
TOPIC_INIT = REPO / "deploy" / "topic-init.sh"
POM = REPO / "deploy" / "local-kafka" / "pom.xml"

SERVICES = {"kafka", "topic-init", "worker", "loadgen", "prometheus", "grafana"}
TOPICS = (*INPUT_TOPICS, *OUTPUT_TOPICS, POLICIES)  # every topic the worker reads or writes
WEB_PORT = 6066


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def kafka_version() -> str:
    m = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", POM.read_text())
    assert m, "no <kafka.version> in deploy/local-kafka/pom.xml"
    return m.group(1).strip()


def streams_env_names() -> set[str]:
    """STREAMS_* variables the worker reads (streams/config.py)."""
    return set(re.findall(r"STREAMS_[A-Z_]+", (REPO / "streams" / "config.py").read_text()))


# ----------------------------------------------------------------------------- Dockerfile


def dockerfile_stages() -> list[tuple[str, list[tuple[str, str]]]]:
    """[(FROM line, [(INSTRUCTION, arguments), ...]), ...] with continuations joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[tuple[str, list[tuple[str, str]]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stages.append((args.strip(), []))
        else:
            assert stages, f"{instruction} before FROM"
            stages[-1][1].append((instruction, args.strip()))
    return stages


def final_stage() -> list[tuple[str, str]]:
    return dockerfile_stages()[-1][1]


def test_dockerfile_is_multi_stage_with_a_slim_final_stage() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    for from_line, _ in stages:
        assert from_line.split()[0] == "python:3.11-slim", from_line
    assert any(i == "RUN" and "pip install ." in a for i, a in stages[0][1]), (
        "the build stage installs the project"
    )


def test_dockerfile_final_stage_has_no_build_tools() -> None:
    for instruction, args in final_stage():
        if instruction == "RUN":
            for tool in ("gcc", "build-essential", "apt-get install", "pip install", "g++"):
                assert tool not in args, f"final stage runs {tool!r}: {args}"
        if instruction == "COPY" and "--from=" in args:
            assert "/opt/venv" in args, f"unexpected copy from the build stage: {args}"


def test_dockerfile_runs_as_non_root() -> None:
    users = [a for i, a in final_stage() if i == "USER"]
    assert users, "no USER in the final stage"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert user == "10001"
    assert any(i == "RUN" and "--uid 10001" in a for i, a in final_stage())
    data_dir = "/var/lib/live-commerce-streams"
    assert any(i == "RUN" and f"chown 10001:10001 {data_dir}" in a for i, a in final_stage())


def test_dockerfile_runtime_settings() -> None:
    stage = final_stage()
    env = " ".join(a for i, a in stage if i == "ENV")
    # the installed package carries the schemas (streams.schemas): no folder, no override
    assert "STREAMS_SCHEMA_DIR" not in env
    assert not any(i == "COPY" and "schemas" in a for i, a in stage)
    assert "STREAMS_DATA_DIR=/var/lib/live-commerce-streams" in env
    assert f"STREAMS_WEB_PORT={WEB_PORT}" in env
    assert ("WORKDIR", "/app") in stage
    assert ("EXPOSE", str(WEB_PORT)) in stage
    (healthcheck,) = [a for i, a in stage if i == "HEALTHCHECK"]
    assert "urllib" in healthcheck and "/livez" in healthcheck
    (cmd,) = [a for i, a in stage if i == "CMD"]
    assert yaml.safe_load(cmd) == ["faust", "-A", "streams", "worker", "-l", "info"]
    unknown = set(re.findall(r"(STREAMS_[A-Z_]+)=", env)) - streams_env_names()
    assert not unknown, f"ENV the worker does not read: {unknown}"


def _copy_sources() -> list[str]:
    out = []
    for _, instructions in dockerfile_stages():
        for instruction, args in instructions:
            if instruction in ("COPY", "ADD") and "--from=" not in args:
                parts = [p for p in shlex.split(args) if not p.startswith("--")]
                out.extend(parts[:-1])
    return out


def test_dockerfile_copies_what_the_build_needs() -> None:
    sources = _copy_sources()
    assert "pyproject.toml" in sources
    assert any(s.rstrip("/") == "streams" for s in sources)
    assert any(s.rstrip("/") == "schemas" for s in sources)
    # `pip install .` needs schemas/ (pyproject maps it to the package streams.schemas): it is
    # copied into the build stage, beside streams/, before the install runs
    build = dockerfile_stages()[0][1]
    install = next(n for n, (i, a) in enumerate(build) if i == "RUN" and "pip install ." in a)
    copied = {
        src.rstrip("/"): n
        for n, (i, a) in enumerate(build)
        if i == "COPY" and "--from=" not in a
        for src in shlex.split(a)[:-1]
    }
    workdir = [a for i, a in build[:install] if i == "WORKDIR"][-1]
    for needed in ("pyproject.toml", "streams", "schemas"):
        assert copied.get(needed, install) < install, f"{needed} is not copied before pip install"
    assert ("COPY", "schemas/ ./schemas/") in build, "schemas/ must land beside streams/"
    assert ("COPY", "streams/ ./streams/") in build
    assert workdir == "/src"
    readme = tomllib.loads((REPO / "pyproject.toml").read_text())["project"].get("readme")
    if isinstance(readme, str):
        assert readme in sources, f"pyproject's readme {readme} is not copied: the build needs it"


def test_dockerfile_copy_sources_exist_and_are_not_dockerignored() -> None:
    ignored = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for source in _copy_sources():
        path = source.rstrip("/")
        assert (REPO / path).exists(), f"COPY source {source} does not exist in the repository"
        for pattern in ignored:
            assert not fnmatch.fnmatch(path, pattern.lstrip("/")), (
                f"COPY source {source} is excluded by .dockerignore pattern {pattern}"
            )


def test_dockerignore_excludes_local_state() -> None:
    patterns = set(DOCKERIGNORE.read_text().split())
    for needed in (".git", ".venv", "deploy/local-kafka/.cache", "deploy/local-kafka/.run"):
        assert needed in patterns, needed
    assert any("__pycache__" in p for p in patterns)
    assert any(".pytest_cache" in p for p in patterns)


# ----------------------------------------------------------------------------- compose


def test_compose_has_the_services(services: dict[str, Any]) -> None:
    assert set(services) >= SERVICES, SERVICES - set(services)


def test_bind_mounted_host_paths_exist(compose: dict[str, Any], services: dict[str, Any]) -> None:
    named = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes", []):
            if isinstance(volume, dict):
                source, kind = volume.get("source"), volume.get("type")
            else:
                source = volume.split(":")[0]
                kind = "bind" if source.startswith((".", "/", "~")) else "volume"
            if kind == "bind":
                assert (REPO / source).exists(), f"{name}: bind-mounted {source} does not exist"
            else:
                assert source in named, f"{name}: volume {source} not declared"


def test_kafka_image_matches_the_local_kafka_version(services: dict[str, Any]) -> None:
    version = kafka_version()
    assert services["kafka"]["image"] == f"apache/kafka:{version}"
    assert services["topic-init"]["image"] == f"apache/kafka:{version}"


def test_kafka_is_a_single_node_kraft_broker(services: dict[str, Any]) -> None:
    env = {k: str(v) for k, v in services["kafka"]["environment"].items()}
    assert env["KAFKA_NODE_ID"] == "1"
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert "CONTROLLER" in env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env[key] == "1", key
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"
    test = " ".join(services["kafka"]["healthcheck"]["test"])
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in test


def test_topic_init_runs_the_mounted_script_after_kafka(services: dict[str, Any]) -> None:
    init = services["topic-init"]
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    mount = next(v for v in init["volumes"] if v.startswith("./deploy/topic-init.sh:"))
    target = mount.split(":")[1]
    assert mount.endswith(":ro")
    assert target in init["entrypoint"] or target in init.get("command", [])
    assert str(init["environment"]["STREAMS_TOPIC_PARTITIONS"]).endswith("4}")


def test_topic_init_script() -> None:
    text = TOPIC_INIT.read_text()
    assert text.startswith("#!/usr/bin/env bash")
    subprocess.run(["bash", "-n", str(TOPIC_INIT)], check=True)
    assert "/opt/kafka/bin/kafka-topics.sh" in text
    assert "--create --if-not-exists" in text
    assert "retention.ms=" in text
    # inputs are kept forever unless told otherwise
    retention = r'input_retention="\$\{INPUT_RETENTION_MS:-\$\{STREAMS_TOPIC_RETENTION_MS:--1}}"'
    assert re.search(retention, text)
    assert re.search(r'partitions="\$\{STREAMS_TOPIC_PARTITIONS:-4}"', text)
    for topic in TOPICS:
        assert re.search(rf"\b{re.escape(topic)}\b", text), topic
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", str(TOPIC_INIT)], check=True)


def test_worker_service(services: dict[str, Any]) -> None:
    worker = services["worker"]
    assert worker["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile"}
    assert (REPO / worker["build"]["dockerfile"]).is_file()
    assert worker["depends_on"]["topic-init"]["condition"] == "service_completed_successfully"
    env = {k: str(v) for k, v in worker["environment"].items()}
    assert env["STREAMS_BROKER"] == "kafka://kafka:9092"
    assert env["STREAMS_WEB_PORT"] == str(WEB_PORT)
    unknown = set(env) - streams_env_names()
    assert not unknown, f"worker env the worker does not read: {unknown}"
    # the web port: compose maps what the image exposes and the worker listens on
    container_ports = {int(str(p).split(":")[-1]) for p in worker["ports"]}
    assert WEB_PORT in container_ports
    exposed = {int(a) for i, a in final_stage() if i == "EXPOSE"}
    assert container_ports <= exposed
    data_mount = next(v for v in worker["volumes"] if v.startswith("worker-data:"))
    assert data_mount.split(":")[1] == env["STREAMS_DATA_DIR"]
    assert worker.get("stop_grace_period") == "60s"


def test_loadgen_is_an_optional_profile(services: dict[str, Any]) -> None:
    loadgen = services["loadgen"]
    assert loadgen["profiles"] == ["load"]
    assert loadgen["image"] == services["worker"]["image"]
    command = loadgen["command"]
    command = command if isinstance(command, list) else shlex.split(command)
    assert command[:3] == ["python", "-m", "streams.loadgen"]
    assert command[command.index("--rate") + 1] == "200"
    assert command[command.index("--duration") + 1] == "600"
    assert command[command.index("--broker") + 1] == "kafka://kafka:9092"
    for name in SERVICES - {"loadgen"}:
        assert not services[name].get("profiles"), f"{name} must start by default"


def test_prometheus_service_loads_deploy_prometheus(services: dict[str, Any]) -> None:
    prom = services["prometheus"]
    assert prom["image"].startswith("prom/prometheus:")
    assert "./deploy/prometheus:/etc/prometheus:ro" in prom["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]
    assert any(str(p).endswith("9090") for p in prom["ports"])
    config = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "live-commerce-streams")
    target = job["static_configs"][0]["targets"][0]
    assert target == f"worker:{WEB_PORT}"


def test_grafana_service(services: dict[str, Any]) -> None:
    grafana = services["grafana"]
    assert grafana["image"].startswith("grafana/grafana")
    env = {k: str(v) for k, v in grafana["environment"].items()}
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert any(str(p).endswith("3000") for p in grafana["ports"])
