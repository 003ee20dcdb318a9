"""Live trading only with exchange keys KNOWN not to withdraw funds (fail closed).

Binance reports key restrictions at ``GET /sapi/v1/account/apiRestrictions`` (reached through ccxt's
implicit method ``sapi_get_account_apirestrictions``). The rules of :func:`check_live_keys`:

* withdrawals enabled: refused;
* the answer does not say explicitly that withdrawals are off (``enableWithdrawals`` missing, null,
  garbled, not a boolean nor "true"/"false"): refused, "not known to be off" is not "off";
* the check itself failed (timeout, 5xx, authentication, an answer that is not a JSON object):
  refused, try again;
* trading disabled for the key: refused (every order would fail);
* an exchange that does not report key permissions at all (anything but Binance here): refused,
  unless the human explicitly accepted unverified keys when starting the agent in their own terminal
  (``accept_unverified=True``); then accepted with a message that the withdrawal permission could not
  be verified.

When accepted and the key is not known to be IP-restricted, the message recommends an IP-restricted key
on a sub-account that holds only the risk budget. Messages never carry the key or the secret (nor an
exception's text, which may echo a signed URL): only exception class names and field names.
"""

from __future__ import annotations

WITHDRAW_FIELD = "enableWithdrawals"
TRADE_FIELD = "enableSpotAndMarginTrading"
IP_FIELD = "ipRestrict"
REPORTING = ("binance", "binanceus")

IP_ADVICE = ("recommended: an IP-restricted key (trusted IPs only) on a sub-account holding only the risk "
             "budget, so a leaked key can neither be used from elsewhere nor reach the rest of your funds")


def _flag(answer: dict, field: str) -> tuple[bool | None, str | None]:
    """(value, None) for an explicit boolean (or "true"/"false" text); (None, why) otherwise."""
    if field not in answer:
        return None, "missing"
    v = answer[field]
    if isinstance(v, bool):
        return v, None
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true", None
    if v is None:
        return None, "null"
    return None, f"not a boolean ({type(v).__name__})"


def _result(can_withdraw=None, can_trade=None, ip_restricted=None, source="", complete=False,
            reported=False, problem=None) -> dict:
    return {"can_withdraw": can_withdraw, "can_trade": can_trade, "ip_restricted": ip_restricted,
            "source": source, "complete": complete, "reported": reported, "problem": problem}


def key_permissions(exchange) -> dict:
    """What the exchange says the key may do. Never raises.

    ``can_withdraw`` / ``can_trade`` / ``ip_restricted``: True, False or None (not said); ``complete``:
    True only when the answer says explicitly whether withdrawals are enabled; ``reported``: the
    exchange reports key permissions at all; ``source``: where the answer came from (``"check failed:
    <ExceptionClass>"`` when it could not be read); ``problem``: why it is incomplete (field names only).
    """
    try:
        ex_id = str(exchange.id)
        method = getattr(exchange, "sapi_get_account_apirestrictions", None) if ex_id in REPORTING else None
        if method is None:
            return _result(source=f"{ex_id} does not report key permissions")
        r = method()
        if not isinstance(r, dict):  # ccxt hands over a 200 answer it could not parse as raw text
            return _result(source=f"check failed: answer is not a JSON object ({type(r).__name__})",
                           reported=True, problem="answer is not a JSON object")
        w, w_why = _flag(r, WITHDRAW_FIELD)
        t, _ = _flag(r, TRADE_FIELD)
        ip, _ = _flag(r, IP_FIELD)
        return _result(w, t, ip, "binance apiRestrictions", complete=w_why is None, reported=True,
                       problem=None if w_why is None else f"field '{WITHDRAW_FIELD}' is {w_why}")
    except Exception as e:  # noqa: BLE001 - never raises: a failed check is a refusal, decided by the caller
        return _result(source=f"check failed: {e.__class__.__name__}", reported=True,
                       problem=f"{e.__class__.__name__}")


def check_live_keys(exchange, accept_unverified: bool = False) -> tuple[bool, str]:
    """(ok, message) for live trading with these keys; see the module docstring for the rules.

    ``accept_unverified`` is the human's explicit choice, made in their own terminal when starting the
    agent, for an exchange that does not report key permissions; it never covers a failed check or an
    answer that leaves the withdrawal permission open."""
    p = key_permissions(exchange)
    if p["source"].startswith("check failed"):
        # the exchange DOES report permissions, but we could not read them (timeout, 5xx, garbled answer,
        # a key without read access): that is not "unknown", it is unverified: refuse, try again later
        return False, (f"could not verify that these API keys cannot withdraw ({p['source']}): live trading "
                       "refused; try again when the exchange answers")
    if not p["reported"]:
        if not accept_unverified:
            return False, (f"{p['source']}: whether these API keys can withdraw funds cannot be verified, so live "
                           "trading is refused. Make sure on the exchange that the key has withdrawals disabled; "
                           "then, only if you accept unverified keys, say so explicitly when you start the agent "
                           "in your own terminal.")
        return True, (f"the withdrawal permission of these API keys could not be verified ({p['source']}); "
                      f"accepted because you chose to accept unverified keys: make sure the key cannot "
                      f"withdraw. {IP_ADVICE}")
    if p["can_withdraw"] is True:
        return False, ("these API keys can WITHDRAW funds: refused for live trading. Create a key with trading "
                       "only (withdrawals disabled) on the exchange, then try again.")
    if not p["complete"] or p["can_withdraw"] is not False:
        return False, (f"could not verify that these API keys cannot withdraw: the exchange's answer "
                       f"({p['source']}) does not say that withdrawals are off ({p['problem']}): live trading "
                       f"refused. Check the key's restrictions on the exchange (withdrawals disabled), then try "
                       f"again.")
    if p["can_trade"] is False:
        return False, "these API keys cannot trade spot: enable spot trading for the key on the exchange"
    if p["ip_restricted"] is True:
        return True, "keys can trade and cannot withdraw; IP-restricted"
    return True, f"keys can trade and cannot withdraw, but are not IP-restricted: {IP_ADVICE}"
