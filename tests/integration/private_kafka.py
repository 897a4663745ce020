"""A private Kafka broker for tests that stop a broker or need SASL or TLS, and bootstrap-aware
helpers.

The shared test broker (127.0.0.1:9092) is used by other tests at the same time and must never be
stopped; tests that take a broker down or change its security start their own with
deploy/local-kafka/kafka.sh on free ports and a run directory of their own (its data survives a
stop/start, like a real broker's disks). The helpers below are the harness's produce and lag checks
with an explicit bootstrap and client security options (consume_from lives in the harness).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import ssl
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.helpers import create_ssl_context

from bench.kafka import topic_partitions
from tests.integration.harness import REPO, free_port
from tests.integration.harness import consume_from as consume_from  # its public home was here

KAFKA_SH = REPO / "deploy" / "local-kafka" / "kafka.sh"


@dataclass
class PrivateKafka:
    """One single-node KRaft broker on 127.0.0.1:`port` with its data in `run_dir`; with `tls`,
    its client listener speaks TLS with a self-signed certificate whose PEM is `ca_file`."""

    run_dir: Path
    sasl_users: str | None = None
    tls: bool = False
    port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    log: list[str] = field(default_factory=list)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def broker(self) -> str:
        """The worker's STREAMS_BROKER form."""
        return f"kafka://{self.bootstrap}"

    @property
    def ca_file(self) -> Path:
        """The broker's certificate in PEM (kafka.sh writes it at the first TLS start)."""
        return self.run_dir / "ca.pem"

    @property
    def security_protocol(self) -> str:
        return ("SASL_" if self.sasl_users else "") + ("SSL" if self.tls else "PLAINTEXT")

    def ssl_context(self) -> ssl.SSLContext:
        """An aiokafka client context that trusts this broker's certificate."""
        return create_ssl_context(cafile=str(self.ca_file))

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            KAFKA_PORT=str(self.port),
            KAFKA_CONTROLLER_PORT=str(self.controller_port),
            KAFKA_RUN_DIR=str(self.run_dir),
            KAFKA_START_TIMEOUT="150",
        )
        env.pop("KAFKA_SASL_USERS", None)
        if self.sasl_users:
            env["KAFKA_SASL_USERS"] = self.sasl_users
        env["KAFKA_TLS"] = "1" if self.tls else "0"
        return env

    def _run(self, action: str, timeout: float) -> None:
        t0 = time.monotonic()
        res = subprocess.run(
            ["bash", str(KAFKA_SH), action],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        self.log.append(f"kafka.sh {action}: rc={res.returncode} in {time.monotonic() - t0:.1f}s")
        if res.returncode != 0:
            server_log = self.run_dir / "server.log"
            tail = ""
            if server_log.exists():
                tail = "\n".join(server_log.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(
                f"kafka.sh {action} failed (rc {res.returncode}) for port {self.port}:\n"
                f"{res.stdout}{res.stderr}\n{tail}"
            )

    def start(self) -> PrivateKafka:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._run("start", timeout=240)
        return self

    def stop(self) -> None:
        self._run("stop", timeout=90)

    def running(self) -> bool:
        res = subprocess.run(
            ["bash", str(KAFKA_SH), "status"], env=self.env(), capture_output=True, check=False
        )
        return res.returncode == 0


@contextlib.contextmanager
def private_kafka(
    run_dir: Path, *, sasl_users: str | None = None, tls: bool = False
) -> Iterator[PrivateKafka]:
    """Start a private broker, yield it, and always stop it (its data is removed afterwards)."""
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        raise RuntimeError("a private Kafka broker needs Java 17+ (java on PATH or JAVA_HOME)")
    kafka = PrivateKafka(run_dir=run_dir, sasl_users=sasl_users, tls=tls)
    try:
        kafka.start()
        yield kafka
    finally:
        with contextlib.suppress(Exception):
            kafka.stop()
        shutil.rmtree(run_dir / "data", ignore_errors=True)


# -- clients with an explicit bootstrap ----------------------------------------------------------


async def produce_to(
    bootstrap: str,
    records: Iterable[tuple[str, bytes | None, bytes | None, int | None]],
    *,
    client: dict[str, Any] | None = None,
    max_request_size: int = 1_048_576,
) -> list[tuple[str, int, int]]:
    """Send (topic, key, value, timestamp_ms) records acked by all replicas, with the default
    (murmur2) partitioner; returns each record's (topic, partition, offset) in input order."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=5,
        acks="all",
        enable_idempotence=True,
        max_request_size=max_request_size,
        request_timeout_ms=120_000,
        **(client or {}),
    )
    await producer.start()
    try:
        futs = [
            await producer.send(topic, value, key=key, timestamp_ms=ts)
            for topic, key, value, ts in records
        ]
        metas = await asyncio.gather(*futs)
    finally:
        await producer.stop()
    return [(m.topic, m.partition, m.offset) for m in metas]


async def group_lag(
    bootstrap: str,
    group: str,
    topics: Sequence[str],
    *,
    client: dict[str, Any] | None = None,
) -> dict[TopicPartition, int]:
    """End offset minus the group's committed offset (the whole partition if none), for every
    partition of `topics`. Committed offsets are what the exactly-once transactions commit."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(client or {}))
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, **(client or {}))
    await admin.start()
    try:
        await consumer.start()
        tps = await topic_partitions(consumer, topics)
        ends = await consumer.end_offsets(tps)
        committed = await admin.list_consumer_group_offsets(group, partitions=tps)
        lag = {}
        for tp in tps:
            c = committed.get(tp)
            done = c.offset if c is not None and c.offset >= 0 else 0
            lag[tp] = ends[tp] - done
        return lag
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
        with contextlib.suppress(Exception):
            await admin.close()


async def wait_caught_up(
    bootstrap: str,
    group: str,
    topics: Sequence[str],
    *,
    timeout: float,
    client: dict[str, Any] | None = None,
    on_wait: Callable[[], None] | None = None,
) -> float:
    """Wait until the group's committed offsets reach the end of every partition of `topics`;
    returns the seconds waited. `on_wait` runs between polls (e.g. to check the worker lives)."""
    t0 = time.monotonic()
    last: dict[TopicPartition, int] | str = "never asked"
    while time.monotonic() - t0 < timeout:
        try:
            last = await group_lag(bootstrap, group, topics, client=client)
            if all(v <= 0 for v in last.values()):
                return time.monotonic() - t0
        except (TimeoutError, KafkaError, OSError) as exc:
            last = f"{type(exc).__name__}: {exc}"  # e.g. the coordinator is moving
        if on_wait is not None:
            on_wait()
        await asyncio.sleep(0.5)
    raise AssertionError(f"group {group} did not catch up on {list(topics)} in {timeout}s: {last}")
