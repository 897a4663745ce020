"""Per-batch metric helpers give what per-record observations would have given."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streams.metrics import observe_all, observe_many


def _samples(registry: CollectorRegistry, name: str) -> dict[str, float]:
    text = generate_latest(registry).decode()
    return {
        s.name.removeprefix(name) + str(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        if family.name == name
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_observe_many_equals_n_observations() -> None:
    registry = CollectorRegistry()
    one = Histogram("one", "h", ["t"], registry=registry, buckets=(0.001, 0.01))
    many = Histogram("many", "h", ["t"], registry=registry, buckets=(0.001, 0.01))
    for value, n in ((0.005, 3), (0.5, 2), (0.0001, 4)):
        for _ in range(n):
            one.labels("a").observe(value)
        observe_many(many.labels("a"), value, n)
    ones, manys = _samples(registry, "one"), _samples(registry, "many")
    assert ones.keys() == manys.keys() and ones
    for k in ones:
        assert manys[k] == pytest.approx(ones[k])


def test_observe_many_falls_back_to_observing_one_by_one() -> None:
    class Plain:
        def __init__(self) -> None:
            self.seen: list[float] = []

        def observe(self, v: float) -> None:
            self.seen.append(v)

    p = Plain()
    observe_many(p, 2.0, 3)
    assert p.seen == [2.0, 2.0, 2.0]


@given(st.lists(st.sampled_from([0.0, 0.0005, 0.001, 0.002, 0.01, 0.5, 1e9]), max_size=30))
def test_observe_all_equals_one_observation_each(values: list[float]) -> None:
    registry = CollectorRegistry()
    one = Histogram("one", "h", ["t"], registry=registry, buckets=(0.001, 0.01))
    many = Histogram("many", "h", ["t"], registry=registry, buckets=(0.001, 0.01))
    child = one.labels("a")
    for v in values:
        child.observe(v)
    observe_all(many.labels("a"), values)
    ones, manys = _samples(registry, "one"), _samples(registry, "many")
    assert ones.keys() == manys.keys() and ones
    for k in ones:
        assert manys[k] == pytest.approx(ones[k])
