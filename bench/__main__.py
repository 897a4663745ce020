"""`python -m bench`: throughput of the raw aiokafka loop, one worker and two workers over the
same backlog (one phase: Xingtu tasks, cart-adds and orders together), then decision latency at
half the worker's throughput. See bench/README.md."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.baseline import run_baseline
from bench.kafka import (
    BOOTSTRAP,
    Backlog,
    delete_topics_with_prefix,
    prepare_backlog,
    run_id,
)
from bench.latency import LatencyResult, run_latency
from bench.model import SystemRun
from bench.report import by_system, code_digest, machine, summary, table, versions
from bench.run_quix import COMMIT_INTERVAL as QUIX_COMMIT_INTERVAL
from bench.run_quix import run_quix
from bench.run_worker import Profile, run_workers
from streams.codec import load_validators
from streams.config import REPO_ROOT
from streams.loadgen.expected import Expected, expected_outputs
from streams.loadgen.generate import ARRIVAL_ORDERS, TASKS, Planned, generate
from streams.policy import load_policy


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--events", type=int, default=200_000, help="events in the backlog")
    p.add_argument("--partitions", type=int, default=4, help="partitions per input topic")
    p.add_argument("--repeat", type=int, default=3, help="repetitions of each system")
    p.add_argument("--seed", type=int, default=2020, help="load generator seed")
    p.add_argument("--malformed-share", type=float, default=0.01, help="share of broken records")
    p.add_argument(
        "--arrival", choices=ARRIVAL_ORDERS, default="interleaved",
        help="produce order of the backlog: all records by timestamp (default), or every task "
        "before / after every sale; the expected outputs are the same (the merge over the logs)",
    )
    p.add_argument("--skip-scaling", action="store_true", help="no 2-worker runs")
    p.add_argument(
        "--only", type=_systems, default=None, metavar="S1,S2",
        help=f"run only these systems ({', '.join(SYSTEMS)}; '2workers' for '2 workers')",
    )
    p.add_argument(
        "--latency-seconds", type=float, default=20.0, help="length of the latency run (0: none)"
    )
    p.add_argument(
        "--latency-rate", type=float, default=0.0,
        help="events/s offered in the latency run (default: half the median worker throughput)",
    )
    p.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results")
    p.add_argument("--profile", action="store_true",
                   help="py-spy the first worker run (collapsed stacks next to the JSON)")
    p.add_argument("--keep-topics", action="store_true", help="do not delete the run's topics")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per measured run")
    args = p.parse_args(argv)
    args.systems = args.only or [
        s for s in SYSTEMS if not (args.skip_scaling and s == "2 workers")
    ]
    if args.events < 10 or args.partitions < 1 or args.repeat < 1:
        p.error("--events >= 10, --partitions >= 1 and --repeat >= 1")
    return args


SYSTEMS = ("baseline", "worker", "quix", "2 workers")


def _systems(text: str) -> list[str]:
    """`--only`: comma-separated system names, in the order of SYSTEMS."""
    names = {n.strip().replace("2workers", "2 workers") for n in text.split(",") if n.strip()}
    unknown = names - set(SYSTEMS)
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown system(s) {sorted(unknown)}; use {SYSTEMS}")
    return [s for s in SYSTEMS if s in names]


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


async def _measure(
    system: str,
    prefix: str,
    planned: list[Planned],
    expected: Expected,
    args: argparse.Namespace,
    *,
    repetition: int,
    work_dir: Path,
    ctx: dict[str, Any],
    profile_to: Path | None,
) -> tuple[SystemRun, Profile | None]:
    backlog: Backlog | None = None
    profile: Profile | None = None
    n_events = len(planned)
    try:
        # every system gets the same held backlog: produced up front in an open transaction
        # and released at once, so what is measured is deciding a backlog, not the loader
        backlog = await prepare_backlog(prefix, args.partitions, [planned], held=True)
        if system == "baseline":
            run = await run_baseline(
                backlog, expected, repetition=repetition, timeout=args.timeout, **ctx
            )
        elif system == "quix":
            run = await run_quix(
                backlog, expected, repetition=repetition, work_dir=work_dir, timeout=args.timeout
            )
        else:
            run, profile = await run_workers(
                backlog,
                expected,
                n_workers=1 if system == "worker" else 2,
                repetition=repetition,
                work_dir=work_dir,
                timeout=args.timeout,
                profile_to=profile_to,
            )
    except Exception as exc:
        run = SystemRun(system, repetition, prefix, n_events)
        run.notes.append(f"error: {type(exc).__name__}: {exc}"[:2000])
    finally:
        if backlog is not None:
            await backlog.close()
        if not args.keep_topics:
            with contextlib.suppress(Exception):
                await delete_topics_with_prefix(prefix)
    return run, profile


async def main(args: argparse.Namespace) -> int:
    started = dt.datetime.now(dt.UTC)
    mach = machine()
    vers = versions()
    rid = run_id()
    base = f"bench-{rid}-"
    params = {
        "events": args.events,
        "partitions": args.partitions,
        "repeat": args.repeat,
        "seed": args.seed,
        "malformed_share": args.malformed_share,
        "arrival": args.arrival,
        "skip_scaling": args.skip_scaling,
        "latency_seconds": args.latency_seconds,
        "latency_rate": args.latency_rate or "half the median worker throughput",
        "broker": BOOTSTRAP,
        "topic_prefix": base,
        "worker": "faust -A streams worker -l warn (exactly_once, rocksdb, commit interval 1 s)",
        "quix": "python -m bench.quix_app (quixstreams, exactly-once, RocksDB state + changelog, "
        f"concat of the three inputs, commit interval {QUIX_COMMIT_INTERVAL:g} s)",
        "systems": args.systems,
    }
    say(f"generating {args.events:,} events (seed {args.seed}) and the expected outputs")
    planned = generate(
        args.events, seed=args.seed, malformed_share=args.malformed_share, arrival=args.arrival
    )
    expected = expected_outputs(planned, partitions=args.partitions)
    n_tasks = sum(p.topic == TASKS for p in planned)
    say(
        f"one phase, {args.arrival}: {n_tasks:,} tasks, {len(planned) - n_tasks:,} cart-adds and "
        f"orders; expected {len(expected.rejection_ids):,} rejections, "
        f"{len(expected.fee_ids):,} fees, {expected.dead_letters:,} dead letters"
    )
    ctx = {
        "policy": load_policy(),
        "validators": load_validators(REPO_ROOT / "schemas"),
    }
    systems = args.systems
    runs: list[SystemRun] = []
    profile: Profile | None = None
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    work_dir = Path(tempfile.mkdtemp(prefix=f"bench-{rid}-"))
    latency: LatencyResult | None = None
    latency_error: str | None = None
    try:
        for rep in range(1, args.repeat + 1):
            for system in systems:
                tag = system.replace(" ", "")
                prefix = f"{base}r{rep}-{tag}-"
                profile_to = None
                if args.profile and system == "worker" and profile is None:
                    profile_to = args.out / f"{stamp}-worker-profile.txt"
                say(f"repetition {rep}/{args.repeat}: {system} ...")
                run, prof = await _measure(
                    system, prefix, planned, expected, args,
                    repetition=rep, work_dir=work_dir, ctx=ctx, profile_to=profile_to,
                )
                profile = profile or prof
                runs.append(run)
                rate = run.events_per_s
                detail = (
                    f"{rate:,.0f} events/s ({run.seconds:.2f} s)" if rate is not None
                    else "FAILED"
                )
                check = run.completeness.summary() if run.completeness else "; ".join(run.notes)
                say(f"repetition {rep}/{args.repeat}: {system}: {detail}; outputs {check[:400]}")
        if args.latency_seconds > 0:
            worker_rates = [r.events_per_s for r in by_system(runs, "worker") if r.events_per_s]
            if worker_rates or args.latency_rate > 0:
                rate = args.latency_rate or statistics.median(worker_rates) / 2
                say(f"latency: {rate:,.0f} events/s for {args.latency_seconds:g} s ...")
                prefix = f"{base}latency-"
                try:
                    latency = await run_latency(
                        rate=rate,
                        seconds=args.latency_seconds,
                        seed=args.seed + 1,
                        partitions=args.partitions,
                        prefix=prefix,
                        work_dir=work_dir,
                        timeout=args.timeout,
                    )
                except Exception as exc:  # reported as a failure; the throughput figures stand
                    latency_error = f"{type(exc).__name__}: {exc}"[:2000]
                    say(f"latency: FAILED: {latency_error}")
                finally:
                    if not args.keep_topics:
                        with contextlib.suppress(Exception):
                            await delete_topics_with_prefix(prefix)
            else:
                say("latency: skipped, no successful worker run to take the rate from")
    finally:
        if not os.environ.get("BENCH_KEEP_WORK_DIR"):
            shutil.rmtree(work_dir, ignore_errors=True)
    s = summary(runs, latency)
    if code_digest() != vers["streams_code_sha256"]:
        say("warning: streams/ changed while the benchmark ran; the runs may differ in code")
        vers["streams_code_changed_during_run"] = "yes"
    ok = all(r.ok for r in runs) and (latency is None or latency.ok) and latency_error is None
    result: dict[str, Any] = {
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "ok": ok,
        "machine": mach,
        "versions": vers,
        "parameters": params,
        "summary": s,
        "runs": [r.to_json() for r in runs],
        "latency": latency.to_json() if latency else None,
        "latency_error": latency_error,
        "profile": (
            {
                "file": profile.path.name,
                "samples": profile.samples,
                "top_self_percent": profile.top_self,
                "top_total_percent": profile.top_total,
            }
            if profile
            else None
        ),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{stamp}.json"
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    print(table(runs, latency, s, params, mach))
    if profile and profile.top_self:
        print("\nworker profile (py-spy), top self time:")
        for name, pct in profile.top_self[:15]:
            print(f"  {pct:5.1f} %  {name}")
    print(f"\nresults: {path}")
    return 0 if ok else 1


def cli(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from bench.kafka import BROKER

    host, _, port = BOOTSTRAP.rpartition(":")
    import socket

    try:
        with socket.create_connection((host, int(port)), timeout=3):
            pass
    except OSError:
        print(
            f"bench: no Kafka answers at {BROKER}; start it with `make kafka` "
            "(deploy/local-kafka/kafka.sh start) or run `make bench`",
            file=sys.stderr,
        )
        return 2
    return asyncio.run(main(args))


if __name__ == "__main__":
    raise SystemExit(cli())
