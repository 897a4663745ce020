"""Machine and version facts, medians and spreads, the printed table and the results JSON."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import statistics
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.latency import LatencyResult
from bench.model import SystemRun
from streams.config import REPO_ROOT

SYSTEMS = ("baseline", "worker", "quix", "2 workers")


def machine() -> dict[str, Any]:
    cpu = "unknown"
    mem_kib = 0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "memory_mib": mem_kib // 1024,
        "kernel": platform.release(),
        "load_average_at_start": [round(x, 2) for x in load],
    }


def kafka_version() -> str:
    pom = REPO_ROOT / "deploy" / "local-kafka" / "pom.xml"
    try:
        m = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom.read_text())
    except OSError:
        return "unknown"
    return m.group(1) if m else "unknown"


def code_digest() -> str:
    """sha256 of the worker's code, schemas and policy: which streams/ a result measured (the
    checkout changes under a running benchmark; no git needed)."""
    h = hashlib.sha256()
    files = sorted(
        [*REPO_ROOT.glob("streams/**/*.py"), *REPO_ROOT.glob("streams/**/*.toml"),
         *REPO_ROOT.glob("schemas/*.json")]
    )
    for f in files:
        h.update(str(f.relative_to(REPO_ROOT)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def versions() -> dict[str, str]:
    out = {
        "python": sys.version.split()[0],
        "kafka": kafka_version(),
        "streams_code_sha256": code_digest(),
    }
    for dist, key in (
        ("faust-streaming", "faust"),
        ("aiokafka", "aiokafka"),
        ("orjson", "orjson"),
        ("jsonschema-rs", "jsonschema_rs"),
        ("rocksdict", "rocksdict"),
        ("quixstreams", "quixstreams"),
        ("confluent-kafka", "confluent_kafka"),
        ("live-commerce-streams", "live_commerce_streams"),
    ):
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = "not installed"
    return out


def spread(values: Sequence[float | None]) -> dict[str, Any]:
    """Median and min-max of the values that exist; `n` how many."""
    vals = [v for v in values if v is not None]
    if not vals:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {
        "median": round(statistics.median(vals), 3),
        "min": round(min(vals), 3),
        "max": round(max(vals), 3),
        "n": len(vals),
    }


def by_system(runs: Sequence[SystemRun], system: str) -> list[SystemRun]:
    return [r for r in runs if r.system == system]


def ratios(runs: Sequence[SystemRun], num: str, den: str) -> list[float | None]:
    """Per-repetition ratio num/den (runs of one repetition ran back to back)."""
    out: list[float | None] = []
    reps = sorted({r.repetition for r in runs})
    for rep in reps:
        a = [r.events_per_s for r in runs if r.system == num and r.repetition == rep]
        b = [r.events_per_s for r in runs if r.system == den and r.repetition == rep]
        if a and b and a[0] is not None and b[0]:
            out.append(a[0] / b[0])
        else:
            out.append(None)
    return out


def summary(runs: Sequence[SystemRun], latency: LatencyResult | None) -> dict[str, Any]:
    s: dict[str, Any] = {}
    for system, key in zip(SYSTEMS, ("baseline", "worker", "quix", "workers2"), strict=True):
        rs = by_system(runs, system)
        if not rs:
            continue
        s[f"{key}_events_per_s"] = spread([r.events_per_s for r in rs])
        s[f"{key}_ok"] = f"{sum(r.ok for r in rs)}/{len(rs)}"
        s[f"{key}_cpu_per_wall"] = spread([r.cpu_per_wall for r in rs])
        if system != "baseline":
            s[f"{key}_peak_rss_mib"] = spread(
                [max(r.peak_rss_kib) / 1024 if r.peak_rss_kib else None for r in rs]
            )
    s["ratio_worker_to_baseline"] = spread(ratios(runs, "worker", "baseline"))
    if by_system(runs, "quix"):
        s["ratio_worker_to_quix"] = spread(ratios(runs, "worker", "quix"))
    if by_system(runs, "2 workers"):
        s["ratio_2_workers_to_1"] = spread(ratios(runs, "2 workers", "worker"))
    if latency is not None:
        s["latency"] = {
            "offered_rate": round(latency.offered_rate, 1),
            "p50_ms": _r(latency.p50_ms),
            "p99_ms": _r(latency.p99_ms),
            "visible_p50_ms": _r(latency.visible_p50_ms),
            "visible_p99_ms": _r(latency.visible_p99_ms),
            "processing_p50_ms": _r(latency.processing_p50_ms, 3),
            "processing_p99_ms": _r(latency.processing_p99_ms, 3),
            "commit_p50_ms": _r(latency.commit_p50_ms),
            "commit_p99_ms": _r(latency.commit_p99_ms),
            "ok": latency.ok,
        }
    return s


def _r(v: float | None, digits: int = 1) -> float | None:
    return None if v is None else round(v, digits)


def _rate(sp: dict[str, Any] | None, unit: str = "ev/s") -> str:
    if not sp or sp["median"] is None:
        return f"{'FAILED':>12}"
    if unit == "ev/s":
        return (
            f"{sp['median']:>12,.0f} ev/s {sp['min']:>10,.0f} – {sp['max']:<10,.0f}"
        )
    return f"{sp['median']:>12.3f} ×    {sp['min']:>10.3f} – {sp['max']:<10.3f}"


def table(
    runs: Sequence[SystemRun],
    latency: LatencyResult | None,
    s: dict[str, Any],
    params: dict[str, Any],
    mach: dict[str, Any],
) -> str:
    lines = [
        f"live-commerce-streams benchmark: {params['events']:,} events, "
        f"{params['partitions']} partitions, {params['repeat']} repetition(s); "
        f"{mach['nproc']} CPUs ({mach['cpu_model']})",
        "",
        f"{'':30}{'median':>12}{'':6}{'min – max':^23}{'complete':>10}{'CPU s/s*':>9}",
    ]

    def row(label: str, key: str, system_key: str | None = None) -> None:
        if key not in s:
            return
        extra = ""
        if system_key is not None:
            cpu = s.get(f"{system_key}_cpu_per_wall") or {}
            cpu_txt = f"{cpu['median']:.2f}" if cpu.get("median") is not None else "n/a"
            extra = f"  {s.get(f'{system_key}_ok', ''):>8}  {cpu_txt:>7}"
        lines.append(f"{label:30}{_rate(s[key])}{extra}")

    def ratio(label: str, key: str) -> None:
        if key in s:
            lines.append(f"{label:30}{_rate(s[key], 'x')}")

    row("baseline (raw aiokafka loop)", "baseline_events_per_s", "baseline")
    row("worker (1 process)", "worker_events_per_s", "worker")
    ratio("worker / baseline", "ratio_worker_to_baseline")
    row("quix (Quix Streams app)", "quix_events_per_s", "quix")
    ratio("worker / quix", "ratio_worker_to_quix")
    row("2 workers (2 processes)", "workers2_events_per_s", "workers2")
    ratio("2 workers / 1 worker", "ratio_2_workers_to_1")
    lines.append(
        "* CPU seconds per wall second of the measured process(es) (1.00 = one core busy)"
    )
    if latency is not None:
        lat = s["latency"]
        status = "OK" if latency.ok else "FAILED (outputs differ from the model)"
        cpu = latency.worker_cpu_per_wall
        cpu_txt = f", worker CPU {cpu:.2f} s/s" if cpu is not None else ""
        lines += [
            "",
            f"latency at half load: {lat['offered_rate']:,.0f} ev/s offered, "
            f"{latency.achieved_rate:,.0f} sent, {latency.outputs:,} outputs {status}{cpu_txt}",
            f"  decision (input send -> output CreateTime)  p50 {_ms(lat['p50_ms'])}"
            f"  p99 {_ms(lat['p99_ms'])}",
            f"  visible (-> read_committed consumer)        p50 {_ms(lat['visible_p50_ms'])}"
            f"  p99 {_ms(lat['visible_p99_ms'])}",
            f"  livecommerce_processing_seconds             p50 "
            f"{_ms(lat['processing_p50_ms'])}  p99 {_ms(lat['processing_p99_ms'])}",
            f"  livecommerce_commit_seconds                 p50 "
            f"{_ms(lat['commit_p50_ms'])}  p99 {_ms(lat['commit_p99_ms'])}",
        ]
        if latency.p99_by_second_ms:
            lines.append(
                "  decision p99 per second of sending (ms): "
                + " ".join(f"{v:.0f}" for v in latency.p99_by_second_ms)
            )
        if latency.visible_p99_by_second_ms:
            lines.append(
                "  visible p99 per second of sending (ms):  "
                + " ".join(f"{v:.0f}" for v in latency.visible_p99_by_second_ms)
            )
        lines += [f"  note: {n}" for n in latency.notes]
    rss = [
        (label, s.get(k))
        for label, k in (
            ("worker", "worker_peak_rss_mib"),
            ("quix", "quix_peak_rss_mib"),
            ("2 workers", "workers2_peak_rss_mib"),
        )
        if s.get(k)
    ]
    if rss:
        lines.append("")
        for label, sp in rss:
            if sp and sp["median"] is not None:
                lines.append(
                    f"{'peak RSS (VmHWM), ' + label:30}{sp['median']:>12.0f} MiB  "
                    f"{sp['min']:>10.0f} – {sp['max']:<10.0f}"
                )
    for r in runs:
        if not r.ok:
            detail = r.completeness.summary() if r.completeness else "; ".join(r.notes)[:300]
            lines.append(f"FAILED: {r.system} repetition {r.repetition}: {detail}")
    return "\n".join(lines)


def _ms(v: float | None) -> str:
    return "     n/a" if v is None else f"{v:8.1f} ms"
