"""Task histories, charge states and table keys."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.policy import MAX_TRANSITIONS, ChargeState, TaskState, task_key

TRANSITION = st.tuples(
    st.integers(min_value=-(2**50), max_value=2**50), st.sampled_from(["matched", "cancelled"])
)


def build(transitions: list[tuple[int, str]]) -> TaskState:
    state = TaskState("t", "a", "p")
    for ms, status in transitions:
        state = state.with_transition(ms, status)
    return state


def reference_valid_at(transitions: list[tuple[int, str]], t: int) -> bool:
    """Straight from the spec: latest transition at or before t is a match; cancel wins ties."""
    before = [tr for tr in set(transitions) if tr[0] <= t]
    if not before:
        return False
    latest = max(ms for ms, _ in before)
    return all(status == "matched" for ms, status in before if ms == latest)


@given(st.lists(TRANSITION, max_size=30), st.integers(min_value=-(2**50), max_value=2**50))
def test_valid_at_matches_reference_in_any_arrival_order(
    transitions: list[tuple[int, str]], t: int
) -> None:
    state = build(transitions)
    assert state.valid_at(t) == reference_valid_at(transitions, t)
    for ms, _ in transitions:
        assert state.valid_at(ms) == reference_valid_at(transitions, ms)
    assert build(list(reversed(transitions))) == state


@given(st.lists(TRANSITION, max_size=30))
def test_json_round_trip(transitions: list[tuple[int, str]]) -> None:
    state = build(transitions)
    wire = orjson.loads(orjson.dumps(state.to_json()))
    assert TaskState.from_json(wire) == state


def test_transitions_sorted_deduplicated_and_bounded() -> None:
    state = build([(5, "matched"), (5, "cancelled"), (1, "matched"), (5, "matched")])
    assert state.transitions == ((1, "matched"), (5, "matched"), (5, "cancelled"))
    big = build([(i, "matched" if i % 2 else "cancelled") for i in range(MAX_TRANSITIONS + 10)])
    assert len(big.transitions) == MAX_TRANSITIONS
    assert big.transitions[0][0] == 10  # oldest dropped
    assert big.transitions[-1][0] == MAX_TRANSITIONS + 9


def test_with_transition_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        TaskState("t", "a", "p").with_transition(1, "pending")
    with pytest.raises(TypeError):
        TaskState("t", "a", "p").with_transition(1.0, "matched")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [
        None,
        [],
        {"task_id": "t", "anchor_id": "a", "product_id": "p"},
        {"task_id": "t", "anchor_id": "a", "product_id": "p", "transitions": [[1, "pending"]]},
        {"task_id": "t", "anchor_id": "a", "product_id": "p", "transitions": [["1", "matched"]]},
        {"task_id": "t", "anchor_id": "a", "product_id": "p", "transitions": [[1]]},
        {"task_id": 1, "anchor_id": "a", "product_id": "p", "transitions": []},
    ],
)
def test_task_from_json_rejects_corrupt(bad: Any) -> None:
    with pytest.raises(ValueError):
        TaskState.from_json(bad)


def test_charge_round_trip_and_reversal() -> None:
    charge = ChargeState("o", "e", "third_party", 2000, 3980, 0, "t")
    wire = orjson.loads(orjson.dumps(charge.to_json()))
    assert ChargeState.from_json(wire) == charge
    assert charge.with_reversal(1000).reversed_fen == 1000
    with pytest.raises(ValueError):
        charge.with_reversal(3981)
    with pytest.raises(ValueError):
        charge.with_reversal(-1)


@pytest.mark.parametrize(
    "change",
    [
        {"source_class": "taobao"},
        {"rate_bps": 10001},
        {"rate_bps": True},
        {"charged_fen": -1},
        {"reversed_fen": 4000},
        {"charged_fen": 1.5},
        {"order_id": None},
    ],
)
def test_charge_from_json_rejects_corrupt(change: dict[str, Any]) -> None:
    wire = {**ChargeState("o", "e", "third_party", 2000, 3980, 0, "t").to_json(), **change}
    with pytest.raises(ValueError):
        ChargeState.from_json(wire)


IDS = st.text(min_size=1, max_size=12, alphabet=st.sampled_from("ab1:|\x1f "))


@given(IDS, IDS, IDS, IDS, IDS, IDS)
def test_task_key_is_injective(a: str, b: str, c: str, x: str, y: str, z: str) -> None:
    assert (task_key(a, b, c) == task_key(x, y, z)) == ((a, b, c) == (x, y, z))


def test_task_key_separates_fields() -> None:
    assert task_key("a|1:b", "c", "d") != task_key("a", "b|1:c", "d")
    assert task_key("a\x1fb", "c", "d") != task_key("a", "b\x1fc", "d")
