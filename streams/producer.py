"""A small API for services that publish to the input topics.

    async with InputProducer("kafka://localhost:9092", prefix="") as p:
        await p.cart_add(event_id="e1", occurred_at="2020-09-10T12:00:00+08:00", anchor_id="a1",
                         room_id="r1", channel="live", product_id="p1",
                         product_source="taobao", xingtu_task_id="x1")

Each event is validated against its topic's schema before it is sent (a producer bug fails in the
producer, not as a dead letter), keyed by `anchor_id` with Kafka's default murmur2 partitioner so
that a streamer's events are co-partitioned, and stamped with its `occurred_at` as the record
timestamp unless `timestamp_ms` says otherwise. Sends are acknowledged by all in-sync replicas.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from streams.codec import load_validators
from streams.policy import parse_instant


class InvalidEvent(ValueError):
    """The event does not match its topic's schema; nothing was sent."""


class InputProducer:
    def __init__(
        self,
        broker: str = "kafka://localhost:9092",
        *,
        prefix: str = "",
        schema_dir: Path | None = None,  # None: the schemas installed with the package
        **aiokafka_options: Any,
    ) -> None:
        self.prefix = prefix
        self._validators = load_validators(schema_dir)
        servers = [u.removeprefix("kafka://") for u in broker.replace(",", ";").split(";") if u]
        options: dict[str, Any] = {"acks": "all", "linger_ms": 5, "enable_idempotence": True}
        options.update(aiokafka_options)
        self._producer = AIOKafkaProducer(bootstrap_servers=servers, **options)

    async def __aenter__(self) -> InputProducer:
        await self._producer.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._producer.stop()

    def encode(self, topic: str, event: dict[str, Any]) -> bytes:
        """Validate against `schemas/<topic>.schema.json` and serialize; raise InvalidEvent."""
        validator = self._validators[topic]
        for err in validator.iter_errors(event):
            path = "/".join(str(p) for p in err.instance_path) or "(root)"
            raise InvalidEvent(f"{topic}: {path}: {err.message}")
        return orjson.dumps(event)

    async def send(
        self,
        topic: str,
        event: dict[str, Any],
        *,
        timestamp_ms: int | None = None,
        wait: bool = True,
    ) -> Any:
        """Send one event to `<prefix><topic>`; returns the record metadata (or its future)."""
        value = self.encode(topic, event)
        ts = timestamp_ms if timestamp_ms is not None else parse_instant(event["occurred_at"])
        fut = await self._producer.send(
            self.prefix + topic, value, key=event["anchor_id"].encode(), timestamp_ms=ts
        )
        return await fut if wait else fut

    async def cart_add(self, **event: Any) -> Any:
        return await self.send("cart-adds", event)

    async def order(self, **event: Any) -> Any:
        return await self.send("orders", event)

    async def xingtu_task(self, **event: Any) -> Any:
        return await self.send("xingtu-tasks", event)

    async def flush(self) -> None:
        await self._producer.flush()
