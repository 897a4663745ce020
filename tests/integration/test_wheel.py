"""The package as a user gets it: build the wheel, install it into a fresh venv (its dependencies
from the wheel's metadata, not from this venv), then from a directory outside the checkout run
`faust -A streams worker` against the local broker and see an event decided, and run
`python -m streams.loadgen --help`. Nothing here skips: a missing tool or file fails the test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration import events
from tests.integration.harness import (
    REPO,
    Worker,
    consume_all,
    event_record,
    produce,
    unique,
)

# What `pip install .` needs from the checkout (the Dockerfile's build stage copies the same).
SOURCES = ("pyproject.toml", "README.md", "streams", "schemas")
SCHEMAS = sorted(p.name for p in (REPO / "schemas").glob("*.schema.json"))


@dataclass
class Installed:
    wheel: Path
    venv: Path
    outside: Path  # an empty directory outside the checkout: the cwd of everything run here

    @property
    def bin(self) -> Path:
        return self.venv / "bin"


def clean_env() -> dict[str, str]:
    """This environment without anything that would point Python at the checkout or this venv."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("STREAMS_")}


def run(cmd: list[str], cwd: Path, timeout: float) -> str:
    proc = subprocess.run(
        cmd, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        output = f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}:\n{output}", pytrace=False)
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    work = tmp_path_factory.mktemp("wheel")
    # Build from a copy: setuptools builds in the source tree (build/, *.egg-info), and the
    # checkout is shared; the copy also proves that SOURCES is all the build needs.
    src = work / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.py[cod]", "*.egg-info", "build")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=ignore)
        else:
            shutil.copy2(REPO / name, src / name)
    dist = work / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(dist), str(src)],
        cwd=work, timeout=300)
    (wheel,) = dist.glob("live_commerce_streams-*.whl")
    venv = work / "venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=work, timeout=120)
    run([str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
         str(wheel)], cwd=work, timeout=900)
    outside = work / "elsewhere"
    outside.mkdir()
    return Installed(wheel, venv, outside)


def test_wheel_holds_every_module_the_schemas_and_the_policy(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "streams").rglob("*.py")}
    missing = sorted(modules - names)
    assert not missing, (
        f"not in the wheel: {missing}; list their package in [tool.setuptools] packages "
        "(pyproject.toml)"
    )
    for schema in SCHEMAS:
        assert f"streams/schemas/{schema}" in names
    assert "streams/policy/default_policy.toml" in names
    assert not any(n.startswith("schemas/") for n in names), "a top-level `schemas` package"


def test_installed_package_finds_its_schemas_and_policy(installed: Installed) -> None:
    out = run(
        [str(installed.bin / "python"), "-c",
         "import json, sysconfig, streams, streams.resources as r\n"
         "from streams.config import Settings\n"
         "print(json.dumps({'purelib': sysconfig.get_paths()['purelib'],"
         " 'streams': streams.__file__, 'schema_dir': str(r.schema_dir()),"
         " 'policy': str(r.default_policy_path()),"
         " 'settings_schema_dir': str(Settings().schema_dir)}))"],
        cwd=installed.outside, timeout=60,
    )
    found = json.loads(out)
    site = Path(found["purelib"])
    assert site.is_relative_to(installed.venv)
    assert Path(found["streams"]).is_relative_to(site), "streams imported from outside the venv"
    schema_dir = Path(found["schema_dir"])
    assert schema_dir == site / "streams" / "schemas"
    assert sorted(p.name for p in schema_dir.glob("*.schema.json")) == SCHEMAS
    assert Path(found["policy"]) == site / "streams" / "policy" / "default_policy.toml"
    assert Path(found["settings_schema_dir"]) == schema_dir, "the worker's default schema dir"


def test_installed_loadgen_runs(installed: Installed) -> None:
    out = run([str(installed.bin / "python"), "-m", "streams.loadgen", "--help"],
              cwd=installed.outside, timeout=60)
    assert out.startswith("usage:")


@dataclass
class InstalledWorker(Worker):
    """harness.Worker, but the installed venv's `faust`, run outside the checkout."""

    installed: Installed | None = None

    def env(self) -> dict[str, str]:
        env = super().env()
        for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"):
            env.pop(name, None)
        return env

    def command(self) -> list[str]:
        assert self.installed is not None
        faust = self.installed.bin / "faust"
        assert faust.is_file(), f"the wheel installed no `faust` into {self.installed.bin}"
        return [str(faust), "-A", "streams", "worker", "-l", "info"]

    def cwd(self) -> Path:
        assert self.installed is not None
        return self.installed.outside

    def start(self, wait_ready: bool = True, timeout: float = 90.0) -> Worker:
        return super().start(wait_ready, timeout)


async def test_installed_worker_decides_an_event(installed: Installed, tmp_path: Path) -> None:
    prefix = unique("")
    worker = InstalledWorker(
        app_id=unique("wheel"), prefix=prefix, data_dir=tmp_path / "data", installed=installed
    )
    try:
        worker.start()  # creates the topics, so the input has the worker's partition count
        # A third-party product in a live-room cart after 2020-10-09: banned, whatever the task.
        cart_add = events.cart_add("anchor-wheel", "sku-wheel", "taobao",
                                   "2020-10-10T20:00:00+08:00", task_id="xt-wheel")
        await produce([event_record(prefix + "cart-adds", cart_add, events.ts(cart_add))])
        got = await consume_all(
            [prefix + "rejections"],
            until=lambda rs: any(r.json()["event_id"] == cart_add["event_id"] for r in rs),
            idle=0.5,
        )
        rejections = [r.json() for r in got]
        assert [(r["event_id"], r["reason"]) for r in rejections] == [
            (cart_add["event_id"], "THIRD_PARTY_CART_BANNED")
        ], worker.tail()
    finally:
        code = worker.stop(timeout=30)
    assert code == 0, f"worker exited {code} on SIGTERM:\n{worker.tail()}"
