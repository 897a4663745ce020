"""Builds the Faust App from Settings (not named app.py: that would shadow `streams.app`)."""

from __future__ import annotations

import logging
import sys
from typing import Any

import faust
from aiokafka.helpers import create_ssl_context
from faust.sensors.prometheus import setup_prometheus_sensors

from streams.config import ConfigError, Settings, load_settings
from streams.topics import StartupError, ensure_topics

log = logging.getLogger("streams")


def _fail(message: str) -> None:
    """One clear line on stderr and a non-zero exit: no traceback for a user's mistake."""
    print(f"live-commerce-streams: cannot start: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def _credentials(s: Settings) -> Any:
    if not s.security_protocol.startswith("SASL"):
        return None
    return faust.SASLCredentials(
        username=s.sasl_username,
        password=s.sasl_password,
        mechanism=s.sasl_mechanism,
        ssl_context=create_ssl_context() if s.security_protocol == "SASL_SSL" else None,
    )


class StreamsApp(faust.App):
    """A Faust App that checks the broker and topics before joining the group."""

    settings: Settings

    async def on_first_start(self) -> None:
        try:
            await ensure_topics(self.settings)
        except StartupError as exc:
            log.critical("cannot start: %s", exc)
            _fail(str(exc))
        await super().on_first_start()


def build_app(settings: Settings) -> StreamsApp:
    app = StreamsApp(
        settings.app_id,
        broker=settings.broker,
        broker_credentials=_credentials(settings),
        store=f"{settings.store}://",
        datadir=str(settings.data_dir),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        topic_allow_declare=True,
        processing_guarantee=settings.processing_guarantee,
        broker_commit_interval=settings.commit_interval,
        # A fresh group joins in seconds rather than ~30 s with the 60 s default.
        broker_session_timeout=10,
        broker_heartbeat_interval=1,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_enabled=True,
        table_cleanup_interval=60.0,
        stream_wait_empty=False,
        producer_linger_ms=5,
        consumer_auto_offset_reset="earliest",
    )
    app.settings = settings
    setup_prometheus_sensors(app, name_prefix="faust")
    return app


try:
    SETTINGS = load_settings()
except ConfigError as exc:
    _fail(str(exc))

app = build_app(SETTINGS)

# Registers agents, tables and web pages on `app`.
from streams import agents as _agents  # noqa: E402,F401
from streams import web as _web  # noqa: E402,F401
