"""`python -m streams.policy publish` and `list` against the real local broker (#14 groundwork)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.integration.harness import BROKER, unique
from tests.unit.policy_docs import doc_dict

ROOT = Path(__file__).parents[2]


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.policy", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "STREAMS_BROKER": BROKER, "STREAMS_STARTUP_TIMEOUT": "5", **env},
    )


def test_publish_then_list(tmp_path: Path) -> None:
    prefix = unique("")
    v1 = tmp_path / "v1.json"
    v1.write_text(json.dumps(doc_dict(version="v1")), "utf-8")
    v2 = tmp_path / "v2.json"
    v2.write_text(
        json.dumps(doc_dict(version="v2", effective_from="2020-10-01T00:00:00+08:00")), "utf-8"
    )
    s1 = tmp_path / "s1.json"
    s1.write_text(json.dumps(doc_dict(version="s1", mode="shadow")), "utf-8")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc_dict(version="v3", mode="maybe")), "utf-8")

    env = {"STREAMS_TOPIC_PREFIX": prefix}
    r = cli("list", **env)
    assert r.returncode == 0, r.stderr
    assert "does not exist" in r.stderr
    for path in (v1, v2, s1):
        r = cli("publish", str(path), **env)
        assert r.returncode == 0, r.stderr
        assert f"to {prefix}policies partition 0" in r.stdout
    r = cli("publish", str(bad), **env)
    assert r.returncode == 1 and r.stderr.startswith("invalid:")

    r = cli("list", "--at", "2020-09-15T00:00:00+08:00", **env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].endswith("enforced v1")
    assert any(line.startswith("v1 ") and "[ENFORCED NOW]" in line for line in lines)
    assert any(line.startswith("v2 ") and "[scheduled]" in line for line in lines)
    assert any(line.startswith("s1 ") and "[shadow, running]" in line for line in lines)
    r = cli("list", **env)  # now (wall clock): v2 is the latest enforced
    assert r.returncode == 0 and r.stdout.splitlines()[0].endswith("enforced v2"), r.stdout

    # Re-publishing an id replaces it: s1 promoted to enforced.
    s1.write_text(json.dumps(doc_dict(version="s1", mode="enforced")), "utf-8")
    assert cli("publish", str(s1), **env).returncode == 0
    r = cli("list", "--at", "2020-09-15T00:00:00+08:00", **env)
    assert r.stdout.splitlines()[0].endswith("enforced v1")  # tie on effective_from: "v1" > "s1"
    assert any(line.startswith("s1 ") and "mode=enforced" in line for line in r.stdout.splitlines())

    # --topic overrides the prefix default.
    other = unique("policies-")
    assert cli("publish", str(v1), "--topic", other).returncode == 0
    r = cli("list", "--topic", other, "--at", "2020-09-01T00:00:00Z")
    assert r.returncode == 0 and r.stdout.splitlines()[0].endswith("enforced v1")


def test_unreachable_broker_is_one_line_exit_2(tmp_path: Path) -> None:
    v1 = tmp_path / "v1.json"
    v1.write_text(json.dumps(doc_dict(version="v1")), "utf-8")
    r = cli("publish", str(v1), STREAMS_BROKER="kafka://127.0.0.1:1", STREAMS_STARTUP_TIMEOUT="2")
    assert r.returncode == 2
    assert r.stderr.startswith("error: cannot reach Kafka") and r.stderr.count("\n") == 1, r.stderr
