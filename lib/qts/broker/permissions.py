"""Refuse exchange keys that can withdraw funds, where the exchange reports it.

Binance reports key restrictions at ``GET /sapi/v1/account/apiRestrictions`` (reached through ccxt's
implicit method ``sapi_get_account_apirestrictions``). Other exchanges: checked where ccxt exposes a
similar call; otherwise the answer is "unknown" and the user is told to make sure themselves.
"""

from __future__ import annotations


def key_permissions(exchange) -> dict:
    """{"can_withdraw": True/False/None, "can_trade": ..., "source": ...}. Never raises."""
    try:
        if exchange.id in ("binance", "binanceus") and hasattr(exchange, "sapi_get_account_apirestrictions"):
            r = exchange.sapi_get_account_apirestrictions()
            flag = lambda k: str(r.get(k)).lower() == "true" if k in r else None  # noqa: E731
            return {"can_withdraw": flag("enableWithdrawals"), "can_trade": flag("enableSpotAndMarginTrading"),
                    "source": "binance apiRestrictions"}
    except Exception as e:
        return {"can_withdraw": None, "can_trade": None, "source": f"check failed: {e.__class__.__name__}"}
    return {"can_withdraw": None, "can_trade": None, "source": f"{exchange.id} does not report key permissions"}


def check_live_keys(exchange) -> tuple[bool, str]:
    p = key_permissions(exchange)
    if p["source"].startswith("check failed"):
        # the exchange DOES report permissions, but we could not read them (timeout, 5xx, garbled answer,
        # a key without read access): that is not "unknown", it is unverified: refuse, try again later
        return False, (f"could not verify that these API keys cannot withdraw ({p['source']}): live trading "
                       "refused; try again when the exchange answers")
    if p["can_withdraw"] is True:
        return False, ("these API keys can WITHDRAW funds: refused for live trading. Create a key with trading "
                       "only (withdrawals disabled) on the exchange, then try again.")
    if p["can_trade"] is False:
        return False, "these API keys cannot trade spot: enable spot trading for the key on the exchange"
    if p["can_withdraw"] is None:
        return True, f"withdrawal permission unknown ({p['source']}): make sure the key cannot withdraw"
    return True, "keys can trade and cannot withdraw"
