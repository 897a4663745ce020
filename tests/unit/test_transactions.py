"""A transaction is committed only if every record sent in it was written.

aiokafka can fail a batch without failing its transaction; committing then would store the
offsets of inputs whose outputs are gone. The producer's Kafka side is replaced by a recorder
here: what is under test is the decision to commit or to exit.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import pytest
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from streams import transactions
from streams.transactions import EXIT_TRANSACTION_INCOMPLETE, CheckedCommitProducer

TID = "app-0-3"
OFFSETS = {TP("orders", 3): 41}


class RecordingTxnProducer:
    """Stands in for one aiokafka transactional producer."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def send_offsets_to_transaction(self, offsets: Any, group_id: str) -> None:
        self.calls.append("offsets")

    async def commit_transaction(self) -> None:
        self.calls.append("commit")

    async def begin_transaction(self) -> None:
        self.calls.append("begin")


class Exited(Exception):
    pass


def checked(kafka: RecordingTxnProducer) -> CheckedCommitProducer:
    p = CheckedCommitProducer.__new__(CheckedCommitProducer)  # no app, no broker
    p._sent = {}
    p._trn_locks = defaultdict(asyncio.Lock)
    p._transaction_producers = {TID: kafka}
    return p


def settled(result: BaseException | None) -> asyncio.Future[Any]:
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    if result is None:
        fut.set_result("metadata")
    else:
        fut.set_exception(result)
    return fut


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    codes: list[int] = []

    def fake_exit(code: int) -> None:
        codes.append(code)
        raise Exited

    monkeypatch.setattr(transactions.os, "_exit", fake_exit)
    return codes


async def test_all_records_written_commits_offsets_and_starts_the_next(exits: list[int]) -> None:
    kafka = RecordingTxnProducer()
    p = checked(kafka)
    p._sent[TID] = [settled(None), settled(None)]
    await p.commit_transactions({TID: OFFSETS}, "group")
    assert kafka.calls == ["offsets", "commit", "begin"]
    assert exits == [] and TID not in p._sent


async def test_one_failed_record_means_no_commit_and_exit_3(exits: list[int]) -> None:
    kafka = RecordingTxnProducer()
    p = checked(kafka)
    p._sent[TID] = [settled(None), settled(TimeoutError("batch expired")), settled(None)]
    with pytest.raises(Exited):
        await p.commit_transactions({TID: OFFSETS}, "group")
    assert exits == [EXIT_TRANSACTION_INCOMPLETE]
    assert kafka.calls == []  # neither the offsets nor the commit reached Kafka


async def test_the_check_waits_for_records_still_in_flight(exits: list[int]) -> None:
    kafka = RecordingTxnProducer()
    p = checked(kafka)
    pending: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    p._sent[TID] = [pending]
    commit = asyncio.create_task(p.commit_transactions({TID: OFFSETS}, "group"))
    await asyncio.sleep(0.01)
    assert kafka.calls == [] and not commit.done()
    pending.set_result("metadata")
    await commit
    assert kafka.calls == ["offsets", "commit", "begin"]


async def test_a_revoked_partitions_sends_are_forgotten_with_its_transaction(
    exits: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    stopped: list[str] = []

    async def faust_stop(self: Any, tid: str) -> None:
        stopped.append(tid)

    monkeypatch.setattr(faust_aiokafka.Producer, "stop_transaction", faust_stop)
    kafka = RecordingTxnProducer()
    p = checked(kafka)
    p._sent[TID] = [settled(TimeoutError("abandoned"))]
    await p.stop_transaction(TID)
    assert stopped == [TID] and TID not in p._sent
    await p.commit_transactions({TID: OFFSETS}, "group")  # a later owner's clean transaction
    assert exits == [] and kafka.calls == ["offsets", "commit", "begin"]
