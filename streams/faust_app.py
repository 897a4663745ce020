"""Builds the Faust App from Settings (not named app.py: that would shadow `streams.app`)."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import faust
from faust.sensors.prometheus import setup_prometheus_sensors
from faust.types.enums import ProcessingGuarantee

from streams.config import ConfigError, Settings, load_settings
from streams.consumer import StreamsTransport
from streams.processor import COMMIT_GATE
from streams.sensors import LeanPrometheusMonitor
from streams.topics import StartupError, broker_credentials, ensure_topics

log = logging.getLogger("streams")
RUNNING_MARKER = ".running"
"""In STREAMS_DATA_DIR while the worker runs; left behind by a crash (see on_first_start)."""


def _fail(message: str) -> None:
    """One clear line on stderr and a non-zero exit: no traceback for a user's mistake."""
    print(f"live-commerce-streams: cannot start: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


class StreamsApp(faust.App):
    """A Faust App that checks the broker and topics before joining the group."""

    settings: Settings

    @property
    def in_transaction(self) -> bool:
        """Faust's own is a cached property that is also false outside a worker; the agents
        module reads it at import, before `faust worker` sets `in_worker`, so it was cached
        false and exactly-once silently ran without transactions. This app only runs as a
        worker: the processing guarantee alone decides."""
        return self.conf.processing_guarantee == ProcessingGuarantee.EXACTLY_ONCE

    def _new_transport(self) -> Any:
        # Faust's extension point for the consumer and producer classes: exact offsets
        # (streams.consumer), no commit over a failed send (streams.transactions).
        return StreamsTransport(self.conf.broker_consumer, self)

    async def on_first_start(self) -> None:
        try:
            await ensure_topics(self.settings)
        except StartupError as exc:
            log.critical("cannot start: %s", exc)
            _fail(str(exc))
        self._discard_state_after_crash()
        self._gate_commits()
        await super().on_first_start()

    @property
    def _running_marker(self) -> Path:
        return Path(self.settings.data_dir) / RUNNING_MARKER

    def _discard_state_after_crash(self) -> None:
        """Local tables are written at once, but their changelog records and the offsets only
        when a transaction commits: after a crash the local state can hold updates of aborted
        transactions (e.g. an event marked processed whose outputs were never committed), which
        the replay would then skip. The marker is removed by a clean shutdown's final commit;
        if it is still there, rebuild the tables from their changelogs."""
        marker = self._running_marker
        if marker.exists():
            tabledir = Path(self.conf.tabledir)
            log.warning(
                "the previous run did not stop cleanly: discarding local table state in %s; "
                "the tables are rebuilt from their changelog topics",
                tabledir,
            )
            shutil.rmtree(tabledir, ignore_errors=True)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"{os.getpid()}\n")

    def _gate_commits(self) -> None:
        """Commit only between records, with every buffered changelog record sent first (see
        `streams.processor.CommitGate`)."""
        consumer: Any = self.consumer
        commit = consumer.commit
        buffer: Any = self.producer.buffer
        # Table updates reach their transaction through Faust's producer buffer, drained by a
        # background task; a record it has taken off the queue but not yet handed to the
        # transactional producer is in neither, so count those too.
        send_pending = buffer._send_pending
        in_flight = [0]

        async def counted_send_pending(fut: Any) -> None:
            in_flight[0] += 1
            try:
                await send_pending(fut)
            finally:
                in_flight[0] -= 1

        buffer._send_pending = counted_send_pending
        loop = asyncio.get_running_loop()

        async def drain_buffer() -> None:
            deadline = loop.time() + 60
            while (buffer.size or in_flight[0]) and loop.time() < deadline:
                if buffer.size:
                    await buffer.flush()
                else:
                    await asyncio.sleep(0.001)
            if buffer.size or in_flight[0]:
                log.warning("committing with %d table updates not yet sent", buffer.size)

        async def commit_locked(topics: Any = None, start_new_transaction: bool = True) -> bool:
            await drain_buffer()
            return bool(await commit(topics, start_new_transaction=start_new_transaction))

        async def gated_commit(topics: Any = None, start_new_transaction: bool = True) -> bool:
            async with COMMIT_GATE.lock:
                done = await commit_locked(topics, start_new_transaction)
                if not start_new_transaction:  # the final commit of a clean shutdown
                    COMMIT_GATE.closed = True
                    self._running_marker.unlink(missing_ok=True)
                return done

        consumer.commit = gated_commit

        if self.settings.trace_records:
            commit_offsets = consumer._commit_offsets

            async def traced_commit_offsets(offsets: Any, **kw: Any) -> Any:
                positions = {f"{tp.topic}/{tp.partition}": o for tp, o in offsets.items()}
                log.info("trace commit %s", positions)
                return await commit_offsets(offsets, **kw)

            consumer._commit_offsets = traced_commit_offsets

        on_partitions_revoked = consumer.on_partitions_revoked

        async def commit_then_revoke(revoked: Any) -> None:
            # Faust drops the acks of revoked partitions without committing them: a partition
            # it keeps is sought back to its committed offset and its records read again while
            # their outputs are still in the open transaction, and acks lost mid-stream leave a
            # hole that stops its commits for good. Commit what was processed first, and
            # process nothing more until the new assignment is in place (see CommitGate).
            async with COMMIT_GATE.lock:
                await commit_locked()
                COMMIT_GATE.fence()
            await on_partitions_revoked(revoked)

        consumer.on_partitions_revoked = commit_then_revoke

        on_partitions_assigned = consumer.on_partitions_assigned

        async def assign_then_reseek(assigned: Any, generation_id: int = 0) -> None:
            COMMIT_GATE.fence()  # also on a first assignment after a failed rebalance
            await on_partitions_assigned(assigned, generation_id)
            # The transactional producers just started have fenced the partitions' previous
            # owner and waited for its last commit to complete; the committed offsets read when
            # the group assigned the partitions may predate that commit (aiokafka cannot ask for
            # stable offsets, KIP-447), and reading from there confuses Faust's offset tracking
            # into never committing the partition again. Read them again.
            async with COMMIT_GATE.lock:
                await consumer.perform_seek()
                COMMIT_GATE.open(self.consumer_generation_id)

        consumer.on_partitions_assigned = assign_then_reseek


def build_app(settings: Settings) -> StreamsApp:
    app = StreamsApp(
        settings.app_id,
        broker=settings.broker,
        broker_credentials=broker_credentials(settings),
        store=f"{settings.store}://",
        datadir=str(settings.data_dir),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        topic_allow_declare=True,
        processing_guarantee=settings.processing_guarantee,
        broker_commit_interval=settings.commit_interval,
        table_standby_replicas=settings.standby_replicas,
        # A fresh group joins in seconds rather than ~30 s with the 60 s default.
        broker_session_timeout=10,
        broker_heartbeat_interval=1,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_enabled=True,
        table_cleanup_interval=60.0,
        stream_wait_empty=False,
        producer_linger_ms=5,
        consumer_auto_offset_reset="earliest",
    )
    app.settings = settings
    setup_prometheus_sensors(app, name_prefix="faust")
    app.monitor = LeanPrometheusMonitor(metrics=app.monitor._metrics)  # type: ignore[attr-defined]
    return app


def use_event_loop(name: str) -> None:
    """uvloop by default: most of Faust's per-record cost is asyncio scheduling. Must run before
    anything creates the loop (the worker creates it after importing this module)."""
    if name == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


try:
    SETTINGS = load_settings()
except ConfigError as exc:
    _fail(str(exc))

use_event_loop(SETTINGS.event_loop)

app = build_app(SETTINGS)

# Registers agents, tables and web pages on `app`.
from streams import agents as _agents  # noqa: E402,F401
from streams import web as _web  # noqa: E402,F401
