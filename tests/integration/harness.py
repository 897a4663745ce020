"""Runs the real worker as a subprocess and talks to the real broker, for integration tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from bench.kafka import committed_reader, topic_partitions
from bench.process import spawn
from bench.run_worker import free_port as free_port  # re-exported for the tests
from bench.run_worker import metric_value as metric_value  # re-exported for the tests
from bench.run_worker import worker_env

REPO = Path(__file__).resolve().parents[2]
BROKER = os.environ.get("STREAMS_TEST_BROKER", "kafka://127.0.0.1:9092")
BOOTSTRAP = BROKER.removeprefix("kafka://")
FAUST = str(Path(sys.executable).with_name("faust"))


def broker_answers(bootstrap: str = BOOTSTRAP) -> bool:
    host, _, port = bootstrap.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def unique(name: str) -> str:
    return f"t{uuid.uuid4().hex[:8]}-{name}"


@dataclass
class Worker:
    """One `faust -A streams worker` process with its own app id, prefix and web port."""

    app_id: str
    prefix: str
    data_dir: Path
    partitions: int = 4
    store: str = "rocksdb"
    extra_env: dict[str, str] = field(default_factory=dict)
    web_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    starts: int = 0

    def env(self) -> dict[str, str]:
        env = worker_env(
            BROKER, self.app_id, self.prefix, self.partitions, self.web_port, self.data_dir
        )
        env["STREAMS_STORE"] = self.store
        if os.environ.get("STREAMS_TRACE_RECORDS"):  # debugging aid, passed through to workers
            env["STREAMS_TRACE_RECORDS"] = os.environ["STREAMS_TRACE_RECORDS"]
        env.update(self.extra_env)
        return env

    def command(self) -> list[str]:
        return [FAUST, "-A", "streams", "worker", "-l", "info"]

    def cwd(self) -> Path:
        return REPO

    def start(self, wait_ready: bool = True, timeout: float = 60.0) -> Worker:
        self.starts += 1
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir.parent / f"{self.app_id}-{self.web_port}-{self.starts}.log"
        self.proc = spawn(self.command(), self.env(), self.log_path, cwd=self.cwd())
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"worker exited {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.web_port}/readyz", timeout=2
                ) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.25)
        raise TimeoutError(f"worker not ready after {timeout}s:\n{self.tail()}")

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait: Faust commits and flushes on the way out."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def pause(self) -> None:
        """SIGSTOP: the worker keeps its sockets and state but processes nothing."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGCONT)

    def tail(self, n: int = 60) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def rss_kib(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0


async def wait_metric(worker: Worker, name: str, want: float, **labels: str) -> None:
    """Until the worker's metric `name` (summed over samples with `labels`) reaches `want`;
    AssertionError with the worker's log after 60 s."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if metric_value(worker.metrics(), name, **labels) >= want:
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"{name}{labels} never reached {want}:\n{worker.tail()}")


async def produce(
    records: Iterable[tuple[str, bytes | None, bytes | None, int | None]],
    *,
    headers: Sequence[tuple[str, bytes]] | None = None,
) -> int:
    """Send (topic, key, value, timestamp_ms) records, acked, with the default partitioner."""
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, linger_ms=5, acks="all")
    await producer.start()
    n = 0
    try:
        futs = []
        for topic, key, value, ts in records:
            futs.append(
                await producer.send(topic, value, key=key, timestamp_ms=ts, headers=headers)
            )
            n += 1
        await asyncio.gather(*futs)
    finally:
        await producer.stop()
    return n


def event_record(topic: str, event: dict[str, Any], ts_ms: int | None = None) -> tuple:
    return (topic, event["anchor_id"].encode(), orjson.dumps(event), ts_ms)


@dataclass
class Received:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    def json(self) -> Any:
        return orjson.loads(self.value or b"null")


async def consume_from(
    bootstrap: str,
    topics: Sequence[str],
    *,
    client: dict[str, Any] | None = None,
    until: Callable[[list[Received]], bool] | None = None,
    timeout: float = 120.0,
    idle: float = 3.0,
    stall: float | None = None,
) -> list[Received]:
    """Committed records of `topics` on `bootstrap` from the start until `until(records)` holds
    and nothing new came for `idle` seconds, or `timeout`, or (if `stall` is given) nothing new
    came for `stall` seconds although `until` fails. `client`: extra aiokafka options (security)."""
    consumer = committed_reader(bootstrap=bootstrap, **(client or {}))
    await consumer.start()
    out: list[Received] = []
    try:
        tps = await topic_partitions(consumer, topics)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        satisfied_at: float | None = None
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=250, max_records=10_000)
            got = 0
            for tp, msgs in batch.items():
                for m in msgs:
                    out.append(
                        Received(
                            tp.topic, tp.partition, m.offset, m.key, m.value, list(m.headers or [])
                        )
                    )
                    got += 1
            now = time.monotonic()
            if got:
                last_new = now
            if until is None or until(out):
                if got or satisfied_at is None:
                    satisfied_at = now
                elif now - satisfied_at >= idle:
                    break
            else:
                satisfied_at = None
                if stall is not None and now - last_new >= stall:
                    break
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
    return out


async def consume_all(
    topics: Sequence[str],
    *,
    until: Callable[[list[Received]], bool] | None = None,
    timeout: float = 60.0,
    idle: float = 3.0,
) -> list[Received]:
    """consume_from on the shared test broker: committed records of `topics` from the start until
    `until(records)` holds and the topics stayed idle for `idle` seconds, or `timeout`."""
    return await consume_from(BOOTSTRAP, topics, until=until, timeout=timeout, idle=idle)
