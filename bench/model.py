"""What one measured run yields; plain dataclasses so that they serialise to the results JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from bench.kafka import Completeness


@dataclass
class Segment:
    """The backlog (one phase: tasks, cart-adds and orders together): from its first consumed
    record to its last decision/commit."""

    records: int
    released_at: float  # wall-clock seconds when the backlog was released (committed/produced)
    first_consumed_at: float
    done_at: float
    # CPU time (user + system) the measured process(es) used from release to done: how busy
    # the system was, of `seconds` per process (1.0 = one core all the time).
    cpu_seconds: float | None = None

    @property
    def seconds(self) -> float:
        return max(self.done_at - self.first_consumed_at, 1e-9)


@dataclass
class SystemRun:
    """One repetition of one system (baseline, worker, 2 workers) over the whole backlog."""

    system: str
    repetition: int
    prefix: str
    events: int
    segments: list[Segment] = field(default_factory=list)
    completeness: Completeness | None = None
    peak_rss_kib: list[int] = field(default_factory=list)  # one per worker process
    load_seconds: dict[int, float] = field(default_factory=dict)  # per loaded phase (one: 0)
    startup_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.completeness is not None and self.completeness.ok

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.segments)

    @property
    def events_per_s(self) -> float | None:
        """All events over the time spent working on them; None if the outputs were wrong."""
        if not self.ok or not self.segments:
            return None
        return self.events / self.seconds

    @property
    def cpu_per_wall(self) -> float | None:
        """CPU seconds per wall second of the measured process(es), release to done."""
        if not self.segments:
            return None
        s = self.segments[-1]
        wall = s.done_at - s.released_at
        return s.cpu_seconds / wall if s.cpu_seconds is not None and wall > 0 else None

    def to_json(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "repetition": self.repetition,
            "prefix": self.prefix,
            "events": self.events,
            "ok": self.ok,
            "seconds": round(self.seconds, 4),
            "events_per_s": _r(self.events_per_s),
            "cpu_per_wall": _r(self.cpu_per_wall, 3),
            "segments": [
                {
                    **asdict(s),
                    "seconds": round(s.seconds, 4),
                    "cpu_per_wall": (
                        round(s.cpu_seconds / (s.done_at - s.released_at), 3)
                        if s.cpu_seconds is not None and s.done_at > s.released_at
                        else None
                    ),
                }
                for s in self.segments
            ],
            "completeness": asdict(self.completeness) if self.completeness else None,
            "peak_rss_kib": self.peak_rss_kib,
            "load_seconds": {k: round(v, 3) for k, v in self.load_seconds.items()},
            "startup_seconds": round(self.startup_seconds, 3),
            "notes": self.notes,
        }


def _r(v: float | None, digits: int = 1) -> float | None:
    return None if v is None else round(v, digits)
