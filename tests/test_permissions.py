"""Key permissions fail closed: live trading only with keys KNOWN not to withdraw (qts.broker.permissions).

Against the loopback Binance through the real ccxt.binance client: ``set_api_restrictions(**fields)``
changes the fields of ``GET /sapi/v1/account/apiRestrictions``; an answer WITHOUT a field (which that
setter cannot make: it only updates) is served with the fault plan's ``malformed`` kind, ``status=200``
and a custom JSON ``body`` (the request is processed, the body replaced). Non-Binance exchanges are
plain ccxt objects that are never called (no network).
"""

from __future__ import annotations

import json

import pytest

from live_support import ex, srv  # noqa: F401  (the shared loopback fixtures)
from live_support import ccxt_client, make_server
from qts.broker.permissions import check_live_keys, key_permissions

PATH = "/sapi/v1/account/apiRestrictions"
BINANCE_FIELDS = {
    "ipRestrict": False, "createTime": 1_700_000_000_000, "enableReading": True, "enableWithdrawals": False,
    "enableInternalTransfer": False, "enableMargin": False, "enableFutures": False,
    "permitsUniversalTransfer": False, "enableVanillaOptions": False, "enableFixApiTrade": False,
    "enableFixReadOnly": False, "enableSpotAndMarginTrading": True, "enablePortfolioMarginTrading": False,
}


def no_secrets(msg: str, ex) -> None:
    for s in (ex.apiKey, ex.secret):
        if s:
            assert s not in msg


def serve_body(srv, body: dict | str, times=None) -> None:
    """Answer apiRestrictions with exactly ``body`` (HTTP 200)."""
    srv.faults.add("malformed", path=PATH, method="GET", times=times, status=200,
                   body=body if isinstance(body, str) else json.dumps(body))


def test_trading_key_without_withdrawals_is_accepted_with_ip_advice(srv, ex):
    p = key_permissions(ex)
    assert {k: p[k] for k in ("can_withdraw", "can_trade", "ip_restricted", "complete", "source")} == {
        "can_withdraw": False, "can_trade": True, "ip_restricted": False, "complete": True,
        "source": "binance apiRestrictions"}
    ok, msg = check_live_keys(ex)
    assert ok, msg
    assert "cannot withdraw" in msg
    assert "IP" in msg and "sub-account" in msg and "risk budget" in msg   # not IP-restricted: advise
    assert srv.count("GET", PATH) == 2
    no_secrets(msg, ex)


def test_ip_restricted_key_gets_no_ip_advice(srv, ex):
    srv.set_api_restrictions(ipRestrict=True)
    assert key_permissions(ex)["ip_restricted"] is True
    ok, msg = check_live_keys(ex)
    assert ok and "sub-account" not in msg, msg


def test_withdrawals_enabled_is_refused(srv, ex):
    srv.set_api_restrictions(enableWithdrawals=True, ipRestrict=True)
    p = key_permissions(ex)
    assert p["can_withdraw"] is True and p["complete"] is True
    ok, msg = check_live_keys(ex)
    assert not ok and "WITHDRAW" in msg
    assert not check_live_keys(ex, accept_unverified=True)[0]   # the human's choice does not cover this
    no_secrets(msg, ex)


def test_answer_without_enable_withdrawals_is_refused(srv, ex):
    body = {k: v for k, v in BINANCE_FIELDS.items() if k != "enableWithdrawals"}
    serve_body(srv, body)
    assert ex.sapi_get_account_apirestrictions() == body        # the loopback serves exactly that
    p = key_permissions(ex)
    assert p["can_withdraw"] is None and p["complete"] is False and p["can_trade"] is True
    ok, msg = check_live_keys(ex)
    assert not ok and "enableWithdrawals" in msg and "missing" in msg, msg
    assert not check_live_keys(ex, accept_unverified=True)[0]
    no_secrets(msg, ex)


@pytest.mark.parametrize("value", [None, "yes", "", 0, 1, "False ", [], {}, "null"])
def test_enable_withdrawals_not_a_clear_boolean_is_refused(srv, ex, value):
    srv.set_api_restrictions(enableWithdrawals=value)
    p = key_permissions(ex)
    assert p["complete"] is False and p["can_withdraw"] is None
    ok, msg = check_live_keys(ex)
    assert not ok and "enableWithdrawals" in msg, msg


@pytest.mark.parametrize("value,ok", [("false", True), ("FALSE", True), ("true", False), ("True", False)])
def test_enable_withdrawals_as_text_is_understood(srv, ex, value, ok):
    srv.set_api_restrictions(enableWithdrawals=value)
    assert key_permissions(ex)["complete"] is True
    got, msg = check_live_keys(ex)
    assert got is ok, msg
    if not ok:
        assert "WITHDRAW" in msg


def test_trading_disabled_is_refused(srv, ex):
    srv.set_api_restrictions(enableSpotAndMarginTrading=False)
    p = key_permissions(ex)
    assert p["can_trade"] is False and p["can_withdraw"] is False
    ok, msg = check_live_keys(ex)
    assert not ok and "cannot trade" in msg


@pytest.mark.parametrize("body", ["<html>oops</html>", "[1, 2]", '{"enableWithdrawals": fal'])
def test_answer_that_is_not_an_object_is_refused(srv, ex, body):
    serve_body(srv, body)
    ok, msg = check_live_keys(ex)
    assert not ok and ("could not verify" in msg or "enableWithdrawals" in msg), msg


def test_check_failing_with_503_is_refused_try_again(srv, ex):
    srv.faults.add("5xx", path=PATH, method="GET", times=None, status=503)
    p = key_permissions(ex)
    assert p["source"].startswith("check failed") and p["complete"] is False and p["can_withdraw"] is None
    ok, msg = check_live_keys(ex)
    assert not ok and "could not verify" in msg and "try again" in msg, msg
    assert not check_live_keys(ex, accept_unverified=True)[0]
    assert srv.faults.fired("5xx") >= 2


def test_check_failing_on_auth_is_refused_without_leaking_the_secret(srv):
    bad = ccxt_client(srv, timeout_ms=1500)
    bad.secret = "not-the-right-secret-0123456789"
    ok, msg = check_live_keys(bad)
    assert not ok and "could not verify" in msg and "try again" in msg, msg
    no_secrets(msg, bad)


def test_check_timing_out_is_refused(srv, ex):
    ex.timeout = 200
    srv.faults.add("timeout", path=PATH, method="GET", times=None)
    ok, msg = check_live_keys(ex)
    assert not ok and "try again" in msg


def test_exchange_that_does_not_report_permissions_is_refused_unless_the_human_accepts():
    import ccxt

    ex = ccxt.kraken({"apiKey": "KRAKEN-KEY-abcdef", "secret": "S2VyYWtlbi1zZWNyZXQ="})
    called = []
    ex.fetch = lambda *a, **k: called.append(a) or pytest.fail("no network call expected")  # noqa: E731
    p = key_permissions(ex)
    assert p["can_withdraw"] is None and p["complete"] is False and "does not report" in p["source"]
    ok, msg = check_live_keys(ex)
    assert not ok and "kraken" in msg and "withdraw" in msg.lower(), msg
    no_secrets(msg, ex)
    ok, msg = check_live_keys(ex, accept_unverified=True)
    assert ok and "could not be verified" in msg, msg
    assert "IP" in msg and "sub-account" in msg
    no_secrets(msg, ex)
    assert called == []


def test_key_permissions_never_raises():
    class Weird:
        @property
        def id(self):
            raise RuntimeError("boom")

    class Binanceish:
        id = "binance"

        def sapi_get_account_apirestrictions(self):
            raise ValueError("garbled")

    for obj in (Weird(), Binanceish(), None):
        p = key_permissions(obj)
        assert p["complete"] is False and p["can_withdraw"] is None
        assert check_live_keys(obj)[0] is False
        assert check_live_keys(obj, accept_unverified=True)[0] is False   # a failed check, not "unreported"
