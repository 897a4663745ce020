"""The Faust side: topics, tables and the one agent that feeds records to the Processor.

One agent reads all three inputs: they are co-partitioned by anchor_id, so a streamer's Xingtu
tasks, cart-adds and orders reach the same stream and the same table partitions.
"""

from __future__ import annotations

import logging
from typing import Any

from streams import metrics
from streams.codec import INPUTS, Decoder, load_validators
from streams.emit import Emitter
from streams.faust_app import SETTINGS, app
from streams.policy import PolicyError, load_policy
from streams.processor import Processor, Tables
from streams.topics import INPUT_TOPICS

log = logging.getLogger(__name__)
__version__ = "0.1.0"

try:
    POLICY = load_policy(SETTINGS.policy_file)
except PolicyError as exc:
    from streams.faust_app import _fail

    _fail(str(exc))

VALIDATORS = load_validators(SETTINGS.schema_dir)
metrics.init_series(POLICY.version, __version__)


def _table(name: str, help: str, **options: Any) -> Any:
    return app.Table(
        name,
        default=None,
        partitions=SETTINGS.topic_partitions,
        key_type=str,
        help=help,
        **options,
    )


tasks = _table("xingtu-task-state", "Xingtu task transitions by task/anchor/product")
charges = _table("order-charge-state", "Each charged order's fee and reversals so far")
# Its changelog forgets an id by itself once dedup_retention_days have passed (the worker drops
# it from the local store then, see streams.expiry); Kafka deletes whole segments, so an id may
# stay on disk up to one segment (segment.ms, a day here) longer. Applies when Faust creates the
# changelog topic; an existing one keeps its config (kafka-configs --alter to change it).
processed = _table(
    "processed-event-ids",
    "Input event ids already decided (dedup)",
    extra_topic_configs={
        "cleanup.policy": "compact,delete",
        "retention.ms": str(POLICY.dedup_retention_ms),
        "segment.ms": str(min(POLICY.dedup_retention_ms, 86_400_000)),
    },
)

inputs = app.topic(
    *(SETTINGS.topic(t) for t in INPUT_TOPICS),
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
    partitions=SETTINGS.topic_partitions,
    internal=False,
)

processor = Processor(
    prefix=SETTINGS.topic_prefix,
    partitions=SETTINGS.topic_partitions,
    policy=POLICY,
    decoders={t: Decoder(t, VALIDATORS) for t in INPUTS},
    tables=Tables(tasks=tasks, charges=charges, processed=processed),
    emitter=Emitter(app),
    trace=SETTINGS.trace_records,
)
metrics.DEDUP_IDS.set_function(lambda: len(processor.expiry))


async def _state_recovered(sender: Any, *args: Any, **kwargs: Any) -> None:
    processor.state_recovered()


app.on_rebalance_complete.connect(_state_recovered)  # type: ignore[arg-type]  # Faust's stub


@app.agent(inputs, name="decide")
async def decide_events(stream: Any) -> None:
    async for event in stream.events():
        await processor.process(event.message)
