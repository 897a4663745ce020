"""Pure policy core: Douyin's 2020 live-selling rules as functions of (event, state, policy).

Imports nothing from Faust or Kafka so the rules can be tested, benchmarked and replayed alone.
"""

from streams.policy.clock import Clock, decision_time, format_instant, parse_instant
from streams.policy.decide import (
    RULE_ALREADY_CHARGED,
    RULE_NO_RULE_IN_FORCE,
    RULE_OWN_SHOP_UNAFFECTED,
    RULE_REFUND_NO_CHARGE,
    RULE_SHORT_VIDEO_EXEMPT,
    RULE_XINGTU_TASK_APPLIED,
    Decision,
    Outcome,
    decide,
    needed_keys,
)
from streams.policy.events import (
    CartAdd,
    Event,
    Order,
    XingtuTask,
    cart_add_from_dict,
    order_from_dict,
    xingtu_task_from_dict,
)
from streams.policy.fees import fee_fen, reversal_fen
from streams.policy.policy_file import (
    RULE_THIRD_PARTY_CART_BANNED,
    RULE_XINGTU_MATCH_REQUIRED,
    RULE_XINGTU_SERVICE_FEE,
    Policy,
    PolicyError,
    load_policy,
    parse_policy,
)
from streams.policy.state import (
    MAX_TRANSITIONS,
    ChargeState,
    SourceClass,
    State,
    TaskState,
    task_key,
)

__all__ = [
    "MAX_TRANSITIONS",
    "RULE_ALREADY_CHARGED",
    "RULE_NO_RULE_IN_FORCE",
    "RULE_OWN_SHOP_UNAFFECTED",
    "RULE_REFUND_NO_CHARGE",
    "RULE_SHORT_VIDEO_EXEMPT",
    "RULE_THIRD_PARTY_CART_BANNED",
    "RULE_XINGTU_MATCH_REQUIRED",
    "RULE_XINGTU_SERVICE_FEE",
    "RULE_XINGTU_TASK_APPLIED",
    "CartAdd",
    "ChargeState",
    "Clock",
    "Decision",
    "Event",
    "Order",
    "Outcome",
    "Policy",
    "PolicyError",
    "SourceClass",
    "State",
    "TaskState",
    "XingtuTask",
    "cart_add_from_dict",
    "decide",
    "decision_time",
    "fee_fen",
    "format_instant",
    "load_policy",
    "needed_keys",
    "order_from_dict",
    "parse_instant",
    "parse_policy",
    "reversal_fen",
    "task_key",
    "xingtu_task_from_dict",
]
