"""Plain stand-ins for what the Processor talks to in the worker: Faust's message and emitter."""

from __future__ import annotations

from typing import Any


class RecordingEmitter:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, dict[str, bytes]]] = []

    async def send(self, topic: str, key: bytes | None, value: bytes | None, **kw: Any) -> None:
        self.sent.append((topic, key, value, dict(kw.get("headers") or [])))


class FakeMessage:
    def __init__(
        self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes, ts_ms: int
    ) -> None:
        self.topic, self.partition, self.offset = topic, partition, offset
        self.key: bytes | None = key
        self.value: bytes | None = value
        self.timestamp = ts_ms / 1000
        self.headers: Any = []
        self.tp: Any = (topic, partition)
        self.acked = False
