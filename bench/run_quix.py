"""The Quix Streams contender (`python -m bench.quix_app`) in a subprocess, measured as the worker.

The application starts on the run's input topics (created by the bench, empty or held back) with
its own consumer group, state dir and changelogs; once it holds every input partition and is not
restoring state, the bench releases each phase of the backlog in turn. Timing, per phase:

  * start: the first consumed record: the earlier of the first record the app processed after the
    release (its status file records when records start to flow after a pause) and the earliest
    CreateTime among the phase's outputs (stamped by librdkafka when the app produces them);
  * end: every record of the phase is decided (the app's count of records decided where they sit,
    dead letters and duplicates included, reaches the records released so far; a rerouted
    record counts once, where its copy is decided) and the consumer group's committed offsets,
    read from the broker every 100 ms, cover every loaded record and every record the app
    processed (rerouted copies included). With exactly-once the outputs, the changelog records and
    the offsets commit in one transaction per checkpoint, so this is "last output committed", the
    same end as the worker's.

Peak RSS is the process's VmHWM just before it is stopped (SIGTERM: Quix commits its last
checkpoint and exits). Outputs are then read with read_committed and compared by id with the
reference model. The run's changelog topics (`changelog__<app id>--...`) are deleted with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition

from bench.kafka import (
    BOOTSTRAP,
    OUTPUT_TOPICS,
    Backlog,
    OutRecord,
    admin_client,
    committed_offsets,
    create_topics,
    delete_topics_with_prefix,
    read_outputs,
)
from bench.model import Segment, SystemRun
from bench.process import MeasuredProcess
from streams.loadgen.expected import Expected

POLL_S = 0.1
COMMIT_INTERVAL = float(os.environ.get("QUIX_BENCH_COMMIT_INTERVAL", "5.0"))
"""Seconds between Quix checkpoints (transaction commits): Quix's default, 5 s."""


@dataclass
class QuixProcess(MeasuredProcess):
    app_id: str
    prefix: str
    partitions: int
    work_dir: Path
    commit_interval: float = COMMIT_INTERVAL
    name: str = field(default="quix app", kw_only=True)

    @property
    def status_path(self) -> Path:
        return self.work_dir / f"{self.app_id}.status.json"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "bench.quix_app",
            "--broker", BOOTSTRAP,
            "--prefix", self.prefix,
            "--partitions", str(self.partitions),
            "--app-id", self.app_id,
            "--state-dir", str(self.work_dir / f"{self.app_id}-state"),
            "--commit-interval", str(self.commit_interval),
            "--status-file", str(self.status_path),
        ]

    def start(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMS_", "QUIX"))}
        env["PYTHONUNBUFFERED"] = "1"
        self.spawn(self.command(), env, self.work_dir / f"{self.app_id}.log")

    def status(self) -> dict[str, Any]:
        with contextlib.suppress(OSError, ValueError):
            data: dict[str, Any] = json.loads(self.status_path.read_text())
            return data
        return {}

    async def wait_ready(self, inputs: int, timeout: float = 120.0) -> None:
        """Until the app holds every input partition and is not restoring state."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            st = self.status()
            if st.get("assigned", 0) >= inputs and not st.get("recovering", True):
                return
            await asyncio.sleep(0.25)
        raise TimeoutError(f"quix app not ready after {timeout:g}s:\n{self.tail()}")


def _covered(
    committed: dict[TopicPartition, int], st: dict[str, Any], targets: dict[Any, int]
) -> bool:
    """Committed offsets cover every loaded record and every record the app processed."""
    if not all(committed.get(tp, -1) >= off for tp, off in targets.items()):
        return False
    for name, last in st.get("offsets", {}).items():
        topic, _, partition = name.rpartition(":")
        if committed.get(TopicPartition(topic, int(partition)), -1) < last + 1:
            return False
    return True


async def _phase(
    app: QuixProcess, backlog: Backlog, k: int, decided_before: int, deadline: float
) -> Segment:
    records = backlog.records(k)
    cpu = app.cpu_seconds()
    admin = await admin_client()
    try:
        released = await backlog.release(k)
        want = decided_before + records
        next_check = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            st = app.status()
            if st.get("decided", 0) >= want:
                committed = await committed_offsets(admin, app.app_id)
                if _covered(committed, app.status(), dict(backlog.targets)):
                    done = time.time()
                    cpu = app.cpu_seconds() - cpu
                    bursts = [b for b in app.status().get("bursts", []) if b >= released]
                    first = min(bursts) if bursts else done
                    return Segment(records, released, first, done, cpu)
            if time.monotonic() >= next_check:
                app.check_alive()
                next_check = time.monotonic() + 1.0
            await asyncio.sleep(POLL_S)
    finally:
        await admin.close()
    raise TimeoutError(f"phase {k + 1} not decided and committed in time:\n{app.tail()}")


def _refine(seg: Segment, outputs: list[OutRecord], until: float | None) -> None:
    """Use the earliest output CreateTime of the phase if it precedes the first processed record
    the status file showed."""
    lo = seg.released_at * 1000
    hi = until * 1000 if until is not None else float("inf")
    stamps = [r.timestamp_ms for r in outputs if lo <= r.timestamp_ms < hi]
    if stamps:
        seg.first_consumed_at = min(seg.first_consumed_at, min(stamps) / 1000)


async def run_quix(
    backlog: Backlog,
    expected: Expected,
    *,
    repetition: int,
    work_dir: Path,
    timeout: float = 1800.0,
    commit_interval: float = COMMIT_INTERVAL,
) -> SystemRun:
    """Measure the Quix application over `backlog`; outputs go to `<prefix><output>`."""
    prefix = backlog.prefix
    run = SystemRun("quix", repetition, prefix, backlog.events)
    app_id = f"{prefix}quix"
    app = QuixProcess(app_id, prefix, backlog.partitions, work_dir, commit_interval)
    await create_topics([prefix + t for t in OUTPUT_TOPICS], backlog.partitions)
    try:
        started = time.time()
        app.start()
        await app.wait_ready(len(backlog.input_partitions()))
        run.startup_seconds = time.time() - started
        deadline = time.monotonic() + timeout
        decided = 0
        for k in range(len(backlog.phases)):
            run.segments.append(await _phase(app, backlog, k, decided, deadline))
            decided += backlog.records(k)
        run.load_seconds = dict(backlog.load_seconds)
        run.peak_rss_kib = [app.peak_rss_kib()]
        st = app.status()
        if st.get("rerouted"):
            run.notes.append(f"{st['rerouted']} records rerouted to their anchor's partition")
        run.notes.append(f"quix commit_interval {commit_interval:g} s")
    except Exception as exc:  # a failed run is reported, with what the app said
        run.notes.append(f"error: {type(exc).__name__}: {exc}"[:2000])
        if app.tail():
            run.notes.append(f"quix app log tail:\n{app.tail(20)}")
        return run
    finally:
        code = await app.stop()
        if code not in (0, None):
            run.notes.append(f"quix app exited {code} when stopped")
        with contextlib.suppress(Exception):  # changelogs are named after the app id, not prefix
            await delete_topics_with_prefix(f"changelog__{app_id}")
    outputs, run.completeness = await read_outputs(prefix, expected)
    for i, seg in enumerate(run.segments):
        nxt = run.segments[i + 1].released_at if i + 1 < len(run.segments) else None
        _refine(seg, outputs, nxt)
    return run
