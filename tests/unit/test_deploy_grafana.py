"""Static checks of deploy/grafana and of every metric name the dashboard and the Prometheus rules
use: each must be a metric the worker (streams.metrics) or Faust's Prometheus sensor exposes, or a
recording rule.

`dashboard_exprs(path)` and `substitute_grafana_vars(expr)` are plain functions for reuse: an
end-to-end test can evaluate the dashboard's queries against a real Prometheus after substituting
Grafana's variables (`$__rate_interval` -> `1m`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "live-commerce-streams.json"
PROM_DIR = REPO / "deploy" / "prometheus"
RULE_FILES = (PROM_DIR / "recording_rules.yml", PROM_DIR / "alert_rules.yml")

GRAFANA_VARS = {
    "$__rate_interval": "1m",
    "${__rate_interval}": "1m",
    "$__interval": "1m",
    "${__interval}": "1m",
    "$__range": "5m",
    "${__range}": "5m",
}

# The metric families the brief promises (exposed series names derive from these by type).
CONTRACT_FAMILIES = {
    "livecommerce_events": "counter",
    "livecommerce_rejections": "counter",
    "livecommerce_fee_fen": "counter",
    "livecommerce_processing_seconds": "histogram",
    "livecommerce_event_age_seconds": "histogram",
    "livecommerce_key_mismatch": "counter",
    "livecommerce_build_info": "gauge",
    "livecommerce_late_records": "counter",
    "livecommerce_commit_seconds": "histogram",
    "livecommerce_partition_resets": "counter",
    "livecommerce_partitions_not_ready": "gauge",
    # fed by the batch engine (streams/runtime/consumer.py, streams/compose.py)
    "faust_messages_received": "counter",
    "faust_messages_received_per_topic": "counter",
    "faust_topic_partition_end_offset": "gauge",
    "faust_topic_partition_offset_commited": "gauge",
    # fed by Faust itself (rebalances)
    "faust_total_rebalances": "gauge",
    "faust_total_rebalances_recovering": "gauge",
    "faust_rebalance_done_latency": "histogram",
    "faust_assign_latency": "histogram",
}
# Families Faust's sensor still registers (so they are exposed) but nothing feeds since the batch
# engine replaced Faust's per-record path and producer: a query on them shows a flat zero or no
# data. Replacements: livecommerce_partition_resets_total for send errors,
# livecommerce_commit_seconds for commit latency, livecommerce_events_total for events.
NOT_FED_FAMILIES = {
    "faust_total_error_messages_sent": "counter",
    "faust_producer_send_latency": "histogram",
    "faust_producer_error_send_latency": "histogram",
    "faust_total_sent_messages": "counter",
    "faust_topic_messages_sent": "counter",
    "faust_consumer_commit_latency": "histogram",
    "faust_messages_received_per_topics_partition": "gauge",
    "faust_total_events": "counter",
    "faust_total_events_per_stream": "counter",
    "faust_total_active_events": "gauge",
    "faust_active_messages": "gauge",
    "faust_events_runtime_ms": "histogram",
    "faust_table_operations": "counter",
}
# Series Prometheus itself adds to every scrape.
SCRAPE_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}

PROMQL_WORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
    "atan2",
}


# ----------------------------------------------------------------------------- helpers


def substitute_grafana_vars(expr: str) -> str:
    """The expression as Prometheus would receive it from Grafana (rate interval 1m)."""
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    return expr


def dashboard_panels(path: Path = DASHBOARD) -> list[dict[str, Any]]:
    """Every non-row panel, including panels nested in collapsed rows."""
    dashboard = json.loads(Path(path).read_text())
    out: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        if panel.get("type") == "row":
            out.extend(panel.get("panels", []))
        else:
            out.append(panel)
    return out


def dashboard_exprs(path: Path = DASHBOARD) -> list[str]:
    """Every PromQL expression of the dashboard, Grafana variables left in place."""
    return [t["expr"] for p in dashboard_panels(path) for t in p.get("targets", []) if "expr" in t]


def rule_exprs() -> dict[str, str]:
    """rule name -> expression, over recording and alert rules."""
    out: dict[str, str] = {}
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                out[rule.get("record") or rule["alert"]] = rule["expr"]
    return out


def recording_rule_names() -> set[str]:
    doc = yaml.safe_load(RULE_FILES[0].read_text())
    return {r["record"] for g in doc["groups"] for r in g["rules"]}


def metric_names(expr: str) -> set[str]:
    """Metric (or recording rule) names referenced by a PromQL expression."""
    e = substitute_grafana_vars(expr)
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', e)  # string literals
    e = re.sub(r"\{[^}]*\}", " ", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)  # range / subquery windows
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\boffset\s+-?[0-9a-z]+", " ", e)
    names = set()
    for m in re.finditer(r"(?<![A-Za-z0-9_:.])[A-Za-z_:][A-Za-z0-9_:]*", e):
        if m.group(0) in PROMQL_WORDS or e[m.end() :].lstrip().startswith("("):
            continue  # keyword, function or aggregation
        names.add(m.group(0))
    return names


def series_names(families: dict[str, str]) -> set[str]:
    """Exposed series names of prometheus_client metric families (name -> type)."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "gauge": ("",),
        "info": ("_info",),
    }
    return {name + s for name, kind in families.items() for s in suffixes[kind]}


def code_families() -> dict[str, str]:
    """Families the worker registers (streams.metrics) and Faust's sensor (prefix faust_)."""
    from faust.sensors.prometheus import FaustMetrics
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics import MetricWrapperBase

    import streams.metrics

    out: dict[str, str] = {}
    metrics = [o for o in vars(streams.metrics).values() if isinstance(o, MetricWrapperBase)]
    metrics += list(FaustMetrics.create(CollectorRegistry(), "faust"))
    for metric in metrics:
        for family in metric.describe():
            out[family.name] = family.type
    return out


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


# ----------------------------------------------------------------------------- tests


def test_metric_name_extraction() -> None:
    assert metric_names(
        'histogram_quantile(0.99, sum by (topic, le) (rate(a_bucket{x="y"}[$__rate_interval])))'
    ) == {"a_bucket"}
    assert metric_names("sum(x:y:z) / sum(w) > 0.5e3 and on (topic) v offset 5m") == {
        "x:y:z",
        "w",
        "v",
    }
    assert metric_names('sum(up{job="a"}) or vector(0)') == {"up"}


def test_code_exposes_the_contract_metrics() -> None:
    families = code_families()
    for name, kind in CONTRACT_FAMILIES.items():
        assert families.get(name) == kind, (
            f"{name}: expected a {kind}, code has {families.get(name)}"
        )


def test_unfed_faust_families_are_still_registered() -> None:
    """They stay exposed (FaustMetrics.create): the check below is what keeps them out of use."""
    families = code_families()
    for name, kind in NOT_FED_FAMILIES.items():
        assert families.get(name) == kind, name


def test_every_metric_name_used_is_known() -> None:
    known = series_names(code_families()) - series_names(NOT_FED_FAMILIES)
    known |= SCRAPE_SERIES | recording_rule_names()
    used: dict[str, set[str]] = {}
    for expr in dashboard_exprs():
        for name in metric_names(expr):
            used.setdefault(name, set()).add(f"dashboard: {expr}")
    for rule, expr in rule_exprs().items():
        for name in metric_names(expr):
            used.setdefault(name, set()).add(f"rule {rule}")
    unknown = {name: sorted(where) for name, where in used.items() if name not in known}
    assert not unknown, f"unknown metric names: {unknown}"


def test_dashboard_basics(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "live-commerce-streams"
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    assert ds["current"]["value"] == "prometheus"
    # Only Grafana built-ins and $datasource: an e2e test substitutes them and nothing else.
    for expr in dashboard_exprs():
        leftover = re.findall(r"\$\{?\w+", substitute_grafana_vars(expr))
        assert not leftover, f"unsubstituted variables {leftover} in {expr}"


def test_every_panel_has_prometheus_targets(dashboard: dict[str, Any]) -> None:
    panels = dashboard_panels()
    assert len(panels) >= 12
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for panel in panels:
        title = panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        assert panel.get("targets"), f"panel {title!r} has no targets"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), title
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), f"panel {title!r}: target without expr"
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, title


def test_dashboard_covers_the_required_views() -> None:
    exprs = "\n".join(dashboard_exprs())
    titles = " | ".join(p["title"].lower() for p in dashboard_panels())
    for needle in (
        "livecommerce:events:rate1m",
        "livecommerce:rejections:rate1m",
        "livecommerce:fee_fen:rate5m",
        "livecommerce_fee_fen_total",
        "livecommerce:processing_seconds:p50",
        "livecommerce:processing_seconds:p90",
        "livecommerce:processing_seconds:p99",
        "livecommerce:event_age_seconds:p50",
        "livecommerce:event_age_seconds:p99",
        "livecommerce:consumer_lag",
        "livecommerce:dead_letters:rate5m",
        "faust_total_rebalances",
        "livecommerce_key_mismatch_total",
        "livecommerce_commit_seconds_bucket",
        "livecommerce_partition_resets_total",
        "livecommerce_late_records_total",
        "livecommerce_partitions_not_ready",
        "faust_messages_received_per_topic_total",
        "livecommerce_policy_in_force",
        "livecommerce_policy_versions",
        "livecommerce_shadow_disagreements_total",
        "livecommerce_advisories_total",
        "livecommerce_policy_refused_total",
    ):
        assert needle in exprs, needle
    for word in (
        "throughput",
        "rejections",
        "fees",
        "latency",
        "event age",
        "lag",
        "dead letters",
        "rebalances",
        "key mismatches",
        "commit latency",
        "partition resets",
        "late records",
        "partitions not ready",
        "policy version in force",
        "shadow disagreements",
        "advisories",
    ):
        assert word in titles, word


def test_dashboard_exprs_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses every dashboard query (as recording rules of a scratch file)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: install Debian's `prometheus` package")
    rules = [
        {"record": f"dashboard:expr_{i}", "expr": substitute_grafana_vars(expr)}
        for i, expr in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_datasource_provisioning() -> None:
    doc = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (ds,) = doc["datasources"]
    assert ds["type"] == "prometheus"
    assert ds["uid"] == "prometheus"
    assert ds["url"] == "http://prometheus:9090"


def test_dashboard_provisioning_points_at_the_mounted_dashboards() -> None:
    doc = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "dashboards.yml").read_text())
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    path = provider["options"]["path"]
    assert path == "/var/lib/grafana/dashboards"
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{path}:ro" in mounts
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
