"""The trading agent's pure logic, without an exchange: its policy (agent/policy.py), the loosening
protocol (agent/challenge.py), the hash-chained journal (agent/journal.py) and how a start decides
what to trust (agent/main.restore_policy).

Expected values are worked out from the rules in those modules' docstrings (noted beside each
assertion), not copied from the code's output. Real cryptography (Ed25519, HMAC-SHA256), real files
under tmp_path; time is passed in as epoch ms. Fast: no network, no scrypt above 2**10.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from qts.agent import challenge, journal
from qts.agent.challenge import MAX_OUTSTANDING, MAX_TTL_S, ChallengeBook, ChallengeError
from qts.agent.main import JOURNAL_PURPOSE, MARKER, restore_policy
from qts.agent.paths import AgentPaths
from qts.agent.policy import (ACTIVE, HALTED, MAX_GRANT_HOURS, REDUCING, STRICTNESS, Grant, Policy, PolicyError,
                              strict_defaults)
from qts.paths import StateHome
from qts.safety.pin import SigningKey, set_pin, unlock

T = 1_893_499_200_000            # 2030-01-01T12:00:00Z, epoch ms: every "now" below is explicit
HOUR = 3_600_000
BTC, ETH, SOL = "BTC/USDT", "ETH/USDT", "SOL/USDT"
PIN = "Tr4de-Safely!"
N = 2 ** 10                      # low scrypt cost: tests only


def granted(**kw) -> Policy:
    """ACTIVE, kill switch clear, breaker closed, a grant of 450/order, 1000/day on BTC and ETH for 8 h."""
    g = Grant.make(450.0, 1000.0, [BTC, ETH], 8, T)
    return Policy(grant=g, **kw)


def strictness(p: Policy) -> tuple:
    """What 'at least as strict' compares: (kill switch, state, breaker, no grant, limits (lower = stricter))."""
    return (p.kill_switch, STRICTNESS[p.trading_state], p.breaker_open, p.grant is None)


# ================================================================================== Policy: tightening

def test_the_grant_is_made_as_asked():
    g = Grant.make(450, 1000, "eth/usdt, BTC/USDT,ETH/USDT", 2, T)
    # symbols upper-cased, de-duplicated, sorted; expiry = now + 2 h
    assert (g.max_order_usd, g.max_daily_usd, g.symbols) == (450.0, 1000.0, (BTC, ETH))
    assert (g.issued_ts, g.expires_ts) == (T, T + 2 * HOUR)
    assert g.active(T + 2 * HOUR - 1) and not g.active(T + 2 * HOUR)


@pytest.mark.parametrize("args, field", [
    ((500, 400, [BTC], 1), "max_order_usd"),            # per order above per day
    ((100, 1000, [BTC], 25), "hours"),                   # more than MAX_GRANT_HOURS = 24
    ((100, 1000, [BTC], 0), "hours"),                    # less than 0.01 h
    ((float("nan"), 1000, [BTC], 1), "max_order_usd"),
    ((100, float("inf"), [BTC], 1), "max_daily_usd"),
    ((True, 1000, [BTC], 1), "max_order_usd"),           # a bool is not a number here
    ((100, 1000, [], 1), "symbols"),
    ((100, 1000, ["BTCUSDT"], 1), "symbols"),            # no slash
    ((100, 1000, ["BTC/US DT"], 1), "symbols"),
])
def test_a_malformed_grant_is_refused_naming_the_field(args, field):
    with pytest.raises(PolicyError) as e:
        Grant.make(*args, T)
    assert e.value.field == field


def test_each_tightening_does_what_it_says_and_bumps_the_version():
    p = granted()
    steps = [("engage", {"reason": "panic"}, lambda q: q.kill_switch and q.kill_reason == "panic"),
             ("reduce", {}, lambda q: q.trading_state == REDUCING),
             ("halt", {}, lambda q: q.trading_state == HALTED),
             ("trip", {"reason": "errors"}, lambda q: q.breaker_open and q.breaker_reason == "errors"),
             ("revoke", {}, lambda q: q.grant is None),
             ("lower", {"collar_bps": 50}, lambda q: q.collar_bps == 50.0)]
    for i, (op, params, holds) in enumerate(steps, 1):
        q, what = p.tighten(op, params, T + i)
        assert holds(q), (op, q)
        assert (q.version, q.changed_ts) == (p.version + 1, T + i) and what
        p = q
    assert strictness(p) == (True, 2, True, True)


@pytest.mark.parametrize("op", ["engage", "halt", "reduce", "trip", "revoke"])
def test_a_tightening_already_in_force_changes_nothing(op):
    p = Policy(kill_switch=True, trading_state=HALTED, breaker_open=True, grant=None)
    q, what = p.tighten(op, {}, T)
    assert q is p and what


def test_reduce_never_loosens_halted():
    p = Policy(trading_state=HALTED)
    q, what = p.tighten("reduce", {}, T)
    assert q is p and q.trading_state == HALTED and "already HALTED" in what


@pytest.mark.parametrize("params, field", [
    ({"collar_bps": 201}, "collar_bps"),                    # 200 -> 201: raising
    ({"max_daily_loss_usd": 100.5}, "max_daily_loss_usd"),  # 100 -> 100.5
    ({"order_approval_usd": 501}, "order_approval_usd"),
    ({"max_orders_per_minute": 11}, "max_orders_per_minute"),
    ({"max_order_usd": 451}, "max_order_usd"),              # the grant's 450 -> 451
    ({"max_daily_usd": 1000.01}, "max_daily_usd"),
    ({"symbols": [BTC, SOL]}, "symbols"),                   # adding SOL
    ({"hours": 9}, "hours"),                                # 8 h left -> 9 h: extending
    ({"collar_bps": 100, "max_order_usd": 500}, "max_order_usd"),   # one raise spoils the whole request
    ({"collar_bps": float("nan")}, "collar_bps"),
    ({"collar_bps": 0.5}, "collar_bps"),                    # below the 1 bps floor
    ({"max_leverage": 1}, "max_leverage"),                  # unknown
    ({}, "params"),                                         # nothing to lower
    ({"reason": "only a reason"}, "params"),
])
def test_lower_refuses_anything_that_raises_or_is_malformed(params, field):
    p = granted()
    with pytest.raises(PolicyError) as e:
        p.tighten("lower", params, T + 1)
    assert e.value.field == field


def test_lower_on_every_limit_it_knows():
    p = granted()
    q, _ = p.tighten("lower", {"collar_bps": 100, "max_daily_loss_usd": 40, "order_approval_usd": 250,
                               "max_orders_per_minute": 3, "max_order_usd": 300, "max_daily_usd": 600,
                               "symbols": [BTC], "hours": 1}, T + 10)
    assert (q.collar_bps, q.max_daily_loss_usd, q.order_approval_usd, q.max_orders_per_minute) == (100, 40, 250, 3)
    assert isinstance(q.max_orders_per_minute, int)
    g = q.grant
    assert (g.max_order_usd, g.max_daily_usd, g.symbols, g.expires_ts) == (300, 600, (BTC,), T + 10 + HOUR)
    assert g.issued_ts == T                              # the same grant, lowered


def test_lowering_a_grant_that_does_not_exist_is_refused():
    with pytest.raises(PolicyError) as e:
        Policy().tighten("lower", {"max_order_usd": 10}, T)
    assert e.value.field == "max_order_usd"


@pytest.mark.parametrize("op", ["resume", "reset_kill_switch", "grant", "limits", "loosen", ""])
def test_a_loosening_is_not_a_tightening(op):
    with pytest.raises(PolicyError) as e:
        Policy(kill_switch=True, trading_state=HALTED).tighten(op, {}, T)
    assert e.value.field == "op"


# ================================================================================== Policy: loosening

def test_the_loosening_actions():
    p = Policy(kill_switch=True, kill_reason="x", trading_state=HALTED, state_reason="y", breaker_open=True,
               breaker_reason="z")
    q, _ = p.loosen("resume", {}, T + 1)
    # resume: ACTIVE and the breaker closed; the kill switch is its own reset
    assert (q.trading_state, q.breaker_open, q.kill_switch) == (ACTIVE, False, True)
    q, _ = q.loosen("reset_kill_switch", {}, T + 2)
    assert (q.kill_switch, q.kill_reason) == (False, "")
    q, _ = q.loosen("grant", {"max_order_usd": 200, "max_daily_usd": 800, "symbols": "BTC/USDT", "hours": 2,
                              "max_daily_loss_usd": 30}, T + 3)
    assert (q.grant.max_order_usd, q.grant.max_daily_usd, q.grant.symbols) == (200, 800, (BTC,))
    assert (q.grant.issued_ts, q.grant.expires_ts, q.max_daily_loss_usd) == (T + 3, T + 3 + 2 * HOUR, 30)
    q, _ = q.loosen("limits", {"collar_bps": 500, "max_orders_per_minute": 60}, T + 4)
    assert (q.collar_bps, q.max_orders_per_minute) == (500, 60)
    assert q.version == p.version + 4


@pytest.mark.parametrize("action, params, field", [
    ("grant", {"max_order_usd": 100, "max_daily_usd": 1000, "symbols": [BTC], "hours": MAX_GRANT_HOURS + 1}, "hours"),
    ("grant", {"max_order_usd": 100, "symbols": [BTC]}, "max_daily_usd"),
    ("limits", {"collar_bps": 2001}, "collar_bps"),        # above the ceiling even with the PIN
    ("limits", {"withdrawals": True}, "withdrawals"),
    ("limits", {}, "params"),
    ("approve_order", {}, "action"),                       # a challenge action, not a policy change
    ("drop_everything", {}, "action"),
])
def test_a_loosening_with_bad_parameters_is_refused(action, params, field):
    with pytest.raises(PolicyError) as e:
        Policy().loosen(action, params, T)
    assert e.value.field == field


# ================================================================================== Policy: identity

def _other(v):
    if isinstance(v, bool):
        return not v
    if isinstance(v, str):
        return v + "x"
    if isinstance(v, (int, float)):
        return v + 1
    raise TypeError(v)


def test_the_hash_changes_with_every_field():
    p = granted(kill_reason="", state_reason="", breaker_reason="")
    seen = {p.hash()}
    for f in dataclasses.fields(Policy):
        if f.name == "grant":
            changed = [dataclasses.replace(p, grant=None)]
            changed += [dataclasses.replace(p, grant=dataclasses.replace(p.grant, **{g.name: (
                (BTC,) if g.name == "symbols" else _other(getattr(p.grant, g.name)))}))
                for g in dataclasses.fields(Grant)]
        else:
            changed = [dataclasses.replace(p, **{f.name: _other(getattr(p, f.name))})]
        for q in changed:
            h = q.hash()
            assert h not in seen, (f.name, q)
            seen.add(h)
    assert len(seen) == 1 + (len(dataclasses.fields(Policy)) - 1) + 1 + len(dataclasses.fields(Grant))
    assert p.hash() == granted(kill_reason="", state_reason="", breaker_reason="").hash()   # and only with them


@pytest.mark.parametrize("p", [Policy(), granted(), granted(kill_switch=True, kill_reason="k", trading_state=REDUCING,
                                                              breaker_open=True, collar_bps=75.5, version=9)])
def test_to_dict_from_dict_round_trip_through_json(p):
    d = json.loads(json.dumps(p.to_dict()))
    q = Policy.from_dict(d)
    assert q == p and q.hash() == p.hash()
    if p.grant is not None:
        assert isinstance(q.grant.symbols, tuple)


def test_from_dict_refuses_an_unknown_state():
    d = Policy().to_dict()
    d["trading_state"] = "YOLO"
    with pytest.raises(PolicyError) as e:
        Policy.from_dict(d)
    assert e.value.field == "trading_state"


def test_a_fresh_policy_has_no_grant():
    p = Policy()
    assert p.grant is None and not p.kill_switch and p.trading_state == ACTIVE
    assert "no live grant" in p.summary(T)


# ================================================================================== strict defaults

def test_strict_defaults_keep_the_last_limits_and_drop_the_grant():
    last = granted(collar_bps=40.0, max_daily_loss_usd=25.0, order_approval_usd=150.0, max_orders_per_minute=4,
                   version=7)
    s = strict_defaults(last, "journal damaged", T + 5)
    assert (s.trading_state, s.state_reason, s.grant) == (HALTED, "journal damaged", None)
    assert (s.collar_bps, s.max_daily_loss_usd, s.order_approval_usd, s.max_orders_per_minute) == (40.0, 25.0, 150.0, 4)
    assert s.kill_switch is False                      # as it was
    assert (s.version, s.changed_ts) == (8, T + 5)
    engaged = strict_defaults(dataclasses.replace(last, kill_switch=True, kill_reason="k"), "r", T)
    assert engaged.kill_switch and engaged.kill_reason == "k"


def test_strict_defaults_with_nothing_known_engage_the_kill_switch():
    s = strict_defaults(None, "nothing verified", T)
    assert (s.kill_switch, s.kill_reason, s.trading_state, s.grant) == (True, "nothing verified", HALTED, None)
    d = Policy()
    assert (s.collar_bps, s.max_daily_loss_usd, s.order_approval_usd) == (d.collar_bps, d.max_daily_loss_usd,
                                                                           d.order_approval_usd)


# ================================================================================== challenges

@pytest.fixture(scope="module")
def pin_key(tmp_path_factory):
    """The human's PIN key, from a real PIN record (low scrypt cost)."""
    home = StateHome(tmp_path_factory.mktemp("pin") / "home").ensure()
    set_pin(home, PIN, scrypt_n=N, now=T - HOUR)
    return unlock(home, PIN, now=T)


@pytest.fixture
def book(pin_key):
    return ChallengeBook("instance-1", "/project/.quant-trading", "binance:abcd", pin_key.public_key)


H1, H2 = "a" * 64, "b" * 64
GRANT = {"max_order_usd": 200, "max_daily_usd": 800, "symbols": [BTC], "hours": 2}


def issue(book, action="grant", params=None, h=H1, now=T, **kw):
    return book.issue(action, dict(GRANT if params is None else params), h, now_ms=now, **kw).to_dict()


def test_a_signature_by_the_pin_key_passes_once(book, pin_key):
    ch = issue(book)
    req = challenge.sign(pin_key, ch)
    got = book.redeem(req, H1, now_ms=T + 1000)
    assert (got.nonce, got.action, got.params) == (ch["nonce"], "grant", GRANT)
    with pytest.raises(ChallengeError, match="already used"):
        book.redeem(req, H1, now_ms=T + 2000)                       # replay


def test_the_challenge_is_bound_to_instance_home_account_and_policy(book):
    ch = issue(book)
    assert (ch["instance"], ch["home"], ch["account"], ch["policy_hash"]) == \
        ("instance-1", "/project/.quant-trading", "binance:abcd", H1)
    assert len(ch["nonce"]) == 64 and ch["nonce"] != issue(book)["nonce"]
    # the signed bytes start with a domain prefix per action and cover every field
    b = challenge.signed_bytes(ch, ch["expires_ts"])
    assert b.startswith(b"quant-trading-system/agent-loosen/v1/grant\x00")
    for field in ("instance", "home", "account", "policy_hash", "nonce"):
        assert challenge.signed_bytes({**ch, field: ch[field] + "x"}, ch["expires_ts"]) != b, field
    assert challenge.signed_bytes({**ch, "action": "resume"}, ch["expires_ts"]) != b


def test_a_signature_by_another_key_is_refused(book, pin_key):
    ch = issue(book)
    other = SigningKey.generate()
    with pytest.raises(ChallengeError, match="does not verify"):
        book.redeem(challenge.sign(other, ch), H1, now_ms=T + 1000)
    forged = dict(challenge.sign(other, ch), key_fingerprint=pin_key.fingerprint)   # claiming the right key
    with pytest.raises(ChallengeError, match="does not verify"):
        book.redeem(forged, H1, now_ms=T + 1000)
    assert book.redeem(challenge.sign(pin_key, ch), H1, now_ms=T + 1000).nonce == ch["nonce"]


def test_a_signature_over_another_agents_challenge_is_refused(book, pin_key):
    """The human signed a challenge of ANOTHER agent (other instance) that happens to be relayed with
    this agent's nonce: the bytes differ, so the signature does not verify here."""
    ch = issue(book)
    req = challenge.sign(pin_key, {**ch, "instance": "instance-2"})
    with pytest.raises(ChallengeError, match="does not verify"):
        book.redeem(req, H1, now_ms=T + 1000)


@pytest.mark.parametrize("change", [
    {"params": dict(GRANT, max_order_usd=20_000)},
    {"params": dict(GRANT, symbols=[BTC, ETH])},
    {"action": "limits"},
])
def test_changed_params_or_action_are_refused(book, pin_key, change):
    ch = issue(book)
    req = challenge.sign(pin_key, ch)
    with pytest.raises(ChallengeError, match="differ"):
        book.redeem({**req, **change}, H1, now_ms=T + 1000)
    # even signed over the changed body (the signature then matches the body but not the challenge)
    with pytest.raises(ChallengeError):
        book.redeem(challenge.sign(pin_key, {**ch, **change}), H1, now_ms=T + 1000)


def test_an_expired_challenge_is_refused(book, pin_key):
    ch = issue(book, now=T)
    assert ch["expires_ts"] - ch["issued_ts"] == MAX_TTL_S * 1000        # 120 s
    req = challenge.sign(pin_key, ch)
    with pytest.raises(ChallengeError, match="expired"):
        book.redeem(req, H1, now_ms=T + 120_000)                           # at the expiry: gone
    ch2 = issue(book, now=T)
    assert book.redeem(challenge.sign(pin_key, ch2), H1, now_ms=T + 119_999).nonce == ch2["nonce"]


def test_a_signed_expiry_in_the_past_is_refused(book, pin_key):
    ch = issue(book, now=T)
    req = challenge.sign(pin_key, ch, expires_ts=T + 5_000)          # the human chose 5 s
    with pytest.raises(ChallengeError, match="expired"):
        book.redeem(req, H1, now_ms=T + 5_000)


def test_an_expiry_beyond_the_challenges_is_refused(book, pin_key):
    ch = issue(book, now=T, ttl_s=3600)                                  # asked for an hour
    assert ch["expires_ts"] == T + MAX_TTL_S * 1000                     # capped at 120 s
    req = challenge.sign(pin_key, ch, expires_ts=ch["expires_ts"] + 1)
    with pytest.raises(ChallengeError, match="expires_ts"):
        book.redeem(req, H1, now_ms=T + 1000)
    for bad in (str(ch["expires_ts"]), float(ch["expires_ts"]), True):
        with pytest.raises(ChallengeError, match="expires_ts"):
            book.redeem({**challenge.sign(pin_key, ch), "expires_ts": bad}, H1, now_ms=T + 1000)


def test_a_clock_that_went_back_cannot_stretch_the_120_s(book, pin_key):
    """Issued at T (expires T + 120 s); redeemed when the clock reads T - 10 s: the signed expiry is then
    130 s away, more than 120 s: refused."""
    ch = issue(book, now=T)
    with pytest.raises(ChallengeError, match="expires_ts"):
        book.redeem(challenge.sign(pin_key, ch), H1, now_ms=T - 10_000)
    req = challenge.sign(pin_key, ch, expires_ts=T + 100_000)        # 110 s away: fine
    assert book.redeem(req, H1, now_ms=T - 10_000).nonce == ch["nonce"]


def test_a_changed_policy_voids_the_challenge_and_the_nonce_is_gone(book, pin_key):
    ch = issue(book, h=H1)
    req = challenge.sign(pin_key, ch)
    with pytest.raises(ChallengeError, match="policy changed"):
        book.redeem(req, H2, now_ms=T + 1000)
    with pytest.raises(ChallengeError, match="unknown, expired or already used"):
        book.redeem(req, H1, now_ms=T + 2000)


def test_at_most_max_outstanding_challenges_are_kept(book, pin_key):
    chs = [issue(book, now=T + i) for i in range(MAX_OUTSTANDING + 1)]
    reqs = [challenge.sign(pin_key, c) for c in chs]
    with pytest.raises(ChallengeError, match="unknown"):
        book.redeem(reqs[0], H1, now_ms=T + 1000)                       # the oldest was evicted
    for r in reqs[1:]:
        book.redeem(r, H1, now_ms=T + 1000)                             # the newest 32 all still redeem


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_params_are_refused_at_issue(book, bad):
    with pytest.raises(ValueError):
        book.issue("limits", {"collar_bps": bad}, H1, now_ms=T)


@pytest.mark.parametrize("action, params", [("withdraw", {}), ("engage", {}), ("grant", ["not", "a", "dict"])])
def test_only_known_loosenings_are_issued(book, action, params):
    with pytest.raises(ChallengeError):
        book.issue(action, params, H1, now_ms=T)


def test_garbage_requests_are_refused_not_crashes(book, pin_key):
    ch = issue(book)
    good = challenge.sign(pin_key, ch)
    for req in ({}, {"nonce": 5}, {**good, "signature": "%%%not base64"}, {**good, "signature": ""},
                {**good, "nonce": ch["nonce"][:-1] + ("1" if ch["nonce"][-1] == "0" else "0")}):
        with pytest.raises(ChallengeError):
            book.redeem(req, H1, now_ms=T + 1000)
    assert book.redeem(good, H1, now_ms=T + 1000).nonce == ch["nonce"]


# ================================================================================== journal

@pytest.fixture
def jkey():
    return SigningKey.generate().derive_key(JOURNAL_PURPOSE)


def write_journal(path: Path, key: bytes, n: int = 5) -> list[dict]:
    j = journal.Journal(path, key, [])
    recs = [j.append("policy" if i % 2 else "order", {"i": i, "text": f"record {i}"}, ts=T + i) for i in range(1, n + 1)]
    j.close()
    return recs


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")[:-1]


def put(path: Path, ls: list[bytes]) -> None:
    path.write_bytes(b"".join(x + b"\n" for x in ls))


def test_journal_round_trip(tmp_path, jkey):
    path = tmp_path / "state" / "journal.jsonl"
    recs = write_journal(path, jkey)
    v = journal.read(path, jkey)
    assert (v.problem, v.exists) == (None, True)
    assert v.records == recs
    assert [r["seq"] for r in v.records] == [1, 2, 3, 4, 5]
    assert v.records[0]["prev"] == journal.GENESIS and all(b["prev"] == a["mac"] for a, b in zip(recs, recs[1:]))
    # appending after a restart continues the chain
    j = journal.Journal(path, jkey, v.records)
    j.append("stop", {}, ts=T + 9)
    j.close()
    v2 = journal.read(path, jkey)
    assert v2.problem is None and [r["seq"] for r in v2.records] == [1, 2, 3, 4, 5, 6]


def test_a_missing_journal_says_so(tmp_path, jkey):
    v = journal.read(tmp_path / "none.jsonl", jkey)
    assert (v.records, v.problem, v.exists) == ([], None, False)


def _edit(ls, key):
    rec = json.loads(ls[2])
    rec["data"]["text"] = "record 3, edited"
    ls[2] = json.dumps(rec, sort_keys=True, separators=(",", ":")).encode()
    return ls


def _another_key(ls, key, path):
    """A line appended with another key, chained correctly (seq and prev right)."""
    recs = [json.loads(x) for x in ls]
    j = journal.Journal(path, SigningKey.generate().derive_key(JOURNAL_PURPOSE), recs)
    j.append("policy", {"grant": "forged"}, ts=T + 6)
    j.close()
    return lines(path)


DAMAGE = {
    # name: (how, first bad line, verified records kept, words in the problem)
    "edited": (_edit, 3, 2, "does not verify"),
    "removed_middle": (lambda ls, k: ls[:2] + ls[3:], 3, 2, "does not follow"),
    "reordered": (lambda ls, k: [ls[0], ls[2], ls[1], *ls[3:]], 2, 1, "does not follow"),
    "truncated": (lambda ls, k: ls[:3] + [ls[3][: len(ls[3]) // 2]], 4, 3, "not readable JSON"),
    "garbage": (lambda ls, k: ls + [b"\xff\xfe\x00garbage{"], 6, 5, "not readable JSON"),
    "garbage_middle": (lambda ls, k: ls[:1] + [b"\x01\x02 not json \x7f{"] + ls[2:], 2, 1, "not readable JSON"),
    "inserted": (lambda ls, k: ls[:2] + [ls[1]] + ls[2:], 3, 2, "does not follow"),
}


@pytest.mark.parametrize("name", [*DAMAGE, "another_key"])
def test_each_kind_of_damage_is_named_with_its_line_and_the_prefix_is_kept(tmp_path, jkey, name):
    path = tmp_path / "journal.jsonl"
    recs = write_journal(path, jkey)
    if name == "another_key":
        new = _another_key(lines(path), jkey, path)
        line, keep, words = 6, 5, "another PIN key"
    else:
        how, line, keep, words = DAMAGE[name]
        new = how(lines(path), jkey)
    put(path, new)
    v = journal.read(path, jkey)
    assert v.problem is not None and f"journal line {line} " in v.problem and words in v.problem, v.problem
    assert v.records == recs[:keep]


def test_a_journal_cut_at_a_line_boundary_verifies_but_is_short(tmp_path, jkey):
    """A rollback to an earlier, intact journal cannot be seen in the file itself: the agent compares it
    with the exchange's own orders (restore_policy below)."""
    path = tmp_path / "journal.jsonl"
    recs = write_journal(path, jkey)
    put(path, lines(path)[:3])
    v = journal.read(path, jkey)
    assert v.problem is None and v.records == recs[:3]


def test_the_journal_under_another_key_verifies_nothing(tmp_path, jkey):
    path = tmp_path / "journal.jsonl"
    write_journal(path, jkey)
    v = journal.read(path, SigningKey.generate().derive_key(JOURNAL_PURPOSE))
    assert v.records == [] and "journal line 1 does not verify" in v.problem


def test_restart_keeps_the_verified_records_and_renames_the_damaged_file(tmp_path, jkey):
    path = tmp_path / "journal.jsonl"
    recs = write_journal(path, jkey)
    put(path, _edit(lines(path), jkey))
    damaged_bytes = path.read_bytes()
    v = journal.read(path, jkey)
    assert len(v.records) == 2
    j = journal.Journal.restart(path, jkey, v.records)
    j.append("start", {"strict": True}, ts=T + 99)
    j.close()
    beside = [p for p in tmp_path.iterdir() if p.name.startswith("journal.jsonl.damaged-")]
    assert len(beside) == 1 and beside[0].read_bytes() == damaged_bytes        # kept, for the human to look at
    again = journal.read(path, jkey)
    assert again.problem is None
    assert [(r["kind"], r["data"], r["ts"]) for r in again.records] == \
        [(r["kind"], r["data"], r["ts"]) for r in recs[:2]] + [("start", {"strict": True}, T + 99)]


# ================================================================================== restore_policy

@pytest.fixture
def paths(tmp_path):
    return AgentPaths.for_home(tmp_path / "project" / ".quant-trading")


def journal_records(path: Path, key: bytes, *events) -> list[dict]:
    j = journal.Journal(path, key, [])
    for i, (kind, data) in enumerate(events):
        j.append(kind, data, ts=T - HOUR + i)
    j.close()
    v = journal.read(path, key)
    assert v.problem is None
    return v.records


class Orders:
    """The exchange's order list as ``exchange_orders_since`` gives it; records what it was asked."""

    def __init__(self, *client_ids):
        self.orders = [{"id": str(i), "clientOrderId": c, "status": "closed"} for i, c in enumerate(client_ids)]
        self.asked: list[int] = []

    def __call__(self, ts: int) -> list[dict]:
        self.asked.append(ts)
        return list(self.orders)


NOW = T + 10_000


def test_first_start_with_nothing_is_active(paths):
    orders = Orders("web_12345")                       # the human's own order on the website: not the agent's
    policy, notes, strict, sent, intents = restore_policy([], None, False, paths, orders, NOW)
    assert (policy.trading_state, policy.kill_switch, policy.grant, strict) == (ACTIVE, False, None, False)
    assert any("first start" in n for n in notes)
    assert orders.asked == [NOW - 7 * 86_400_000]      # a week back when there is no journal


def test_no_journal_but_the_key_store_says_initialized_is_strict(paths):
    paths.keystore.mkdir(parents=True)
    (paths.keystore / MARKER).write_text(str(T))
    policy, notes, strict, _, _ = restore_policy([], None, False, paths, Orders(), NOW)
    assert strict and (policy.trading_state, policy.kill_switch, policy.grant) == (HALTED, True, None)
    assert "journal is missing" in notes[0]


@pytest.mark.parametrize("coid", ["qtsa0001", "qtsl0001", "qtsk0001"])
def test_no_journal_but_the_exchange_shows_the_agents_orders_is_strict(paths, coid):
    policy, notes, strict, _, _ = restore_policy([], None, False, paths, Orders("web_1", coid), NOW)
    assert strict and (policy.trading_state, policy.kill_switch) == (HALTED, True)
    assert "1 order(s)" in notes[0]


def test_a_journal_with_a_problem_is_strict_with_the_last_verified_limits(tmp_path, paths, jkey):
    p1 = granted(collar_bps=80.0, max_daily_loss_usd=30.0)
    p2 = dataclasses.replace(p1, collar_bps=60.0, version=p1.version + 1)
    recs = journal_records(tmp_path / "j.jsonl", jkey, ("start", {"policy": p1.to_dict()}),
                           ("policy", {"policy": p2.to_dict()}))
    policy, notes, strict, _, _ = restore_policy(recs, "journal line 3 does not verify", True, paths, Orders(), NOW)
    assert strict and (policy.trading_state, policy.grant) == (HALTED, None)
    assert (policy.collar_bps, policy.max_daily_loss_usd) == (60.0, 30.0)      # the LAST verified limits
    assert policy.kill_switch is False                                          # as it was
    assert "journal line 3 does not verify" in notes[0]


def test_a_journal_with_a_problem_and_no_policy_engages_the_kill_switch(paths):
    policy, _, strict, _, _ = restore_policy([], "journal line 1 is not readable JSON", True, paths, Orders(), NOW)
    assert strict and (policy.kill_switch, policy.trading_state) == (True, HALTED)


def test_a_verified_journal_that_does_not_know_an_agent_order_is_a_rollback(tmp_path, paths, jkey):
    p = granted()
    recs = journal_records(tmp_path / "j.jsonl", jkey, ("start", {"policy": p.to_dict()}),
                           ("sending", {"coid": "qtsaKNOWN", "symbol": BTC, "side": "buy"}),
                           ("policy", {"policy": p.to_dict()}))
    orders = Orders("qtsaKNOWN", "qtsaUNKNOWN")
    policy, notes, strict, _, _ = restore_policy(recs, None, True, paths, orders, NOW)
    assert strict and (policy.trading_state, policy.grant) == (HALTED, None)
    assert "1 order(s)" in notes[0] and "rolled back" in notes[0]
    # asked from a minute before the journal's first record (not a week: the journal says when it began)
    assert orders.asked == [T - HOUR - 60_000]


def test_a_verified_consistent_journal_restores_the_last_policy(tmp_path, paths, jkey):
    p1 = granted()
    p2, _ = p1.tighten("lower", {"collar_bps": 120}, T)
    recs = journal_records(tmp_path / "j.jsonl", jkey, ("start", {"policy": p1.to_dict()}),
                           ("sending", {"coid": "qtsaK1", "symbol": BTC, "side": "buy"}),
                           ("order", {"coid": "qtsaK1", "status": "filled", "filled": 0.01, "avg_price": 60000.0}),
                           ("policy", {"policy": p2.to_dict()}))
    paths.keystore.mkdir(parents=True)
    (paths.keystore / MARKER).write_text(str(T))                 # initialized: the journal is what counts
    policy, notes, strict, sent, intents = restore_policy(recs, None, True, paths, Orders("qtsaK1", "web_9"), NOW)
    assert not strict and policy == p2 and policy.grant == p1.grant
    assert sent["qtsaK1"]["status"] == "filled" and intents["qtsaK1"]["symbol"] == BTC
    assert "restored" in notes[0]


def test_a_journal_that_verifies_but_holds_no_policy_starts_active_without_a_grant(tmp_path, paths, jkey):
    recs = journal_records(tmp_path / "j.jsonl", jkey, ("stop", {"reason": "test"}))
    policy, _, strict, _, _ = restore_policy(recs, None, True, paths, Orders(), NOW)
    assert not strict and policy.grant is None and policy.trading_state == ACTIVE


def test_the_policy_is_never_looser_than_the_journal_says(tmp_path, paths, jkey):
    """A damaged or rolled-back journal never restores a grant, and never loosens a limit it held."""
    p = granted(collar_bps=30.0)
    recs = journal_records(tmp_path / "j.jsonl", jkey, ("policy", {"policy": p.to_dict()}))
    for problem, exists, orders in [("x", True, Orders()), (None, True, Orders("qtsaZ"))]:
        policy, _, strict, _, _ = restore_policy(recs, problem, exists, paths, orders, NOW)
        assert strict and policy.grant is None and policy.collar_bps == 30.0
