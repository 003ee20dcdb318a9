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
