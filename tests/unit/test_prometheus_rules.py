"""Static checks of deploy/prometheus: promtool validates the config and rules and runs the rule
unit tests in deploy/prometheus/tests/. No Prometheus server or broker is needed, only `promtool`
(Debian package `prometheus`)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "deploy" / "prometheus"
CONFIG = PROM_DIR / "prometheus.yml"
RECORDING = PROM_DIR / "recording_rules.yml"
ALERTS = PROM_DIR / "alert_rules.yml"
RULE_TESTS = sorted((PROM_DIR / "tests").glob("*.yml"))

JOB = "live-commerce-streams"
REQUIRED_ALERTS = {
    "LiveCommerceWorkerDown",
    "LiveCommerceConsumerLagGrowing",
    "LiveCommerceDeadLetters",
    "LiveCommerceRejectionRateSpike",
    "LiveCommerceDecisionLatencyHigh",
    "LiveCommerceProducerSendErrors",
    "LiveCommercePartitionsNotReady",
}
REQUIRED_RECORDS = {
    "livecommerce:events:rate1m",
    "livecommerce:rejections:rate1m",
    "livecommerce:fee_fen:rate5m",
    "livecommerce:processing_seconds:p50",
    "livecommerce:processing_seconds:p99",
    "livecommerce:event_age_seconds:p50",
    "livecommerce:event_age_seconds:p99",
    "livecommerce:dead_letters:rate5m",
    "livecommerce:rejection_ratio:rate5m",
    "livecommerce:consumer_lag",
}
SEVERITIES = {"critical", "warning", "info"}


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found: install Debian's `prometheus` package "
            "(apt-get install -y prometheus), which CI installs too"
        )
    return path


def run_promtool(promtool: str, *args: str | Path) -> None:
    proc = subprocess.run(
        [promtool, *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, (
        f"promtool {' '.join(map(str, args))} exited {proc.returncode}\n"
        f"{proc.stdout}\n{proc.stderr}"
    )


def rules(path: Path) -> list[dict]:
    doc = yaml.safe_load(path.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_promtool_check_config(promtool: str) -> None:
    run_promtool(promtool, "check", "config", CONFIG)


def test_promtool_check_rules(promtool: str) -> None:
    run_promtool(promtool, "check", "rules", RECORDING, ALERTS)


def test_promtool_rule_unit_tests(promtool: str) -> None:
    assert RULE_TESTS, "no promtool rule tests in deploy/prometheus/tests/"
    run_promtool(promtool, "test", "rules", *RULE_TESTS)


def test_scrape_config_for_the_worker() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    worker = jobs[JOB]
    assert worker["scrape_interval"] == "5s"
    assert worker.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for sc in worker["static_configs"] for t in sc["targets"]]
    assert targets == ["worker:6066"]
    # rule_files are relative to the config file and all exist
    assert sorted(config["rule_files"]) == ["alert_rules.yml", "recording_rules.yml"]
    for name in config["rule_files"]:
        assert (PROM_DIR / name).is_file(), name


def test_required_recording_rules_exist() -> None:
    records = [r["record"] for r in rules(RECORDING)]
    assert len(records) == len(set(records)), "duplicate recording rule names"
    assert set(records) >= REQUIRED_RECORDS, REQUIRED_RECORDS - set(records)
    assert all(r.startswith("livecommerce:") for r in records)


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    total = 0.0
    for amount, unit in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", duration):
        total += int(amount) * units[unit]
    return total


def test_recording_rule_windows_give_data_after_a_short_run() -> None:
    """An e2e test expects every recording rule to return data soon after the worker has
    processed some events: windows of 1m..5m (two scrapes suffice) and no subqueries."""
    for rule in rules(RECORDING):
        windows = re.findall(r"\[([^\]]+)\]", rule["expr"])
        for window in windows:
            assert ":" not in window, f"{rule['record']}: subquery [{window}]"
            assert 60 <= _seconds(window) <= 300, f"{rule['record']}: window [{window}]"


def test_required_alerts_exist_with_labels_and_annotations() -> None:
    alerts = {r["alert"]: r for r in rules(ALERTS)}
    assert set(alerts) >= REQUIRED_ALERTS, REQUIRED_ALERTS - set(alerts)
    readme = (PROM_DIR / "README.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", readme, flags=re.M)
    }
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert annotations.get("summary") and annotations.get("description"), name
        runbook = annotations["runbook_url"]
        path, _, anchor = runbook.partition("#")
        assert (REPO / path).is_file(), f"{name}: runbook {path} missing"
        assert anchor in anchors, f"{name}: no section #{anchor} in {path}"


def test_worker_down_alert_covers_down_and_absent_targets() -> None:
    expr = {r["alert"]: r for r in rules(ALERTS)}["LiveCommerceWorkerDown"]["expr"]
    assert f'up{{job="{JOB}"}} == 0' in expr
    assert f'absent(up{{job="{JOB}"}})' in expr


def test_send_errors_alert_counts_partition_resets() -> None:
    """The engine's transactional producers are not Faust's: a failed send aborts the
    partition's transaction and resets it, and faust_total_error_messages_sent_total stays 0."""
    alerts = {r["alert"]: r for r in rules(ALERTS)}
    assert "livecommerce_partition_resets_total" in alerts["LiveCommerceProducerSendErrors"]["expr"]
    not_ready = alerts["LiveCommercePartitionsNotReady"]
    assert "livecommerce_partitions_not_ready" in not_ready["expr"]
    assert _seconds(not_ready["for"]) == 300


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        doc = yaml.safe_load(path.read_text())
        for test in doc.get("tests", []):
            for case in test.get("alert_rule_test", []):
                (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    alerts = {r["alert"] for r in rules(ALERTS)}
    assert alerts <= fired, f"alerts never shown firing: {alerts - fired}"
    assert alerts <= quiet, f"alerts never shown quiet: {alerts - quiet}"


def test_rule_tests_cover_every_recording_rule() -> None:
    tested: set[str] = set()
    for path in RULE_TESTS:
        doc = yaml.safe_load(path.read_text())
        for test in doc.get("tests", []):
            for case in test.get("promql_expr_test", []):
                tested.update(re.findall(r"livecommerce:[a-z0-9_:]+", case["expr"]))
    records = {r["record"] for r in rules(RECORDING)}
    untested = records - tested
    assert not untested, f"recording rules without a promtool test: {untested}"
