"""The behaviour cases of tests/cases.py, in memory: each case's records on their anchors'
partitions, merged in event-time order by the worker's merge (every lane caught up), decided by
the worker's record step over dict state. The same table runs against a real worker in
tests/integration/test_cases_real.py."""

from __future__ import annotations

from collections import defaultdict

import orjson
import pytest

from streams.engine.merge import Lane, merge_ready
from streams.names import ADVISORIES, DEAD_LETTERS, FEES, INPUT_TOPICS, POLICY_SHADOW, REJECTIONS
from streams.policy import parse_instant
from streams.step import InputRecord, Output
from tests.cases import CASES, Case, case_book
from tests.unit.shell_fakes import DictState, home, make_step

NOW_MS = parse_instant("2020-11-11T00:00:00Z")


def run(case: Case) -> list[Output]:
    step = make_step(book=case_book())
    lanes: dict[int, dict[str, Lane[InputRecord]]] = defaultdict(
        lambda: {t: Lane(rank, behind=False) for rank, t in enumerate(INPUT_TOPICS)}
    )
    for topic, key, value, ts in case.records("mem"):
        p = home(key.decode())  # Kafka's default partitioner on the anchor key
        lane = lanes[p][topic]
        lane.records.append(InputRecord(topic, p, len(lane.records), ts, key, value))
    outputs: list[Output] = []
    for by_topic in lanes.values():
        state = DictState()  # one partition number's state
        ready = merge_ready(
            list(by_topic.values()), lambda r: (r.timestamp or 0, r.offset), 0.0, 0.0
        )
        assert not any(lane.records for lane in by_topic.values())
        for record in ready:
            outputs += state.apply(step(record, state, NOW_MS)).outputs
    return outputs


@pytest.mark.parametrize("case", CASES)
def test_case_in_memory(case: Case) -> None:
    outputs = run(case)
    assert {o.topic for o in outputs} <= {REJECTIONS, FEES, DEAD_LETTERS, ADVISORIES, POLICY_SHADOW}
    case.check(
        [orjson.loads(o.value or b"") for o in outputs if o.topic == REJECTIONS],
        [orjson.loads(o.value or b"") for o in outputs if o.topic == FEES],
        sum(o.topic == DEAD_LETTERS for o in outputs),
        [orjson.loads(o.value or b"") for o in outputs if o.topic == ADVISORIES],
        [orjson.loads(o.value or b"") for o in outputs if o.topic == POLICY_SHADOW],
    )


def test_the_runner_decides_in_event_time_not_log_order() -> None:
    """Guard on the runner itself: deciding the task-after-sale case in log order would fail."""
    (param,) = [p for p in CASES if p.id == "task-after-its-sale-in-the-log"]
    case: Case = param.values[0]
    step, state, outputs = make_step(), DictState(), []
    for offset, (topic, key, value, ts) in enumerate(case.records("log")):
        r = step(InputRecord(topic, home(key.decode()), offset, ts, key, value), state, NOW_MS)
        outputs += state.apply(r).outputs
    with pytest.raises(AssertionError):
        case.check(
            [orjson.loads(o.value or b"") for o in outputs if o.topic == REJECTIONS],
            [orjson.loads(o.value or b"") for o in outputs if o.topic == FEES],
            0,
        )
