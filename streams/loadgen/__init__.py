"""Load generator: seeded realistic input records, their expected outputs, and a paced producer.

`generate` plans the records (pure) as one plan in a chosen arrival order (tasks, cart-adds and
orders interleaved by default), `expected_outputs` replays the partition logs they make in the
worker's merged timestamp order to say what the worker must emit, and `send_planned` produces
them to Kafka; `python -m streams.loadgen` wraps the three for demos and benchmarks.
"""

from streams.loadgen.expected import Expected, expected_outputs
from streams.loadgen.generate import (
    ARRIVAL_ORDERS,
    MALFORMED_KINDS,
    TOPICS,
    Planned,
    arrange,
    generate,
)
from streams.loadgen.send import Stats, TopicsMissing, send_planned

__all__ = [
    "ARRIVAL_ORDERS",
    "MALFORMED_KINDS",
    "TOPICS",
    "Expected",
    "Planned",
    "Stats",
    "TopicsMissing",
    "arrange",
    "expected_outputs",
    "generate",
    "send_planned",
]
