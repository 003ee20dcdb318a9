"""The per-user anchor, attacked as the assistant would: same OS user, deleting or rolling back the whole
state home (directly, by `git clean -fdx`, from a copy taken before an engagement), forging the state home's
id with the library's own functions, two processes engaging and resetting at once. Every reader (the gate,
the standard-library kill switch the hooks call, the breaker, the risk profile, the hooks' summary) must
then say the same thing: kill switch engaged, HALTED, the last profile, until the human resets with the PIN.

Real SQLite files and real files under tmp_path; the anchor lives in the per-test XDG_STATE_HOME (conftest).
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import subprocess
import time

import pytest
from click.testing import CliRunner

from conftest import CONFIG_VARS
from qts.cli import cli
from qts.gate import Reason
from qts.hooks import probe
from qts.paths import StateHome
from qts.safety import anchor
from qts.safety import kill_switch as ks
from qts.safety.breaker import HALTED, Breaker
from qts.safety.pin import set_pin, unlock
from qts.safety.risk_profile import RiskProfile, load_profile, save_profile
from test_gate import ETH, N, PIN, buy, make_paper_env

HOUR = 3_600_000


def rmtree(path):
    """rm -rf (a file that SQLite removed on its own meanwhile is fine)."""
    shutil.rmtree(path, onerror=lambda fn, p, exc: None if issubclass(exc[0], FileNotFoundError) else None)
    assert not path.exists()


def tighten(env, max_positions=5):
    save_profile(env.home, RiskProfile(max_positions=max_positions), log=lambda *a: None)


def pin_key(env):
    """The human's PIN, set long ago (past its cool-down, and the anchor saw it then)."""
    long_ago = int(time.time() * 1000) - 2 * HOUR
    set_pin(env.home, PIN, scrypt_n=N, now=long_ago)
    key = unlock(env.home, PIN)
    env.store.event("pin_key_seen", "first seen (test set-up)", "critical", {"fingerprint": key.fingerprint},
                    ts=long_ago)
    anchor.record(env.home, "key_seen", fingerprint=key.fingerprint, seen_ts=long_ago)
    return key


def readings(root) -> dict:
    """Everything a reader sees, from a fresh process's point of view (a new store on whatever is there)."""
    home = StateHome(root)
    stdlib = ks.status(home)                       # before anything re-creates the folder
    env = make_paper_env(root)
    try:
        full = ks.status(env.home, env.store)
        hook_ks = probe.kill_switch(env.home)
        now = int(time.time() * 1000)
        return {"stdlib": stdlib, "gate_ks": full, "hook_ks": hook_ks,
                "trading": Breaker(env.home, env.store).status(now).trading_state,
                "hook_trading": probe.breaker(env.home)["trading_state"],
                "profile": load_profile(env.home),
                "verdict": env.gate.evaluate(buy(0.1, symbol=ETH)).code,
                "summary": probe.summary_line(env.home)}
    finally:
        env.store.close()


def assert_locked(r: dict, why: str):
    assert r["stdlib"].engaged and r["gate_ks"].engaged and r["hook_ks"][0], r
    assert why in r["gate_ks"].reason and why in r["hook_ks"][1], r["gate_ks"].reason
    assert r["trading"] == HALTED and r["hook_trading"] == HALTED
    assert r["profile"].profile.max_positions == 5, r["profile"]          # the last profile, not the defaults
    assert r["verdict"] == Reason.KILL_SWITCH
    assert "kill switch ENGAGED" in r["summary"] and "paper trading HALTED" in r["summary"]


@pytest.fixture(autouse=True)
def _no_background_writers(monkeypatch):
    """The notifier's events-table sink writes from a thread of its own: not while a test deletes the home."""
    monkeypatch.setenv("QTS_NOTIFY_LOG", "0")
    yield
    from qts import notify

    notify.shutdown()


@pytest.fixture
def env(tmp_path):
    e = make_paper_env(tmp_path / "project" / ".quant-trading")
    tighten(e)
    ks.status(e.home, e.store)  # the library opened it: the anchor knows it now
    yield e
    e.store.close()


# ================================================================================== fresh installs

def test_a_new_user_is_a_fresh_install(tmp_path):
    r = readings(tmp_path / "new" / ".quant-trading")
    assert not r["stdlib"].engaged and not r["gate_ks"].engaged and r["hook_ks"] == (False, "clear")
    assert r["trading"] == "ACTIVE" and r["profile"].profile == RiskProfile() and r["verdict"] == "OK"
    # ... and from then on the anchor knows it
    assert anchor.check(StateHome(tmp_path / "new" / ".quant-trading")).known


def test_a_home_the_anchor_knows_reads_as_it_left_it(env):
    env.store.close()
    r = readings(env.home.root)
    assert not r["gate_ks"].engaged and r["trading"] == "ACTIVE" and r["profile"].profile.max_positions == 5


# ================================================================================== deletion and rollback

def test_deleting_the_whole_state_home(env):
    env.store.close()
    rmtree(env.home.root)
    assert "was deleted" in ks.status(env.home).reason          # named before anything re-creates it
    from qts.reports.status import collect_status                # `qts status` with no database at all

    st = collect_status(env.home, env.settings)
    assert st["kill_switch"]["engaged"] and "deleted" in st["kill_switch"]["reason"]
    assert st["breaker"]["trading_state"] == HALTED
    assert_locked(readings(env.home.root), "deleted")


def test_git_clean_in_the_project(env):
    project = env.home.root.parent
    env.store.close()
    (project / "strategy.py").write_text("x = 1\n")
    (project / ".gitignore").write_text(".quant-trading/\n")
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t", "-C", str(project)]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "strategy.py", ".gitignore"], check=True)
    subprocess.run(git + ["commit", "-qm", "init"], check=True)
    subprocess.run(git + ["clean", "-fdxq"], check=True)
    assert not env.home.root.exists() and (project / "strategy.py").exists()
    assert_locked(readings(env.home.root), "deleted")


@pytest.mark.parametrize("how", ["tar", "copy"])
def test_rolling_back_the_home_from_a_copy_taken_before_an_engagement(env, tmp_path, how):
    env.store.close()
    copy = tmp_path / "backup"
    if how == "tar":
        subprocess.run(["tar", "-C", str(env.home.root.parent), "-cf", str(tmp_path / "home.tar"), ".quant-trading"],
                       check=True)
    else:
        shutil.copytree(env.home.root, copy)
    e2 = make_paper_env(env.home.root)
    ks.engage(e2.home, "the human engaged it", e2.store, notify=False)
    Breaker(e2.home, e2.store).set_trading_state(HALTED, int(time.time() * 1000))
    e2.store.close()
    rmtree(env.home.root)
    if how == "tar":                                                # the whole home, as it was before
        subprocess.run(["tar", "-C", str(env.home.root.parent), "-xf", str(tmp_path / "home.tar")], check=True)
    else:
        shutil.copytree(copy, env.home.root)
    r = readings(env.home.root)
    assert_locked(r, "rolled back")
    assert "generation" in r["gate_ks"].reason and "< anchor" in r["gate_ks"].reason


def test_deleting_only_the_safety_files(env):
    env.store.close()
    rmtree(env.home.safety_dir)
    assert_locked(readings(env.home.root), "deleted")


def test_a_home_deleted_and_recreated_by_hand_is_not_the_one_the_anchor_knows(env, tmp_path):
    env.store.close()
    rmtree(env.home.root)
    # an unrelated home's id file (a real one, made by the library) copied into its place
    other = make_paper_env(tmp_path / "other" / ".quant-trading")
    ks.status(other.home, other.store)
    other.store.close()
    env.home.safety_dir.mkdir(parents=True)
    shutil.copy(anchor.mark_path(other.home), anchor.mark_path(env.home))
    assert_locked(readings(env.home.root), "deleted and re-created")


# ================================================================================== forging with the library

def test_forging_the_id_with_the_librarys_own_functions_does_not_launder_a_deletion(env):
    env.store.close()
    rmtree(env.home.root)
    env.home.ensure()
    anchor.record(env.home, "register")                      # "the anchor should just meet this home again"
    anchor.record(env.home, "trading", state="ACTIVE", reason="forged")   # unsigned: cannot loosen
    from qts.safety.risk_profile import ProfileChangeRefused

    with pytest.raises(ProfileChangeRefused):                  # the defaults are looser than the anchor's profile
        save_profile(env.home, RiskProfile(), log=lambda *a: None)
    r = readings(env.home.root)
    assert r["gate_ks"].engaged and "deleted" in r["gate_ks"].reason
    assert r["trading"] == HALTED and r["profile"].profile.max_positions == 5


def test_a_copied_id_file_with_a_bumped_generation_still_keeps_what_the_anchor_remembers(env, tmp_path):
    env.store.close()
    copy = tmp_path / "backup"
    shutil.copytree(env.home.root, copy)
    e2 = make_paper_env(env.home.root)
    ks.engage(e2.home, "the human engaged it", e2.store, notify=False)
    e2.store.close()
    rmtree(env.home.root)
    shutil.copytree(copy, env.home.root)
    # the attacker reads the anchor (readable even in the sandbox) and bumps the restored id file to match
    a = json.loads(anchor.anchor_path(env.home).read_text())
    mark = json.loads(anchor.mark_path(env.home).read_text())
    for entry in mark["anchors"].values():
        entry["generation"] = a["generation"] + 100
    anchor.mark_path(env.home).write_text(json.dumps(mark))
    assert anchor.check(env.home).problem is None            # the id checks pass now ...
    r = readings(env.home.root)
    assert r["gate_ks"].engaged and "the human engaged it" in r["gate_ks"].reason   # ... the anchor still holds it
    assert r["hook_ks"][0] and r["verdict"] == Reason.KILL_SWITCH


# ================================================================================== the human's way back

def test_the_human_resets_with_the_pin_after_a_deletion(env):
    key = pin_key(env)
    env.store.close()
    rmtree(env.home.root)
    e2 = make_paper_env(env.home.root)
    try:
        assert ks.status(e2.home, e2.store).engaged
        ks.reset(e2.home, e2.store, key)         # the key's first sighting survived the database in the anchor
        assert not ks.status(e2.home, e2.store).engaged and not probe.kill_switch(e2.home)[0]
        b = Breaker(e2.home, e2.store)
        now = int(time.time() * 1000)
        assert b.status(now).trading_state == HALTED            # each loosening has its own PIN step
        with pytest.raises(PermissionError):
            b.set_trading_state("ACTIVE", now)
        b.set_trading_state("ACTIVE", now, signing_key=key)
        assert b.status(now).trading_state == "ACTIVE" and probe.breaker(e2.home)["trading_state"] == "ACTIVE"
        assert load_profile(e2.home).profile.max_positions == 5  # the tightened profile stays
        assert e2.gate.evaluate(buy(0.1, symbol=ETH)).code == "OK"
    finally:
        e2.store.close()


def test_a_reset_with_a_new_pin_key_refuses_up_front_and_every_reader_agrees(env):
    set_pin(env.home, PIN, scrypt_n=N)                        # set just now: inside its cool-down
    key = unlock(env.home, PIN)
    ks.engage(env.home, "stop", env.store, notify=False)
    with pytest.raises(ks.ResetRefused) as ei:
        ks.reset(env.home, env.store, key)
    msg = str(ei.value)
    assert "cool-down" in msg and "ends at" in msg and "qts approve set-pin" in msg
    assert env.home.kill_flag.exists()                        # nothing changed
    assert ks.status(env.home, env.store).engaged and probe.kill_switch(env.home)[0]
    assert "kill switch ENGAGED" in probe.summary_line(env.home)
    from qts.reports.status import collect_status

    assert collect_status(env.home, env.settings, store=env.store)["kill_switch"]["engaged"]


# ================================================================================== two processes at once

def _engager(root, xdg, n):
    import os

    os.environ["XDG_STATE_HOME"] = xdg
    from qts.safety import kill_switch as k
    from qts.store import Store

    home = StateHome(root)
    store = Store.open(home)
    for i in range(n):
        k.engage(home, f"engager {i}", store, notify=False)
    store.close()


def _resetter(root, xdg, config, n, out):
    import os

    os.environ["XDG_STATE_HOME"], os.environ["XDG_CONFIG_HOME"] = xdg, config
    from qts.safety import kill_switch as k
    from qts.safety.pin import unlock as unl
    from qts.store import Store

    home = StateHome(root)
    store = Store.open(home)
    key = unl(home, PIN)
    done = 0
    for _ in range(n):
        try:
            k.reset(home, store, key)
            done += 1
        except k.ResetRefused:
            pass
    store.close()
    out.put(done)


def test_two_processes_engaging_and_resetting_at_once(env):
    import os

    key = pin_key(env)
    del key
    env.store.close()
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    xdg, config = os.environ["XDG_STATE_HOME"], os.environ["XDG_CONFIG_HOME"]
    procs = [ctx.Process(target=_engager, args=(env.home.root, xdg, 25)),
             ctx.Process(target=_engager, args=(env.home.root, xdg, 25)),
             ctx.Process(target=_resetter, args=(env.home.root, xdg, config, 10, q))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    q.get(timeout=5)
    a = json.loads(anchor.anchor_path(env.home).read_text())   # one whole JSON document: atomic writes
    assert a["engagements"] == 50                               # no engagement lost to a concurrent write
    # the last word: whatever interleaving happened, every reader agrees, and an engagement made after the
    # last reset began is never released by it
    e2 = make_paper_env(env.home.root)
    try:
        full = ks.status(e2.home, e2.store)
        assert full.engaged == probe.kill_switch(e2.home)[0] == ks.status(e2.home).engaged
        last_engaged = e2.store.scalar("SELECT MAX(id) FROM events WHERE kind='kill_switch' AND "
                                       "json_extract(data, '$.action')='engaged'")
        if not full.engaged:
            assert a["kill_switch"]["reset_covers"] >= last_engaged
        ks.engage(e2.home, "after", e2.store, notify=False)
        assert ks.status(e2.home, e2.store).engaged and probe.kill_switch(e2.home)[0]
    finally:
        e2.store.close()


# ================================================================================== the CLI

def test_kill_switch_status_needs_no_database(env):
    ks.engage(env.home, "stop", env.store, notify=False)
    env.store.close()
    env.home.db_path.write_bytes(b"\xb1" * 4096)                # destroyed
    for p in env.home.db_dir.glob("metrics.db-*"):
        p.unlink()
    r = CliRunner().invoke(cli, ["--home", str(env.home.root), "kill-switch", "status", "--json"],
                           env={k: None for k in CONFIG_VARS})
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["engaged"] is True


def test_kill_switch_status_with_a_destroyed_database_and_a_clear_switch(env):
    env.store.close()
    env.home.db_path.write_bytes(b"\xb1" * 4096)
    st = ks.status(env.home)
    assert not st.engaged and "unreadable" in st.reason        # the flag and the anchor suffice


def test_a_backdated_database_record_does_not_shorten_a_new_keys_cool_down(env):
    from qts.safety.approve import key_first_seen

    set_pin(env.home, PIN, scrypt_n=N)                        # a key first seen just now ...
    key = unlock(env.home, PIN)
    ks.engage(env.home, "stop", env.store, notify=False)
    key_first_seen(env.store, env.home)                       # ... and the anchor saw it now
    # the assistant (which can write the project's database) backdates the first sighting by a day
    env.store.event("pin_key_seen", "first seen", "critical", {"fingerprint": key.fingerprint},
                    ts=int(time.time() * 1000) - 24 * HOUR)
    with pytest.raises(ks.ResetRefused, match="cool-down"):
        ks.reset(env.home, env.store, key)
    assert ks.status(env.home, env.store).engaged


def test_the_real_hooks_see_a_deleted_home_as_the_gate_does(env, tmp_path):
    """The hook scripts, run as Claude Code runs them (python3 -S, standard library only): PreToolUse denies a
    trade and SessionStart tells the assistant the kill switch is engaged, naming the deletion."""
    from test_hooks import answer, decision, hook_env, pre_bash, reason, run_hook

    env.store.close()
    rmtree(env.home.root)
    henv = hook_env(env.home.root, TMPDIR=tmp_path)
    obj = answer("pre_tool_use", run_hook("pre_tool_use", pre_bash("qts order buy BTC/USDT 0.01"), henv))
    assert decision(obj) == "deny" and "KILL_SWITCH" in reason(obj) and "was deleted" in reason(obj)
    start = {"session_id": "s", "transcript_path": str(tmp_path / "t.jsonl"), "cwd": str(tmp_path),
             "hook_event_name": "SessionStart", "source": "startup"}
    obj = answer("session_start", run_hook("session_start", start, henv))
    text = obj["hookSpecificOutput"]["additionalContext"]
    assert "kill switch ENGAGED" in text and "was deleted" in text and "paper trading HALTED" in text
    assert not env.home.root.exists()  # the hooks only read: nothing re-created the home


def _qts_on_a_terminal(args, typed: str, timeout: float = 60.0) -> tuple[int, str]:
    """Run `qts ARGS` with a real pseudo-terminal as its controlling terminal (where the PIN is read from
    /dev/tty, as in the human's own shell), typing ``typed`` after the prompt."""
    import fcntl
    import os
    import select
    import sys
    import termios

    master, slave = os.openpty()

    def make_controlling():
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

    env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARS}
    p = subprocess.Popen([sys.executable, "-c", "import sys; sys.argv[0]='qts'; from qts.cli import main; main()",
                          *args], stdin=slave, stdout=slave, stderr=slave, env=env, preexec_fn=make_controlling,
                         close_fds=True)
    os.close(slave)
    out, sent, deadline = b"", False, time.time() + timeout
    while time.time() < deadline:
        r, _, _ = select.select([master], [], [], 0.2)
        if r:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
            if not sent and b"PIN" in out:
                os.write(master, typed.encode() + b"\n")
                sent = True
        elif p.poll() is not None:
            break
    p.wait(timeout=10)
    os.close(master)
    return p.returncode, out.decode("utf-8", "replace")


@pytest.mark.parametrize("key_age_h", [0, 2])
def test_qts_kill_switch_reset_on_a_terminal_exits_nonzero_while_the_switch_stays_engaged(env, key_age_h):
    if key_age_h:
        pin_key(env)                                          # the human's PIN, past its cool-down
    else:
        set_pin(env.home, PIN, scrypt_n=N)                    # a PIN set just now
    ks.engage(env.home, "stop", env.store, notify=False)
    code, out = _qts_on_a_terminal(["--home", str(env.home.root), "kill-switch", "reset"], PIN)
    st = ks.status(env.home, env.store)
    if key_age_h:
        assert code == 0 and "kill switch reset" in out and not st.engaged, out
    else:
        assert code == 1, out
        assert "NOT reset" in out and "cool-down" in out and "ends at" in out and "Traceback" not in out
        assert st.engaged and probe.kill_switch(env.home)[0]
