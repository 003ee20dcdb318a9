"""Order intents and results shared by the gate, the brokers and the loop."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields

SIDES = ("buy", "sell")
TYPES = ("market", "limit", "stop_loss_limit")  # stop_loss_limit: the protective stop (broker/protective.py)
OPEN_STATUSES = ("intent", "sent", "open", "partially_filled")


@dataclass
class OrderIntent:
    """What a strategy, the assistant or a command wants. Amount is in base units."""

    symbol: str
    side: str
    amount: float
    type: str = "market"
    price: float | None = None
    strategy: str | None = None
    reason: str = ""
    reduce_only: bool = False
    stop_loss: float | None = None
    take_profit: float | None = None
    client_order_id: str | None = None
    source: str = "loop"  # loop | cli | command | research | kill_switch
    confidence: float = 1.0  # a strategy's confidence in (0, 1]: the risk layer scales its risk budget by it

    def __post_init__(self):
        if not (isinstance(self.confidence, (int, float)) and 0.0 < self.confidence <= 1.0):
            raise ValueError(f"confidence: must be in (0, 1], got {self.confidence!r}")
        if self.side not in SIDES:
            raise ValueError(f"side: must be buy or sell, got {self.side!r}")
        if self.type not in TYPES:
            raise ValueError(f"type: must be market, limit or stop_loss_limit, got {self.type!r}")
        if self.type in ("limit", "stop_loss_limit") and not (self.price and self.price > 0):
            raise ValueError(f"price: a {self.type} order needs a positive price")
        if self.type == "stop_loss_limit":
            # the exchange-side protective stop: a reduce-only sell, stop_loss = the trigger, price = the limit
            if not (self.stop_loss and self.stop_loss > 0):
                raise ValueError("stop_loss: a stop_loss_limit order needs a positive trigger price")
            if self.side != "sell" or not self.reduce_only:
                raise ValueError("type: a stop_loss_limit order is a reduce-only sell (it protects a long position)")
            if self.price > self.stop_loss:
                raise ValueError("price: a stop_loss_limit's limit must not be above its trigger (stop_loss)")

    def to_dict(self) -> dict:
        # shallow (every field is a plain value): dataclasses.asdict deep-copies, ~0.1 ms per call on the
        # order path, which logs each intent twice
        return {f: getattr(self, f) for f in _INTENT_FIELDS}


@dataclass
class OrderResult:
    accepted: bool
    client_order_id: str | None = None
    status: str = "rejected"
    filled: float = 0.0
    avg_price: float | None = None
    fee: float = 0.0
    reason_code: str | None = None
    message: str = ""
    adjustments: list = field(default_factory=list)

    def to_dict(self) -> dict:
        d = {f: getattr(self, f) for f in _RESULT_FIELDS}
        d["adjustments"] = list(self.adjustments)
        return d


_INTENT_FIELDS = tuple(f.name for f in fields(OrderIntent))
_RESULT_FIELDS = tuple(f.name for f in fields(OrderResult))


def make_client_order_id(mode: str, ts_ms: int, symbol: str, side: str, tag: str = "") -> str:
    """Deterministic id (<= 36 chars, Binance's alphabet): the same decision always maps to the same
    id, so a restarted cycle cannot send a second copy of an order."""
    h = hashlib.sha256(f"{mode}|{ts_ms}|{symbol}|{side}|{tag}".encode()).hexdigest()[:16]
    return f"qts{mode[0]}{ts_ms // 1000:x}{h}"
