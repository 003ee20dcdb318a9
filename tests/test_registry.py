"""The strategy registry: transitions, expiry, versioning, fail-safe loading, paper validation, the live
ramp with the PIN, and automatic demotion. Real files under tmp_path, a real SQLite state database,
real PIN cryptography (with a low scrypt cost, as a function argument). Time is injected (epoch ms).
"""

from __future__ import annotations

import json
import math

import pytest

from qts.registry import (DataInfo, Expected, PromotionError, Registry, RegistryCorrupt, RegistryError, Tolerance,
                          ValidationSummary, authorization_payload, capital_fraction, paper_assessment, promote,
                          ramp_assessment, realized, retire, supervise)
from qts.registry.models import RegistryFile, sha256
from qts.safety.grants import ACTION_PROMOTE_STRATEGY_LIVE, sign_approval
from qts.safety.pin import set_pin, unlock

T0 = 1_700_000_000_000
DAY = 86_400_000
PIN = "Tr4de-Safely!"
N = 2 ** 10
PARAMS = {"fast": 10, "slow": 40}
EXPECTED = Expected(sharpe=1.2, expectancy_pct=0.5, trade_return_std_pct=2.0, max_drawdown_pct=10.0, win_rate=0.55,
                    trades_per_day=1.0, n_trades=40)


def passed(strict=True, synthetic=False) -> ValidationSummary:
    return ValidationSummary(passed=True, summary="PASS", strict_gates=strict,
                             data=DataInfo(symbol="BTC/USDT", synthetic=synthetic, bars=1000), validated_ts=T0)


def failed() -> ValidationSummary:
    return ValidationSummary(passed=False, summary="FAIL", reasons=["out-of-sample Sharpe -1 < 0"])


def add(home, now=T0, params=PARAMS, strategy="sma_cross", **kw):
    kw.setdefault("validation", passed())
    kw.setdefault("expected", EXPECTED)
    return Registry.load(home).add(strategy=strategy, params=params, symbol="BTC/USDT", timeframe_minutes=60,
                                   now=now, **kw)


def trade(store, ret_pct, entry_ts, exit_ts=None, mode="paper", strategy="sma_cross", cost=1000.0):
    pnl = cost * ret_pct / 100
    store.insert("closed_trades", {"mode": mode, "symbol": "BTC/USDT", "strategy": strategy, "entry_ts": entry_ts,
                                   "exit_ts": exit_ts or entry_ts + 3_600_000, "amount": 0.01, "entry_price": 100000.0,
                                   "exit_price": 100000.0 * (1 + ret_pct / 100), "gross_pnl": pnl + 2, "fees": 2.0,
                                   "pnl": pnl, "return_pct": ret_pct, "exit_reason": "signal"})


@pytest.fixture
def key(home):
    set_pin(home, PIN, scrypt_n=N, now=T0)
    return unlock(home, PIN, now=T0)


def in_paper(home, store, since=T0):
    e = add(home, now=since - 1000)
    return promote(home, e.id, "paper", store=store, now=since)


def eligible_paper(home, store, since=T0, rets=(0.8, 0.2, 1.1, -0.4, 0.9, 0.6)):
    """In paper since ``since``, six paper trades, and re-validated at since + 8 days (the validation
    of since - 1 s has expired by then: every promotion after 7 days needs a fresh one)."""
    e = in_paper(home, store, since)
    for i, r in enumerate(rets):
        trade(store, r, since + (i + 1) * DAY)
    add(home, now=since + 8 * DAY - 1000)
    return e


# -- loading, versioning, fail safe ----------------------------------------------------------------

def test_missing_registry_has_no_entries_and_nothing_live(home):
    reg = Registry.load(home)
    assert reg.ok and not reg.exists and reg.entries == [] and reg.version == 0
    assert capital_fraction(reg, "sma_cross") == 0.0 and capital_fraction(home, "sma_cross") == 0.0


def test_add_writes_a_schema_valid_versioned_file(home):
    e = add(home)
    assert e.stage == "backtested" and e.id.startswith("sma_cross-") and e.expires_ts == T0 + 7 * DAY
    raw = json.loads((home.root / "registry" / "strategies.json").read_text())
    RegistryFile.model_validate(raw)
    assert raw["version"] == 1 and raw["strategies"][0]["expected"]["sharpe"] == 1.2
    assert raw["history"][0]["prev_hash"] == "0" * 64
    # the same strategy, parameters, symbol and timeframe again: renewed, not duplicated
    again = add(home, now=T0 + DAY)
    assert again.id == e.id and again.expires_ts == T0 + 8 * DAY
    other = add(home, params={"fast": 5, "slow": 40})
    reg = Registry.load(home)
    assert [x.id for x in reg.entries] == [e.id, other.id] and reg.version == 3
    assert [h["action"] for h in reg.versions()] == ["add", "revalidate", "add"]
    chain = reg.history
    assert all(chain[i].prev_hash == chain[i - 1].hash for i in range(1, len(chain)))
    assert reg.entry_at(e.id, 1)["expires_ts"] == T0 + 7 * DAY   # every version can be read back
    assert reg.entry_at(e.id, 2)["expires_ts"] == T0 + 8 * DAY


def test_backtested_needs_a_passed_validation(home):
    with pytest.raises(RegistryError, match="passed validation"):
        add(home, validation=failed())
    with pytest.raises(RegistryError, match="passed validation"):
        add(home, validation=None)
    with pytest.raises(RegistryError, match="research or backtested"):
        add(home, stage="live")
    with pytest.raises(Exception, match="fast must be shorter"):
        add(home, params={"fast": 50, "slow": 10})
    r = add(home, stage="research", validation=None)
    assert r.stage == "research"
    with pytest.raises(RegistryError, match="no passed validation"):
        Registry.load(home).transition(r.id, "backtested", now=T0)
    assert add(home, now=T0 + 1, stage="backtested").stage == "backtested"  # validated: research -> backtested


def test_legal_and_illegal_transitions(home, store):
    e = add(home)
    reg = Registry.load(home)
    for bad in ("live", "live-ramp", "research"):
        with pytest.raises(RegistryError, match=f"illegal transition backtested -> {bad}"):
            reg.transition(e.id, bad, now=T0)
    with pytest.raises(RegistryError, match="unknown stage"):
        reg.transition(e.id, "moon", now=T0)
    with pytest.raises(RegistryError, match="no registry entry"):
        reg.transition("sma_cross-00000000", "paper", now=T0)
    assert promote(home, e.id, "paper", store=store, now=T0).stage == "paper"
    with pytest.raises(RegistryError, match="illegal transition paper -> backtested"):
        reg.transition(e.id, "backtested", now=T0)
    with pytest.raises(RegistryError, match="live needs the last ramp step|illegal"):
        reg.transition(e.id, "live", now=T0)
    # only one entry per strategy name can be in paper/live (realized results go by strategy name)
    f = add(home, params={"fast": 5, "slow": 40})
    with pytest.raises(PromotionError, match="already runs sma_cross"):
        promote(home, f.id, "paper", store=store, now=T0)
    assert retire(home, e.id, store=store, now=T0).stage == "retired"
    with pytest.raises(RegistryError, match="retired is final"):
        reg.transition(e.id, "paper", now=T0)
    assert promote(home, f.id, "paper", store=store, now=T0).stage == "paper"
    assert store.scalar("SELECT COUNT(*) FROM events WHERE kind='registry'") == 3


def test_expiry_requires_revalidation_before_any_promotion(home, store):
    e = add(home)
    late = T0 + 7 * DAY
    with pytest.raises(PromotionError, match="expired"):
        promote(home, e.id, "paper", store=store, now=late)
    with pytest.raises(RegistryError, match="expired"):
        Registry.load(home).transition(e.id, "paper", now=late)
    add(home, now=late, validation=failed())  # a failed re-validation does not renew
    assert Registry.load(home).get(e.id).expires_ts == T0 + 7 * DAY
    assert Registry.load(home).get(e.id).validation.passed is False
    with pytest.raises(PromotionError):
        promote(home, e.id, "paper", store=store, now=late)
    add(home, now=late)  # a passed one does
    assert promote(home, e.id, "paper", store=store, now=late + 1).stage == "paper"


@pytest.mark.parametrize("damage", ["garbage", "schema", "edited", "truncated", "directory"])
def test_damaged_registry_makes_nothing_live(home, store, key, damage):
    e = live_ramp_entry(home, store, key)
    assert capital_fraction(home, "sma_cross", store=store) == pytest.approx(0.10)
    path = home.root / "registry" / "strategies.json"
    raw = path.read_text()
    if damage == "garbage":
        path.write_text("{ not json")
    elif damage == "schema":
        d = json.loads(raw)
        d["strategies"][0]["stage"] = "moon"
        path.write_text(json.dumps(d))
    elif damage == "edited":  # a hand edit without fixing the hash chain
        d = json.loads(raw)
        d["strategies"][0]["ramp_step"] = 3
        path.write_text(json.dumps(d))
    elif damage == "truncated":
        path.write_text(raw[: len(raw) // 2])
    else:
        path.unlink()
        path.mkdir()
    reg = Registry.load(home)
    assert not reg.ok and "nothing is live" in reg.problem
    assert reg.entries == [] and reg.active_for("sma_cross") is None
    assert capital_fraction(reg, "sma_cross", store=store) == 0.0
    with pytest.raises(RegistryCorrupt):
        promote(home, e.id, "live-ramp", store=store, signing_key=key, now=T0 + 30 * DAY)
    with pytest.raises(RegistryCorrupt):
        reg.get(e.id)
    if damage != "directory":
        dest = Registry.reset(home, now=T0 + 31 * DAY)
        assert dest.exists() and Registry.load(home).ok and Registry.load(home).entries == []


def test_a_consistent_forgery_still_cannot_go_live(home, store):
    """Someone who rewrites the file AND its hash chain (anyone can) gets a readable registry, but no
    capital: a live stage needs the PIN-signed authorization."""
    e = add(home)
    path = home.root / "registry" / "strategies.json"
    d = json.loads(path.read_text())
    d["strategies"][0].update(stage="live", ramp_step=None)
    f = RegistryFile.model_validate(d)
    rec = f.history[-1]
    body = {**rec.body(), "state_hash": f.state_hash()}
    f.history[-1] = rec.model_copy(update={"state_hash": body["state_hash"], "hash": sha256(body)})
    path.write_text(json.dumps(f.model_dump(mode="json")))
    reg = Registry.load(home)
    assert reg.ok and reg.get(e.id).stage == "live"
    assert capital_fraction(reg, "sma_cross") == 0.0 and capital_fraction(reg, "sma_cross", store=store) == 0.0


# -- paper validation -------------------------------------------------------------------------------

def _rule(rets, exp=EXPECTED, k=2.0, mult=1.5):
    """The documented rule, computed independently of the library."""
    n = len(rets)
    mean = sum(rets) / n
    ok_mean = mean >= exp.expectancy_pct - k * exp.trade_return_std_pct / math.sqrt(n)
    eq = peak = 1.0
    dd = 0.0
    for r in rets:
        eq *= 1 + r / 100
        peak = max(peak, eq)
        dd = max(dd, 1 - eq / peak)
    return ok_mean and 100 * dd <= mult * exp.max_drawdown_pct


@pytest.mark.parametrize("rets", [
    (0.8, 0.2, 1.1, -0.4, 0.9, 0.6),            # as expected
    (-0.2, -0.5, 0.1, -0.3, 0.2, -0.4),         # below expectation, within k sigma / sqrt(n)
    (-1.5, -1.8, -0.9, -1.2, -1.6, -1.4),       # significantly worse than expected
    (5.0, 5.0, -9.0, -9.0, 10.0, 10.0),         # mean fine, drawdown beyond 1.5x the expected 10%
])
def test_paper_eligibility_follows_the_rule(home, store, rets):
    e = eligible_paper(home, store, rets=rets)
    a = paper_assessment(store, Registry.load(home).get(e.id), now=T0 + 8 * DAY)
    assert a.realized.n_trades == 6
    assert a.realized.mean_return_pct == pytest.approx(sum(rets) / 6)
    assert a.eligible is _rule(rets), a.reasons


def test_paper_eligibility_needs_time_trades_and_attribution(home, store):
    e = eligible_paper(home, store)
    reg = Registry.load(home)
    ent = reg.get(e.id)
    early = paper_assessment(store, ent, now=T0 + 6 * DAY + 3_600_001)
    assert not early.eligible and any("days in paper" in r for r in early.reasons)
    assert paper_assessment(store, ent, now=T0 + 7 * DAY + 3_600_000).eligible
    # rows that do not belong to this entry's paper stage are ignored
    trade(store, -50.0, T0 - DAY)                           # opened before paper began
    trade(store, -50.0, T0 + DAY, mode="live")              # live, not paper
    trade(store, -50.0, T0 + DAY, strategy="rsi_reversion")  # another strategy
    trade(store, -50.0, T0 + 9 * DAY)                        # closes after "now"
    a = paper_assessment(store, ent, now=T0 + 8 * DAY)
    assert a.eligible and a.realized.n_trades == 6
    assert not paper_assessment(store, ent, now=T0 + 8 * DAY, tol=Tolerance(min_trades=7)).eligible
    # paper decisions with other parameters than the registered ones
    store.insert("decisions", {"cycle_id": "c", "ts": T0 + DAY, "mode": "paper", "symbol": "BTC/USDT",
                               "strategy": "sma_cross", "inputs": json.dumps({"params": {"fast": 11, "slow": 40}}),
                               "outputs": "{}", "reason_codes": "[]"})
    a = paper_assessment(store, ent, now=T0 + 8 * DAY)
    assert not a.eligible and any("other parameters" in r for r in a.reasons)


def test_live_needs_strict_gates_and_real_data(home, store, key):
    for v, word in ((passed(strict=False), "looser"), (passed(synthetic=True), "SYNTHETIC")):
        e = add(home, validation=v, params={"fast": 7, "slow": 40}, now=T0 - 1000)
        promote(home, e.id, "paper", store=store, now=T0)
        for i in range(6):
            trade(store, 0.7, T0 + (i + 1) * DAY)
        with pytest.raises(PromotionError, match=word):
            promote(home, e.id, "live-ramp", store=store, signing_key=key, now=T0 + 8 * DAY)
        retire(home, e.id, store=store, now=T0 + 8 * DAY)
        store.execute("DELETE FROM closed_trades")


# -- promotion with the PIN ---------------------------------------------------------------------------

def test_promotion_to_live_requires_a_valid_pin_signed_approval(home, store, key, tmp_path):
    from qts.paths import StateHome

    e = eligible_paper(home, store)
    now = T0 + 8 * DAY
    assert paper_assessment(store, Registry.load(home).get(e.id), now=now).eligible
    with pytest.raises(PromotionError, match="needs the human's PIN"):
        promote(home, e.id, "live-ramp", store=store, now=now)
    with pytest.raises(PromotionError, match="state database"):
        promote(home, e.id, "live-ramp", signing_key=key, now=now)
    ent = Registry.load(home).get(e.id)
    payload = authorization_payload(ent, "live-ramp", 0)
    # forged: signed by another PIN key (another home's)
    other = StateHome(tmp_path / "other").ensure()
    set_pin(other, "An0ther-Pin!", scrypt_n=N, now=T0)
    okey = unlock(other, "An0ther-Pin!", now=T0)
    with pytest.raises(ValueError):
        sign_approval(home, okey, ACTION_PROMOTE_STRATEGY_LIVE, payload, now=now)
    forged = sign_approval(other, okey, ACTION_PROMOTE_STRATEGY_LIVE, payload, now=now)
    with pytest.raises(PromotionError, match="forged"):
        promote(home, e.id, "live-ramp", store=store, approval=forged, now=now)
    tampered = sign_approval(home, key, ACTION_PROMOTE_STRATEGY_LIVE, payload, now=now)
    tampered["payload"] = {**payload, "ramp_step": 3}
    with pytest.raises(PromotionError):
        promote(home, e.id, "live-ramp", store=store, approval=tampered, now=now)
    wrong_step = sign_approval(home, key, ACTION_PROMOTE_STRATEGY_LIVE, {**payload, "ramp_step": 2}, now=now)
    with pytest.raises(PromotionError):
        promote(home, e.id, "live-ramp", store=store, approval=wrong_step, now=now)
    wrong_action = sign_approval(home, key, "raise_risk_limit", payload, now=now)
    with pytest.raises(PromotionError):
        promote(home, e.id, "live-ramp", store=store, approval=wrong_action, now=now)
    expired = sign_approval(home, key, ACTION_PROMOTE_STRATEGY_LIVE, payload, ttl_s=60, now=now)
    with pytest.raises(PromotionError):
        promote(home, e.id, "live-ramp", store=store, approval=expired, now=now + 61_000)
    # the core refuses a live stage without the authorization too, whatever calls it
    with pytest.raises(RegistryError, match="PIN approval"):
        Registry.load(home).transition(e.id, "live-ramp", now=now)
    assert Registry.load(home).get(e.id).stage == "paper" and capital_fraction(home, "sma_cross") == 0.0
    good = sign_approval(home, key, ACTION_PROMOTE_STRATEGY_LIVE, payload, now=now)
    out = promote(home, e.id, "live-ramp", store=store, approval=good, now=now)
    assert out.stage == "live-ramp" and out.ramp_step == 0 and out.authorization == good
    assert capital_fraction(home, "sma_cross", store=store) == pytest.approx(0.10)
    assert capital_fraction(home, "sma_cross", store=store, params={"fast": 10, "slow": 41}) == 0.0
    # single use: the same approval cannot be replayed for the next step later
    with pytest.raises(PromotionError):
        promote(home, e.id, "live-ramp", store=store, approval=good, now=now + 8 * DAY)


def live_ramp_entry(home, store, key, since=T0):
    e = eligible_paper(home, store, since)
    return promote(home, e.id, "live-ramp", store=store, signing_key=key, now=since + 8 * DAY)


def revalidate(home, now):
    add(home, now=now)


def test_ramp_steps_up_with_the_pin_and_results(home, store, key):
    e = live_ramp_entry(home, store, key)
    t = T0 + 8 * DAY
    fractions = [capital_fraction(home, "sma_cross", store=store)]
    for step, days in enumerate((7, 7, 14)):
        # too early, then not enough trades: refused
        with pytest.raises(PromotionError, match="required"):
            promote(home, e.id, "live-ramp", store=store, signing_key=key, now=t + DAY)
        for i in range(5):
            trade(store, 0.6, t + i * DAY + 1, mode="live")
        t += days * DAY + 1
        revalidate(home, t)  # the validation expires after 7 days: renewed before each promotion
        a = ramp_assessment(store, Registry.load(home).get(e.id), now=t)
        assert a.eligible, a.reasons
        e = promote(home, e.id, "live-ramp", store=store, signing_key=key, now=t)
        assert e.ramp_step == step + 1
        fractions.append(capital_fraction(home, "sma_cross", store=store))
    assert fractions == pytest.approx([0.10, 0.25, 0.50, 1.00])
    with pytest.raises(PromotionError, match="next promotion is to live"):
        promote(home, e.id, "live-ramp", store=store, signing_key=key, now=t + 8 * DAY)
    for i in range(5):
        trade(store, 0.6, t + i * DAY + 1, mode="live")
    t += 7 * DAY + 1
    revalidate(home, t)
    e = promote(home, e.id, "live", store=store, signing_key=key, now=t)
    assert e.stage == "live" and capital_fraction(home, "sma_cross", store=store) == 1.0
    assert [h["to"] for h in Registry.load(home).versions() if h["action"] == "transition"] == [
        "paper", "live-ramp", "live-ramp", "live-ramp", "live-ramp", "live"]


def test_drift_demotes_to_paper(home, store, key):
    e = live_ramp_entry(home, store, key)
    t = T0 + 8 * DAY
    for i in range(2):
        trade(store, -4.0, t + i * DAY + 1, mode="live")
    assert supervise(home, store, now=t + 3 * DAY) == []      # fewer than drift_min_trades: not judged yet
    trade(store, -4.0, t + 2 * DAY + 1, mode="live")
    done = supervise(home, store, now=t + 3 * DAY)
    assert [d["action"] for d in done] == ["demoted"] and "drift" in done[0]["reason"]
    ent = Registry.load(home).get(e.id)
    assert ent.stage == "paper" and ent.authorization is None and ent.ramp_step is None
    assert capital_fraction(home, "sma_cross", store=store) == 0.0
    ev = store.one("SELECT severity, data FROM events WHERE kind='registry' ORDER BY id DESC LIMIT 1")
    assert ev["severity"] == "critical" and json.loads(ev["data"])["action"] == "demote"


def test_breaker_trip_demotes_and_zeroes_capital_at_once(home, store, key):
    e = live_ramp_entry(home, store, key)
    t = T0 + 8 * DAY
    store.event("breaker", "closed -> open: old trip", data={"state": "open"}, ts=t - DAY)   # before the step
    store.event("breaker", "open -> closed", data={"state": "closed"}, ts=t + DAY)          # not a trip
    assert supervise(home, store, now=t + 2 * DAY) == []
    assert capital_fraction(home, "sma_cross", store=store) == pytest.approx(0.10)
    path = home.root / "registry" / "strategies.json"
    before = path.read_bytes()
    store.event("breaker", "closed -> open: API error rate 40% > 25%", data={"state": "open"}, ts=t + 2 * DAY)
    assert capital_fraction(home, "sma_cross", store=store) == 0.0       # even before the demotion runs
    done = supervise(home, store, now=t + 3 * DAY)
    assert done[0]["action"] == "demoted" and "breaker" in done[0]["reason"]
    assert Registry.load(home).get(e.id).stage == "paper"
    # putting the old file back (a consistent file with a genuine signature) buys nothing
    path.write_bytes(before)
    assert Registry.load(home).ok and Registry.load(home).get(e.id).stage == "live-ramp"
    assert capital_fraction(home, "sma_cross", store=store) == 0.0


def test_realized_results_definition(store):
    for r in (1.0, -2.0, 3.0):
        trade(store, r, T0 + DAY, mode="live")
    r = realized(store, "sma_cross", "live", T0, T0 + 2 * DAY)
    assert r.n_trades == 3 and r.mean_return_pct == pytest.approx(2 / 3)
    assert r.std_return_pct == pytest.approx(math.sqrt(((1 - 2 / 3) ** 2 + (-2 - 2 / 3) ** 2 + (3 - 2 / 3) ** 2) / 2))
    assert r.win_rate == pytest.approx(2 / 3) and r.max_drawdown_pct == pytest.approx(2.0)


def test_a_real_breaker_trip_counts(home, store, key):
    from qts.safety.breaker import Breaker

    e = live_ramp_entry(home, store, key)
    t = T0 + 8 * DAY
    assert capital_fraction(home, "sma_cross", store=store) == pytest.approx(0.10)
    Breaker(home, store).trip("API error rate 40% > 25%", t + DAY)
    assert capital_fraction(home, "sma_cross", store=store) == 0.0
    (d,) = supervise(home, store, now=t + 2 * DAY)
    assert d["entry_id"] == e.id and d["action"] == "demoted" and "breaker" in d["reason"]
