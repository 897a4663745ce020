"""Integration tests need the real broker: they fail (never skip) when it does not answer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import BROKER, Worker, broker_answers, unique

pytestmark = pytest.mark.integration


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def kafka_broker() -> str:
    if not broker_answers():
        pytest.fail(
            f"no Kafka answers at {BROKER}: run the suite with `make test`, which starts the "
            "local broker (deploy/local-kafka/kafka.sh start)",
            pytrace=False,
        )
    return BROKER


@pytest.fixture
def make_worker(tmp_path: Path) -> Iterator:
    """Factory of workers sharing one app id and prefix per test; all stopped at the end."""
    workers: list[Worker] = []
    app_id = unique("app")
    prefix = unique("")

    def factory(**kw: object) -> Worker:
        w = Worker(
            app_id=str(kw.pop("app_id", app_id)),
            prefix=str(kw.pop("prefix", prefix)),
            data_dir=tmp_path / f"data{len(workers)}",
            **kw,  # type: ignore[arg-type]
        )
        workers.append(w)
        return w

    yield factory
    for w in workers:
        w.stop(timeout=20)
