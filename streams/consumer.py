"""Faust's aiokafka consumer with exact offset bookkeeping and a leaner delivery loop.

Registered through Faust's transport extension point (`StreamsApp._new_transport`); Faust still
decides when to commit and commits in its transactions, this class only answers "up to which
offset is every record processed" (see `streams.offsets` for why Faust's answer was wrong after
restarts and rebalances) and hands fetched records to the streams.

Two rules keep the answer exact:
* every record aiokafka returned is either delivered to the streams or its partition is sought
  back to it, so a jump between delivered offsets can only be transaction markers;
* an acknowledgement counts only for a record delivered in its partition's current epoch (a new
  epoch starts at every seek and assignment).
Changelog partitions are Faust's recovery's to seek; the consumer only tells recovery the truth
about them: `position()` answers with the first record fetched but not yet applied, and records
fetched but not handed over are fetched again (see `streams.changelog`).
Delivery awaits the conductor directly instead of racing every record against the flow-control
event in new tasks (`Service.wait_first`), which was most of Faust's per-record cost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, cast

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message
from mode.utils.futures import notify

from streams.changelog import ChangelogFlow
from streams.offsets import OffsetTracker
from streams.transactions import CheckedCommitProducer

_EPOCH = "lc_epoch"  # attribute set on each delivered ConsumerMessage
_CL_EPOCH = "lc_changelog_epoch"  # the same for changelog records handed to recovery


class ExactConsumer(faust_aiokafka.Consumer):
    _offsets: OffsetTracker

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._offsets = OffsetTracker()
        self._changelog = ChangelogFlow()
        super().__init__(*args, **kwargs)
        self._watch_changelog_queue()

    def _watch_changelog_queue(self) -> None:
        """Learn which changelog records recovery has taken off its queue, and which a flow
        change cleared from it unapplied (those are fetched again)."""
        queue: Any = cast(Any, self.app.tables).changelog_queue
        get, clear = queue.get, queue.clear
        flow = self._changelog

        async def get_and_note() -> Any:
            event = await get()
            message = event.message
            flow.taken(message.tp, message.offset, getattr(message, _CL_EPOCH, None))
            return event

        def clear_and_note() -> None:
            flow.discarded()
            clear()

        queue.get = get_and_note
        queue.clear = clear_and_note

    def _is_changelog(self, tp: TP) -> bool:
        # input partitions are acknowledged and committed; table changelogs are not
        return not self.app.topics.acks_enabled_for(tp.topic)

    async def position(self, tp: TP) -> int | None:
        position = await super().position(tp)
        if self._is_changelog(tp):
            held = self._changelog.held_back(tp)
            if held is not None and (position is None or held < position):
                return held
        return position

    # -- what may be committed --------------------------------------------------------------

    def ack(self, message: Message) -> bool:
        """The pure-Python path (Faust's `Consumer.ack`, used by `Stream.ack`)."""
        if message.acked:
            return False
        message.acked = True
        if not self.app.topics.acks_enabled_for(message.topic):
            return False
        counted = self._offsets.done(message.tp, message.offset, getattr(message, _EPOCH, None))
        self._unacked_messages.discard(message)
        if counted:
            self._n_acked += 1
        notify(self._waiting_for_ack)
        return counted

    def _filter_tps_with_pending_acks(self, topics: Any = None) -> Iterator[TP]:
        tps = cast(set[TP], set(self._offsets.partitions()) | set(self._acked))
        return (
            # aiokafka wants its own TopicPartition type; Faust's TP compares equal
            self._new_topicpartition(tp.topic, tp.partition)
            for tp in tps
            if topics is None or tp in topics or tp.topic in topics
        )

    def _new_offset(self, tp: TP) -> int | None:
        # Faust's Cython stream iterator acknowledges by appending to `_acked` itself rather than
        # calling `ack`; those records were delivered in the current epoch (resets clear the
        # lists, and records from before a rebalance are held back unacknowledged: CommitGate).
        acked = self._acked.pop(tp, None)
        self._acked_index.pop(tp, None)
        if acked:
            epoch = self._offsets.epoch(tp)
            for offset in sorted(acked):
                self._offsets.done(tp, offset, epoch)
        return self._offsets.position(tp)

    # -- where reading continues -------------------------------------------------------------

    async def perform_seek(self) -> None:
        await super().perform_seek()
        for tp in self.assignment():
            if self.app.topics.acks_enabled_for(tp.topic):
                self._reset(tp, self._read_offset.get(tp))

    async def seek(self, partition: TP, offset: int) -> None:
        await super().seek(partition, offset)
        if self.app.topics.acks_enabled_for(partition.topic):
            self._reset(partition, offset)

    async def _seek(self, partition: TP, offset: int) -> None:
        if self._is_changelog(partition):
            self._changelog.sought(partition)
        await super()._seek(partition, offset)

    async def seek_wait(self, partitions: Any) -> None:
        # how recovery positions changelog partitions
        for tp in partitions:
            if self._is_changelog(tp):
                self._changelog.sought(tp)
        await super().seek_wait(partitions)

    def _reset(self, tp: TP, position: int | None) -> None:
        self._offsets.reset(tp, position)
        self._acked.pop(tp, None)
        self._acked_index.pop(tp, None)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        for tp in revoked:
            self._offsets.forget(tp)
        await super().on_partitions_revoked(revoked)

    async def _rewind(self, tp: TP, offset: int, epoch: int | None) -> None:
        """Fetch again from the first record of `tp` that was fetched but not delivered, unless
        the partition was sought meanwhile (that seek decides where reading continues)."""
        if self._offsets.epoch(tp) != epoch:
            return
        if tp not in self.assignment():
            return
        await self._seek(tp, offset)
        self._read_offset[tp] = offset

    async def _refetch_changelogs(self) -> None:
        """Seek changelog partitions back to records fetched but never applied (dropped when
        the flow stopped or the partition paused, or cleared from recovery's queue), unless
        they were sought meanwhile: that seek decides where reading continues."""
        assigned = self.assignment()
        for tp, offset in self._changelog.refetch():
            if tp in assigned:
                await self._seek(tp, offset)
            else:
                self._changelog.sought(tp)

    # -- delivery ----------------------------------------------------------------------------

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - needs a broker
        callback = self.callback
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        offsets = self._offsets
        to_message = self._to_message
        read_offset = self._read_offset
        monitor = self.app.monitor
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        changelog = self._changelog
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                records, active = await self._wait_next_records(1.0)
                if changelog.refetch_due:
                    await self._refetch_changelogs()
                if not records or self.should_stop:
                    await asyncio.sleep(0)
                    continue
                generation = self.app.consumer_generation_id
                # Only input partitions (acknowledged, committed) are tracked; changelog
                # partitions read by table recovery are sought by Faust itself; the consumer
                # notes what it hands to recovery (see streams.changelog).
                tracked = {tp: acks_enabled_for(tp.topic) for tp in records}
                cl_epochs = {
                    tp: changelog.fetched(tp, rs[0].offset)
                    for tp, rs in records.items()
                    if not tracked[tp] and rs
                }
                # snapshot after making sure each tracked partition has an epoch: a seek or
                # assignment from here on changes it, and the rest of the batch is stale
                epochs = {tp: offsets.ensure(tp) if tracked[tp] else None for tp in records}
                for tp in records:
                    monitor.track_tp_end_offset(tp, self.highwater(tp))
                undelivered: dict[TP, int] = {}
                stop_all = False
                for tp, record in self.scheduler.iterate(records):
                    if tp in undelivered:
                        continue
                    stop_all = stop_all or not self.flow_active or (
                        self.app.consumer_generation_id != generation
                    )
                    if not tracked[tp]:
                        if changelog.epoch(tp) != cl_epochs[tp]:
                            continue  # sought since the fetch
                        if stop_all or not (
                            active is None or tp in active or tp in self._buffered_partitions
                        ):
                            changelog.not_handed(tp, record.offset)
                            continue
                        message = to_message(tp, record)
                        setattr(message, _CL_EPOCH, cl_epochs[tp])
                        changelog.handing(tp, record.offset)
                        await callback(message)
                        read_offset[tp] = record.offset
                        continue
                    if stop_all:
                        undelivered[tp] = record.offset
                        continue
                    if offsets.epoch(tp) != epochs[tp] or not (
                        active is None or tp in active or tp in self._buffered_partitions
                    ):
                        undelivered[tp] = record.offset
                        continue
                    epoch = offsets.deliver(tp, record.offset)
                    if epoch is None:
                        continue  # already delivered in this epoch
                    message = to_message(tp, record)
                    setattr(message, _EPOCH, epoch)
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    await callback(message)
                    read_offset[tp] = record.offset
                for tp, offset in undelivered.items():
                    await self._rewind(tp, offset, epochs.get(tp))
                for tp, cl_epoch in cl_epochs.items():
                    changelog.batch_done(tp, cl_epoch)
                await asyncio.sleep(0)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise


class StreamsTransport(faust_aiokafka.Transport):
    Consumer = ExactConsumer
    Producer = CheckedCommitProducer

