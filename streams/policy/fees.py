"""Service-fee arithmetic in integer fen and basis points.

Money never touches floats: a float rate or amount would round differently on replay.
"""

from __future__ import annotations

MAX_RATE_BPS = 10_000


def _check(name: str, value: object) -> None:
    # `type(...) is int` also refuses bool, which is an int subclass but never an amount.
    if type(value) is not int:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {value}")


def fee_fen(amount_fen: int, rate_bps: int) -> int:
    """Fee on `amount_fen` at `rate_bps`, rounded half up to whole fen."""
    _check("amount_fen", amount_fen)
    _check("rate_bps", rate_bps)
    if rate_bps > MAX_RATE_BPS:
        raise ValueError(f"rate_bps must be at most {MAX_RATE_BPS}, got {rate_bps}")
    return (amount_fen * rate_bps + 5000) // 10_000


def reversal_fen(refund_fen: int, rate_bps: int, charged_fen: int, reversed_fen: int) -> int:
    """Fee to give back for a refund, capped so an order's reversals never exceed its charge."""
    _check("charged_fen", charged_fen)
    _check("reversed_fen", reversed_fen)
    if reversed_fen > charged_fen:
        raise ValueError(f"reversed_fen {reversed_fen} exceeds charged_fen {charged_fen}")
    return min(fee_fen(refund_fen, rate_bps), charged_fen - reversed_fen)
