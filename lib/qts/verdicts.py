"""What the gate answers: stable reason codes, the refusal a check raises, and the verdict.

Kept below the gate so that the checks (safety/*, the trading agent) import these without importing
the gate that imports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .broker.models import OrderIntent


class Reason:
    """Stable reason codes (the contract with hooks, the assistant and reports)."""

    OK = "OK"
    BAD_ORDER = "BAD_ORDER"
    UNKNOWN_SYMBOL = "UNKNOWN_SYMBOL"
    EXCHANGE_RULES = "EXCHANGE_RULES"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    INSUFFICIENT_POSITION = "INSUFFICIENT_POSITION"
    REDUCE_ONLY = "REDUCE_ONLY"
    DUPLICATE = "DUPLICATE"
    GATE_ERROR = "GATE_ERROR"
    BROKER_ERROR = "BROKER_ERROR"
    KILL_SWITCH = "KILL_SWITCH"
    TRADING_HALTED = "TRADING_HALTED"
    TRADING_REDUCING = "TRADING_REDUCING"
    BREAKER_OPEN = "BREAKER_OPEN"
    LIVE_NOT_APPROVED = "LIVE_NOT_APPROVED"
    LIVE_SCOPE = "LIVE_SCOPE"
    LIVE_PREREQUISITE = "LIVE_PREREQUISITE"
    ORDER_APPROVAL_NEEDED = "ORDER_APPROVAL_NEEDED"
    NO_AGENT = "NO_AGENT"
    PRICE_COLLAR = "PRICE_COLLAR"
    DAILY_LOSS = "DAILY_LOSS"
    ORDER_RATE = "ORDER_RATE"
    LIQUIDITY = "LIQUIDITY"  # 24 h volume, spread or book depth outside the risk profile (safety/liquidity.py)


@dataclass
class Verdict:
    allowed: bool
    code: str = Reason.OK
    message: str = ""
    intent: OrderIntent | None = None
    adjustments: list[str] = field(default_factory=list)
    check: str | None = None


class Refuse(Exception):
    def __init__(self, code: str, message: str):
        self.code, self.message = code, message
        super().__init__(f"{code}: {message}")
