"""The worker's job as a Quix Streams application: the benchmark's Quix contender (issue 12).

    python -m bench.quix_app --prefix bench-x- --partitions 4 --app-id bench-x-quix \\
        --state-dir /tmp/quix-state [--broker 127.0.0.1:9092] [--commit-interval 5]

Every option also reads an environment variable (`QUIX_BENCH_BROKER`, `QUIX_BENCH_PREFIX`, ...;
the broker falls back to `STREAMS_BENCH_BROKER`, then 127.0.0.1:9092).

What a user would write with Quix Streams 3.28 for the same job, with the same guarantees:

* `Application(processing_guarantee="exactly-once", auto_offset_reset="earliest")`: outputs,
  state changelog records and input offsets commit in one Kafka transaction per checkpoint,
  every `commit_interval` seconds (default 5.0 s: Quix's own default).
* The three inputs are `app.dataframe(topic)` each, merged with `StreamingDataFrame.concat`:
  Quix then buffers the co-partitioned input partitions of one partition number and hands
  them over in record-timestamp order (waiting for a partition that still has data on the
  broker), as Kafka Streams does.
* State: Quix's default RocksDB store of the merged stream, one per partition number, with its
  changelog topic (`changelog__<app id>--...`). Keys are not prefixed by the message key (Quix's
  default for `stateful=True`) but stored per partition as the worker's Faust tables are: a
  record whose key is wrong but which sits in its anchor's partition must still find its
  anchor's state. Hence `register_store()` and the checkpoint's store transaction instead of
  `apply(..., stateful=True)`.
* The glue is the worker's own record step, `streams.step.RecordStep.decide` (decode, dead
  letters deduplicated by position, the home partition check and reroute, dedup by
  `f"{topic}/{event_id}"`, `streams.policy.decide` with the record timestamp, the state writes
  and the output records), read through `QuixState` (Quix's State as `get(store, key)`); its
  writes go to `state.set` and its outputs through the application's own (transactional)
  producer, so they commit with the state and the offsets. Not reproduced: metrics, and
  forgetting dedup ids after `dedup_retention_days` (no benchmark lasts a week).
* Ties: Quix takes, of equal timestamps, the input partition it was assigned first, not
  "tasks first" as the worker's contract says; a task and a sale of one anchor stamped the same
  millisecond could be decided in the other order (no run so far differed from the model).

For the benchmark the process writes a small JSON status file (`--status-file`) every 100 ms:
assigned input partitions, whether state recovery is running, records decided / rerouted /
dead-lettered, the last processed offset of every input partition, and the wall times at which
records started to flow after a pause. `bench/run_quix.py` reads it; nothing else does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from quixstreams import Application, message_context
from quixstreams.models import TopicConfig

from streams.codec import Decoder, load_validators
from streams.config import REPO_ROOT
from streams.names import INPUT_TOPICS, OUTPUT_TOPICS
from streams.policy import Policy, load_policy
from streams.policy.versions import book_of
from streams.step import InputRecord, RecordStep

DEFAULT_COMMIT_INTERVAL = 5.0  # Quix's default
PAUSE_S = 0.2  # a record after this long without one starts a new "burst" in the status


class Status:
    """What the benchmark needs to know from outside; written by a daemon thread."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.assigned: set[tuple[str, int]] = set()
        self.decided = 0  # records handled where they are (decided, duplicate, dead letter)
        self.rerouted = 0
        self.dead_letters = 0
        self.offsets: dict[str, int] = {}  # "topic:partition" -> last processed offset
        self.bursts: list[float] = []
        self.last_seen = 0.0
        self.recovering = lambda: False

    def seen(self, topic: str, partition: int, offset: int) -> None:
        """Quix's `on_message_processed` callback: once per input record, after processing."""
        self.offsets[f"{topic}:{partition}"] = offset
        now = time.time()
        if now - self.last_seen > PAUSE_S:
            self.bursts.append(now)
        self.last_seen = now

    def snapshot(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "written_at": time.time(),
            "assigned": len(self.assigned),
            "recovering": bool(self.recovering()),
            "decided": self.decided,
            "rerouted": self.rerouted,
            "dead_letters": self.dead_letters,
            "offsets": dict(self.offsets),
            "bursts": list(self.bursts[-20:]),
        }

    def write(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.snapshot()))
        tmp.replace(self.path)

    def start(self, interval: float = 0.1) -> None:
        if self.path is None:
            return

        def loop() -> None:
            while True:
                try:
                    self.write()
                except Exception as exc:  # a status hiccup must not stop the app
                    print(f"quix_app: status write failed: {exc}", file=sys.stderr)
                time.sleep(interval)

        threading.Thread(target=loop, name="status", daemon=True).start()


class _App(Application):
    """Application that tells the status which input partitions it holds (Quix has no public
    hook for that; `_on_assign` / `_on_revoke` / `_on_lost` are its rebalance callbacks)."""

    status: Status
    inputs: frozenset[str]

    def _on_assign(self, consumer: Any, topic_partitions: list[Any]) -> None:
        super()._on_assign(consumer, topic_partitions)
        self.status.assigned |= {
            (tp.topic, tp.partition) for tp in topic_partitions if tp.topic in self.inputs
        }

    def _on_revoke(self, consumer: Any, topic_partitions: list[Any]) -> None:
        super()._on_revoke(consumer, topic_partitions)
        self.status.assigned -= {(tp.topic, tp.partition) for tp in topic_partitions}

    def _on_lost(self, consumer: Any, topic_partitions: list[Any]) -> None:
        super()._on_lost(consumer, topic_partitions)
        self.status.assigned -= {(tp.topic, tp.partition) for tp in topic_partitions}


class QuixState:
    """Quix's State seen as the step's `get(store, key)`: one key space for every store (the
    step's keys do not collide: `<topic>/<event id>`, `dead/...`, task keys, order ids)."""

    __slots__ = ("state",)

    def __init__(self, state: Any) -> None:
        self.state = state

    def get(self, store: str, key: str) -> Any:
        return self.state.get(key)


class Job:
    """The worker's record step (`streams.step.RecordStep`) on Quix's state and producer."""

    def __init__(
        self, app: Application, sdf: Any, *, prefix: str, partitions: int, policy: Policy,
        validators: dict[str, Any], status: Status,
    ) -> None:
        self.prefix = prefix
        self.step = RecordStep(
            book_of(policy), {t: Decoder(t, validators) for t in INPUT_TOPICS}, partitions, prefix
        )
        self.short = {prefix + t: t for t in INPUT_TOPICS}
        self.context = sdf.processing_context
        self.stream_id = sdf.stream_id
        self.status = status

    def __call__(self, value: Any, key: Any, timestamp: int, headers: Any) -> None:
        ctx = message_context()
        topic, partition, offset = ctx.topic, ctx.partition, ctx.offset
        # The merged stream's store for this partition number, keys not prefixed (see module doc).
        state = self.context.checkpoint.get_store_transaction(
            stream_id=self.stream_id, partition=partition
        ).as_state()
        record = InputRecord(
            topic, partition, offset, timestamp or None, key, value,
            [(str(k), bytes(v)) for k, v in (headers or ())],
        )
        r = self.step.decide(self.short[topic], record, QuixState(state), int(time.time() * 1000))
        for _store, k, v in r.writes:
            state.set(k, v)
        if r.outcome == "rerouted":
            self.status.rerouted += 1
        else:  # decided where it sits: an outcome, a duplicate or a dead letter
            self.status.decided += 1
            if r.outcome == "dead_letter":
                self.status.dead_letters += 1
        produce, prefix = self.context.producer.produce, self.prefix
        for o in r.outputs:
            produce(
                topic=prefix + o.topic, key=o.key, value=o.value,
                headers=list(o.headers) or None, partition=o.partition, timestamp=o.timestamp_ms,
            )


def build(args: argparse.Namespace, status: Status) -> Application:
    """The application with its dataframe; `app.run()` runs it."""
    app = _App(
        broker_address=args.broker,
        consumer_group=args.app_id,
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once",
        commit_interval=args.commit_interval,
        state_dir=args.state_dir,
        loglevel=args.log_level,
        on_message_processed=status.seen,
    )
    app.status = status
    app.inputs = frozenset(args.prefix + t for t in INPUT_TOPICS)
    config = TopicConfig(
        num_partitions=args.partitions, replication_factor=1, extra_config={"retention.ms": "-1"}
    )
    inputs = [
        app.topic(
            args.prefix + t, key_deserializer="bytes", value_deserializer="bytes",
            key_serializer="bytes", value_serializer="bytes", config=config,
        )
        for t in INPUT_TOPICS
    ]
    for t in OUTPUT_TOPICS:  # created at start-up if missing
        app.topic(
            args.prefix + t, key_serializer="bytes", value_serializer="bytes",
            config=TopicConfig(num_partitions=args.partitions, replication_factor=1),
        )
    sdf = app.dataframe(inputs[0])
    for topic in inputs[1:]:
        sdf = sdf.concat(app.dataframe(topic))  # merged by record timestamp per partition
    sdf.register_store()  # RocksDB + changelog for the merged stream (co-partitioned inputs)
    job = Job(
        app, sdf, prefix=args.prefix, partitions=args.partitions, policy=load_policy(),
        validators=load_validators(Path(args.schema_dir)), status=status,
    )
    sdf.update(job, metadata=True)
    status.recovering = lambda: app._state_manager.recovery_required
    return app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    broker = env("QUIX_BENCH_BROKER") or env("STREAMS_BENCH_BROKER") or "127.0.0.1:9092"
    p = argparse.ArgumentParser(prog="python -m bench.quix_app", description=__doc__.split("\n")[0])
    p.add_argument("--broker", default=broker.removeprefix("kafka://"))
    p.add_argument("--prefix", default=env("QUIX_BENCH_PREFIX", ""), help="topic prefix")
    p.add_argument("--partitions", type=int, default=int(env("QUIX_BENCH_PARTITIONS", "4")))
    p.add_argument("--app-id", default=env("QUIX_BENCH_APP_ID", "live-commerce-quix"),
                   help="consumer group (changelogs are named after it)")
    p.add_argument("--state-dir", default=env("QUIX_BENCH_STATE_DIR", "state"))
    p.add_argument("--commit-interval", type=float,
                   default=float(env("QUIX_BENCH_COMMIT_INTERVAL", str(DEFAULT_COMMIT_INTERVAL))),
                   help="seconds between checkpoints (transaction commits); Quix's default 5")
    p.add_argument("--status-file", type=Path, default=env("QUIX_BENCH_STATUS_FILE"))
    p.add_argument("--schema-dir", default=env("QUIX_BENCH_SCHEMA_DIR", str(REPO_ROOT / "schemas")))
    p.add_argument("--log-level", default=env("QUIX_BENCH_LOG_LEVEL", "WARNING"))
    args = p.parse_args(argv)
    args.broker = args.broker.removeprefix("kafka://")
    if args.partitions < 1:
        p.error("--partitions >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    status = Status(args.status_file)
    app = build(args, status)
    status.start()
    try:
        app.run()  # until SIGTERM / SIGINT; commits its last checkpoint on the way out
    finally:
        status.write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
