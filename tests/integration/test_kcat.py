"""An independent client (kcat, librdkafka) produces the input and reads the outputs."""

from __future__ import annotations

import shutil
import subprocess
import time

import orjson
import pytest

from tests.integration import events as ev
from tests.integration.harness import BOOTSTRAP, Worker, unique

pytestmark = pytest.mark.integration


def kcat(*args: str, data: bytes | None = None, timeout: float = 60) -> bytes:
    exe = shutil.which("kcat")
    assert exe, "kcat is missing: install Debian's kcat package (.ci/run does)"
    return subprocess.run(
        [exe, "-b", BOOTSTRAP, *args], input=data, capture_output=True, check=True, timeout=timeout
    ).stdout


def test_kcat_in_kcat_out(make_worker) -> None:
    w: Worker = make_worker().start()
    p, a = w.prefix, unique("anchor")
    banned = ev.cart_add(a, "sku", "pinduoduo", "2020-11-11T11:11:11+08:00")
    fine = ev.cart_add(a, "sku", "douyin_shop", "2020-11-11T11:11:11+08:00")
    # kcat's default partitioner is not Java's murmur2; the worker re-routes by anchor_id anyway.
    lines = b"".join(a.encode() + b"\t" + orjson.dumps(e) + b"\n" for e in (banned, fine))
    kcat("-P", "-t", p + "cart-adds", "-K", "\t", data=lines)
    # -e ends at the topic's end, which may come before the worker wrote: poll for the rejection.
    read_one = (
        "-C",
        "-t",
        p + "rejections",
        "-c",
        "1",
        "-e",
        "-J",
        "-o",
        "beginning",
        "-X",
        "isolation.level=read_committed",
    )
    deadline = time.monotonic() + 60
    out = kcat(*read_one)
    while not out.strip() and time.monotonic() < deadline:
        time.sleep(0.5)
        out = kcat(*read_one)
    env = orjson.loads(out.splitlines()[0])
    doc = orjson.loads(env["payload"])
    assert env["key"] == a
    assert doc["rejection_id"] == f"rej:{banned['event_id']}"
    assert doc["reason"] == "THIRD_PARTY_CART_BANNED"
    everything = kcat(
        "-C",
        "-t",
        p + "rejections",
        "-e",
        "-q",
        "-o",
        "beginning",
        "-X",
        "isolation.level=read_committed",
    )
    assert len(everything.splitlines()) == 1, "the douyin_shop cart-add must not be rejected"
