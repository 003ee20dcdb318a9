"""The standard-library kill switch (hooks/kill_switch.sh -> qts.agent.kill.main) when the paper flatten it
hands to the qts CLI goes wrong. The CLI process is faked with pytest-subprocess: what is under test is how
kill.main reads a launcher that answers garbage, fails or hangs, not the CLI itself (tests/test_kill_switch.py
runs the real one). The paper account, its database and the flag are real.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from qts.agent import kill
from qts.paths import plugin_root
from test_gate import BTC, make_paper_env, seed_position

LAUNCHER = os.path.join(str(plugin_root()), "hooks", "_qts.sh")
CALL = [LAUNCHER, "kill-switch", "engage", "--paper-only", "--json", "--reason", "drill"]


@pytest.fixture
def holding(tmp_path, monkeypatch):
    """A paper account that holds BTC (so the paper flatten is needed), as the state home of this shell."""
    env = make_paper_env(tmp_path / "home")
    seed_position(env, BTC, 0.5, "seedBTC")
    assert env.broker.positions()
    env.store.close()
    monkeypatch.setenv("QTS_HOME", str(env.home.root))
    return env.home


def run_main(capsys) -> tuple[int, dict]:
    code = kill.main(["--reason", "drill", "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_a_flat_answer_from_the_cli_is_reported_flat(fp, holding, capsys):
    fp.register(CALL, stdout=json.dumps({"flat": True, "cancelled": [], "closed": [{"symbol": "BTC/USDT"}],
                                         "failed": []}))
    code, out = run_main(capsys)
    assert code == 0 and out["flat"] is True and out["paper"]["closed"] == [{"symbol": "BTC/USDT"}]
    assert holding.kill_flag.exists()


@pytest.mark.parametrize("stdout,stderr,returncode", [
    ("Traceback (most recent call last):\n  ...\nImportError: no ccxt", "", 1),
    ("", "hooks/_qts.sh: the plugin's Python environment is not set up", 2),
    ("{\"flat\": tru", "", 0),
])
def test_a_broken_cli_answer_is_not_done_with_its_words(fp, holding, capsys, stdout, stderr, returncode):
    fp.register(CALL, stdout=stdout, stderr=stderr, returncode=returncode)
    code, out = run_main(capsys)
    assert code == 1 and out["flat"] is False
    failed = out["paper"]["failed"]
    assert len(failed) == 1 and (stderr or stdout).strip()[-40:] in failed[0]["paper"]
    assert holding.kill_flag.exists()  # the flag went first, whatever the CLI did


def test_a_hanging_cli_is_cut_off_and_reported(fp, holding, capsys):
    def hang(process):
        raise subprocess.TimeoutExpired(CALL, 120)

    fp.register(CALL, callback=hang)
    code, out = run_main(capsys)
    assert code == 1 and out["flat"] is False
    assert "TimeoutExpired" in out["paper"]["failed"][0]["paper"]


def test_no_cli_call_when_the_paper_account_holds_nothing(fp, tmp_path, monkeypatch, capsys):
    env = make_paper_env(tmp_path / "home")
    env.store.close()
    monkeypatch.setenv("QTS_HOME", str(env.home.root))
    code, out = run_main(capsys)  # fp refuses any unregistered process: a CLI call would raise here
    assert code == 0 and out["paper"]["flat"] is True and fp.call_count(CALL) == 0
