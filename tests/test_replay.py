"""Deterministic replay (issue #14): real paper cycles on the generated market, then `qts replay --verify`
re-runs every recorded decision from its stored inputs. Changing one stored input (one candle, one limit of
the recorded risk profile) must flag exactly the decisions that used it, with the field that differs.

Expected sets are derived from what each decision RECORDED it used (its window bounds, its risk record),
not from replay's output; the candle and profile edits are plain SQL on the real database file.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import CONFIG_VARS
from qts.cli import cli

NO_ENV = {k: None for k in CONFIG_VARS}


def run_cli(args):
    return CliRunner().invoke(cli, args, env=NO_ENV, catch_exceptions=False)


@pytest.fixture(scope="module")
def session_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("replay") / "home"
    r = run_cli(["--home", str(home), "run", "--days", "1", "--fresh", "--quiet", "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["fills"] > 0  # orders went through the gate's risk layer: its sizing is on record too
    conn = sqlite3.connect(home / "db" / "metrics.db")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return home


def copy_db(src_home: Path, tmp_path: Path) -> Path:
    """A private copy of the session's database to change (the module's session stays intact)."""
    home = tmp_path / "copy"
    (home / "db").mkdir(parents=True)
    shutil.copy(src_home / "db" / "metrics.db", home / "db" / "metrics.db")
    return home


def decisions(home: Path) -> list[dict]:
    conn = sqlite3.connect(home / "db" / "metrics.db")
    conn.row_factory = sqlite3.Row
    out = []
    for r in conn.execute("SELECT id, symbol, inputs, outputs FROM decisions ORDER BY id"):
        out.append({"id": r["id"], "symbol": r["symbol"], "rec": json.loads(r["inputs"])["replay"],
                    "outputs": json.loads(r["outputs"])})
    conn.close()
    return out


def verify(home: Path, **kw):
    from qts.engine.replay import verify as _verify
    from qts.paths import StateHome
    from qts.store import Store

    store = Store.open(StateHome.resolve(str(home)), check_journal=False)
    try:
        return _verify(store, **kw)
    finally:
        store.close()


def test_every_recorded_decision_replays_identically(session_home):
    ds = decisions(session_home)
    r = run_cli(["--home", str(session_home), "replay", "--verify", "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["ok"] and rep["mismatches"] == []
    assert rep["checked"] == rep["verified"] == len(ds) > 800  # 290 cycles x 3 symbols
    # the risk layer's sizing was recorded (and so re-run) for every order the loop sent
    assert sum(1 for d in ds if d["rec"]["risk"]) == sum(1 for d in ds if d["outputs"]["intent"]) > 0
    # human-readable form: the count and no differences
    r = run_cli(["--home", str(session_home), "replay", "--verify", "--since", "2h"])
    assert r.exit_code == 0 and " 0 differ" in r.output, r.output


def test_one_changed_candle_flags_exactly_the_decisions_that_saw_it(session_home, tmp_path):
    home = copy_db(session_home, tmp_path)
    ds = decisions(home)
    target = next(d for d in ds if d["rec"]["risk"] and d["symbol"] == "ETH/USDT") if any(
        d["rec"]["risk"] and d["symbol"] == "ETH/USDT" for d in ds) else next(d for d in ds if d["rec"]["risk"])
    sym, t = target["symbol"], target["rec"]["candles"]["last_ts"]
    conn = sqlite3.connect(home / "db" / "metrics.db")
    n = conn.execute("UPDATE candles_seen SET close = close * 1.001 WHERE symbol=? AND ts=?", (sym, t)).rowcount
    conn.commit()
    conn.close()
    assert n == 1

    def saw(ref):
        return ref["symbol"] == sym and ref["first_ts"] <= t <= ref["last_ts"]

    want_strategy = {d["id"] for d in ds if saw(d["rec"]["candles"])}
    want_risk = {d["id"] for d in ds if d["rec"]["risk"] and any(saw(c) for c in d["rec"]["risk"]["candles"].values())}
    assert target["id"] in want_strategy and target["id"] in want_risk and len(want_strategy) >= 40

    rep = verify(home)
    flagged = {m.decision_id: {f["field"] for f in m.fields} for m in rep.mismatches}
    assert set(flagged) == want_strategy | want_risk
    for i in want_strategy:
        assert "candles.hash" in flagged[i]
    for i in want_risk:
        assert f"risk.candles.{sym}.hash" in flagged[i]
    assert rep.verified == len(ds) - len(flagged)

    r = run_cli(["--home", str(home), "replay", "--verify"])
    assert r.exit_code == 1
    assert f"decision {target['id']} " in r.output and "candles.hash: recorded" in r.output


def test_a_changed_limit_in_the_recorded_profile_is_flagged_on_the_decisions_sized_with_it(session_home, tmp_path):
    home = copy_db(session_home, tmp_path)
    ds = decisions(home)
    sized = [d for d in ds if d["rec"]["risk"]]
    buys = {d["id"] for d in sized if d["rec"]["risk"]["intent"]["side"] == "buy"}
    assert buys
    conn = sqlite3.connect(home / "db" / "metrics.db")
    (h, body), = conn.execute("SELECT hash, body FROM replay_blobs WHERE kind='risk_profile'").fetchall()
    prof = json.loads(body)
    assert prof["stop_atr_mult"] == 2.0
    prof["stop_atr_mult"] = 3.0  # a wider stop: the stop loss of every entry sized with it moves
    conn.execute("UPDATE replay_blobs SET body=? WHERE hash=?", (json.dumps(prof, sort_keys=True), h))
    conn.commit()
    conn.close()

    rep = verify(home)
    flagged = {m.decision_id: {f["field"] for f in m.fields} for m in rep.mismatches}
    assert set(flagged) == {d["id"] for d in sized}
    for i, fields in flagged.items():
        assert "risk.profile_hash" in fields
        assert ("risk.stop_loss" in fields) == (i in buys)


def test_what_if_a_lower_order_limit_names_the_entries_it_would_have_shrunk(session_home, tmp_path):
    ds = decisions(session_home)
    cap = 400.0
    # entries whose recorded risk amount was worth more than the cap at the price the risk layer used
    over = {d["id"] for d in ds if d["rec"]["risk"] and d["rec"]["risk"]["intent"]["side"] == "buy"
            and d["rec"]["risk"]["out"]["amount"] * d["rec"]["risk"]["snapshot"]["prices"][d["symbol"]] > cap}
    assert over
    prof = tmp_path / "profile.json"
    prof.write_text(json.dumps({"max_order_notional_usd": cap}))
    r = run_cli(["--home", str(session_home), "replay", "--verify", "--json", "--profile", str(prof)])
    assert r.exit_code == 1
    rep = json.loads(r.stdout)
    flagged = {m["decision_id"]: {f["field"] for f in m["fields"]} for m in rep["mismatches"]}
    assert set(flagged) == over
    assert all(fields == {"risk.amount"} for fields in flagged.values())
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"max_order_notional_usd": -1}))
    r = run_cli(["--home", str(session_home), "replay", "--verify", "--profile", str(bad)])
    assert r.exit_code == 2 and "max_order_notional_usd" in r.output


def test_decisions_recorded_before_replay_inputs_are_skipped_not_verified(session_home, tmp_path):
    home = copy_db(session_home, tmp_path)
    conn = sqlite3.connect(home / "db" / "metrics.db")
    conn.execute("UPDATE decisions SET inputs=json_remove(inputs, '$.replay') WHERE id=1")
    conn.commit()
    conn.close()
    rep = verify(home)
    assert rep.ok and [u["decision_id"] for u in rep.unreplayable] == [1]
    assert rep.checked == rep.verified == len(decisions(session_home)) - 1


def test_a_resumed_session_and_single_cycles_replay_too(tmp_path):
    """Each process starts its candle record afresh (the loop writes only candles new to it within a run)."""
    home = tmp_path / "home"
    for args in (["run", "--days", "0.3", "--quiet"], ["run", "--days", "0.2", "--quiet"], ["once"], ["once"]):
        r = run_cli(["--home", str(home)] + args)
        assert r.exit_code == 0, r.output
    n = len(decisions(home))
    rep = verify(home)
    assert rep.ok and rep.checked == rep.verified == n and not rep.unreplayable


def test_a_failing_record_never_breaks_a_cycle_and_is_reported(tmp_path, monkeypatch):
    from qts.engine import replay

    def broken(self, symbol, c):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(replay.Recorder, "window", broken)
    home = tmp_path / "home"
    r = run_cli(["--home", str(home), "run", "--days", "0.05", "--quiet", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["cycles"] > 0
    monkeypatch.undo()
    rep = verify(home)
    n = sqlite3.connect(home / "db" / "metrics.db").execute("SELECT COUNT(*) FROM decisions").fetchone()[0]
    assert rep.checked == 0 and len(rep.unreplayable) == n > 0
    assert all("No space left on device" in u["why"] for u in rep.unreplayable)
