"""The policy versions every worker decides with: the compacted `policies` topic, read whole
before anything is decided, seeded from the policy file when it holds no enforced version, then
followed live (#14).

A new version is added to the shared `PolicyBook` between records (the event loop runs this
reader between the engine's awaits); which version decides an event depends on the event's
time only (`streams.policy.versioned`), so it does not matter which batch first sees it, as
long as it is published before events it should govern arrive. A record that is not a valid
document, or whose key is not its version, or a tombstone that would withdraw the last enforced
version, is refused with one log line and `livecommerce_policy_refused_total`: the worker goes
on under the versions it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from streams import metrics
from streams.policy.policy_file import PolicyError
from streams.policy.versions import PolicyBook, PolicyDocument

log = logging.getLogger(__name__)


async def read_to_end(
    consumer: AIOKafkaConsumer,
    tps: list[TopicPartition],
    apply: Callable[[bytes | None, bytes | None, str], None],
) -> None:
    """Hand `apply(key, value, where)` every record of `tps` from the consumer's positions to
    the end offsets as of the call, in offset order per partition (the worker and the CLI)."""
    ends = await consumer.end_offsets(tps)
    while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
        batches = await consumer.getmany(*tps, timeout_ms=200)
        for tp in tps:
            for rec in batches.get(tp, []):
                apply(rec.key, rec.value, f"{rec.topic}@{rec.partition}:{rec.offset}")


class PolicyFeed:
    def __init__(
        self,
        book: PolicyBook,
        topic: str,
        seed: PolicyDocument,
        client: dict[str, Any],
        *,
        client_id: str,
        code_version: str,
        timeout: float,
    ) -> None:
        self.book = book
        self.topic = topic
        self.seed = seed
        self.client = client
        self.client_id = client_id
        self.code_version = code_version
        self.timeout = timeout
        self._consumer: AIOKafkaConsumer | None = None
        self._follow: asyncio.Task[None] | None = None
        self._in_force: str | None = None

    async def load(self) -> None:
        """Every version on the topic, seeded first if it has no enforced one; then follows."""
        consumer = AIOKafkaConsumer(
            **self.client,
            client_id=self.client_id,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
        )
        await asyncio.wait_for(consumer.start(), self.timeout)
        self._consumer = consumer
        await consumer.topics()  # metadata of every topic: the partitions of this one
        parts = consumer.partitions_for_topic(self.topic) or {0}
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        await asyncio.wait_for(read_to_end(consumer, tps, self.apply), self.timeout)
        if self.book.earliest_enforced() is None:
            await self._publish_seed()
            await asyncio.wait_for(read_to_end(consumer, tps, self.apply), self.timeout)
        if self.book.earliest_enforced() is None:
            raise RuntimeError(f"{self.topic} holds no enforced policy version, even after seeding")
        log.info(
            "policies: %s", ", ".join(f"{d.version} ({d.mode}, from {d.effective_from})"
                                      for d in self.book.documents()),
        )
        self._show()
        self._follow = asyncio.ensure_future(self._follow_topic())

    async def stop(self) -> None:
        if self._follow is not None:
            self._follow.cancel()
            with contextlib.suppress(BaseException):
                await self._follow
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()

    async def _publish_seed(self) -> None:
        producer = AIOKafkaProducer(
            **self.client, client_id=self.client_id, acks="all", enable_idempotence=True
        )
        await asyncio.wait_for(producer.start(), self.timeout)
        try:
            await asyncio.wait_for(
                producer.send_and_wait(
                    self.topic, self.seed.to_json(), key=self.seed.policy_id.encode()
                ),
                self.timeout,
            )
        finally:
            await producer.stop()
        log.warning(
            "policies: %s held no enforced version; seeded it with %s from the policy file",
            self.topic, self.seed.version,
        )

    def apply(self, key: bytes | None, value: bytes | None, where: str) -> None:
        """One record of the topic, in offset order."""
        try:
            change = self.book.apply_record(key, value, where)
        except PolicyError as exc:
            self._refuse(str(exc))
            return
        if change is not None:
            log.info("policies: %s", change)
            self._show()

    def _refuse(self, why: str) -> None:
        log.error("policies: refused %s; deciding on under the versions held", why)
        metrics.POLICY_REFUSED.inc()

    def _show(self) -> None:
        """The gauges: versions held, and the version in force now (wall clock)."""
        docs = self.book.documents()
        for mode in ("enforced", "shadow"):
            metrics.child(metrics.POLICY_VERSIONS, mode).set(sum(d.mode == mode for d in docs))
        now = self.book.enforced_doc_at(time.time_ns() // 1_000_000)
        version = now.version if now is not None else "none"
        if version != self._in_force:
            self._in_force = version
            metrics.show_policy_in_force(version, self.code_version)

    async def _follow_topic(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=1000)
            except KafkaError as exc:
                log.warning("policies: reading %s failed (%r); retrying", self.topic, exc)
                await asyncio.sleep(1.0)
                continue
            for records in batches.values():
                for rec in records:
                    self.apply(rec.key, rec.value, f"{rec.topic}@{rec.partition}:{rec.offset}")
            self._show()  # a version's effective_from may have passed meanwhile
