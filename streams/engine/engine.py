"""The worker's hot path: assigned partition numbers restored, decided in batches, committed.

The Faust consumer (streams.runtime.consumer) hands over each fetched batch and every
rebalance; this class owns what happens between: a partition number becomes ready only after
its transactional producer has fenced any previous owner, its state has been restored from the
committed changelogs and its inputs have been sought to the committed offsets (in that order:
the fence completes the previous owner's last transaction, so what is read next is final).
A failed transaction resets its partition the same way; one that cannot be set up within
`recovery_timeout` ends the process (exit 3) for its supervisor to restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams import metrics
from streams.engine.partition import EXIT_TRANSACTION_FAILED, PartitionTask, TransactionFailed
from streams.engine.restore import restore
from streams.engine.store import Backend, MemoryBackend, PartitionState, RocksBackend
from streams.expiry import Expiry
from streams.names import INPUT_TOPICS, OUTPUT_TOPICS
from streams.step import CHARGES, SEEN, TASKS, RecordStep

log = logging.getLogger(__name__)

EXIT_INTERNAL_ERROR = 4
CHUNK = 64
"""Records a partition decides before the others get a turn and the event loop runs its
other work (2-3 ms of deciding; 64 gave lower latency tails than 128 in paired runs)."""
MAX_BUFFERED = 20_000
"""Records buffered per input partition before it is fetched no more (back-pressure while
the merge waits for another lane)."""


class Inputs(Protocol):
    """What the engine needs of the group's consumer (Faust's, in the worker)."""

    def lag(self, tp: TopicPartition) -> tuple[bool, float]:
        """(the broker holds more for `tp` than was fetched, when its fetch response said so
        (monotonic seconds; -inf while unknown))."""
        ...

    async def seek_to(
        self, offsets: dict[TopicPartition, int | None]
    ) -> dict[TopicPartition, int]: ...


@dataclass(frozen=True)
class EngineConfig:
    app_id: str
    prefix: str
    changelogs: dict[str, str]
    data_dir: Path
    store: str
    commit_interval: float
    max_idle: float
    dedup_retention_ms: int
    recovery_timeout: float
    client: dict[str, Any]
    """bootstrap_servers and security settings for every aiokafka client."""
    trace: bool = False
    state_cache_entries: int = 0
    """Committed task and charge values kept decoded per store and partition number (see
    `PartitionState`)."""


class Engine:
    def __init__(
        self, cfg: EngineConfig, step: RecordStep, clock: Callable[[], float] = time.time
    ) -> None:
        self.cfg = cfg
        self.input_topics = frozenset(cfg.prefix + t for t in INPUT_TOPICS)
        self.step = step
        self.clock = clock
        self.tasks: dict[int, PartitionTask] = {}
        self.assigned: set[int] = set()
        self.starting: dict[int, asyncio.Task[None]] = {}
        self.lock = asyncio.Lock()
        self.inputs: Inputs | None = None
        self.on_commit: Callable[[dict[TopicPartition, int]], None] | None = None
        self.seeks: dict[int, int] = {}
        """How often each partition number's inputs were sought: a batch whose fetch began
        before a seek of its partition holds records from before it and is dropped."""
        self._admin: AIOKafkaAdminClient | None = None

    # -- health ---------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Every assigned partition number is being decided."""
        return self.assigned == set(self.tasks)

    def fetchable(self) -> set[TopicPartition]:
        out = set()
        for task in self.tasks.values():
            for tp in task.tps.values():
                if task.buffered(tp.topic) < MAX_BUFFERED:
                    out.add(tp)
        return out

    # -- assignment -----------------------------------------------------------------------

    def assign(self, partitions: Iterable[int]) -> None:
        new = set(partitions) - self.assigned - set(self.starting)
        self.assigned |= set(partitions)
        if new:
            self._start(new)

    def _start(self, partitions: set[int]) -> None:
        task = asyncio.ensure_future(self._set_up(partitions))
        for p in partitions:
            self.starting[p] = task

    async def revoke(self, partitions: Iterable[int]) -> None:
        """Commit what was decided, then let go (before the group hands them elsewhere)."""
        revoked = set(partitions)
        self.assigned -= revoked
        for p in revoked:
            starting = self.starting.pop(p, None)
            if starting is not None and not any(t is starting for t in self.starting.values()):
                starting.cancel()
        async with self.lock:
            for p in sorted(revoked & set(self.tasks)):
                task = self.tasks[p]
                if task.committing is not None:
                    await asyncio.wait([task.committing])  # a failure resets (drops) it
                if self.tasks.get(p) is not task:
                    continue
                del self.tasks[p]
                try:
                    await self._commit(task)
                except TransactionFailed as exc:
                    log.warning("partition %d revoked with its last transaction failed: %s", p, exc)
                await task.close()

    async def stop(self) -> None:
        await self.revoke(list(self.assigned | set(self.tasks)))
        if self._admin is not None:
            await self._admin.close()

    async def _set_up(self, partitions: set[int]) -> None:
        deadline = time.monotonic() + self.cfg.recovery_timeout
        delay = 0.2
        me = asyncio.current_task()
        while True:
            # a partition revoked meanwhile, or handed to a newer set-up, is not this one's
            wanted = {p for p in partitions if self.starting.get(p) is me}
            if not wanted:
                return
            try:
                tasks = await self._build(wanted)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if time.monotonic() > deadline:
                    exit_now(
                        EXIT_TRANSACTION_FAILED,
                        f"partitions {sorted(wanted)} could not be set up within "
                        f"{self.cfg.recovery_timeout:.0f}s: {exc!r}",
                    )
                log.warning("setting up partitions %s failed (%r); retrying", sorted(wanted), exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            for p, task in tasks.items():
                if p in self.assigned and self.starting.get(p) is me:
                    self.tasks[p] = task
                    self.starting.pop(p, None)
                else:
                    await task.close()
            return

    async def _build(self, partitions: set[int]) -> dict[int, PartitionTask]:
        cfg = self.cfg
        producers = {p: self._producer(p) for p in sorted(partitions)}
        states: dict[int, PartitionState] = {}
        try:
            # 1. fence: the previous owner's open transaction is completed or aborted
            await asyncio.gather(*(pr.start() for pr in producers.values()))
            any_producer = next(iter(producers.values()))
            counts = {
                t: len(await any_producer.partitions_for(t))
                for t in (cfg.prefix + o for o in OUTPUT_TOPICS)
            }
            # 2. state as of the last committed transaction
            for p in partitions:
                states[p] = PartitionState(
                    self._backend_opener(p),
                    mirrored=(SEEN,),
                    cached=(TASKS, CHARGES),
                    cache_entries=cfg.state_cache_entries,
                )
            await restore(self._restore_consumer, states, cfg.changelogs)
            # 3. inputs from the offsets committed with that state
            tps = [TopicPartition(cfg.prefix + t, p) for p in partitions for t in INPUT_TOPICS]
            committed = await self._committed(tps)
            assert self.inputs is not None
            positions = await self.inputs.seek_to(committed)
            for p in partitions:
                self.seeks[p] = self.seeks.get(p, 0) + 1
        except BaseException:
            for pr in producers.values():
                with contextlib.suppress(Exception):
                    await pr.stop()
            for st in states.values():
                st.close()
            raise
        now_ms = int(self.clock() * 1000)
        tasks = {}
        for p in partitions:
            expiry = Expiry(cfg.dedup_retention_ms)
            states[p].load_mirrors()
            drop = expiry.rebuild(states[p].items(SEEN), now_ms)
            states[p].forget(SEEN, drop)
            metrics.DEDUP_FORGOTTEN.inc(len(drop))
            tasks[p] = PartitionTask(
                p,
                prefix=cfg.prefix,
                group_id=cfg.app_id,
                changelogs=cfg.changelogs,
                state=states[p],
                producer=producers[p],
                step=self.step,
                expiry=expiry,
                max_idle=cfg.max_idle,
                partition_counts=counts,
                trace=cfg.trace,
            )
            tasks[p].expect({tp.topic: o for tp, o in positions.items() if tp.partition == p})
        try:
            await asyncio.gather(*(
                task.warm_up({tp: o for tp, o in positions.items() if tp.partition == p})
                for p, task in tasks.items()
            ))
        except BaseException:
            for task in tasks.values():
                await task.close()
            raise
        log.info("partitions %s ready", sorted(partitions))
        return tasks

    def _producer(self, p: int) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            **self.cfg.client,
            client_id=f"{self.cfg.app_id}-p{p}",
            transactional_id=f"{self.cfg.app_id}-0-{p}",
            acks="all",
            linger_ms=0,  # the outbox builds whole batches; waiting adds only to the commit
            max_batch_size=256 * 1024,
            request_timeout_ms=30_000,
        )

    def _restore_consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            **self.cfg.client,
            client_id=f"{self.cfg.app_id}-restore",
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )

    def _backend_opener(self, p: int) -> Callable[[], Backend]:
        if self.cfg.store == "memory":
            return MemoryBackend
        path = self.cfg.data_dir / self.cfg.app_id / f"p{p}"
        return lambda: RocksBackend(path)

    async def _committed(self, tps: list[TopicPartition]) -> dict[TopicPartition, int | None]:
        if self._admin is None:
            self._admin = AIOKafkaAdminClient(
                **self.cfg.client, client_id=f"{self.cfg.app_id}-offsets"
            )
            await self._admin.start()
        found = await self._admin.list_consumer_group_offsets(self.cfg.app_id, partitions=tps)
        out: dict[TopicPartition, int | None] = {}
        for tp in tps:
            meta = found.get(tp)
            out[tp] = meta.offset if meta is not None and meta.offset >= 0 else None
        return out

    # -- the batch path -------------------------------------------------------------------

    async def process(
        self, records: dict[Any, list[Any]], seeks: dict[int, int] | None = None
    ) -> None:
        """Buffer a fetched batch, decide what the merge allows, commit what is due.

        `seeks`: a copy of `self.seeks` taken before the fetch began."""
        async with self.lock:
            now = time.monotonic()
            now_ms = int(self.clock() * 1000)
            for tp, recs in records.items():
                task = self.tasks.get(tp.partition)
                if seeks is not None and seeks.get(tp.partition) != self.seeks.get(tp.partition):
                    continue  # fetched before its partition was sought: read again from there
                if task is not None and recs:
                    task.buffer(tp.topic, recs, now)
            inputs = self.inputs
            if inputs is not None:
                for task in self.tasks.values():
                    for tp in task.tps.values():
                        task.note_lag(tp.topic, *inputs.lag(tp))
            # Round robin in chunks, yielding between rounds: the commits' round trips and the
            # producers' acks run on this event loop, and one long batch held them all up; the
            # partitions of one fetch share the time instead of waiting for each other.
            busy = list(self.tasks.items())
            while busy:
                still = []
                for p, task in busy:
                    if self.tasks.get(p) is not task:
                        continue  # reset or revoked meanwhile
                    try:
                        n = await task.run(now, now_ms, CHUNK)
                    except Exception as exc:
                        await self._reset(p, task, exc)
                        continue
                    if task.committing is None and task.commit_due(self.cfg.commit_interval):
                        # sealed here, between batches; committed in the background while
                        # this and the other partitions go on deciding
                        sealed = task.seal()
                        task.committing = asyncio.ensure_future(
                            self._commit_in_background(p, task, sealed)
                        )
                    if n >= CHUNK:
                        still.append((p, task))
                busy = still
                if busy:
                    # `now` stays the fetch's: an idle lane's wait may only run out at a fetch,
                    # after the consumer had its chance to deliver what the lane waited for
                    await asyncio.sleep(0)
                    now_ms = int(self.clock() * 1000)

    async def _commit_in_background(self, p: int, task: PartitionTask, sealed: Any) -> None:
        try:
            await self._commit(task, sealed)
        except Exception as exc:
            await self._reset(p, task, exc)
        finally:
            task.committing = None

    async def _commit(self, task: PartitionTask, sealed: Any = None) -> None:
        started = time.monotonic()
        offsets = await (task.finish(sealed) if sealed is not None else task.commit())
        if offsets:
            metrics.COMMIT_SECONDS.observe(time.monotonic() - started)
            if self.on_commit is not None:
                self.on_commit(offsets)

    async def _reset(self, p: int, task: PartitionTask, exc: BaseException) -> None:
        if not isinstance(exc, TransactionFailed) and not _is_kafka_error(exc):
            exit_now(EXIT_INTERNAL_ERROR, f"partition {p}: {exc!r}", exc)
        log.warning("partition %d: %s; restarting it from its last commit", p, exc)
        metrics.PARTITION_RESETS.inc()
        if self.tasks.get(p) is not task:
            return  # revoked meanwhile
        del self.tasks[p]
        await task.close()
        if p in self.assigned and p not in self.starting:
            self._start({p})


def _is_kafka_error(exc: BaseException) -> bool:
    from aiokafka.errors import IllegalOperation, KafkaError

    return isinstance(exc, KafkaError | IllegalOperation | OSError | asyncio.TimeoutError)


def exit_now(code: int, message: str, exc: BaseException | None = None) -> None:
    """Stop now, for the supervisor to restart: what was not committed is aborted by the next
    owner and decided again from the committed offsets and state."""
    log.critical("exiting (%d): %s", code, message, exc_info=exc)
    logging.shutdown()
    os._exit(code)
