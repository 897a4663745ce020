"""Input written in Kafka transactions: only committed records are decided (the worker reads
read_committed), and a lane whose open transaction holds records is waited for."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from tests.integration import events as ev
from tests.integration.harness import BOOTSTRAP, Worker, consume_all, unique, wait_metric

pytestmark = pytest.mark.integration


async def test_aborted_input_is_never_decided(make_worker) -> None:
    w: Worker = make_worker()
    w.start()
    a = unique("anchor")
    banned = [
        ev.cart_add(a, f"p{i}", "taobao", "2020-10-10T10:00:00+08:00") for i in range(2)
    ]
    producer = AIOKafkaProducer(
        bootstrap_servers=BOOTSTRAP, transactional_id=f"test-{uuid.uuid4().hex[:8]}"
    )
    await producer.start()
    try:
        for event, commit in zip(banned, (False, True), strict=True):
            await producer.begin_transaction()
            await producer.send_and_wait(
                w.prefix + "cart-adds", orjson.dumps(event), key=a.encode(),
                timestamp_ms=ev.ts(event),
            )
            if commit:
                await producer.commit_transaction()
            else:
                await producer.abort_transaction()
    finally:
        await producer.stop()
    await wait_metric(w, "livecommerce_events_total", 1, topic="cart-adds", outcome="rejected")
    await asyncio.sleep(1.0)
    rejections = await consume_all([w.prefix + "rejections"], idle=1.0)
    assert [r.json()["event_id"] for r in rejections] == [banned[1]["event_id"]]
