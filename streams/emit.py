"""Sends the worker's outputs through Faust's producer, inside the right Kafka transaction.

With `exactly_once`, Faust keeps one transactional producer per *source* partition and commits
that partition's offsets in it, but `topic.send` picks the producer by the *destination*
partition, so an output for another partition number would commit in a different transaction
than its input's offset. Sending with the source partition's transactional id keeps an input's
outputs, its table updates and its offset in one atomic commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from faust.types import TP, AppT


class Emitter:
    __slots__ = ("_app", "_eos", "_tids")

    def __init__(self, app: AppT) -> None:
        self._app = app
        self._eos = app.in_transaction
        self._tids: dict[TP, str] = {}

    def _tid(self, source: TP) -> str:
        tid = self._tids.get(source)
        if tid is None:
            group = self._app.assignor.group_for_topic(source.topic)
            tid = self._tids[source] = f"{self._app.conf.id}-{group}-{source.partition}"
        return tid

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        source: TP,
        headers: Sequence[tuple[str, bytes]] | None = None,
        partition: int | None = None,
        timestamp: float | None = None,
    ) -> Any:
        """Queue one record; the producer's flush/commit before the offset commit waits for it."""
        if self._eos:
            producer: Any = self._app.producer
            return await producer.send(
                topic,
                key,
                value,
                partition,
                timestamp,
                headers,
                transactional_id=self._tid(source),
            )
        producer = await self._app.maybe_start_producer()
        return await producer.send(topic, key, value, partition, timestamp, headers)
