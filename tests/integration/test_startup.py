"""Start-up refuses what it cannot run with, in one clear line and a non-zero exit."""

from __future__ import annotations

import asyncio
import subprocess
import time

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.integration.harness import BOOTSTRAP, Worker, free_port, unique

pytestmark = pytest.mark.integration


def run_until_exit(w: Worker, timeout: float = 60) -> tuple[int, str]:
    w.start(wait_ready=False)
    assert w.proc is not None
    try:
        code = w.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        w.kill()
        raise AssertionError(f"worker did not exit:\n{w.tail()}") from None
    return code, w.tail(200)


def test_stopped_broker_fails_clearly(make_worker) -> None:
    port = free_port()  # nothing listens there
    w = make_worker(
        extra_env={"STREAMS_BROKER": f"kafka://127.0.0.1:{port}", "STREAMS_STARTUP_TIMEOUT": "3"}
    )
    t0 = time.monotonic()
    code, log = run_until_exit(w)
    assert code != 0
    assert f"cannot reach Kafka at kafka://127.0.0.1:{port}" in log
    assert "make kafka" in log
    assert log.count("Traceback") == 0, log
    assert time.monotonic() - t0 < 30


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("STREAMS_WEB_PORT", "http"),
        ("STREAMS_TOPIC_PARTITIONS", "0"),
        ("STREAMS_BROKER", "localhost:9092"),
        ("STREAMS_POLICY_FILE", "/nonexistent.toml"),
        ("STREAMS_PROCESSING_GUARANTEE", "maybe"),
    ],
)
def test_bad_setting_names_the_variable(make_worker, var: str, value: str) -> None:
    code, log = run_until_exit(make_worker(extra_env={var: value}))
    assert code != 0
    assert var in log and "cannot start" in log
    assert "Traceback" not in log, log


def test_malformed_policy_file_names_file_and_field(make_worker, tmp_path) -> None:
    bad = tmp_path / "policy.toml"
    bad.write_text('version = "x"\nown_shop_sources = "douyin_shop"\n')
    code, log = run_until_exit(make_worker(extra_env={"STREAMS_POLICY_FILE": str(bad)}))
    assert code != 0
    assert str(bad) in log and "own_shop_sources" in log
    assert "Traceback" not in log, log


def test_inputs_not_copartitioned_refuse_to_start(make_worker) -> None:
    prefix = unique("")

    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
        await admin.start()
        try:
            await admin.create_topics(
                [
                    NewTopic(prefix + "cart-adds", 4, 1),
                    NewTopic(prefix + "orders", 2, 1),
                    NewTopic(prefix + "xingtu-tasks", 4, 1),
                ]
            )
        finally:
            await admin.close()

    asyncio.run(create())
    code, log = run_until_exit(make_worker(prefix=prefix))
    assert code != 0
    assert "not co-partitioned" in log and f"{prefix}orders=2" in log
