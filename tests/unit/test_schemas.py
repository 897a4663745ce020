"""Schemas and examples, checked by both python-jsonschema and jsonschema-rs (as the worker)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from streams.policy import (
    ChargeState,
    State,
    TaskState,
    cart_add_from_dict,
    decide,
    load_policy,
    order_from_dict,
    parse_instant,
    xingtu_task_from_dict,
)
from tests.unit.policy_docs import sale_dict

SCHEMAS = Path(__file__).parents[2] / "schemas"
TOPICS = (
    "cart-adds",
    "orders",
    "xingtu-tasks",
    "rejections",
    "fees",
    "policies",
    "policy-shadow",
    "advisories",
)
CLOSED = ("rejections", "fees", "policies", "policy-shadow", "advisories")
INPUT_BUILDERS = {
    "cart-adds": cart_add_from_dict,
    "orders": order_from_dict,
    "xingtu-tasks": xingtu_task_from_dict,
}
EXAMPLES = sorted((SCHEMAS / "examples").glob("*/*/*.json"))


@cache
def schema(topic: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS / f"{topic}.schema.json").read_text("utf-8"))
    return loaded


@cache
def validators(topic: str) -> tuple[Any, ...]:
    s = schema(topic)
    return (
        Draft202012Validator(s, format_checker=FormatChecker()),
        jsonschema_rs.validator_for(s, validate_formats=True),  # as the worker compiles them
        jsonschema_rs.validator_for(s),  # format as annotation only: the pattern must suffice
    )


def assert_valid(topic: str, instance: Any) -> None:
    py, rs_formats, rs_plain = validators(topic)
    errors = [e.message for e in py.iter_errors(instance)]
    assert not errors, errors
    rs_formats.validate(instance)
    rs_plain.validate(instance)


@pytest.mark.parametrize("topic", TOPICS)
def test_schema_is_valid_2020_12(topic: str) -> None:
    s = schema(topic)
    Draft202012Validator.check_schema(s)
    jsonschema_rs.meta.validate(s)
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert s["$id"].endswith(f"/{topic}.schema.json")
    assert s["title"] and s["description"]
    expect_closed = topic in CLOSED
    assert s["additionalProperties"] is (not expect_closed)


@pytest.mark.parametrize("topic", TOPICS)
def test_every_topic_has_examples(topic: str) -> None:
    for kind in ("valid", "invalid"):
        assert len(list((SCHEMAS / "examples" / topic / kind).glob("*.json"))) >= 3, kind
    assert {p.parent.parent.name for p in EXAMPLES} == set(TOPICS)
    assert {p.parent.name for p in EXAMPLES} == {"valid", "invalid"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: "/".join(p.parts[-3:]))
def test_example(path: Path) -> None:
    topic, kind = path.parent.parent.name, path.parent.name
    instance = json.loads(path.read_text("utf-8"))
    if kind == "valid":
        assert_valid(topic, instance)
        if topic in INPUT_BUILDERS:
            event = INPUT_BUILDERS[topic](instance)
            assert event.occurred_at == instance["occurred_at"]
    else:
        for v in validators(topic):
            assert not v.is_valid(instance), f"{type(v).__name__} accepted {path.name}"


# ----------------------------------------------------------------- records made by decide()

POLICY = load_policy()
NOW = parse_instant("2020-11-11T11:11:11.111+08:00")
MATCHED = TaskState("xt-1", "anchor-1", "sku-1").with_transition(
    parse_instant("2020-08-01T00:00:00+08:00"), "matched"
)


def cart(at: str, **kw: Any) -> dict[str, Any]:
    return sale_dict(at, **kw)


def order(at: str, **kw: Any) -> dict[str, Any]:
    d = {
        **cart(at),
        "event_id": "or-1",
        "order_id": "ord-1",
        "status": "paid",
        "amount_fen": 19_999,
    }
    d.update(kw)
    return {k: v for k, v in d.items() if v is not ...}


def produced_records() -> list[tuple[str, str, dict[str, Any]]]:
    """(case, topic, record) for every kind of output record decide() can produce."""
    cases: list[tuple[str, dict[str, Any], State, int | None, str]] = [
        (
            "cart-match-required-no-task",
            cart("2020-09-10T12:00:00+08:00", xingtu_task_id=...),
            State(),
            None,
            "rejections",
        ),
        (
            "cart-match-required-null-task",
            cart("2020-09-10T12:00:00Z", xingtu_task_id=None),
            State(),
            None,
            "rejections",
        ),
        (
            "cart-banned-unknown-source",
            cart("2020-10-09T00:00:00+08:00", product_source="zzz"),
            State(task=MATCHED),
            None,
            "rejections",
        ),
        (
            "cart-record-clock",
            cart("2020-09-05T00:00:00.5+08:00"),
            State(),
            parse_instant("2020-09-07T00:00:00Z"),
            "rejections",
        ),
        (
            "order-banned",
            order("2020-10-09T00:00:00+08:00"),
            State(task=MATCHED),
            None,
            "rejections",
        ),
        (
            "order-match-required",
            order("2020-09-10T00:00:00+08:00", xingtu_task_id="xt-2"),
            State(),
            None,
            "rejections",
        ),
        (
            "charge-third-party",
            order("2020-09-10T00:00:00+08:00"),
            State(task=MATCHED),
            None,
            "fees",
        ),
        (
            "charge-own-shop",
            order("2021-01-01T00:00:00+08:00", product_source="douyin_shop"),
            State(task=MATCHED),
            None,
            "fees",
        ),
        (
            "charge-max",
            order("2020-08-20T00:00:00+08:00", amount_fen=1_000_000_000_000),
            State(task=MATCHED),
            None,
            "fees",
        ),
        (
            "reversal",
            order("2020-12-01T00:00:00+08:00", status="refunded", amount_fen=500),
            State(charge=ChargeState("ord-1", "or-0", "third_party", 2000, 4000, 0, "xt-1")),
            None,
            "fees",
        ),
    ]
    out = []
    for name, raw, state, record_ms, topic in cases:
        builder = cart_add_from_dict if "order_id" not in raw else order_from_dict
        # The inputs themselves are schema-valid.
        assert_valid("orders" if "order_id" in raw else "cart-adds", raw)
        d = decide(builder(raw), state, POLICY, record_ms=record_ms, now_ms=NOW)
        record = d.rejection if topic == "rejections" else d.fee
        assert record is not None, name
        out.append((name, topic, record))
    return out


@pytest.mark.parametrize(
    ("name", "topic", "record"), produced_records(), ids=lambda x: x if isinstance(x, str) else ""
)
def test_decide_output_matches_schema(name: str, topic: str, record: dict[str, Any]) -> None:
    assert_valid(topic, record)
    # Records survive a JSON round trip unchanged (no non-JSON types).
    assert json.loads(json.dumps(record)) == record


def test_valid_input_examples_decide_to_valid_outputs() -> None:
    """Feed every valid input example through decide() in several states; outputs validate."""
    for path in EXAMPLES:
        topic, kind = path.parent.parent.name, path.parent.name
        if kind != "valid" or topic not in INPUT_BUILDERS:
            continue
        event = INPUT_BUILDERS[topic](json.loads(path.read_text("utf-8")))
        if topic == "xingtu-tasks":
            d = decide(event, State(), POLICY, record_ms=None, now_ms=NOW)
            assert d.outcome == "applied" and d.task is not None
            continue
        task = TaskState("xt-9001", "anchor-42", "sku-1001").with_transition(0, "matched")
        charge = ChargeState("ord-5001", "or-0000", "third_party", 2000, 3980, 0, "xt-9001")
        for state in (State(), State(task=task), State(task=task, charge=charge)):
            for record_ms in (None, event.occurred_ms + 301_000):
                d = decide(event, state, POLICY, record_ms=record_ms, now_ms=NOW)
                if d.rejection is not None:
                    assert_valid("rejections", d.rejection)
                if d.fee is not None:
                    assert_valid("fees", d.fee)
