"""`python -m streams.loadgen`: produce a seeded, realistic event stream for demos and benchmarks.

    python -m streams.loadgen --rate 200 --count 10000        # the demo beside `make run`
    python -m streams.loadgen --rate 0 --count 50000 --quiet  # as fast as the broker takes it
    python -m streams.loadgen --arrival tasks-last             # Xingtu tasks after the sales

One plan, no phases: Xingtu tasks, cart-adds and orders are produced in the order `--arrival`
names (default `interleaved`: all records in record-timestamp order; `tasks-first` /
`tasks-last`: every task before / after every sale). Record timestamps do not depend on it.

Progress goes to stderr once a second, the summary to stdout. Exit 0 on success (also after a
clean Ctrl-C), 1 if any send failed or the broker or topics could not be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from collections.abc import Sequence

from aiokafka.errors import KafkaError

from streams.loadgen.generate import ARRIVAL_ORDERS, TOPICS, Planned, generate
from streams.loadgen.send import Stats, TopicsMissing, send_planned


def _non_negative_float(s: str) -> float:
    v = float(s)
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {s}")
    return v


def _positive_int(s: str) -> int:
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {s}")
    return v


def _share(s: str) -> float:
    v = float(s)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within 0..1, got {s}")
    return v


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m streams.loadgen",
        description="Produce seeded Xingtu tasks, cart-adds and orders to Kafka, in one plan.",
    )
    p.add_argument(
        "--broker",
        default=os.environ.get("STREAMS_BROKER") or "kafka://localhost:9092",
        help="kafka://HOST:PORT[;kafka://...] (default: $STREAMS_BROKER or %(default)s)",
    )
    p.add_argument(
        "--prefix",
        default=os.environ.get("STREAMS_TOPIC_PREFIX", ""),
        help="topic prefix (default: $STREAMS_TOPIC_PREFIX or none)",
    )
    p.add_argument(
        "--rate",
        type=_non_negative_float,
        default=200.0,
        help="events per second; 0 = as fast as possible (default %(default)s)",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--count", type=_positive_int, help="events to send (default 10000)")
    size.add_argument(
        "--duration", type=_non_negative_float, help="seconds to run: sends rate * duration events"
    )
    p.add_argument("--seed", type=int, default=1, help="generator seed (default %(default)s)")
    p.add_argument(
        "--malformed-share",
        type=_share,
        default=0.01,
        help="share of records the worker must dead-letter (default %(default)s)",
    )
    p.add_argument(
        "--anchors", type=_positive_int, default=200, help="streamers (default %(default)s)"
    )
    p.add_argument(
        "--arrival",
        choices=ARRIVAL_ORDERS,
        default="interleaved",
        help="produce order: all records by timestamp, or every task before / after every sale "
        "(timestamps are the same; default %(default)s)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines, only the summary")
    args = p.parse_args(argv)
    if args.duration is not None:
        if args.rate == 0:
            p.error("--duration needs --rate > 0 (with --rate 0 use --count)")
        args.count = int(args.rate * args.duration)
    elif args.count is None:
        args.count = 10_000
    return args


def summary(stats: Stats, *, generated_s: float) -> str:
    """The end-of-run report: what was sent, how fast, and what failed."""
    topics = ", ".join(f"{t} {stats.by_topic.get(t, 0)}" for t in TOPICS)
    lines = [
        f"loadgen: {'interrupted; ' if stats.interrupted else ''}sent {stats.sent} of "
        f"{stats.planned} (malformed {stats.malformed}) in {stats.elapsed_s:.2f} s = "
        f"{stats.rate:.0f} events/s, errors {stats.errors}",
        f"loadgen: per topic: {topics}; generated in {generated_s:.2f} s",
    ]
    lines += [f"loadgen: error: {e}" for e in stats.error_samples]
    return "\n".join(lines)


async def _run(args: argparse.Namespace, planned: list[Planned], generated_s: float) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        # The first Ctrl-C stops cleanly; the default handler comes back for a second one.
        if not args.quiet:
            print(f"loadgen: {sig.name}: stopping after in-flight acks", file=sys.stderr)
        stop.set()
        loop.remove_signal_handler(sig)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        stats = await send_planned(
            planned,
            bootstrap=args.broker,
            prefix=args.prefix,
            rate=args.rate,
            progress=not args.quiet,
            stop=stop,
        )
    except (KafkaError, OSError, TopicsMissing) as exc:
        print(f"loadgen: cannot send to {args.broker}: {exc}", file=sys.stderr)
        return 1
    print(summary(stats, generated_s=generated_s), flush=True)
    if stats.interrupted:
        return 130  # as the shell reports a Ctrl-C: a loop around loadgen stops too
    return 1 if stats.errors else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    try:
        planned = generate(
            args.count,
            seed=args.seed,
            malformed_share=args.malformed_share,
            anchors=args.anchors,
            arrival=args.arrival,
        )
        generated_s = time.monotonic() - started
        if not args.quiet:
            print(
                f"loadgen: {len(planned)} events planned (seed {args.seed}, {args.arrival}) in "
                f"{generated_s:.2f} s; sending to {args.broker} prefix {args.prefix!r} at "
                + (f"{args.rate:g}/s" if args.rate else "full speed"),
                file=sys.stderr,
            )
        return asyncio.run(_run(args, planned, generated_s))
    except KeyboardInterrupt:
        print("loadgen: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
