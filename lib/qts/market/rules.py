"""Exchange trading rules (precision, minimum amount and notional) from a ccxt market definition.

Works on the unified ``market`` dict ccxt returns, in either precision mode ccxt uses: TICK_SIZE
(precision given as a step such as 0.00001, the mode of current ccxt Binance) or DECIMAL_PLACES
(precision given as a digit count such as 5). Amounts are truncated like ccxt's
``amount_to_precision``; prices are rounded to the nearest tick (ties up, like ccxt).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, localcontext

DECIMAL_PLACES, SIGNIFICANT_DIGITS, TICK_SIZE = 2, 3, 4  # ccxt's constants


@dataclass(frozen=True)
class MarketRules:
    symbol: str
    base: str
    quote: str
    amount_step: float
    price_step: float
    min_amount: float
    min_cost: float
    max_amount: float | None = None

    @classmethod
    def from_ccxt(cls, market: dict, precision_mode: int = TICK_SIZE) -> "MarketRules":
        prec = market.get("precision") or {}
        limits = market.get("limits") or {}

        def step(v, default):
            if v is None:
                return default
            if precision_mode == DECIMAL_PLACES:
                return 10.0 ** (-int(v))
            return float(v)

        amount_step = step(prec.get("amount"), 1e-8)
        price_step = step(prec.get("price"), 1e-8)
        amt = limits.get("amount") or {}
        cost = limits.get("cost") or {}
        return cls(
            symbol=market["symbol"], base=market.get("base") or market["symbol"].split("/")[0],
            quote=market.get("quote") or market["symbol"].split("/")[1],
            amount_step=amount_step, price_step=price_step,
            min_amount=float(amt.get("min") or amount_step), min_cost=float(cost.get("min") or 0.0),
            max_amount=float(amt["max"]) if amt.get("max") else None,
        )

    def amount_to_precision(self, amount: float) -> float:
        return _quantize(amount, self.amount_step, ROUND_DOWN)

    def price_to_precision(self, price: float) -> float:
        return _quantize(price, self.price_step, ROUND_HALF_UP)  # ties up, as ccxt rounds

    def violation(self, amount: float, price: float) -> str | None:
        """Why (amount, price) breaks the market's rules, or None."""
        if not (math.isfinite(amount) and amount > 0):
            return "amount must be a positive number"
        if self.amount_to_precision(amount) != amount:
            return f"amount {amount} is not a multiple of the step {self.amount_step}"
        if amount < self.min_amount:
            return f"amount {amount} below the minimum {self.min_amount}"
        if self.max_amount and amount > self.max_amount:
            return f"amount {amount} above the maximum {self.max_amount}"
        if amount * price < self.min_cost:
            return f"notional {amount * price:.2f} below the minimum {self.min_cost}"
        return None


def _quantize(value: float, step: float, rounding) -> float:
    if step <= 0:
        return value
    # float(): repr of a numpy float is "np.float64(0.2)" under numpy 2, which Decimal cannot parse
    with localcontext() as ctx:
        ctx.prec = 60  # room for the 1e-9 quantum below, whatever the value/step ratio
        s = Decimal(repr(float(step)))
        d = Decimal(repr(float(value))) / s
        # Amounts come out of float sums (0.7 + 0.1 = 0.7999999999999999): snap away binary noise far
        # below a step before truncating, or selling a whole position truncates to one step less and
        # leaves unsellable dust behind. A real shortfall of even a millionth of a step still truncates.
        d = d.quantize(Decimal("1e-9"), rounding=ROUND_HALF_EVEN)
        return float(d.quantize(Decimal(1), rounding=rounding) * s)


# Rules modelled on Binance spot (tick 0.01, notional >= 5 USDT) for the replay markets; a real
# exchange's rules come from ccxt's load_markets() instead.
REPLAY_AMOUNT_STEP = {"BTC": 1e-5, "ETH": 1e-4, "SOL": 1e-3, "BNB": 1e-3}


def replay_market(symbol: str, synthetic: bool = False) -> dict:
    base, quote = symbol.split("/")
    step = REPLAY_AMOUNT_STEP.get(base, 1e-2)
    return {
        "id": base + quote, "symbol": symbol, "base": base, "quote": quote, "type": "spot", "spot": True,
        "active": True, "precision": {"amount": step, "price": 0.01},
        "limits": {"amount": {"min": step, "max": 9_000_000}, "cost": {"min": 5.0}},
        "taker": 0.001, "maker": 0.001, "info": {"replay": True, "synthetic": synthetic},
    }
