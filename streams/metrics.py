"""The worker's own Prometheus metrics, with the names dashboards and alerts rely on.

Served by Faust's web server at /metrics together with Faust's sensor metrics (prefix `faust_`).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from streams.names import INPUT_TOPICS
from streams.policy import Policy

EVENTS = Counter(
    "livecommerce_events",
    "Input events by topic (unprefixed) and outcome",
    ["topic", "outcome"],
)
REJECTIONS = Counter(
    "livecommerce_rejections",
    "Rejections emitted, by subject and reason",
    ["subject", "reason"],
)
FEE_FEN = Counter(
    "livecommerce_fee_fen",
    "Service fees emitted in fen (reversals counted positive under kind=reversal)",
    ["source_class", "kind"],
)
PROCESSING_SECONDS = Histogram(
    "livecommerce_processing_seconds",
    "Per-record time to decode, decide and hand outputs to the producer (each record is"
    " counted with its batch's average)",
    ["topic"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
EVENT_AGE_SECONDS = Histogram(
    "livecommerce_event_age_seconds",
    "Wall-clock time at decision minus the event's decision time (replays of 2020 are years old)",
    ["topic"],
    buckets=(
        0.01,
        0.05,
        0.1,
        0.5,
        1,
        5,
        30,
        60,
        300,
        3600,
        86400,
        7 * 86400,
        30 * 86400,
        365 * 86400,
        3650 * 86400,
    ),
)
KEY_MISMATCH = Counter(
    "livecommerce_key_mismatch",
    "Records whose Kafka key was missing or not the value's anchor_id (re-routed by anchor_id)",
    ["topic"],
)
BUILD_INFO = Gauge(
    "livecommerce_build_info",
    "Always 1; labels name the code and policy versions in force",
    ["version", "policy_version"],
)

REROUTED = Counter(
    "livecommerce_rerouted",
    "Records found in a partition other than murmur2(anchor_id)'s and re-sent there",
    ["topic"],
)

DEDUP_IDS = Gauge(
    "livecommerce_dedup_ids",
    "Event ids this worker remembers to drop redeliveries (bounded by dedup_retention_days)",
)
DEDUP_FORGOTTEN = Counter(
    "livecommerce_dedup_forgotten",
    "Event ids forgotten because their dedup_retention_days had passed",
)

_CHILDREN: dict[tuple[int, tuple[str, ...]], Any] = {}


def child(metric: Any, *labels: str) -> Any:
    """`metric.labels(*labels)`, resolved once: `labels()` takes a lock and builds its key on
    every call, a measurable share of the per-record cost. Label values here are bounded sets
    (topics, outcomes, policy reasons, source classes)."""
    key = (id(metric), labels)
    found = _CHILDREN.get(key)
    if found is None:
        found = _CHILDREN[key] = metric.labels(*labels)
    return found


LATE_RECORDS = Counter(
    "livecommerce_late_records",
    "Records decided although older than their partition's stream time (see README)",
    ["topic"],
)
COMMIT_SECONDS = Histogram(
    "livecommerce_commit_seconds",
    "Time to write a partition's changelog, check its sends and commit its transaction",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
)
PARTITION_RESETS = Counter(
    "livecommerce_partition_resets",
    "Partitions restarted from their last commit after a failed transaction",
)
NOT_READY_PARTITIONS = Gauge(
    "livecommerce_partitions_not_ready",
    "Assigned partitions still being set up (fenced, restored, sought) and not yet decided",
)

POLICY_REFUSED = Counter(
    "livecommerce_policy_refused",
    "Records of the policies topic refused (malformed, inconsistent): never applied",
)
POLICY_IN_FORCE = Gauge(
    "livecommerce_policy_in_force",
    "1 for the enforced policy version in force now (wall clock) on this worker",
    ["version"],
)
POLICY_VERSIONS = Gauge(
    "livecommerce_policy_versions",
    "Policy versions this worker holds, by mode",
    ["mode"],
)
SHADOW_DISAGREEMENTS = Counter(
    "livecommerce_shadow_disagreements",
    "Events a shadow policy version would have decided differently (records on policy-shadow)",
    ["rule"],
)
ADVISORIES = Counter(
    "livecommerce_advisories",
    "Advance notices emitted: an accepted event a published rule will reject soon",
    ["rule"],
)

OUTCOMES = ("accepted", "rejected", "applied", "dead_letter", "duplicate")
RULES = ("xingtu-match-required", "third-party-cart-banned", "xingtu-service-fee")


def init_series(policy: Policy, version: str) -> None:
    """Create every label combination at zero so rates and alerts see series from the start."""
    BUILD_INFO.labels(version=version, policy_version=policy.version).set(1)
    for topic in INPUT_TOPICS:
        KEY_MISMATCH.labels(topic=topic)
        REROUTED.labels(topic=topic)
        LATE_RECORDS.labels(topic=topic)
        PROCESSING_SECONDS.labels(topic=topic)
        EVENT_AGE_SECONDS.labels(topic=topic)
        for outcome in OUTCOMES:
            EVENTS.labels(topic=topic, outcome=outcome)
    for subject in ("cart_add", "order"):
        for reason in (policy.xingtu_match_required_reason, policy.third_party_cart_banned_reason):
            REJECTIONS.labels(subject=subject, reason=reason)
    for source_class in ("third_party", "douyin_shop"):
        for kind in ("charge", "reversal"):
            FEE_FEN.labels(source_class=source_class, kind=kind)
    for rule in RULES:
        SHADOW_DISAGREEMENTS.labels(rule=rule)
        ADVISORIES.labels(rule=rule)
    for mode in ("enforced", "shadow"):
        POLICY_VERSIONS.labels(mode=mode)


def show_policy_in_force(version: str, code_version: str) -> None:
    """One series at 1: the version in force now (old versions' series are removed)."""
    POLICY_IN_FORCE.clear()
    POLICY_IN_FORCE.labels(version=version).set(1)
    BUILD_INFO.clear()
    BUILD_INFO.labels(version=code_version, policy_version=version).set(1)



def observe_many(child_: Any, value: float, n: int) -> None:
    """`n` observations of `value` (a batch's per-record average, counted once per record so
    `_count` stays the number of records), in one step where prometheus_client allows it."""
    if not _add_counts(child_, ((value, n),)):
        for _ in range(n):
            child_.observe(value)


def observe_all(child_: Any, values: list[float]) -> None:
    """Observe each of `values`, counting them per bucket first (one increment per bucket
    instead of one lock and bucket search per value) where prometheus_client allows it."""
    if not _add_counts(child_, [(v, 1) for v in values]):
        for v in values:
            child_.observe(v)


def _add_counts(child_: Any, counts: Sequence[tuple[float, int]]) -> bool:
    """Add (value, how many times observed) pairs to a histogram child's buckets and sum
    directly; False (nothing added) if this prometheus_client keeps them otherwise."""
    buckets = getattr(child_, "_buckets", None)
    bounds = getattr(child_, "_upper_bounds", None)
    total = getattr(child_, "_sum", None)
    if buckets is None or bounds is None or total is None:
        return False
    per_bucket = [0] * len(bounds)
    for value, n in counts:
        per_bucket[bisect_left(bounds, value)] += n
    total.inc(sum(value * n for value, n in counts))
    for i, n in enumerate(per_bucket):
        if n:
            buckets[i].inc(n)
    return True


class Tally:
    """A batch's counter increments, summed per series and applied once at the end: a
    Prometheus counter increment takes a lock, which per record was a visible share of the
    worker's time. Histograms are observed per record (their distribution is the point)."""

    __slots__ = ("ages", "counts")

    def __init__(self) -> None:
        self.counts: dict[tuple[Any, tuple[str, ...]], float] = {}
        self.ages: dict[str, list[float]] = {}
        """Event ages per topic, observed together at `flush`."""

    def inc(self, metric: Any, labels: tuple[str, ...], n: float = 1) -> None:
        key = (metric, labels)
        self.counts[key] = self.counts.get(key, 0) + n

    def result(self, topic: str, r: Any, now_ms: int) -> None:
        """The per-record series of one step result (`streams.step.StepResult`)."""
        if r.key_mismatch:
            self.inc(KEY_MISMATCH, (topic,))
        if r.outcome == "rerouted":
            self.inc(REROUTED, (topic,))
            return
        self.inc(EVENTS, (topic, r.outcome))
        d = r.decision
        if d is None:
            return
        for rule in r.shadow_rules:
            self.inc(SHADOW_DISAGREEMENTS, (rule,))
        for rule in r.advisory_rules:
            self.inc(ADVISORIES, (rule,))
        if d.rejection is not None:
            self.inc(REJECTIONS, (d.rejection["subject"], d.rejection["reason"]))
        if d.fee is not None:
            self.inc(FEE_FEN, (d.fee["source_class"], d.fee["kind"]), d.fee["fee_fen"])
        ages = self.ages.get(topic)
        if ages is None:
            ages = self.ages[topic] = []
        ages.append(max(0.0, (now_ms - d.t_ms) / 1000))

    def flush(self) -> None:
        for (metric, labels), n in self.counts.items():
            child(metric, *labels).inc(n)
        self.counts.clear()
        for topic, ages in self.ages.items():
            observe_all(child(EVENT_AGE_SECONDS, topic), ages)
        self.ages.clear()
