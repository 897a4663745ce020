"""`python -m streams.policy`: validate, diff, publish and list policy documents (issue #14 tools).

The one module of `streams.policy` that does I/O. Kafka, Faust (via streams.topics) and the
settings are imported inside the functions that talk to the broker, so importing the package,
or running `validate` and `diff`, loads no stream framework.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from streams.names import POLICIES
from streams.policy.clock import format_instant, parse_instant
from streams.policy.policy_file import Policy, PolicyError, parse_policy
from streams.policy.versions import (
    DOCUMENT_KEYS,
    PolicyBook,
    PolicyDocument,
    parse_document,
)

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_SETUP = 2

EPILOG = """\
exit codes:
  0  success (validate: the document is valid; diff: printed, with or without changes)
  1  a policy document is invalid or unreadable (one line on stderr says which field and why)
  2  usage error, a bad STREAMS_* setting, or the broker is unreachable or refused the request

documents: TOML (a policy file plus effective_from, mode and optionally notice_window_days) or
JSON (the value format of the policies topic); the file name's .json suffix selects JSON.
publish and list use STREAMS_BROKER and the STREAMS_BROKER_* security settings, like the worker.
"""


class CliError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


# ------------------------------------------------------------------------------ files


def _read_mapping(path: str) -> dict[str, Any]:
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise PolicyError(path, "<file>", f"cannot read: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PolicyError(path, "<file>", f"not UTF-8: {e}") from None
    if path.endswith(".json"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise PolicyError(path, "<file>", f"invalid JSON: {e}") from None
        if not isinstance(doc, dict):
            raise PolicyError(path, "<document>", "expected a JSON object")
        return doc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PolicyError(path, "<file>", f"invalid TOML: {e}") from None


def load_document(path: str) -> PolicyDocument:
    return parse_document(_read_mapping(path), path)


def load_for_diff(path: str) -> PolicyDocument | Policy:
    """A document, or a bare policy file (no effective_from/mode keys) such as the packaged one."""
    doc = _read_mapping(path)
    if any(k in doc for k in DOCUMENT_KEYS) or path.endswith(".json"):
        return parse_document(doc, path)
    return parse_policy(Path(path).read_bytes(), path)


# ------------------------------------------------------------------------------- diff


def _when(ms: int) -> str:
    return format_instant(ms)


def diff_lines(old: PolicyDocument | Policy, new: PolicyDocument | Policy) -> list[str]:
    """What changes from `old` to `new`, one sentence per change."""
    out: list[str] = []
    po = old.policy if isinstance(old, PolicyDocument) else old
    pn = new.policy if isinstance(new, PolicyDocument) else new
    if po.version != pn.version:
        out.append(f"version changes from {po.version} to {pn.version}")
    if isinstance(old, PolicyDocument) and isinstance(new, PolicyDocument):
        if old.effective_from_ms != new.effective_from_ms:
            out.append(
                f"the version takes effect from {new.effective_from} instead of "
                f"{old.effective_from}"
            )
        if old.mode != new.mode:
            out.append(f"mode changes from {old.mode} to {new.mode}")
        if old.notice_window_days != new.notice_window_days:
            out.append(
                f"notice window changes from {old.notice_window_days} to "
                f"{new.notice_window_days} days"
            )
    elif isinstance(new, PolicyDocument):
        out.append(f"the new version is {new.mode}, effective from {new.effective_from}")
    added = sorted(pn.own_shop_sources - po.own_shop_sources)
    removed = sorted(po.own_shop_sources - pn.own_shop_sources)
    if added:
        out.append(
            "own-shop sources added (no longer third-party, exempt from the Xingtu match and "
            f"the cart ban, fee at the own-shop rate): {', '.join(added)}"
        )
    if removed:
        out.append(f"own-shop sources removed (become third-party): {', '.join(removed)}")
    rules = (
        ("xingtu-match-required", "xingtu_match_required"),
        ("third-party-cart-banned", "third_party_cart_banned"),
    )
    for rule, attr in rules:
        date_attr, reason_attr = f"{attr}_from_ms", f"{attr}_reason"
        od, nd = getattr(po, date_attr), getattr(pn, date_attr)
        if od != nd:
            later = "later" if nd > od else "earlier"
            out.append(f"rule {rule} takes effect {later}: {_when(nd)} instead of {_when(od)}")
        orr, nr = getattr(po, reason_attr), getattr(pn, reason_attr)
        if orr != nr:
            out.append(f"rule {rule} rejects with reason {nr} instead of {orr}")
    if po.service_fee_from_ms != pn.service_fee_from_ms:
        later = "later" if pn.service_fee_from_ms > po.service_fee_from_ms else "earlier"
        out.append(
            f"rule xingtu-service-fee takes effect {later}: {_when(pn.service_fee_from_ms)} "
            f"instead of {_when(po.service_fee_from_ms)}"
        )
    for label, attr in (
        ("third-party", "third_party_rate_bps"),
        ("own-shop", "own_shop_rate_bps"),
    ):
        ob, nb = getattr(po, attr), getattr(pn, attr)
        if ob != nb:
            out.append(
                f"rule xingtu-service-fee: {label} rate changes from {ob} bps ({ob / 100:g} %) "
                f"to {nb} bps ({nb / 100:g} %)"
            )
    if po.max_backdate_seconds != pn.max_backdate_seconds:
        out.append(
            f"max_backdate_seconds changes from {po.max_backdate_seconds} to "
            f"{pn.max_backdate_seconds}"
        )
    if po.dedup_retention_days != pn.dedup_retention_days:
        out.append(
            f"dedup_retention_days changes from {po.dedup_retention_days} to "
            f"{pn.dedup_retention_days}"
        )
    return out


# ------------------------------------------------------------------------------ Kafka


def _settings() -> Any:
    from streams.config import ConfigError, load_settings

    try:
        return load_settings()
    except ConfigError as e:
        raise CliError(EXIT_SETUP, f"bad setting: {e}") from None


async def _unreachable(settings: Any, exc: BaseException) -> CliError:
    from streams.topics import _connect_hint, _probe

    return CliError(EXIT_SETUP, _connect_hint(settings, await _probe(settings) or exc))


async def _start(settings: Any, client: Any) -> None:
    """Start a producer or consumer within the start-up timeout, else say the broker is
    unreachable (the admin client in `_ensure_topic` also closes itself on that path)."""
    from aiokafka.errors import KafkaError

    try:
        await asyncio.wait_for(client.start(), timeout=settings.startup_timeout)
    except (TimeoutError, KafkaError, OSError) as exc:
        raise await _unreachable(settings, exc) from None


async def _ensure_topic(settings: Any, topic: str, create: bool) -> int | None:
    """The topic's partition count; creates it (compacted, one partition) when `create`."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    from streams.topics import client_auth, policies_topic

    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers,
        request_timeout_ms=int(settings.startup_timeout * 1000),
        client_id="policy-cli",
        **client_auth(settings),
    )
    try:
        await asyncio.wait_for(admin.start(), timeout=settings.startup_timeout)
    except (TimeoutError, KafkaError, OSError) as exc:
        with contextlib.suppress(Exception):  # never connected: nothing to save
            await admin.close()
        raise await _unreachable(settings, exc) from None
    try:
        if topic in set(await admin.list_topics()):
            (desc,) = await admin.describe_topics([topic])
            return len(desc["partitions"])
        if not create:
            return None
        new = policies_topic(topic, settings.topic_replication)
        await admin.create_topics([new], timeout_ms=int(settings.startup_timeout * 1000))
        return 1
    except KafkaError as exc:
        raise CliError(EXIT_SETUP, f"Kafka refused the request on {topic}: {exc!r}") from None
    finally:
        await admin.close()


async def publish(doc: PolicyDocument, topic: str) -> str:
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    from streams.topics import client_auth

    settings = _settings()
    await _ensure_topic(settings, topic, create=True)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=int(settings.startup_timeout * 1000),
        client_id="policy-cli",
        **client_auth(settings),
    )
    await _start(settings, producer)
    try:
        meta = await asyncio.wait_for(
            producer.send_and_wait(topic, doc.to_json(), key=doc.policy_id.encode("utf-8")),
            timeout=settings.startup_timeout,
        )
    except (TimeoutError, KafkaError) as exc:
        raise CliError(EXIT_SETUP, f"Kafka did not take the record on {topic}: {exc!r}") from None
    finally:
        await producer.stop()
    return (
        f"published {doc.version} ({doc.mode}, effective from {doc.effective_from}) to "
        f"{topic} partition {meta.partition} offset {meta.offset}"
    )


async def read_topic(topic: str) -> tuple[PolicyBook, list[str]]:
    """Every record of the topic in offset order: the book, and one line per refused record."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import KafkaError

    from streams.engine.policies import read_to_end
    from streams.topics import client_auth

    settings = _settings()
    partitions = await _ensure_topic(settings, topic, create=False)
    book = PolicyBook()
    refused: list[str] = []
    if partitions is None:
        return book, [f"topic {topic} does not exist (nothing published yet)"]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        isolation_level="read_committed",
        request_timeout_ms=int(settings.startup_timeout * 1000) + 1000,
        client_id="policy-cli",
        **client_auth(settings),
    )
    await _start(settings, consumer)
    def apply(key: bytes | None, value: bytes | None, where: str) -> None:
        try:
            book.apply_record(key, value, where)  # the workers' rule: they hold the same
        except PolicyError as e:
            refused.append(f"refused: {e}")

    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        await asyncio.wait_for(
            read_to_end(consumer, tps, apply), timeout=max(settings.startup_timeout, 10.0)
        )
    except TimeoutError:
        raise CliError(EXIT_SETUP, f"timed out reading {topic}") from None
    except KafkaError as exc:
        raise CliError(EXIT_SETUP, f"Kafka refused reading {topic}: {exc!r}") from None
    finally:
        await consumer.stop()
    return book, refused


def list_lines(book: PolicyBook, at_ms: int) -> list[str]:
    enforced = book.enforced_doc_at(at_ms)
    shadows = {d.version for d in book.shadows_at(at_ms)}
    lines = [f"at {format_instant(at_ms)}: enforced {enforced.version if enforced else 'none'}"]
    for d in book.documents():
        if enforced is not None and d.version == enforced.version:
            status = "ENFORCED NOW"
        elif d.version in shadows:
            status = "shadow, running"
        elif d.effective_from_ms > at_ms:
            status = "scheduled"
        else:
            status = "superseded"
        lines.append(
            f"{d.version}  mode={d.mode}  effective_from={d.effective_from}  "
            f"notice_window_days={d.notice_window_days}  [{status}]"
        )
    return lines


# -------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m streams.policy",
        description="Validate, compare, publish and list versioned policy documents.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    v = sub.add_parser("validate", help="check one document (exit 0 valid, 1 invalid)")
    v.add_argument("file")
    d = sub.add_parser(
        "diff", help="say which rules, dates, rates and sources change from OLD to NEW"
    )
    d.add_argument("old", help="a document, or a bare policy file such as the packaged one")
    d.add_argument("new")
    topic_help = "the policies topic (default: STREAMS_TOPIC_PREFIX + 'policies')"
    pub = sub.add_parser("publish", help="validate FILE, then produce it to the policies topic")
    pub.add_argument("file")
    pub.add_argument("--topic", help=topic_help)
    ls = sub.add_parser("list", help="versions on the policies topic and which is enforced now")
    ls.add_argument("--topic", help=topic_help)
    ls.add_argument(
        "--at", help="show what is enforced at this RFC 3339 instant instead of now", default=None
    )
    return p


def _topic(arg: str | None) -> str:
    if arg:
        return arg
    return str(_settings().topic(POLICIES))


def _quiet_client_logs() -> None:
    """aiokafka logs every failed connection attempt; the CLI reports one line instead."""
    log = logging.getLogger("aiokafka")
    log.addHandler(logging.NullHandler())
    log.propagate = False


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("publish", "list"):
        _quiet_client_logs()
    try:
        if args.command == "validate":
            doc = load_document(args.file)
            print(
                f"valid: {args.file}: version {doc.version}, {doc.mode}, effective from "
                f"{doc.effective_from}, notice window {doc.notice_window_days} days"
            )
        elif args.command == "diff":
            lines = diff_lines(load_for_diff(args.old), load_for_diff(args.new))
            print("\n".join(lines) if lines else "no changes")
        elif args.command == "publish":
            doc = load_document(args.file)
            print(asyncio.run(publish(doc, _topic(args.topic))))
        elif args.command == "list":
            at_ms = _at(args.at)
            book, refused = asyncio.run(read_topic(_topic(args.topic)))
            for line in refused:
                print(line, file=sys.stderr)
            print("\n".join(list_lines(book, at_ms)))
    except PolicyError as e:
        print(f"invalid: {e}", file=sys.stderr)
        return EXIT_INVALID
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    return EXIT_OK


def _at(text: str | None) -> int:
    if text is None:
        return time.time_ns() // 1_000_000
    try:
        return parse_instant(text)
    except ValueError as e:
        raise CliError(EXIT_SETUP, f"--at: {e}") from None


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
