"""Every topic name the worker uses, and how settings turn them into the names on the broker."""

from __future__ import annotations

XINGTU_TASKS = "xingtu-tasks"
CART_ADDS = "cart-adds"
ORDERS = "orders"
INPUT_TOPICS = (XINGTU_TASKS, CART_ADDS, ORDERS)
"""In merge order: on equal timestamps a task is decided before the sales it may validate."""

REJECTIONS = "rejections"
FEES = "fees"
DEAD_LETTERS = "dead-letters"
POLICY_SHADOW = "policy-shadow"
ADVISORIES = "advisories"
OUTPUT_TOPICS = (REJECTIONS, FEES, DEAD_LETTERS, POLICY_SHADOW, ADVISORIES)

POLICIES = "policies"
"""The compacted topic of policy versions (key: version), read whole by every worker."""

CHANGELOGS = {
    "tasks": "xingtu-task-state",
    "charges": "order-charge-state",
    "seen": "processed-event-ids",
    "notices": "advisory-notices",
}
"""State store -> table name; its changelog topic is `<app id>-<table name>-changelog` (the
names Faust tables used, so state written by earlier versions is read back)."""


def changelog_topic(app_id: str, store: str) -> str:
    return f"{app_id}-{CHANGELOGS[store]}-changelog"
