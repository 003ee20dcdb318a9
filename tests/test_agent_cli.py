"""`qts agent ...` and the live paths of other commands through click's CliRunner, with no agent running:
every refusal names what to do, and exits with the documented code. (A running agent is driven through
real processes in test_redteam.py, and in-process in test_reliability.py.)"""

from __future__ import annotations

import json

from click.testing import CliRunner

from conftest import CONFIG_VARS
from qts.cli import cli

NO_ENV = {k: None for k in CONFIG_VARS}


def invoke(args, **env):
    return CliRunner().invoke(cli, args, env={**NO_ENV, **env})


def test_agent_group_lists_its_commands():
    r = invoke(["agent", "--help"])
    assert r.exit_code == 0
    for cmd in ("start", "status", "stop", "approve", "halt", "reduce", "revoke", "lower", "account", "confine",
                "import-keys"):
        assert f"\n  {cmd} " in r.output, cmd


def test_status_without_an_agent_says_how_to_start_one(tmp_path):
    r = invoke(["--home", str(tmp_path / "h"), "agent", "status"])
    assert r.exit_code == 1
    assert "no trading agent is running" in r.output and "qts agent start" in r.output
    r = invoke(["--home", str(tmp_path / "h"), "agent", "status", "--json"])
    assert r.exit_code == 1 and json.loads(r.output)["running"] is False


def test_a_live_order_without_an_agent_is_refused_no_agent(tmp_path):
    r = invoke(["--home", str(tmp_path / "h"), "order", "buy", "BTC/USDT", "0.001", "--json"], PAPER_TRADING="false")
    assert r.exit_code == 3
    out = json.loads(r.output)
    assert out["accepted"] is False and out["reason_code"] == "NO_AGENT" and "qts agent start" in out["message"]
    r = invoke(["--home", str(tmp_path / "h"), "order", "buy", "BTC/USDT", "0.001", "--dry-run"], PAPER_TRADING="false")
    assert r.exit_code == 2 and "paper-only" in r.output


def test_tightening_without_an_agent_exits_3_and_says_so(tmp_path):
    for args in (["agent", "halt"], ["agent", "revoke"], ["agent", "lower", "collar_bps=100"], ["agent", "account"]):
        r = invoke(["--home", str(tmp_path / "h"), *args])
        assert r.exit_code == 3 and "no trading agent is running" in r.output, (args, r.output)


def test_the_old_approval_commands_point_to_the_agent(tmp_path):
    r = invoke(["--home", str(tmp_path / "h"), "approve", "live", "--max-order", "100"])
    assert r.exit_code == 2 and "qts agent start --max-order" in r.output
    r = invoke(["--home", str(tmp_path / "h"), "approve", "order", "x1", "--max-notional", "900"])
    assert r.exit_code == 2 and "qts agent approve order" in r.output
    r = invoke(["--home", str(tmp_path / "h"), "approve", "revoke"])
    assert r.exit_code == 0 and "no trading agent is running" in r.output


def test_start_refuses_without_a_terminal(tmp_path, qts_exe, proc_env):
    # a new session has no controlling terminal, like the assistant's Bash tool: the agent never starts there
    # (a real process: `qts agent start` replaces itself with the isolated agent when it does have one)
    import subprocess

    p = subprocess.run([*qts_exe, "--home", str(tmp_path / "h"), "agent", "start", "--max-order", "100",
                        "--max-daily", "500"], capture_output=True, text=True, env=proc_env, timeout=60,
                       start_new_session=True, stdin=subprocess.DEVNULL)
    assert p.returncode == 2 and "terminal" in p.stderr and "PIN" in p.stderr, (p.stdout, p.stderr)


def test_lower_rejects_a_malformed_pair(tmp_path):
    r = invoke(["--home", str(tmp_path / "h"), "agent", "lower", "collar_bps"])
    assert r.exit_code == 2 and "expected NAME=VALUE" in r.output


def test_approve_signs_nothing_when_the_challenge_it_gets_is_not_the_one_it_asked_for(tmp_path):
    """An answer can arrive through the spool folder, which the assistant can write: a forged challenge for
    a bigger grant (with a real nonce the attacker got for itself) must not be signed. The check happens
    before the PIN is asked for, so a human is never shown a prompt for it."""
    import threading
    import time

    from qts.agent import protocol
    from qts.agent.paths import AgentPaths

    home = tmp_path / "h"
    paths = AgentPaths.for_home(home)
    paths.state.mkdir(parents=True)
    paths.status_file.write_text(json.dumps({"state": "running", "heartbeat": time.time() + 60, "instance": "real1"}))
    paths.spool_in.mkdir(parents=True)
    paths.spool_out.mkdir(parents=True)
    stop = threading.Event()

    def forger():  # the attacker answers in the agent's place
        while not stop.is_set():
            for f in paths.spool_in.glob("*.json"):
                req = json.loads(f.read_text())
                f.unlink()
                ch = {"nonce": "ab" * 32, "instance": "real1", "home": str(paths.home_root), "account": "x",
                      "policy_hash": "0" * 64, "action": "grant", "issued_ts": 1, "expires_ts": 2,
                      "params": {"max_order_usd": 1e6, "max_daily_usd": 1e7, "symbols": "BTC/USDT", "hours": 8}}
                (paths.spool_out / f"{req['id']}.json").write_bytes(protocol.dumps(
                    {"v": 1, "id": req["id"], "ok": True, "code": "OK", "message": "",
                     "data": {"challenge": ch, "policy_summary": "all fine"}}))
            time.sleep(0.01)

    t = threading.Thread(target=forger, daemon=True)
    t.start()
    try:
        r = invoke(["--home", str(home), "agent", "approve", "grant", "--max-order", "100", "--max-daily", "500",
                    "--symbols", "BTC/USDT"])
    finally:
        stop.set()
        t.join(5)
    assert r.exit_code == 3, r.output
    assert "does not match this request (params)" in r.output and "PIN" not in r.output.split("refused")[0]
