"""`python -m streams.policy` without Kafka: validate, diff, help, exit codes (#14 groundwork)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from streams.policy.__main__ import run
from streams.resources import default_policy_path
from tests.unit.policy_docs import doc_dict

ROOT = Path(__file__).parents[2]


def write(tmp_path: Path, name: str, **changes: object) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc_dict(**changes)), "utf-8")
    return str(path)


def test_validate_valid_json_and_toml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["validate", write(tmp_path, "p.json")]) == 0
    toml = tmp_path / "p.toml"
    toml.write_text(
        'effective_from = 2020-08-20T00:00:00+08:00\nmode = "enforced"\n'
        + default_policy_path().read_text("utf-8"),
        "utf-8",
    )
    assert run(["validate", str(toml)]) == 0
    assert "valid:" in capsys.readouterr().out


def test_validate_invalid_is_one_line_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["validate", write(tmp_path, "p.json", mode="dry_run")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mode: must be one of enforced, shadow" in err
    assert run(["validate", str(tmp_path / "missing.json")]) == 1
    assert "cannot read" in capsys.readouterr().err
    # The packaged policy file is not a document: it lacks effective_from and mode.
    assert run(["validate", str(default_policy_path())]) == 1
    assert "effective_from: missing" in capsys.readouterr().err


def test_diff_in_words(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    new = doc_dict(version="v2", own_shop_sources=["douyin_shop", "douyin_mall"], mode="shadow")
    new["rules"]["third-party-cart-banned"]["effective_from"] = "2020-10-20T00:00:00+08:00"
    new["rules"]["xingtu-service-fee"]["third_party_rate_bps"] = 1500
    path = tmp_path / "new.json"
    path.write_text(json.dumps(new), "utf-8")
    assert run(["diff", str(default_policy_path()), str(path)]) == 0
    out = capsys.readouterr().out
    assert "own-shop sources added" in out and "douyin_mall" in out
    assert "rule third-party-cart-banned takes effect later: 2020-10-19T16:00:00.000Z" in out
    assert "third-party rate changes from 2000 bps (20 %) to 1500 bps (15 %)" in out
    assert "xingtu-match-required" not in out
    old = write(tmp_path, "old.json")
    assert run(["diff", old, str(path)]) == 0
    assert "mode changes from enforced to shadow" in capsys.readouterr().out
    assert run(["diff", old, old]) == 0
    assert capsys.readouterr().out.strip() == "no changes"
    assert run(["diff", old, write(tmp_path, "bad.json", mode=3)]) == 1


def test_bad_setting_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMS_BROKER_SECURITY_PROTOCOL", "BOGUS")
    assert run(["list"]) == 2
    assert "STREAMS_BROKER_SECURITY_PROTOCOL" in capsys.readouterr().err
    # publish validates first: an invalid document is 1 even with bad settings.
    assert run(["publish", write(tmp_path, "p.json", mode="x")]) == 1


def test_help_documents_exit_codes() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "streams.policy", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for needle in ("validate", "diff", "publish", "list", "exit codes", "0  ", "1  ", "2  "):
        assert needle in out
    usage = subprocess.run(
        [sys.executable, "-m", "streams.policy"], cwd=ROOT, capture_output=True, text=True
    )
    assert usage.returncode == 2
