"""Load generator: seeded realistic input records, their expected outputs, and a paced producer.

`generate` plans the records (pure), `expected_outputs` replays them through the policy core to
say what the worker must emit, and `send_planned` produces them to Kafka; `python -m
streams.loadgen` wraps the three for demos and benchmarks.
"""

from streams.loadgen.expected import Expected, expected_outputs
from streams.loadgen.generate import MALFORMED_KINDS, TOPICS, Planned, generate, phases
from streams.loadgen.send import Stats, TopicsMissing, send_planned

__all__ = [
    "MALFORMED_KINDS",
    "TOPICS",
    "Expected",
    "Planned",
    "Stats",
    "TopicsMissing",
    "expected_outputs",
    "generate",
    "phases",
    "send_planned",
]
