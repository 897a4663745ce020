"""The state of one partition number: committed in a local store, pending in memory.

Writes of the open transaction stay in memory (`put`); reads see them first. Only after the
Kafka transaction that carries their changelog records has committed are they written to the
local store, in one batch together with the changelog offsets they reflect (`commit`). The
local store therefore never holds a write whose transaction could still abort, and restoring
means reading each changelog from its checkpoint to its end (Quix Streams' checkpoint order).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import orjson

from streams.step import STORES

_OFFSET = "__offset__"
_ABSENT = object()


class Backend(Protocol):
    """Bytes to bytes, written in batches."""

    def get(self, key: bytes) -> bytes | None: ...
    def write(self, puts: Iterable[tuple[bytes, bytes | None]]) -> None: ...
    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]: ...
    def close(self) -> None: ...
    def destroy(self) -> None: ...


class MemoryBackend:
    """Lost with the process: every assignment restores from the changelogs' beginning."""

    def __init__(self) -> None:
        self._d: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self._d.get(key)

    def write(self, puts: Iterable[tuple[bytes, bytes | None]]) -> None:
        d = self._d
        for k, v in puts:
            if v is None:
                d.pop(k, None)
            else:
                d[k] = v

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return ((k, v) for k, v in list(self._d.items()) if k.startswith(prefix))

    def close(self) -> None:
        pass

    def destroy(self) -> None:
        self._d.clear()


class RocksBackend:
    """A RocksDB directory per partition number (rocksdict, raw bytes)."""

    def __init__(self, path: Path) -> None:
        from rocksdict import Options, Rdict, WriteBatch

        self._path = path
        self._batch = WriteBatch
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = Rdict(str(path), Options(raw_mode=True))

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self._db.get(key)
        return value

    def write(self, puts: Iterable[tuple[bytes, bytes | None]]) -> None:
        wb = self._batch(raw_mode=True)
        for k, v in puts:
            if v is None:
                wb.delete(k)
            else:
                wb.put(k, v)
        self._db.write(wb)

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        for k, v in self._db.items(from_key=prefix):
            key: bytes = k  # type: ignore[assignment]  # raw mode: keys are bytes
            if not key.startswith(prefix):
                return
            yield key, v

    def close(self) -> None:
        self._db.close()

    def destroy(self) -> None:
        self._db.close()
        shutil.rmtree(self._path, ignore_errors=True)


def _k(store: str, key: str) -> bytes:
    return f"{store}|{key}".encode()


class PartitionState:
    """Three named maps (see `streams.step.STORES`) of JSON values, with pending writes.

    A store named in `mirrored` is also held in memory once `load_mirrors()` ran (the dedup
    ids: every record looks one up and most are not there, and the dedup expiry keeps each id
    in memory anyway), so its reads never reach RocksDB.

    A store named in `cached` keeps its last `cache_entries` (> 0) committed values read or written,
    decoded, absent keys included (a Xingtu task or an order is read by the events that follow
    it, and most cart-adds ask for a task that does not exist): a hit skips the RocksDB read
    and the JSON decode. Oldest first out, half at a time.
    """

    def __init__(
        self,
        open_backend: Callable[[], Backend],
        mirrored: tuple[str, ...] = (),
        cached: tuple[str, ...] = (),
        cache_entries: int = 0,
    ) -> None:
        self._open = open_backend
        self.backend = open_backend()
        self._pending: dict[str, dict[str, Any]] = {s: {} for s in STORES}
        self._sealed: dict[str, dict[str, Any]] = {s: {} for s in STORES}
        """Writes of the transaction being committed, while `_pending` takes the next one's."""
        self._mirrored = mirrored
        self._mirror: dict[str, dict[str, Any]] = {}
        self._cache: dict[str, dict[str, Any]] = {
            store: {} for store in (cached if cache_entries > 0 else ())
        }
        self._cache_entries = cache_entries

    def _remember(self, cache: dict[str, Any], key: str, value: Any) -> None:
        if len(cache) >= self._cache_entries and key not in cache:
            kept = list(cache.items())[len(cache) // 2:]
            cache.clear()
            cache.update(kept)
        cache[key] = value

    def load_mirrors(self) -> None:
        self._mirror = {store: dict(self.items(store)) for store in self._mirrored}

    # -- the open transaction --------------------------------------------------------------

    def get(self, store: str, key: str) -> Any:
        pending = self._pending[store]
        if key in pending:
            return pending[key]
        sealed = self._sealed[store]
        if sealed and key in sealed:
            return sealed[key]
        mirror = self._mirror.get(store)
        if mirror is not None:
            return mirror.get(key)
        cache = self._cache.get(store)
        if cache is not None:
            value = cache.get(key, _ABSENT)
            if value is not _ABSENT:
                return value
        raw = self.backend.get(_k(store, key))
        value = None if raw is None else orjson.loads(raw)
        if cache is not None:
            self._remember(cache, key, value)
        return value

    def put(self, store: str, key: str, value: Any) -> None:
        self._pending[store][key] = value

    def pending(self) -> Iterator[tuple[str, str, bytes | None]]:
        """(store, key, encoded value or None) of every key written since the last commit: one
        changelog record per key, however often it was written."""
        for store, writes in self._pending.items():
            for key, value in writes.items():
                yield store, key, None if value is None else orjson.dumps(value)

    def seal(self) -> list[tuple[str, str, bytes | None]]:
        """The open transaction's writes go to commit (`pending()`, encoded); new writes start
        the next transaction and are read before them. One transaction may be sealed at a
        time: `commit` or `discard` ends it."""
        if any(self._sealed.values()):
            raise RuntimeError("a sealed transaction is still being committed")
        encoded = list(self.pending())
        self._sealed, self._pending = self._pending, self._sealed
        return encoded

    @property
    def dirty(self) -> bool:
        return any(self._pending.values())

    def commit(self, encoded: list[tuple[str, str, bytes | None]], offsets: dict[str, int]) -> None:
        """The sealed transaction holding `encoded` (from `seal()`) committed with the
        changelogs ending at `offsets`: make it the local state."""
        puts = [(_k(store, key), value) for store, key, value in encoded]
        puts.extend((_k(_OFFSET, s), str(o).encode()) for s, o in offsets.items())
        self.backend.write(puts)
        for store, mirror in self._mirror.items():
            for key, value in self._sealed[store].items():
                if value is None:
                    mirror.pop(key, None)
                else:
                    mirror[key] = value
        for store, cache in self._cache.items():
            for key, value in self._sealed[store].items():
                self._remember(cache, key, value)
        for writes in self._sealed.values():
            writes.clear()

    def discard(self) -> None:
        """The transactions aborted (or never started): forget their writes."""
        for layer in (self._pending, self._sealed):
            for writes in layer.values():
                writes.clear()

    # -- restoring and housekeeping ---------------------------------------------------------

    def checkpoint(self, store: str) -> int | None:
        """Offset of the last changelog record the local store reflects."""
        raw = self.backend.get(_k(_OFFSET, store))
        return None if raw is None else int(raw)

    def restore(self, store: str, records: Iterable[tuple[bytes, bytes | None]], last: int) -> None:
        """Apply committed changelog records (key, value or tombstone) up to offset `last`."""
        prefix = f"{store}|".encode()
        puts: list[tuple[bytes, bytes | None]] = [(prefix + k, v) for k, v in records]
        puts.append((_k(_OFFSET, store), str(last).encode()))
        self.backend.write(puts)
        self._mirror.pop(store, None)  # stale: load_mirrors() again after restoring
        cache = self._cache.get(store)
        if cache is not None:
            cache.clear()

    def items(self, store: str) -> Iterator[tuple[str, Any]]:
        prefix = f"{store}|".encode()
        n = len(prefix)
        for k, v in self.backend.scan(prefix):
            yield k[n:].decode(), orjson.loads(v)

    def forget(self, store: str, keys: Iterable[str]) -> None:
        """Drop keys from the local store only (their changelog forgets them by retention)."""
        keys = list(keys)
        self.backend.write((_k(store, key), None) for key in keys)
        for memory in (self._mirror.get(store), self._cache.get(store)):
            if memory is not None:
                for key in keys:
                    memory.pop(key, None)

    def wipe(self) -> None:
        """The local store is not a prefix of the changelogs (e.g. they were recreated)."""
        self.discard()
        self._mirror = {}
        for cache in self._cache.values():
            cache.clear()
        self.backend.destroy()
        self.backend = self._open()

    def close(self) -> None:
        self.backend.close()
