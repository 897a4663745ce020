"""The real worker (`faust -A streams worker -l warn`) as subprocesses, measured from outside.

The whole plan (one phase: Xingtu tasks, cart-adds and orders in the plan's arrival order,
interleaved by default) is produced up front inside a Kafka transaction left open, as for the
baseline and the Quix contender; once every worker is ready (assigned, restored, not
rebalancing) the transaction is committed and the workers, reading read_committed, find the
whole backlog at once (see bench/README.md).

Timing:
  * start: the first consumed record: the earlier of the first scrape (every 100 ms) showing
    `faust_messages_received_total` grow, and the earliest CreateTime among the run's outputs
    (stamped by the worker's producer when it sends), so a scrape stuck behind a busy event loop
    cannot shorten the measurement.
  * end: the consumer group's committed offsets, read from the broker every 100 ms, cover every
    loaded record of every input partition. The worker flushes its producer before it commits
    offsets (with exactly-once, outputs and offsets commit in one transaction), so this is
    "last output acked and offsets committed".
Outputs are then read with read_committed and compared by id with the reference model.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiokafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from bench.kafka import (
    BROKER,
    Backlog,
    OutRecord,
    admin_client,
    committed_offsets,
    read_outputs,
)
from bench.model import Segment, SystemRun
from bench.process import MeasuredProcess
from streams.loadgen.expected import Expected

POLL_S = 0.1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def faust_command() -> list[str]:
    script = Path(sys.executable).with_name("faust")
    head = [str(script)] if script.exists() else [sys.executable, "-m", "faust"]
    return [*head, "-A", "streams", "worker", "-l", "warn"]


def worker_env(
    broker: str, app_id: str, prefix: str, partitions: int, web_port: int, data_dir: Path
) -> dict[str, str]:
    """The environment of one worker subprocess: this one's without any STREAMS_ setting, plus
    the worker's own broker, app id, topic prefix and partitions, web port (on 127.0.0.1) and
    data dir, unbuffered output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMS_")}
    env.update(
        STREAMS_BROKER=broker,
        STREAMS_APP_ID=app_id,
        STREAMS_TOPIC_PREFIX=prefix,
        STREAMS_TOPIC_PARTITIONS=str(partitions),
        STREAMS_WEB_PORT=str(web_port),
        STREAMS_WEB_HOST="127.0.0.1",
        STREAMS_DATA_DIR=str(data_dir),
        PYTHONUNBUFFERED="1",
    )
    return env


def _samples(text: str) -> Iterator[Sample]:
    for family in text_string_to_metric_families(text):
        yield from family.samples


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of a metric's samples (by sample name, e.g. `x_total`, `x_count`) whose labels
    include `labels` (0 if absent)."""
    return sum(
        s.value for s in _samples(text)
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def histogram(text: str, name: str) -> dict[float, float]:
    """Cumulative bucket counts (upper bound -> count) of a histogram, summed over labels."""
    buckets: dict[float, float] = {}
    for s in _samples(text):
        if s.name == name + "_bucket":
            bound = float(s.labels["le"])  # "+Inf" -> inf
            buckets[bound] = buckets.get(bound, 0.0) + s.value
    return buckets


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for b in bounds:
        c = buckets[b]
        if c >= rank:
            if b == float("inf"):
                return prev_bound
            if c == prev_count:
                return b
            return prev_bound + (b - prev_bound) * (rank - prev_count) / (c - prev_count)
        prev_bound, prev_count = b, c
    return prev_bound


@dataclass
class WorkerProcess(MeasuredProcess):
    """One worker process with its own data dir and web port; several may share an app id."""

    app_id: str
    prefix: str
    partitions: int
    data_dir: Path
    web_port: int = field(default_factory=free_port)
    name: str = field(default="worker", kw_only=True)

    def env(self) -> dict[str, str]:
        env = worker_env(
            BROKER, self.app_id, self.prefix, self.partitions, self.web_port, self.data_dir
        )
        for name in ("STREAMS_EVENT_LOOP", "STREAMS_MAX_IDLE_MS", "STREAMS_COMMIT_INTERVAL"):
            if name in os.environ:  # to compare settings, passed through
                env[name] = os.environ[name]
        return env

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.spawn(faust_command(), self.env(), self.data_dir.parent / f"{self.data_dir.name}.log")

    async def get(self, session: aiohttp.ClientSession, path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.web_port}{path}"
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as r:
            return r.status, await r.text()

    async def metrics(self, session: aiohttp.ClientSession) -> str:
        return (await self.get(session, "/metrics"))[1]

    async def wait_ready(self, session: aiohttp.ClientSession, timeout: float = 120.0) -> None:
        """Until /readyz answers 200 with partitions assigned (recovered, not rebalancing)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                status, body = await self.get(session, "/readyz")
                if status == 200 and '"assigned_partitions":0' not in body.replace(" ", ""):
                    return
            await asyncio.sleep(0.25)
        raise TimeoutError(f"worker not ready after {timeout:g}s:\n{self.tail()}")


async def scrape(session: aiohttp.ClientSession, workers: Sequence[WorkerProcess]) -> list[str]:
    return list(await asyncio.gather(*(w.metrics(session) for w in workers)))


def _sum(texts: Sequence[str], name: str, **labels: str) -> float:
    return sum(metric_value(t, name, **labels) for t in texts)


async def _first_consumed(
    session: aiohttp.ClientSession, workers: Sequence[WorkerProcess], base: float, deadline: float
) -> float:
    """Wall time of the first scrape showing more received messages than `base`."""
    while time.monotonic() < deadline:
        texts = await scrape(session, workers)
        if _sum(texts, "faust_messages_received_total") > base:
            return time.time()
        _check_alive(workers)
        await asyncio.sleep(POLL_S)
    raise TimeoutError("the worker consumed nothing after the backlog was released")


def _check_alive(workers: Sequence[WorkerProcess]) -> None:
    for w in workers:
        w.check_alive()


async def _release(
    session: aiohttp.ClientSession,
    workers: Sequence[WorkerProcess],
    backlog: Backlog,
    phase: int,
    deadline: float,
) -> tuple[float, float]:
    """Load phase `phase` (concurrently) and find its first consumed record.

    Returns (release wall time, first-consumed wall time); the load has finished on return.
    """
    base = _sum(await scrape(session, workers), "faust_messages_received_total")
    released = time.time()
    load = asyncio.create_task(backlog.release(phase))
    try:
        first = await _first_consumed(session, workers, base, deadline)
    finally:
        await load
    return released, first


async def _measure_backlog(
    session: aiohttp.ClientSession,
    workers: Sequence[WorkerProcess],
    backlog: Backlog,
    group: str,
    deadline: float,
) -> Segment:
    """Release the plan; done when the group's offsets cover every loaded record."""
    records = backlog.records(0)
    cpu = sum(w.cpu_seconds() for w in workers)
    released, first = await _release(session, workers, backlog, 0, deadline)
    admin = await admin_client()
    try:
        targets = dict(backlog.targets)
        last: dict[TopicPartition, int] = {}
        changed = time.time()
        next_scrape = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            committed = await committed_offsets(admin, group)
            now = time.time()
            if committed != last:
                last, changed = committed, now
            if all(committed.get(tp, -1) >= off for tp, off in targets.items()):
                texts = await scrape(session, workers)
                if _sum(texts, "livecommerce_rerouted_total") == 0:
                    cpu = sum(w.cpu_seconds() for w in workers) - cpu
                    return Segment(records, released, first, now, cpu)
                # Rerouted copies were appended to the inputs after the loaded records: wait
                # until every record is decided and the offsets stop moving (2.5 commit
                # intervals), and take the time they last moved.
                if (
                    _sum(texts, "livecommerce_events_total") >= backlog.events
                    and now - changed >= 2.5
                ):
                    cpu = sum(w.cpu_seconds() for w in workers) - cpu
                    return Segment(records, released, first, changed, cpu)
            if time.monotonic() >= next_scrape:
                _check_alive(workers)
                next_scrape = time.monotonic() + 1.0
            await asyncio.sleep(POLL_S)
    finally:
        await admin.close()
    raise TimeoutError("the backlog was not committed in time")


def _refine(seg: Segment, outputs: Sequence[OutRecord]) -> None:
    """Use the earliest output CreateTime of the run if it precedes the first scrape."""
    lo = seg.released_at * 1000
    stamps = [r.timestamp_ms for r in outputs if lo <= r.timestamp_ms]
    if stamps:
        seg.first_consumed_at = min(seg.first_consumed_at, min(stamps) / 1000)


@dataclass
class Profile:
    """py-spy's collapsed stacks of one worker while it works through the backlog, and what it
    ran most."""

    path: Path
    samples: int = 0
    top_self: list[tuple[str, float]] = field(default_factory=list)
    top_total: list[tuple[str, float]] = field(default_factory=list)


def summarize_profile(path: Path, n: int = 25) -> Profile:
    """Top functions by self and total share of samples from py-spy's `--format raw` output."""
    from collections import Counter

    self_c: Counter[str] = Counter()
    total_c: Counter[str] = Counter()
    samples = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        c = int(count)
        frames = [f for f in stack.split(";") if f]
        if frames and frames[0].startswith("process "):
            frames = frames[1:]
        if frames and frames[0].startswith("thread "):
            frames = frames[1:]
        if not frames:
            continue
        samples += c
        self_c[_frame(frames[-1])] += c
        for f in {_frame(f) for f in frames}:
            total_c[f] += c
    prof = Profile(path, samples)
    if samples:
        prof.top_self = [(f, round(100 * c / samples, 1)) for f, c in self_c.most_common(n)]
        prof.top_total = [(f, round(100 * c / samples, 1)) for f, c in total_c.most_common(n)]
    return prof


def _frame(f: str) -> str:
    """`func (path/to/module.py:123)` -> `func (module.py)`: one entry per function."""
    name, _, where = f.partition(" (")
    where = where.rstrip(")")
    file = where.rsplit(":", 1)[0]
    parts = file.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else file
    return f"{name} ({short})"


async def run_workers(
    backlog: Backlog,
    expected: Expected,
    *,
    n_workers: int,
    repetition: int,
    work_dir: Path,
    timeout: float = 1800.0,
    profile_to: Path | None = None,
) -> tuple[SystemRun, Profile | None]:
    """Measure `n_workers` workers (one app id) over `backlog`; outputs go to `<prefix><output>`."""
    prefix = backlog.prefix
    name = "worker" if n_workers == 1 else f"{n_workers} workers"
    run = SystemRun(name, repetition, prefix, backlog.events)
    app_id = f"{prefix}app"
    workers = [
        WorkerProcess(app_id, prefix, backlog.partitions, work_dir / f"{app_id}-{i}")
        for i in range(n_workers)
    ]
    profile: Profile | None = None
    spy: subprocess.Popen[bytes] | None = None
    async with aiohttp.ClientSession() as session:
        try:
            started = time.time()
            for w in workers:
                w.start()
            await asyncio.gather(*(w.wait_ready(session) for w in workers))
            if n_workers > 1:
                # Let the group settle: every member ready twice in a row, a second apart.
                await asyncio.sleep(1.0)
                await asyncio.gather(*(w.wait_ready(session) for w in workers))
            run.startup_seconds = time.time() - started
            deadline = time.monotonic() + timeout
            if profile_to is not None:
                spy = _start_py_spy(workers[0].pid, profile_to)
            seg = await _measure_backlog(session, workers, backlog, app_id, deadline)
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                await asyncio.to_thread(spy.wait, 30)
                if profile_to is not None and profile_to.exists():
                    profile = summarize_profile(profile_to)
            run.segments = [seg]
            run.load_seconds = dict(backlog.load_seconds)
            run.peak_rss_kib = [w.peak_rss_kib() for w in workers]
            texts = await scrape(session, workers)
            rebalances = _sum(texts, "faust_total_rebalances")
            if rebalances > n_workers:
                run.notes.append(f"{rebalances:g} rebalances across the workers")
        except Exception as exc:  # a failed run is reported, with what the workers said
            run.notes.append(f"error: {type(exc).__name__}: {exc}"[:2000])
            for w in workers:
                if w.tail():
                    run.notes.append(f"worker {w.pid} log tail:\n{w.tail(20)}")
            return run, None
        finally:
            if spy is not None and spy.poll() is None:
                spy.kill()
            await asyncio.gather(*(w.stop() for w in workers))
    outputs, run.completeness = await read_outputs(prefix, expected)
    _refine(seg, outputs)
    return run, profile


def _start_py_spy(pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    rate = os.environ.get("BENCH_PROFILE_RATE", "100")  # samples per second
    return subprocess.Popen(
        [str(spy), "record", "--pid", str(pid), "--rate", rate, "--format", "raw",
         "--output", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

