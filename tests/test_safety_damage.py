"""Every safety file x every kind of damage: a clear one-line reason naming the file, the safe reading
(kill switch engaged, trading HALTED, the last profile), never a traceback, never a looser state.

The state before the damage is the strict one a human set: kill switch engaged, trading HALTED, the risk
profile tightened to max_positions 5. Each reader is asked afterwards: the standard-library kill switch the
hooks use, the gate's (with the database), the breaker, the hooks' breaker reading, the risk profile, and
the `qts kill-switch status` / `qts breaker` / `qts risk show` commands. (``safety/grants/*`` is not read by
the paper gate any more: live grants live in the trading agent's memory, so it is not in the matrix.)
"""

from __future__ import annotations

import json
import os
import time

import pytest
from click.testing import CliRunner

from conftest import CONFIG_VARS
from qts.cli import cli
from qts.hooks import probe
from qts.safety import anchor
from qts.safety import kill_switch as ks
from qts.safety.breaker import HALTED, Breaker
from qts.safety.risk_profile import RiskProfile, load_profile, profile_path, save_profile
from test_gate import make_paper_env

FILES = {
    "kill_flag": lambda h: h.kill_flag,
    "risk_profile": profile_path,
    "breaker": lambda h: h.breaker_file,
    "anchor": anchor.anchor_path,
    "anchor_id": anchor.mark_path,
}
DAMAGE = ["deleted", "empty", "half", "random_bytes", "wrong_shape", "unreadable", "folder", "devnull_link",
          "oversized"]


def damage(path, kind):
    raw = path.read_bytes()
    if kind in ("deleted", "folder", "devnull_link"):
        path.unlink()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "half":
        path.write_bytes(raw[: len(raw) // 2])
    elif kind == "random_bytes":
        path.write_bytes(os.urandom(max(64, len(raw))))
    elif kind == "wrong_shape":
        path.write_text('[1, "two", {"three": 3}]\n')
    elif kind == "unreadable":
        path.chmod(0)
    elif kind == "folder":
        path.mkdir()
        (path / "inside").write_text("{}")
    elif kind == "devnull_link":
        path.symlink_to("/dev/null")
    elif kind == "oversized":  # 2 MB of valid-looking JSON
        path.write_text('{"reason": "' + "x" * 2_000_000 + '"}\n')


@pytest.fixture
def strict(tmp_path):
    env = make_paper_env(tmp_path / "home")
    save_profile(env.home, RiskProfile(max_positions=5), log=lambda *a: None)
    ks.engage(env.home, "the human stopped everything", env.store, notify=False)
    Breaker(env.home, env.store).set_trading_state(HALTED, int(time.time() * 1000), reason="the human halted")
    yield env
    env.store.close()


def cli_json(home, *args):
    r = CliRunner().invoke(cli, ["--home", str(home.root), *args, "--json"], env={k: None for k in CONFIG_VARS})
    assert r.exception is None or isinstance(r.exception, SystemExit), r.output
    assert "Traceback" not in r.output
    return r.exit_code, json.loads(r.output)


@pytest.mark.parametrize("kind", DAMAGE)
@pytest.mark.parametrize("which", list(FILES))
def test_damage_reads_as_the_safe_state(strict, which, kind):
    if kind == "unreadable" and os.geteuid() == 0:
        pytest.skip("running as root: a file with mode 000 is still readable")
    env = strict
    path = FILES[which](env.home)
    damage(path, kind)
    now = int(time.time() * 1000)

    stdlib = ks.status(env.home)
    full = ks.status(env.home, env.store)
    hook_engaged, hook_why = probe.kill_switch(env.home)
    brk = Breaker(env.home, env.store).status(now)
    hook_brk = probe.breaker(env.home)
    prof = load_profile(env.home)
    assert stdlib.engaged and full.engaged and hook_engaged, (stdlib, full)
    assert brk.trading_state == HALTED and hook_brk["trading_state"] == HALTED, (brk, hook_brk)
    assert prof.profile.max_positions <= 5, prof                      # never the looser defaults
    reasons = [stdlib.reason, full.reason, hook_why, brk.reason, hook_brk["reason"], prof.problem or ""]
    assert all("\n" not in r for r in reasons), reasons                # one line each
    assert any(path.name in r for r in reasons), (path.name, reasons)  # the damaged file is named

    code, st = cli_json(env.home, "kill-switch", "status")
    assert code == 0 and st["engaged"] is True
    code, b = cli_json(env.home, "breaker", "status")
    assert code == 0 and b["trading_state"] == HALTED
    code, r = cli_json(env.home, "risk", "show")
    assert code == 0 and r["profile"]["max_positions"] <= 5
