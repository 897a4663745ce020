"""The composition root: settings in, the worker's App out, every part wired once here.

Importing this module does nothing; `faust -A streams worker` reads `streams.app`, which calls
`app_from_env()` once.
"""

from __future__ import annotations

import asyncio
from typing import Any

from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from prometheus_client import REGISTRY

from streams import metrics
from streams.codec import INPUTS, Decoder, load_validators
from streams.config import ConfigError, Settings, load_settings
from streams.engine.engine import Engine, EngineConfig
from streams.engine.policies import PolicyFeed
from streams.names import CHANGELOGS, INPUT_TOPICS, POLICIES, changelog_topic
from streams.policy import PolicyError
from streams.policy.policy_file import read_policy_file
from streams.policy.versions import PolicyBook, PolicyDocument, seed_document
from streams.runtime.app import StreamsApp, fail
from streams.runtime.web import add_pages
from streams.step import RecordStep
from streams.topics import broker_credentials, client_auth
from streams.version import __version__


def build_step(settings: Settings, book: PolicyBook) -> RecordStep:
    validators = load_validators(settings.schema_dir)
    decoders = {t: Decoder(t, validators) for t in INPUTS}
    return RecordStep(book, decoders, settings.topic_partitions, settings.topic_prefix)


def client_config(settings: Settings) -> dict[str, Any]:
    """bootstrap_servers and security settings for every aiokafka client the engine opens."""
    return {"bootstrap_servers": settings.bootstrap_servers, **client_auth(settings)}


def build_policy_feed(settings: Settings, book: PolicyBook, seed: PolicyDocument) -> PolicyFeed:
    return PolicyFeed(
        book,
        settings.topic(POLICIES),
        seed,
        client_config(settings),
        client_id=f"{settings.app_id}-policies",
        code_version=__version__,
        timeout=max(settings.startup_timeout, 10.0),
    )


def build_engine(settings: Settings, seed: PolicyDocument, book: PolicyBook) -> Engine:
    cfg = EngineConfig(
        app_id=settings.app_id,
        prefix=settings.topic_prefix,
        changelogs={store: changelog_topic(settings.app_id, store) for store in CHANGELOGS},
        data_dir=settings.data_dir,
        store=settings.store,
        commit_interval=settings.commit_interval,
        max_idle=settings.max_idle_ms / 1000,
        state_cache_entries=settings.state_cache_entries,
        dedup_retention_ms=seed.policy.dedup_retention_ms,
        recovery_timeout=settings.recovery_timeout,
        client=client_config(settings),
        trace=settings.trace_records,
    )
    return Engine(cfg, build_step(settings, book))


def build_app(settings: Settings, seed: PolicyDocument) -> StreamsApp:
    """`seed`: the policy file as a document; it seeds the policies topic when that holds no
    enforced version, and sets the dedup retention (a topic setting, fixed at start-up)."""
    app = StreamsApp(
        settings.app_id,
        broker=settings.broker,
        broker_credentials=broker_credentials(settings),
        datadir=str(settings.data_dir),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        # Faust's own transactions stay off: the engine commits outputs, changelogs and
        # offsets in its transactions, and the consumer reads committed records only.
        processing_guarantee="at_least_once",
        # a fresh group joins in seconds rather than ~30 s with the 60 s default
        broker_session_timeout=10,
        broker_heartbeat_interval=1,
        broker_max_poll_records=50_000,
        # a sparse input (tasks) holds the merge up whenever its lane runs dry before the
        # next fetch: fewer, larger fetches per partition keep the lanes fed
        consumer_max_fetch_size=8 * 1024 * 1024,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_enabled=True,
        consumer_auto_offset_reset="earliest",
    )
    app.settings = settings
    app.dedup_retention_ms = seed.policy.dedup_retention_ms
    book = PolicyBook()
    app.engine = build_engine(settings, seed, book)
    app.policy_feed = build_policy_feed(settings, book, seed)
    faust_metrics = FaustMetrics.create(REGISTRY, "faust")
    app.monitor = PrometheusMonitor(metrics=faust_metrics)
    app.faust_metrics = faust_metrics
    app.engine.on_commit = app.monitor.on_tp_commit
    inputs = app.topic(
        *(settings.topic(t) for t in INPUT_TOPICS),
        key_type=bytes,
        value_type=bytes,
        partitions=settings.topic_partitions,
        internal=False,
    )
    app.topics.add(inputs)
    add_pages(app)
    metrics.init_series(seed.policy, __version__)
    metrics.DEDUP_IDS.set_function(lambda: sum(len(t.expiry) for t in app.engine.tasks.values()))
    return app


def use_event_loop(name: str) -> None:
    """uvloop by default. Must run before anything creates the loop (the worker creates it
    after importing the app)."""
    if name == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def app_from_env() -> Any:
    """The worker as configured by STREAMS_* variables; a bad one stops it with one line."""
    try:
        settings = load_settings()
        seed = seed_document(*read_policy_file(settings.policy_file))
    except (ConfigError, PolicyError) as exc:
        fail(str(exc))
    use_event_loop(settings.event_loop)
    return build_app(settings, seed)
