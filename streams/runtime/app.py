"""The Faust App users run (`faust -A streams worker`), with the engine under it."""

from __future__ import annotations

import gc
import logging
import sys
from typing import Any

import faust

from streams.config import Settings
from streams.engine.engine import Engine
from streams.engine.policies import PolicyFeed
from streams.runtime.consumer import StreamsTransport
from streams.topics import StartupError, ensure_topics

log = logging.getLogger("streams")

CYCLE_COLLECTION_INTERVAL = 30.0
"""Seconds between the worker's collections of reference cycles, once it has started.

Python's automatic collection is off from then on. Under load it ran about 90 times a second,
found nothing (0 objects in 1,353 collections while deciding a 300k-event backlog) and took
about 8 % of the main thread; its full collections, 30-100 ms each, every ~1.5 s, were the
decision latency's tail. What the worker drops is freed by reference counting; a collection
every 30 s bounds what a reference cycle could hold."""


def fail(message: str) -> None:
    """One clear line on stderr and exit 2: no traceback for a user's mistake."""
    print(f"live-commerce-streams: cannot start: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


class StreamsApp(faust.App):
    """Creates and checks the topics before joining the group; stops the engine cleanly."""

    settings: Settings
    engine: Engine
    policy_feed: PolicyFeed
    dedup_retention_ms: int
    faust_metrics: Any
    """Faust's Prometheus families (`faust_*`), fed per batch by the consumer."""

    def _new_transport(self) -> Any:
        # Faust's extension point for the consumer class (streams.runtime.consumer)
        return StreamsTransport(self.conf.broker_consumer, self)

    async def on_first_start(self) -> None:
        try:
            await ensure_topics(self.settings, self.dedup_retention_ms)
        except StartupError as exc:
            log.critical("cannot start: %s", exc)
            fail(str(exc))
        # every policy version is known before the group is joined and anything decided
        try:
            await self.policy_feed.load()
        except Exception as exc:
            log.critical("cannot start: reading the policies topic failed: %r", exc)
            fail(
                f"reading the policies topic {self.policy_feed.topic} failed ({exc!r}); check "
                "that the broker is reachable and that this client may read and write it"
            )
        await super().on_first_start()

    async def on_started(self) -> None:
        await super().on_started()
        # `faust worker -l warn` (or higher) leaves the root logger at DEBUG for its start-up
        # spinner, so every debug call of aiokafka's per-record paths builds a log record that
        # no handler wants (~10 % of the worker's time): back to what the handlers let through.
        root = logging.getLogger()
        levels = [h.level for h in root.handlers if type(h).__name__ != "SpinnerHandler"]
        if levels and root.level < min(levels):
            root.setLevel(min(levels))
        # Everything loaded so far (Faust, aiokafka, the schemas, the app) lives as long as the
        # process: out of the collector's sight, a full collection no longer walks it. Measured
        # at 8,000 events/s: full collections of 68-95 ms every ~9 s before, none after.
        gc.freeze()
        gc.disable()

    @faust.Service.timer(CYCLE_COLLECTION_INTERVAL)
    async def _collect_cycles(self) -> None:
        found = gc.collect()
        if found:
            log.info("collected %d objects held in reference cycles", found)

    async def on_stop(self) -> None:
        # commit what was decided and close the partitions' producers before Faust leaves
        # the group (a clean stop loses nothing and leaves no open transaction)
        await self.engine.stop()
        await self.policy_feed.stop()
        await super().on_stop()
