"""The worker against a SASL/SCRAM-SHA-256 broker: it authenticates, keeps the password out of its
log and web pages, refuses wrong credentials with one clear line, and binds its web server where
STREAMS_WEB_HOST says. Over TLS (kafka.sh with KAFKA_TLS=1, a self-signed certificate made by the
JDK's keytool): SASL_SSL and SSL with STREAMS_BROKER_SSL_CAFILE, and a certificate the worker does
not trust, or plaintext against the TLS listener, stops start-up with one clear line.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration import events as ev
from tests.integration.harness import Worker, event_record
from tests.integration.private_kafka import (
    PrivateKafka,
    consume_from,
    private_kafka,
    produce_to,
    wait_caught_up,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PASSWORD = "s3cret-Pa55"
USERS = f"streams:{PASSWORD},admin:adm1n-pw"
CLIENT = {
    "security_protocol": "SASL_PLAINTEXT",
    "sasl_mechanism": "SCRAM-SHA-256",
    "sasl_plain_username": "admin",
    "sasl_plain_password": "adm1n-pw",
}


def sasl_env(kafka: PrivateKafka, user: str = "streams", password: str = PASSWORD) -> dict:
    return {
        "STREAMS_BROKER": kafka.broker,
        "STREAMS_BROKER_SASL_MECHANISM": "SCRAM-SHA-256",
        "STREAMS_BROKER_SASL_USERNAME": user,
        "STREAMS_BROKER_SASL_PASSWORD": password,
    }


@pytest.fixture(scope="module")
def sasl_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateKafka]:
    with private_kafka(tmp_path_factory.mktemp("sasl-kafka"), sasl_users=USERS) as kafka:
        yield kafka


def _get(w: Worker, path: str) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{w.web_port}{path}", timeout=10) as r:
            return r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:  # /readyz answers 503 while not ready: still a page
        return e.read().decode(errors="replace")


async def _decides_events(w: Worker, kafka: PrivateKafka, client: dict[str, Any], tag: str) -> None:
    """A Xingtu task, then a paid order (a fee), a banned cart-add (a rejection) and junk (a dead
    letter), through `kafka` with the test's own `client` options; all four decided."""
    p, a = w.prefix, f"anchor-{tag}"
    task = ev.task(a, "sku-1", f"xt-{tag}", "2020-09-01T00:00:00+08:00")
    paid = ev.order(a, "sku-1", "jd", "2020-09-10T00:00:00+08:00", 50_000, task_id=f"xt-{tag}")
    banned = ev.cart_add(a, "sku-2", "taobao", "2020-10-10T00:00:00+08:00")
    await produce_to(kafka.bootstrap, [event_record(p + "xingtu-tasks", task, ev.ts(task))],
                     client=client)
    await wait_caught_up(kafka.bootstrap, w.app_id, [p + "xingtu-tasks"], timeout=120,
                         client=client)
    await produce_to(kafka.bootstrap, [
        event_record(p + "orders", paid, ev.ts(paid)),
        event_record(p + "cart-adds", banned, ev.ts(banned)),
        (p + "orders", a.encode(), b"{not json", None),
    ], client=client)
    fees = await consume_from(kafka.bootstrap, [p + "fees"], client=client,
                              until=lambda rs: len(rs) >= 1, timeout=120, stall=60)
    rejections = await consume_from(kafka.bootstrap, [p + "rejections"], client=client,
                                    until=lambda rs: len(rs) >= 1, timeout=60, stall=30)
    dead = await consume_from(kafka.bootstrap, [p + "dead-letters"], client=client,
                              until=lambda rs: len(rs) >= 1, timeout=60, stall=30)
    assert [(f.json()["fee_id"], f.json()["fee_fen"]) for f in fees] == [
        (f"fee:{paid['event_id']}", 10_000)
    ]
    assert [(r.json()["rejection_id"], r.json()["reason"]) for r in rejections] == [
        (f"rej:{banned['event_id']}", "THIRD_PARTY_CART_BANNED")
    ]
    assert [d.value for d in dead] == [b"{not json"]


async def test_sasl_worker_processes_and_never_shows_the_password(
    make_worker, sasl_kafka: PrivateKafka
) -> None:
    w: Worker = make_worker(extra_env=sasl_env(sasl_kafka))
    await asyncio.to_thread(w.start, True, 180)
    await _decides_events(w, sasl_kafka, CLIENT, "sasl")

    pages = {path: _get(w, path) for path in ("/metrics", "/readyz", "/livez")}
    assert "livecommerce_events_total" in pages["/metrics"]
    for path, body in pages.items():
        assert PASSWORD not in body, f"the SASL password is served on {path}"
    assert w.stop() == 0, w.tail()
    log = w.log_path.read_text(errors="replace") if w.log_path else ""
    assert log, "no worker log"
    assert PASSWORD not in log, "the SASL password is in the worker's log"
    # The log does show that SASL was in use, without the secret.
    print(f"security: SASL worker processed 4 records; password absent from log "
          f"({len(log)} chars) and from {sorted(pages)}")


@pytest.mark.parametrize(
    ("user", "password"), [("streams", "wrong-password"), ("nobody", PASSWORD)]
)
def test_wrong_credentials_fail_start_up_with_one_clear_line(
    make_worker, sasl_kafka: PrivateKafka, user: str, password: str
) -> None:
    w: Worker = make_worker(
        extra_env={**sasl_env(sasl_kafka, user, password), "STREAMS_STARTUP_TIMEOUT": "15"}
    )
    t = time.monotonic()
    w.start(wait_ready=False)
    assert w.proc is not None
    code = w.proc.wait(90)
    took = time.monotonic() - t
    log = w.log_path.read_text(errors="replace") if w.log_path else ""
    print(f"security: {user}/{'*' * len(password)} -> exit {code} after {took:.1f}s: "
          f"{[ln for ln in log.splitlines() if 'cannot start' in ln][:1]}")
    assert code != 0, log[-3000:]
    lines = [ln for ln in log.splitlines() if "cannot start" in ln]
    assert lines, f"no 'cannot start' line:\n{log[-3000:]}"
    text = "\n".join(lines)
    assert (
        "STREAMS_BROKER_SASL_USERNAME" in text and "STREAMS_BROKER_SASL_PASSWORD" in text
    ) or "credentials" in text, f"the message does not point at the credentials:\n{text}"
    assert "cannot reach Kafka" not in text, f"an auth failure reported as unreachable:\n{text}"
    assert log.count("Traceback") <= 1, f"traceback storm:\n{log[-5000:]}"
    assert password not in log, "the password is in the log"
    assert took < 60, f"start-up took {took:.0f}s to give up"


def _listeners(port: int) -> set[str]:
    """Local addresses listening on `port`, from /proc/net/tcp and tcp6 (state 0A = LISTEN)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            addr, _, hexport = local.rpartition(":")
            if state == "0A" and int(hexport, 16) == port:
                found.add(addr)
    return found


LOOPBACK_V4 = "0100007F"
ANY_V4 = "00000000"
ANY_V6 = "0" * 32


def test_web_host_binds_only_loopback(make_worker, sasl_kafka: PrivateKafka) -> None:
    w: Worker = make_worker(extra_env={**sasl_env(sasl_kafka), "STREAMS_WEB_HOST": "127.0.0.1"})
    w.start(timeout=180)
    try:
        addrs = _listeners(w.web_port)
        print(f"security: web port {w.web_port} listens on {sorted(addrs)} (hex /proc/net/tcp)")
        assert addrs == {LOOPBACK_V4}, f"web port {w.web_port} listens on {addrs}"
        assert ANY_V4 not in addrs and ANY_V6 not in addrs
    finally:
        assert w.stop() == 0, w.tail()


# -- TLS ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateKafka]:
    """SASL_SSL: SCRAM over TLS, the certificate self-signed by kafka.sh with keytool."""
    with private_kafka(tmp_path_factory.mktemp("tls-kafka"), sasl_users=USERS, tls=True) as kafka:
        yield kafka


def tls_client(kafka: PrivateKafka) -> dict[str, Any]:
    """The test's own clients: the admin user, trusting the broker's ca.pem."""
    return {**CLIENT, "security_protocol": kafka.security_protocol,
            "ssl_context": kafka.ssl_context()}


def _keytool() -> str:
    """The JDK's keytool, found as kafka.sh finds it."""
    if os.environ.get("JAVA_HOME"):
        return str(Path(os.environ["JAVA_HOME"]) / "bin" / "keytool")
    java = shutil.which("java")
    assert java, "no java on PATH"
    return str(Path(java).resolve().parent / "keytool")


def other_ca(tmp: Path) -> Path:
    """A well-formed self-signed certificate for 127.0.0.1 that did not sign the broker's."""
    store, pem = tmp / "other.p12", tmp / "other-ca.pem"
    for args in (
        ["-genkeypair", "-alias", "other", "-keyalg", "RSA", "-keysize", "2048",
         "-dname", "CN=localhost", "-ext", "SAN=ip:127.0.0.1,dns:localhost"],
        ["-exportcert", "-rfc", "-alias", "other", "-file", str(pem)],
    ):
        subprocess.run([_keytool(), *args, "-storetype", "PKCS12", "-keystore", str(store),
                        "-storepass", "throwaway"], check=True, capture_output=True, timeout=120)
    return pem


async def test_sasl_ssl_worker_decides_events_with_the_broker_ca(
    make_worker, tls_kafka: PrivateKafka
) -> None:
    assert tls_kafka.ca_file.read_text().startswith("-----BEGIN CERTIFICATE-----")
    w: Worker = make_worker(extra_env={
        **sasl_env(tls_kafka),
        "STREAMS_BROKER_SECURITY_PROTOCOL": "SASL_SSL",
        "STREAMS_BROKER_SSL_CAFILE": str(tls_kafka.ca_file),
    })
    await asyncio.to_thread(w.start, True, 180)
    await _decides_events(w, tls_kafka, tls_client(tls_kafka), "tls")
    pages = {path: _get(w, path) for path in ("/metrics", "/readyz", "/livez")}
    for path, body in pages.items():
        assert PASSWORD not in body, f"the SASL password is served on {path}"
    assert w.stop() == 0, w.tail()
    log = w.log_path.read_text(errors="replace") if w.log_path else ""
    assert log and PASSWORD not in log, "the SASL password is in the worker's log (or no log)"
    print(f"security: SASL_SSL worker decided 4 records trusting {tls_kafka.ca_file.name}")


@pytest.mark.parametrize("case", ["system CAs", "another CA", "plaintext"])
def test_untrusted_certificate_or_plaintext_fails_start_up_with_one_clear_line(
    make_worker, tls_kafka: PrivateKafka, tmp_path: Path, case: str
) -> None:
    env = {**sasl_env(tls_kafka), "STREAMS_STARTUP_TIMEOUT": "15"}
    if case == "plaintext":
        env["STREAMS_BROKER_SECURITY_PROTOCOL"] = "SASL_PLAINTEXT"
        expected = ("closed the connection", "STREAMS_BROKER_SECURITY_PROTOCOL")
    else:
        env["STREAMS_BROKER_SECURITY_PROTOCOL"] = "SASL_SSL"
        if case == "another CA":
            env["STREAMS_BROKER_SSL_CAFILE"] = str(other_ca(tmp_path))
        expected = ("does not trust", "STREAMS_BROKER_SSL_CAFILE")
    w: Worker = make_worker(extra_env=env)
    t = time.monotonic()
    w.start(wait_ready=False)
    assert w.proc is not None
    code = w.proc.wait(120)  # a bound, not a timing check: it must give up by itself
    took = time.monotonic() - t
    log = w.log_path.read_text(errors="replace") if w.log_path else ""
    lines = [ln for ln in log.splitlines() if "cannot start" in ln]
    print(f"security: TLS {case} -> exit {code} after {took:.1f}s: {lines[:1]}")
    assert code != 0, log[-3000:]
    assert lines, f"no 'cannot start' line:\n{log[-3000:]}"
    text = "\n".join(lines)
    for needle in expected:
        assert needle in text, f"{needle!r} not in the message:\n{text}"
    assert "cannot reach Kafka" not in text, f"a TLS failure reported as unreachable:\n{text}"
    assert log.count("Traceback") <= 1, f"traceback storm:\n{log[-5000:]}"
    assert PASSWORD not in log, "the password is in the log"


async def test_ssl_without_sasl_worker_decides_events(make_worker, tmp_path: Path) -> None:
    """SSL alone (faust.SSLCredentials): a CA file without a protocol implies TLS."""
    with private_kafka(tmp_path / "ssl-kafka", tls=True) as kafka:
        w: Worker = make_worker(extra_env={
            "STREAMS_BROKER": kafka.broker,
            "STREAMS_BROKER_SSL_CAFILE": str(kafka.ca_file),
        })
        await asyncio.to_thread(w.start, True, 180)
        client = {"security_protocol": "SSL", "ssl_context": kafka.ssl_context()}
        await _decides_events(w, kafka, client, "ssl")
        assert w.stop() == 0, w.tail()
