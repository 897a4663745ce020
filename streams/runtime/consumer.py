"""Faust's aiokafka consumer, delivering whole fetched batches to the engine.

Faust keeps the consumer group: membership, the co-partitioned assignment (its
PartitionAssignor), rebalance callbacks and flow control. Instead of wrapping each record in a
Faust message and dispatching it to a stream, `_drain_messages` hands each fetched batch to
`streams.engine.Engine`, which decides it and commits it in its own transactions; Faust's own
offset commits are switched off (`commit` commits nothing: there are no Faust acks).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiokafka
from aiokafka import TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from streams.engine.engine import EXIT_INTERNAL_ERROR, Engine, exit_now

log = logging.getLogger(__name__)

FETCH_MAX_WAIT_MS = 25
"""How long the broker may hold a fetch with no data: bounds how long a fetch in flight for
caught-up partitions can delay the next fetch of a busy one, and how stale the word that an
empty input is still caught up can be (a record the merge holds for it waits for a response
received `STREAMS_MAX_IDLE_MS` after it arrived)."""


class BatchConsumer(faust_aiokafka.Consumer):
    """Registered through `StreamsTransport` (Faust's transport extension point)."""

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return BatchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    @property
    def engine(self) -> Engine:
        engine: Engine = self.app.engine  # type: ignore[attr-defined]
        return engine

    # -- what the engine asks of the group's consumer --------------------------------------

    def lag(self, tp: TopicPartition) -> tuple[bool, float]:
        """Does the broker hold records for `tp` past what was fetched (committed, or in a
        transaction still open), and when did a fetch response say so (monotonic)? Behind while
        unknown (before the first fetch response after an assignment or seek)."""
        state = self._aiokafka_state(tp)
        if state is None or not state.has_valid_position:
            return True, float("-inf")
        # the response time first: aiokafka sets it after the stable offset, so a response
        # seen here is never newer than the offset read next
        at_ms = state.timestamp
        lso, highwater = state.lso, state.highwater
        if lso is None or highwater is None or at_ms is None:
            return True, float("-inf")
        # A stable offset below the high watermark is an open transaction at the partition's
        # end: its records may become readable at any moment and precede what the other inputs
        # hold (a backlog committed at once shows this, one partition after another).
        behind = bool(state.position < lso or lso < highwater)
        confirmed = time.monotonic() - (time.time() - at_ms / 1000)
        if self.engine.cfg.trace:
            log.info("trace lag %s: position %s lso %s at %s -> behind %s", tp,
                     state.position, lso, at_ms, behind)
        return behind, confirmed

    def _aiokafka_state(self, tp: TopicPartition) -> Any:
        # aiokafka answers position() only as a coroutine in the consumer's own thread; its
        # partition state (position, last stable offset) is a plain read. aiokafka 0.14.
        consumer = self._thread._consumer
        if consumer is None:
            return None
        return consumer._subscription.subscription.assignment.state_value(tp)

    async def seek_to(self, offsets: dict[TopicPartition, int | None]) -> dict[TopicPartition, int]:
        """Input partitions to their committed offsets (None: the log's beginning); returns
        where each will be read from."""
        start = [tp for tp, o in offsets.items() if o is None]
        earliest = await self.earliest_offsets(*(TP(tp.topic, tp.partition) for tp in start))
        targets = {}
        for tp, offset in offsets.items():
            target = offset if offset is not None else earliest[TP(tp.topic, tp.partition)]
            await self.seek(TP(tp.topic, tp.partition), target)
            targets[tp] = target
        return targets

    # -- commits are the engine's ---------------------------------------------------------

    async def commit(self, *args: Any, **kwargs: Any) -> bool:
        return False

    # -- rebalances -----------------------------------------------------------------------

    def _partitions(self, tps: set[TP]) -> set[int]:
        # input partition numbers only: the group also assigns Faust's assignor topic
        inputs = self.engine.input_topics
        return {tp.partition for tp in tps if tp.topic in inputs}

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        await self.engine.revoke(self._partitions(revoked))
        await super().on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        await super().on_partitions_assigned(assigned, generation_id)
        self.engine.assign(self._partitions(assigned))

    # -- delivery -------------------------------------------------------------------------

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - needs a broker
        engine = self.engine
        engine.inputs = self
        monitor: Any = self.app.monitor
        received = self.app.faust_metrics.messages_received  # type: ignore[attr-defined]
        per_topic = self.app.faust_metrics.messages_received_per_topics  # type: ignore[attr-defined]
        received_per_topic: dict[str, Any] = {}  # topic -> label child, resolved once
        # an input held back by an idle lane is looked at again before its deadline
        poll = min(0.05, engine.cfg.max_idle / 2) if engine.cfg.max_idle > 0 else 0.05
        stopped = self._stopped.is_set
        fetcher_stopped = fetcher._stopped.is_set
        try:
            while not (stopped() or fetcher_stopped()):
                seeks = dict(engine.seeks)
                active = engine.fetchable() & self._get_active_partitions()
                if not active or not self.flow_active:
                    await asyncio.sleep(poll)
                    records: Any = {}
                else:
                    records = await self._getmany(active, timeout=poll)
                n = sum(len(rs) for rs in records.values())
                if n:
                    received.inc(n)
                    for tp, rs in records.items():
                        monitor.track_tp_end_offset(tp, self.highwater(tp))
                        topic_received = received_per_topic.get(tp.topic)
                        if topic_received is None:
                            topic_received = per_topic.labels(topic=tp.topic)
                            received_per_topic[tp.topic] = topic_received
                        topic_received.inc(len(rs))
                # shielded: a rebalance may cancel the fetcher; a batch is never half decided
                await asyncio.shield(engine.process(records, seeks))
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            exit_now(EXIT_INTERNAL_ERROR, f"the batch loop failed: {exc!r}", exc)


class BatchConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """The consumer the group runs in Faust's consumer thread, configured for batches.

    Faust's own builder reads committed records only under its exactly-once setting (which the
    engine replaces) and long-polls fetches for 1.5 s: a fetch in flight for caught-up
    partitions then holds up the next fetch of a partition the merge is waiting for.
    """

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        conf = self.app.conf
        return aiokafka.AIOKafkaConsumer(
            client_id=conf.broker_client_id,
            group_id=conf.id,
            group_instance_id=conf.consumer_group_instance_id,
            bootstrap_servers=faust_aiokafka.server_list(transport.url, transport.default_port),
            partition_assignment_strategy=[self.app.assignor],
            enable_auto_commit=False,
            auto_offset_reset=conf.consumer_auto_offset_reset,
            max_poll_records=conf.broker_max_poll_records,
            max_poll_interval_ms=int((conf.broker_max_poll_interval or 0) * 1000.0),
            max_partition_fetch_bytes=conf.consumer_max_fetch_size,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            request_timeout_ms=int(conf.broker_request_timeout * 1000.0),
            check_crcs=conf.broker_check_crcs,
            session_timeout_ms=int(conf.broker_session_timeout * 1000.0),
            rebalance_timeout_ms=int(conf.broker_rebalance_timeout * 1000.0),
            heartbeat_interval_ms=int(conf.broker_heartbeat_interval * 1000.0),
            isolation_level="read_committed",
            metadata_max_age_ms=conf.consumer_metadata_max_age_ms,
            connections_max_idle_ms=conf.consumer_connections_max_idle_ms,
            **faust_aiokafka.credentials_to_aiokafka_auth(
                conf.broker_credentials, conf.ssl_context
            ),
        )


class StreamsTransport(faust_aiokafka.Transport):
    Consumer = BatchConsumer
