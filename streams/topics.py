"""Topic names, and the start-up check that creates missing topics and refuses bad layouts.

Faust only creates topics it owns (`internal=True`); the input and output topics belong to the
platform, so the worker creates the missing ones itself and checks co-partitioning before it
joins the group: a partition-count mismatch would silently split a streamer's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any

import faust
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaConnectionError, KafkaError, SaslAuthenticationFailed
from aiokafka.helpers import create_ssl_context

from streams.config import Settings
from streams.names import INPUT_TOPICS, OUTPUT_TOPICS, POLICIES, changelog_topic

log = logging.getLogger(__name__)



class StartupError(RuntimeError):
    """The worker must not start; the message says what to do."""


def ssl_context(s: Settings) -> ssl.SSLContext | None:
    """For SSL and SASL_SSL: a client context that checks the broker's certificate and host name
    against STREAMS_BROKER_SSL_CAFILE, or the system's CAs when it is not set."""
    if not s.security_protocol.endswith("SSL"):
        return None
    return create_ssl_context(cafile=str(s.ssl_cafile) if s.ssl_cafile else None)


def client_auth(s: Settings) -> dict[str, Any]:
    """aiokafka connection settings shared by the admin client, producers and tests."""
    auth: dict[str, Any] = {"security_protocol": s.security_protocol}
    if s.security_protocol.startswith("SASL"):
        auth.update(
            sasl_mechanism=s.sasl_mechanism,
            sasl_plain_username=s.sasl_username,
            sasl_plain_password=s.sasl_password,
        )
    context = ssl_context(s)
    if context is not None:
        auth["ssl_context"] = context
    return auth


def broker_credentials(s: Settings) -> faust.SASLCredentials | faust.SSLCredentials | None:
    """The same settings in Faust's form, for the worker's own consumer and producers."""
    context = ssl_context(s)
    if s.security_protocol.startswith("SASL"):
        # Faust makes it SASL_SSL when a context is given, SASL_PLAINTEXT otherwise.
        return faust.SASLCredentials(
            username=s.sasl_username,
            password=s.sasl_password,
            mechanism=s.sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def changelog_configs(dedup_retention_ms: int) -> dict[str, dict[str, str]]:
    """Per store: the changelog topic's config. The dedup changelog forgets an id by itself
    once its retention has passed (the worker drops it from the local store then, see
    streams.expiry); Kafka deletes whole segments, so an id may stay up to a segment longer."""
    compact = {"cleanup.policy": "compact"}
    return {
        "tasks": compact,
        "charges": compact,
        "notices": compact,
        "seen": {
            "cleanup.policy": "compact,delete",
            "retention.ms": str(dedup_retention_ms),
            "segment.ms": str(min(dedup_retention_ms, 86_400_000)),
        },
    }


def policies_topic(name: str, replication: int) -> NewTopic:
    """The policies topic as the worker and `python -m streams.policy publish` create it:
    compacted (a version's latest record is what counts) and one partition (it is small, and
    one log gives every reader the same order)."""
    return NewTopic(name, 1, replication, topic_configs={"cleanup.policy": "compact"})


async def ensure_topics(s: Settings, dedup_retention_ms: int) -> dict[str, int]:
    """Create missing topics; return partition counts; raise StartupError on a bad layout."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=s.bootstrap_servers,
        request_timeout_ms=int(s.startup_timeout * 1000),
        client_id=f"{s.app_id}-preflight",
        **client_auth(s),
    )
    try:
        await asyncio.wait_for(admin.start(), timeout=s.startup_timeout)
    except (TimeoutError, KafkaError, OSError) as exc:
        await _close_quietly(admin)
        # aiokafka reports any bootstrap failure as "Unable to bootstrap"; one direct connection
        # tells a rejected login apart from an unreachable broker.
        raise StartupError(_connect_hint(s, await _probe(s) or exc)) from None
    try:
        return await _ensure(admin, s, dedup_retention_ms)
    except KafkaError as exc:
        raise StartupError(f"Kafka refused the topic check at {s.broker}: {exc!r}") from None
    finally:
        await _close_quietly(admin)


async def _ensure(
    admin: AIOKafkaAdminClient, s: Settings, dedup_retention_ms: int
) -> dict[str, int]:
    configs = {s.topic(t): {"retention.ms": str(s.topic_retention_ms)} for t in INPUT_TOPICS}
    configs.update({s.topic(t): configs[s.topic(INPUT_TOPICS[0])] for t in OUTPUT_TOPICS})
    for store, config in changelog_configs(dedup_retention_ms).items():
        configs[changelog_topic(s.app_id, store)] = config
    names = list(configs)
    existing = await _partition_counts(admin, names)
    missing = [n for n in names if n not in existing]
    if missing:
        new = [
            NewTopic(n, s.topic_partitions, s.topic_replication, topic_configs=configs[n])
            for n in missing
        ]
        log.info("creating topics %s with %d partitions", missing, s.topic_partitions)
        result = await admin.create_topics(new, timeout_ms=int(s.startup_timeout * 1000))
        _raise_for_create_errors(result)
        existing = await _created(admin, names, s.startup_timeout)
    policies = s.topic(POLICIES)
    if policies not in await _partition_counts(admin, [policies]):
        log.info("creating topic %s (compacted, 1 partition)", policies)
        result = await admin.create_topics(
            [policies_topic(policies, s.topic_replication)],
            timeout_ms=int(s.startup_timeout * 1000),
        )
        _raise_for_create_errors(result)
        await _created(admin, [policies], s.startup_timeout)
    inputs = {t: existing.get(s.topic(t)) for t in INPUT_TOPICS}
    counts = set(inputs.values())
    if len(counts) != 1:
        raise StartupError(
            "input topics are not co-partitioned: "
            + ", ".join(f"{s.topic(t)}={n}" for t, n in inputs.items())
            + ". A streamer's Xingtu tasks, cart-adds and orders must meet in one worker: give "
            "all three the same partition count (kafka-topics --alter --partitions N), "
            "then restart."
        )
    (n,) = counts
    if n != s.topic_partitions:
        raise StartupError(
            f"input topics have {n} partitions but STREAMS_TOPIC_PARTITIONS="
            f"{s.topic_partitions}; set STREAMS_TOPIC_PARTITIONS={n} so that the state "
            "tables' changelogs are co-partitioned with the inputs."
        )
    wrong = {
        t: existing.get(t)
        for store in changelog_configs(dedup_retention_ms)
        if existing.get(t := changelog_topic(s.app_id, store)) != n
    }
    if wrong:
        raise StartupError(
            "state changelog topics are not co-partitioned with the inputs "
            f"({n} partitions): "
            + ", ".join(f"{t}={c}" for t, c in wrong.items())
            + ". They belong to STREAMS_APP_ID="
            f"{s.app_id}: use a new app id, or delete them to rebuild state from scratch."
        )
    return existing


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    found = set(await admin.list_topics())
    wanted = [n for n in names if n in found]
    if not wanted:
        return {}
    described = await admin.describe_topics(wanted)
    return {d["topic"]: len(d["partitions"]) for d in described if d.get("error_code", 0) == 0}


async def _created(admin: AIOKafkaAdminClient, names: list[str], timeout: float) -> dict[str, int]:
    """Partition counts once every topic shows in the metadata: a broker answers CreateTopics
    before its own metadata cache has the new topics, so an immediate look finds none."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    existing = await _partition_counts(admin, names)
    while len(existing) < len(names) and loop.time() < deadline:
        await asyncio.sleep(0.1)
        existing = await _partition_counts(admin, names)
    return existing


def _raise_for_create_errors(result: Any) -> None:
    errors = getattr(result, "topic_errors", None) or getattr(result, "topic_error_codes", [])
    for entry in errors:
        name, code = entry[0], entry[1]
        message = entry[2] if len(entry) > 2 else ""
        if code not in (0, 36):  # 36: TOPIC_ALREADY_EXISTS (another worker won the race)
            raise StartupError(f"cannot create topic {name}: error {code} {message}")


async def _probe(s: Settings) -> BaseException | None:
    """The error of a direct connection to the first bootstrap server, if it fails."""
    host, _, port = s.bootstrap_servers[0].rpartition(":")
    auth = client_auth(s)
    try:
        conn = await asyncio.wait_for(create_conn(host, int(port), **auth), s.startup_timeout)
    except (TimeoutError, KafkaError, OSError) as exc:
        return exc
    conn.close()
    return None


def _connect_hint(s: Settings, exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, ssl.SSLCertVerificationError):
        if "mismatch" in str(exc.verify_message):  # host name or IP address not in the cert
            return (
                f"Kafka at {s.broker} presented a TLS certificate for another host "
                f"({exc.verify_message}): set STREAMS_BROKER to a host name or address the "
                "broker's certificate is issued for"
            )
        trusted = f"STREAMS_BROKER_SSL_CAFILE={s.ssl_cafile}" if s.ssl_cafile else "system CAs"
        return (
            f"Kafka at {s.broker} presented a TLS certificate this worker does not trust "
            f"({exc.verify_message}; trusted: {trusted}): set STREAMS_BROKER_SSL_CAFILE to the "
            "PEM of the CA that signed the broker's certificate (locally: the run dir's ca.pem)"
        )
    if isinstance(exc, ssl.SSLError):
        return (
            f"TLS with Kafka at {s.broker} failed ({exc.reason or text}): check "
            "STREAMS_BROKER_SECURITY_PROTOCOL and STREAMS_BROKER_SSL_CAFILE against the "
            "broker's listener"
        )
    if isinstance(exc, SaslAuthenticationFailed) or "authentication" in text.lower():
        return (
            f"Kafka at {s.broker} rejected the credentials of user {s.sasl_username!r} "
            f"({s.sasl_mechanism}): check STREAMS_BROKER_SASL_USERNAME and "
            "STREAMS_BROKER_SASL_PASSWORD"
        )
    if "sasl" in text.lower() or type(exc).__name__.startswith(("IllegalSasl", "UnsupportedSasl")):
        return (
            f"Kafka at {s.broker} does not accept {s.security_protocol} with "
            f"{s.sasl_mechanism} ({text}): check STREAMS_BROKER_SECURITY_PROTOCOL and "
            "STREAMS_BROKER_SASL_MECHANISM against the broker's listener"
        )
    if isinstance(exc, ConnectionResetError) or (
        isinstance(exc, KafkaConnectionError) and "closed" in text
    ):
        # The port answers but the broker hangs up: typically TLS against a plaintext listener,
        # or plaintext against a TLS one.
        return (
            f"Kafka at {s.broker} closed the connection ({text}): does its listener speak "
            f"{s.security_protocol}? Check STREAMS_BROKER_SECURITY_PROTOCOL (SSL and SASL_SSL "
            "for a TLS listener) against the broker's listener"
        )
    return (
        f"cannot reach Kafka at {s.broker} within {s.startup_timeout:g}s ({text}). "
        "Is the broker running and STREAMS_BROKER right? (locally: make kafka)"
    )


async def _close_quietly(admin: AIOKafkaAdminClient) -> None:
    # Closing a client that never connected may raise; there is nothing to save.
    with contextlib.suppress(Exception):
        await admin.close()

