"""`python -m bench` runs end to end on a few hundred events: every system completes with the
outputs the reference model expects, and the results JSON has its keys. No timing assertions:
the figures of so small a run mean nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.integration.harness import BROKER, REPO


def test_bench_smoke(tmp_path: Path) -> None:
    env = {**os.environ, "STREAMS_BENCH_BROKER": BROKER}
    proc = subprocess.run(
        [
            sys.executable, "-m", "bench",
            "--events", "600", "--partitions", "2", "--repeat", "1",
            "--skip-scaling", "--latency-seconds", "3", "--out", str(tmp_path),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert "worker / baseline" in proc.stdout

    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1, files
    data = json.loads(files[0].read_text())
    for key in ("ok", "machine", "versions", "parameters", "summary", "runs", "latency"):
        assert key in data, key
    assert data["ok"] is True
    assert {"nproc", "cpu_model", "memory_mib"} <= set(data["machine"])
    assert {"python", "faust", "aiokafka", "orjson", "kafka"} <= set(data["versions"])
    assert data["parameters"]["events"] == 600

    runs = {r["system"]: r for r in data["runs"]}
    assert set(runs) == {"baseline", "worker", "quix"}
    for run in runs.values():
        assert run["ok"] is True, run
        assert run["completeness"]["ok"] is True
        assert run["completeness"]["missing"] == 0
        assert run["completeness"]["duplicated"] == 0
        assert run["events"] == 600
        assert run["events_per_s"] > 0
        assert len(run["segments"]) == 1  # one phase: tasks and sales together
    assert runs["worker"]["peak_rss_kib"][0] > 0

    summary = data["summary"]
    for key in (
        "baseline_events_per_s",
        "worker_events_per_s",
        "ratio_worker_to_baseline",
        "worker_peak_rss_mib",
        "latency",
    ):
        assert key in summary, key
    assert summary["baseline_ok"] == "1/1"
    assert summary["worker_ok"] == "1/1"

    latency = data["latency"]
    assert latency["ok"] is True
    assert latency["outputs"] > 0
    assert latency["p50_ms"] is not None and latency["p99_ms"] is not None
