"""Every setting of the worker, read from the environment in one place.

A wrong value stops start-up with a message naming the variable, before Faust or Kafka is touched.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from streams import resources

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent

PROCESSING_GUARANTEES = ("exactly_once",)
STORES = ("rocksdb", "memory")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
EVENT_LOOPS = ("uvloop", "asyncio")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL")


class ConfigError(ValueError):
    """A setting the worker cannot run with; the message says which and how to fix it."""


@dataclass(frozen=True)
class Settings:
    """The worker's configuration; `repr` never shows the SASL password."""

    broker: str = "kafka://localhost:9092"
    app_id: str = "live-commerce-streams"
    topic_prefix: str = ""
    topic_partitions: int = 4
    topic_replication: int = 1
    topic_retention_ms: int = -1
    web_host: str = "0.0.0.0"
    web_port: int = 6066
    data_dir: Path = Path(".data")
    policy_file: Path | None = None
    schema_dir: Path = field(default_factory=resources.schema_dir)
    store: str = "rocksdb"
    processing_guarantee: str = "exactly_once"
    commit_interval: float = 0.1
    max_idle_ms: int = 20
    state_cache_entries: int = 8192
    recovery_timeout: float = 120.0
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: Path | None = None
    startup_timeout: float = 10.0
    trace_records: bool = False
    event_loop: str = "uvloop"

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    @property
    def bootstrap_servers(self) -> list[str]:
        """`kafka://a:1;b:2` (Faust's form) as aiokafka's host:port list."""
        return [
            u.strip().removeprefix("kafka://")
            for u in self.broker.replace(",", ";").split(";")
            if u.strip()
        ]


def _get(
    env: Mapping[str, str], name: str, default: T, parse: Callable[[str], T], expect: str
) -> T:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return parse(raw.strip())
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{name}={raw!r} is not valid: expected {expect} ({exc})") from None


def _int_in(lo: int, hi: int) -> Callable[[str], int]:
    def parse(s: str) -> int:
        v = int(s)
        if not lo <= v <= hi:
            raise ValueError(f"{v} is outside {lo}..{hi}")
        return v

    return parse


def _flag(s: str) -> bool:
    if s not in ("0", "1"):
        raise ValueError(f"{s!r} is neither 0 nor 1")
    return s == "1"


def _choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(s: str) -> str:
        v = s.strip()
        for c in choices:
            if v.lower().replace("-", "_") == c.lower().replace("-", "_"):
                return c
        raise ValueError(f"{v!r} is not one of {', '.join(choices)}")

    return parse


def _broker(s: str) -> str:
    for url in s.replace(",", ";").split(";"):
        url = url.strip()
        if not url:
            continue
        if not url.startswith("kafka://"):
            raise ValueError(f"{url!r} must start with kafka://")
        host, sep, port = url.removeprefix("kafka://").rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{url!r} must be kafka://HOST:PORT")
    return s


def _prefix(s: str) -> str:
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    if not set(s) <= allowed or len(s) > 100:
        raise ValueError("only letters, digits, '.', '_' and '-' (Kafka topic characters)")
    return s


def _existing_file(s: str) -> Path:
    p = Path(s)
    if not p.is_file():
        raise ValueError(f"no such file: {p}")
    return p


def _existing_dir(s: str) -> Path:
    p = Path(s)
    if not p.is_dir():
        raise ValueError(f"no such directory: {p}")
    return p


def _ca_file(s: str) -> Path:
    p = Path(s)
    if not p.is_file():
        raise ValueError(f"no such file: {p}")
    try:
        # The same loader the broker connection uses: a file it cannot use fails here, not later.
        ssl.create_default_context(cafile=str(p))
    except PermissionError as exc:
        raise ValueError(f"cannot read {p}: {exc.strerror}") from None
    except ssl.SSLError as exc:
        raise ValueError(f"no PEM certificate could be loaded from {p}: {exc.reason}") from None
    except OSError as exc:
        raise ValueError(f"cannot read {p}: {exc.strerror or exc}") from None
    return p


def _positive_float(s: str) -> float:
    v = float(s)
    if not v > 0:
        raise ValueError("must be > 0")
    return v


def _retention(s: str) -> int:
    v = int(s)
    if v < -1 or v == 0:
        raise ValueError("must be -1 (keep forever) or a positive number of milliseconds")
    return v


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read `STREAMS_*` variables; raise ConfigError naming the first bad one."""
    e = os.environ if env is None else env
    d = Settings()
    s = Settings(
        broker=_get(e, "STREAMS_BROKER", d.broker, _broker, "kafka://HOST:PORT[;kafka://...]"),
        app_id=_get(e, "STREAMS_APP_ID", d.app_id, _prefix, "a Kafka group/topic-safe name"),
        topic_prefix=_get(e, "STREAMS_TOPIC_PREFIX", d.topic_prefix, _prefix, "a topic prefix"),
        topic_partitions=_get(
            e, "STREAMS_TOPIC_PARTITIONS", d.topic_partitions, _int_in(1, 10_000), "1..10000"
        ),
        topic_replication=_get(
            e, "STREAMS_TOPIC_REPLICATION", d.topic_replication, _int_in(1, 32), "1..32"
        ),
        topic_retention_ms=_get(
            e, "STREAMS_TOPIC_RETENTION_MS", d.topic_retention_ms, _retention, "-1 or ms > 0"
        ),
        web_host=_get(e, "STREAMS_WEB_HOST", d.web_host, str, "an address to bind"),
        web_port=_get(e, "STREAMS_WEB_PORT", d.web_port, _int_in(1, 65535), "a port 1..65535"),
        data_dir=_get(e, "STREAMS_DATA_DIR", d.data_dir, Path, "a directory path"),
        policy_file=_get(e, "STREAMS_POLICY_FILE", None, _existing_file, "an existing TOML file"),
        schema_dir=_get(e, "STREAMS_SCHEMA_DIR", d.schema_dir, _existing_dir, "a directory"),
        store=_get(e, "STREAMS_STORE", d.store, _store, "rocksdb:// or memory://"),
        processing_guarantee=_get(
            e,
            "STREAMS_PROCESSING_GUARANTEE",
            d.processing_guarantee,
            _choice(PROCESSING_GUARANTEES),
            " or ".join(PROCESSING_GUARANTEES),
        ),
        event_loop=_get(
            e, "STREAMS_EVENT_LOOP", d.event_loop, _choice(EVENT_LOOPS), " or ".join(EVENT_LOOPS)
        ),
        commit_interval=_get(
            e, "STREAMS_COMMIT_INTERVAL", d.commit_interval, _positive_float, "seconds > 0"
        ),
        max_idle_ms=_get(
            e, "STREAMS_MAX_IDLE_MS", d.max_idle_ms, _int_in(0, 3_600_000), "0..3600000 ms"
        ),
        state_cache_entries=_get(
            e,
            "STREAMS_STATE_CACHE_ENTRIES",
            d.state_cache_entries,
            _int_in(0, 10_000_000),
            "0..10000000 entries (0: no cache)",
        ),
        recovery_timeout=_get(
            e, "STREAMS_RECOVERY_TIMEOUT", d.recovery_timeout, _positive_float, "seconds > 0"
        ),
        security_protocol=_get(
            e,
            "STREAMS_BROKER_SECURITY_PROTOCOL",
            d.security_protocol,
            _choice(SECURITY_PROTOCOLS),
            " or ".join(SECURITY_PROTOCOLS),
        ),
        sasl_mechanism=_get(
            e,
            "STREAMS_BROKER_SASL_MECHANISM",
            None,
            _choice(SASL_MECHANISMS),
            " or ".join(SASL_MECHANISMS),
        ),
        sasl_username=_get(e, "STREAMS_BROKER_SASL_USERNAME", None, str, "a user name"),
        sasl_password=e.get("STREAMS_BROKER_SASL_PASSWORD") or None,
        ssl_cafile=_get(
            e,
            "STREAMS_BROKER_SSL_CAFILE",
            None,
            _ca_file,
            "a readable PEM file of the CA certificates that signed the broker's certificate",
        ),
        trace_records=_get(e, "STREAMS_TRACE_RECORDS", d.trace_records, _flag, "0 or 1"),
        startup_timeout=_get(
            e, "STREAMS_STARTUP_TIMEOUT", d.startup_timeout, _positive_float, "seconds > 0"
        ),
    )
    _check_security(s, protocol_given=bool(e.get("STREAMS_BROKER_SECURITY_PROTOCOL", "").strip()))
    return s


def _store(s: str) -> str:
    v = s.removesuffix("://")
    if v not in STORES:
        raise ValueError(f"{s!r} is not one of rocksdb://, memory://")
    return v


def _check_security(s: Settings, protocol_given: bool) -> None:
    protocol = s.security_protocol
    if s.sasl_mechanism and not protocol.startswith("SASL"):
        # A mechanism means the user wants SASL: add it, keeping TLS if SSL was chosen.
        protocol = "SASL_SSL" if protocol == "SSL" else "SASL_PLAINTEXT"
    if s.ssl_cafile is not None and not protocol.endswith("SSL"):
        if protocol_given:
            raise ConfigError(
                f"STREAMS_BROKER_SSL_CAFILE is set but STREAMS_BROKER_SECURITY_PROTOCOL="
                f"{s.security_protocol} does not use TLS: set it to "
                f"{'SASL_SSL' if protocol.startswith('SASL') else 'SSL'}, or unset "
                "STREAMS_BROKER_SSL_CAFILE"
            )
        # A CA file alone means the user wants TLS: SSL, or SASL_SSL with a mechanism.
        protocol = "SASL_SSL" if protocol.startswith("SASL") else "SSL"
    object.__setattr__(s, "security_protocol", protocol)
    if protocol.startswith("SASL"):
        missing = [
            name
            for name, v in (
                ("STREAMS_BROKER_SASL_MECHANISM", s.sasl_mechanism),
                ("STREAMS_BROKER_SASL_USERNAME", s.sasl_username),
                ("STREAMS_BROKER_SASL_PASSWORD", s.sasl_password),
            )
            if not v
        ]
        if missing:
            raise ConfigError(
                f"STREAMS_BROKER_SECURITY_PROTOCOL={protocol} needs " + ", ".join(missing)
            )
    elif s.sasl_username or s.sasl_password:
        raise ConfigError(
            "STREAMS_BROKER_SASL_USERNAME/PASSWORD are set but no SASL is configured: "
            "set STREAMS_BROKER_SASL_MECHANISM (e.g. SCRAM-SHA-256)"
        )
