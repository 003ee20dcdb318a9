"""Every file of the state home x every kind of damage, through the commands people run.

Each cell copies one real state home (a paper run with fills, a live WAL beside the database), damages one
file the way an attacker or a fault would, and runs the commands. Whatever happens: no traceback; exit 2
only with one line naming the damaged file; the commands that cannot safely read around the damage must
refuse (exit 2, naming the file) instead of trading on a new or half-read state.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from qts.cli import cli

STATE_FILES = {  # name in the test id -> path inside the state home
    "db": "db/metrics.db", "wal": "db/metrics.db-wal", "shm": "db/metrics.db-shm",
    "trades": "logs/trades.jsonl", "pre_trade": "logs/pre_trade.json", "post_trade": "logs/post_trade.json",
    "pid": "run/loop.pid", "status": "run/loop.status.json", "env": ".env",
}
DAMAGES = ("deleted", "empty", "half", "random", "wrong_schema", "unreadable", "folder", "link_devnull",
           "link_elsewhere")
COMMANDS = {
    "status": ["status"], "once": ["once"], "run": ["run", "--cycles", "2", "--quiet"], "verify": ["verify"],
    "report": ["report", "--out", "{tmp}/report.html"], "order": ["order", "buy", "BTC/USDT", "0.0001"],
    "kill_status": ["kill-switch", "status"], "breaker": ["breaker"], "db": ["db", "migrate"],
}
ALL = set(COMMANDS)
STORE_COMMANDS = ALL - {"status"}  # (status has its own no-database view when the file is simply gone)
LOOP = {"once", "run"}

# Which commands MUST refuse (exit 2 naming the file) for each damage; the others may refuse the same way or
# read around the damage with a documented safe default (exit 0, 1 = verify's mismatch, 3 = a gate refusal).
BROKEN_DB = ("half", "random", "wrong_schema", "unreadable", "folder", "link_devnull", "link_elsewhere")
# `qts kill-switch status` reads the flag and the per-user anchor, never needs the database, and exits 0 with
# whatever it reads: with the database damaged it must read ENGAGED unless the anchor confirms "clear"
# (KILL_READS_ENGAGED; test_kill_switch_status_with_the_database_destroyed covers engagements the anchor holds).
NEEDS_DB = ALL - {"kill_status"}
MUST_REFUSE = {
    **{("db", d): NEEDS_DB for d in BROKEN_DB},
    # the books are gone, not empty: no new 10,000 account (`db migrate` may create the empty file, no account)
    ("db", "deleted"): {"once", "run", "verify", "order", "breaker"},
    ("db", "empty"): NEEDS_DB - {"db"},
    **{("wal", d): NEEDS_DB for d in ("random", "folder", "link_devnull", "link_elsewhere")},
    **{("shm", d): NEEDS_DB for d in ("folder", "link_devnull", "link_elsewhere")},
    **{("trades", d): {"once", "run", "verify"} for d in ("random", "wrong_schema", "unreadable")},
    # (the kill switch's status reads only events, and `db migrate` never writes a fill: they need no journal)
    **{("trades", d): ALL - {"kill_status", "db"} for d in ("folder", "link_devnull", "link_elsewhere")},
    **{("pid", d): LOOP for d in ("folder", "link_devnull", "link_elsewhere")},
    ("status", "folder"): LOOP,
}
ALLOWED_EXITS = {0, 1, 2, 3}
KILL_READS_ENGAGED = {("db", d) for d in BROKEN_DB} | {("wal", d) for d in ("folder", "link_devnull", "link_elsewhere")}


def _invoke(home: Path, args: list[str], tmp: Path):
    args = [a.replace("{tmp}", str(tmp)) for a in args]
    return CliRunner().invoke(cli, ["--home", str(home), *args], catch_exceptions=True)


@pytest.fixture(scope="module")
def base_home(tmp_path_factory):
    """A paper account with fills (its journal, verdict logs, loop status), plus a WAL left by a process
    that died with a transaction not yet checkpointed."""
    root = tmp_path_factory.mktemp("base")
    home = root / "home"
    r = _invoke(home, ["run", "--days", "0.5", "--quiet"], root)
    assert r.exit_code == 0, r.output
    conn = sqlite3.connect(home / "db" / "metrics.db")
    assert conn.execute("SELECT COUNT(*) FROM fills").fetchone()[0] > 0
    conn.close()
    (home / ".env").write_text("FEE_BPS=10\n")
    (home / "run" / "loop.pid").write_text("999999\n")  # a stale pid: no lock is held
    code = ("import sqlite3, os, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
            "c.execute(\"INSERT INTO events (ts, kind, severity, message, data) "
            "VALUES (1, 'test', 'info', 'wal', '{}')\"); "
            "os._exit(0)")
    subprocess.run([sys.executable, "-c", code, str(home / "db" / "metrics.db")], check=True)
    assert (home / "db" / "metrics.db-wal").stat().st_size > 0
    return home


def _wrong_schema(name: str, path: Path) -> None:
    if name == "db":
        path.unlink()
        c = sqlite3.connect(path)
        c.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        c.execute("INSERT INTO notes (text) VALUES ('not ours')")
        c.commit()
        c.close()
    elif name in ("trades", "pre_trade", "post_trade"):
        path.write_text('[1, 2, 3]\n{"unrelated": true}\n')
    elif name == "pid":
        path.write_text("not-a-pid\n")
    elif name == "status":
        path.write_text('["running", 12]\n')
    elif name == "env":
        path.write_text("this is not an env file\n")


def damage(home: Path, name: str, how: str, elsewhere: Path) -> Path:
    path = home / STATE_FILES[name]
    if how == "deleted":
        if path.exists():
            path.unlink()
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "half":
        size = path.stat().st_size if path.exists() else 0
        with open(path, "ab") as fh:
            fh.truncate(size // 2)
    elif how == "random":
        path.write_bytes(random.Random(f"{name}-{how}").randbytes(8192))
    elif how == "wrong_schema":
        _wrong_schema(name, path)
    elif how == "unreadable":
        path.touch()
        path.chmod(0)
    elif how == "folder":
        if path.exists():
            path.unlink()
        path.mkdir()
        (path / "inside").write_text("x")
    elif how == "link_devnull":
        if path.exists():
            path.unlink()
        path.symlink_to("/dev/null")
    elif how == "link_elsewhere":
        elsewhere.mkdir(parents=True, exist_ok=True)
        target = elsewhere / path.name
        if path.exists():
            shutil.move(str(path), str(target))
        else:
            target.write_bytes(b"")
        path.symlink_to(target)
    return path


def _named(r, path: Path, name: str) -> bool:
    text = r.stderr + r.stdout
    if name in ("wal", "shm"):
        return str(path.parent / "metrics.db") in text
    if name == "env":
        return ".env" in text
    return str(path) in text


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("name", list(STATE_FILES))
def test_damage_matrix(base_home, tmp_path, name, how):
    if how == "unreadable" and os.geteuid() == 0:
        pytest.skip("running as root: chmod 000 does not stop root from reading")
    if how == "wrong_schema" and name in ("wal", "shm"):
        pytest.skip("a WAL or shared-memory index has no schema of its own (its header-only form is 'empty')")
    must = MUST_REFUSE.get((name, how), set())
    failures = []
    for cmd, args in COMMANDS.items():
        work = tmp_path / cmd
        home = work / "home"
        shutil.copytree(base_home, home, symlinks=True)
        path = damage(home, name, how, work / "elsewhere")
        try:
            r = _invoke(home, args, work)
        finally:
            if how == "unreadable":
                path.chmod(0o600)
        out = r.stdout + r.stderr
        if r.exception is not None and not isinstance(r.exception, SystemExit):
            failures.append(f"{cmd}: traceback {r.exception.__class__.__name__}: {r.exception}")
            continue
        if "Traceback" in out:
            failures.append(f"{cmd}: a traceback in the output")
        if r.exit_code not in ALLOWED_EXITS:
            failures.append(f"{cmd}: exit {r.exit_code}")
        last = [ln for ln in r.stderr.splitlines() if ln.strip()][-1:] or [""]
        if r.exit_code == 2 and not _named(r, path, name):
            failures.append(f"{cmd}: exit 2 without naming {STATE_FILES[name]}: {last[0][:300]}")
        if cmd == "kill_status" and (name, how) in KILL_READS_ENGAGED and not r.stdout.startswith("ENGAGED: "):
            failures.append(f"kill_status: reads {r.stdout[:200]!r} with {STATE_FILES[name]} {how} (not ENGAGED)")
        if cmd in must:
            if r.exit_code != 2:
                failures.append(f"{cmd}: must refuse with exit 2, got {r.exit_code}: {out[-300:]}")
            elif not _named(r, path, name) or "\n" in last[0]:
                failures.append(f"{cmd}: the refusal does not name {STATE_FILES[name]} in one line: {last[0][:300]}")
    assert not failures, f"{name} x {how}:\n" + "\n".join(failures)


# -- the same through the real entry point (a subprocess: `main`, not only the click group) ----------------

def _qts(home: Path, *args, env=None):
    exe = [sys.executable, "-c", "import sys; from qts.cli import main; main(sys.argv[1:])"]
    return subprocess.run(exe + ["--home", str(home), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("name,how,args", [
    ("db", "random", ["status"]), ("db", "half", ["once"]), ("trades", "random", ["verify"]),
    ("status", "random", ["status"]), ("db", "link_devnull", ["order", "buy", "BTC/USDT", "0.0001"]),
])
def test_damage_through_the_real_entry_point(base_home, tmp_path, name, how, args):
    home = tmp_path / "home"
    shutil.copytree(base_home, home, symlinks=True)
    path = damage(home, name, how, tmp_path / "elsewhere")
    r = _qts(home, *args)
    assert "Traceback" not in r.stderr + r.stdout
    if name == "status":  # a damaged loop status reads as "unknown", named; never "running"
        assert r.returncode == 0, r.stderr
        assert "UNKNOWN" in r.stdout.upper() and str(path) in r.stdout
        return
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("error: ") and str(path) in lines[-1]
    if name == "trades":
        assert "line 1" in lines[-1]  # which line of the journal is damaged


# -- the kill switch needs no database ---------------------------------------------------------------------

@pytest.mark.parametrize("how", ["random", "half", "wrong_schema", "folder", "link_devnull", "deleted"])
def test_kill_switch_status_with_the_database_destroyed(base_home, tmp_path, how):
    """`qts kill-switch status` reads the flag and the per-user anchor only: a destroyed database neither
    crashes it nor releases an engagement (the reading is the answer, so it exits 0 either way)."""
    from qts.paths import StateHome
    from qts.safety import kill_switch as ks
    from qts.store import Store

    home = tmp_path / "home"
    shutil.copytree(base_home, home, symlinks=True)
    (home / "safety").mkdir(exist_ok=True)
    (home / "safety" / "KILL_SWITCH").write_text(json.dumps({"reason": "human stop", "ts": 1}))
    damage(home, "db", how, tmp_path / "elsewhere")
    r = _invoke(home, ["kill-switch", "status"], tmp_path)
    assert r.exception is None or isinstance(r.exception, SystemExit)
    assert r.stdout.startswith("ENGAGED: human stop"), r.output
    assert r.exit_code == 0

    # a copy the anchor has never seen, flag gone, records unreadable: never "clear" unless there is no file
    (home / "safety" / "KILL_SWITCH").unlink()
    d = json.loads(_invoke(home, ["kill-switch", "status", "--json"], tmp_path).stdout)
    if how != "deleted":
        assert d["engaged"] is True and "metrics.db" in d["reason"], d

    # an engagement made through the library (so the anchor recorded it), then the database AND the flag
    # destroyed: still ENGAGED, from the anchor
    home2 = tmp_path / "home2"
    shutil.copytree(base_home, home2, symlinks=True)
    store = Store.open(StateHome(home2))
    try:
        out = ks.engage(StateHome(home2), "drawdown stop", store, notify=False)
    finally:
        store.close()
    assert out["anchor_error"] is None, out
    damage(home2, "db", how, tmp_path / "elsewhere2")
    (home2 / "safety" / "KILL_SWITCH").unlink()
    r = _invoke(home2, ["kill-switch", "status", "--json"], tmp_path)
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["engaged"] is True and "drawdown stop" in d["reason"] and d["source"] == "anchor", d


# -- lost books: refused, then rebuilt from the journal, or a new account deliberately -----------------------

def _books(home: Path) -> tuple[float, dict]:
    c = sqlite3.connect(home / "db" / "metrics.db")
    try:
        cash = c.execute("SELECT free FROM balances WHERE mode='paper' AND asset='USDT'").fetchone()[0]
        pos = dict(c.execute("SELECT symbol, amount FROM positions WHERE mode='paper' AND amount > 0").fetchall())
    finally:
        c.close()
    return cash, pos


@pytest.mark.parametrize("how", ["deleted", "empty", "random", "half"])
def test_lost_books_are_refused_then_rebuilt_from_the_journal(base_home, tmp_path, how):
    home = tmp_path / "home"
    shutil.copytree(base_home, home, symlinks=True)
    assert _invoke(home, ["verify"], tmp_path).exit_code == 0
    cash, pos = _books(home)
    assert pos  # the base run ends holding positions: a rebuild must bring them back
    damage(home, "db", how, tmp_path / "elsewhere")
    r = _invoke(home, ["once"], tmp_path)
    assert r.exit_code == 2
    if how in ("deleted", "empty"):
        assert "qts verify --rebuild" in r.stderr and "qts run --fresh" in r.stderr
        assert _no_account(home)  # no new 10,000 account was opened over the lost books
    r = _invoke(home, ["verify", "--rebuild"], tmp_path)
    assert r.exit_code == 0, r.output
    new_cash, new_pos = _books(home)
    assert abs(new_cash - cash) < 1e-6
    assert new_pos.keys() == pos.keys() and all(abs(new_pos[k] - pos[k]) < 1e-9 for k in pos)
    if how in ("random", "half"):  # the damaged file was moved aside, not deleted
        assert list((home / "archive").glob("damaged-db-*/metrics.db"))
    r = _invoke(home, ["verify"], tmp_path)
    assert r.exit_code == 0 and "books agree" in r.stdout
    # asked again: nothing lost now, nothing to rebuild
    r = _invoke(home, ["verify", "--rebuild"], tmp_path)
    assert r.exit_code == 2 and "already holds" in r.stderr


def _no_account(home: Path) -> bool:
    if not (home / "db" / "metrics.db").is_file() or not (home / "db" / "metrics.db").stat().st_size:
        return True
    c = sqlite3.connect(home / "db" / "metrics.db")
    try:
        return not c.execute("SELECT 1 FROM balances").fetchone()
    except sqlite3.Error:
        return True
    finally:
        c.close()


def test_lost_books_new_account_only_when_asked(base_home, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(base_home, home, symlinks=True)
    for p in home.glob("db/metrics.db*"):
        p.unlink()
    assert _invoke(home, ["once"], tmp_path).exit_code == 2
    assert _no_account(home)  # no 10,000 account appeared
    r = _invoke(home, ["run", "--fresh", "--cycles", "1", "--quiet"], tmp_path)
    assert r.exit_code == 0, r.output
    assert list((home / "archive").glob("*/logs/trades.jsonl"))  # the old journal is kept, not deleted
    assert _books(home)[0] > 0


# -- NaN and Infinity never stored; rows an older version stored are repaired --------------------------------

def test_nan_order_stores_valid_json(base_home, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(base_home, home, symlinks=True)
    for amount in ("nan", "inf", "-inf"):
        r = _invoke(home, ["order", "buy", "BTC/USDT", "--", amount], tmp_path)
        assert r.exit_code == 3, r.output
    c = sqlite3.connect(home / "db" / "metrics.db")
    bad = c.execute("SELECT COUNT(*) FROM events WHERE json_valid(data) = 0").fetchone()[0]
    named = c.execute("SELECT COUNT(*) FROM events WHERE kind='gate' AND "
                      "json_extract(data, '$.nonfinite[0]') = 'intent.amount'").fetchone()[0]
    c.close()
    assert bad == 0 and named == 3
    for line in (home / "logs" / "pre_trade.json").read_text().splitlines():
        assert "NaN" not in line and "Infinity" not in line
    assert _invoke(home, ["report", "--out", str(tmp_path / "r.html")], tmp_path).exit_code == 0


@pytest.mark.parametrize("command", [["report", "--out", "{tmp}/r.html"], ["status"], ["perf"], ["verify"]])
def test_rows_written_with_nan_by_the_old_code_are_tolerated(base_home, tmp_path, command):
    home = tmp_path / "home"
    shutil.copytree(base_home, home, symlinks=True)
    assert _invoke(home, ["status"], tmp_path).exit_code == 0  # opened by this version first
    c = sqlite3.connect(home / "db" / "metrics.db")
    old = json.dumps({"intent": {"amount": float("nan"), "price": float("inf")}})  # what the old insert wrote
    c.execute("INSERT INTO events (ts, kind, severity, message, data) VALUES (?, 'gate', 'warning', 'old', ?)",
              (2_000_000_000_000, old))
    c.commit()
    c.close()
    r = _invoke(home, command, tmp_path)
    assert r.exit_code == 0, r.output
    c = sqlite3.connect(home / "db" / "metrics.db")
    data = c.execute("SELECT data FROM events WHERE message='old'").fetchone()[0]
    c.close()
    if command[0] == "report":  # the report reads the gate's refusals through SQLite's json functions
        assert json.loads(data)["intent"] == {"amount": None, "price": None}
        assert sorted(json.loads(data)["nonfinite"]) == ["intent.amount", "intent.price"]


def test_rows_with_nan_from_before_the_upgrade_are_repaired_on_first_open(base_home, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(base_home, home, symlinks=True)
    c = sqlite3.connect(home / "db" / "metrics.db")
    c.execute("PRAGMA user_version = 0")  # as an older version left it
    c.execute("INSERT INTO decisions (cycle_id, ts, mode, symbol, strategy, inputs, outputs) VALUES "
              "('x', 1, 'paper', 'BTC/USDT', 's', ?, '{}')", (json.dumps({"price": float("nan")}),))
    c.commit()
    c.close()
    r = _invoke(home, ["once"], tmp_path)
    assert r.exit_code == 0, r.output
    c = sqlite3.connect(home / "db" / "metrics.db")
    assert c.execute("SELECT COUNT(*) FROM decisions WHERE json_valid(inputs) = 0").fetchone()[0] == 0
    c.close()


# -- disk full ------------------------------------------------------------------------------------------------

def _status_file(home: Path) -> dict:
    return json.loads((home / "run" / "loop.status.json").read_text())


def test_disk_full_in_the_database_mid_run(base_home, tmp_path, monkeypatch):
    """A real SQLITE_FULL: the loop's connection may grow the database by only a few pages (PRAGMA
    max_page_count on the real file), so a cycle's write fails the way a full disk fails it."""
    import qts.store.db as dbmod

    home = tmp_path / "home"
    shutil.copytree(base_home, home, symlinks=True)
    real_connect = dbmod.connect

    def tight(path, timeout=10.0):
        conn = real_connect(path, timeout)
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages + 4}")
        return conn

    monkeypatch.setattr(dbmod, "connect", tight)
    r = _invoke(home, ["run", "--cycles", "400", "--quiet"], tmp_path)
    monkeypatch.undo()
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert r.exit_code == 2, r.output
    last = [ln for ln in r.stderr.splitlines() if ln.strip()][-1]
    assert last.startswith("error: ") and str(home / "db" / "metrics.db") in last and "disk is full" in last
    st = _status_file(home)
    assert st["state"] == "crashed" and "full" in st["error"]
    assert not (home / "run" / "loop.pid").exists()
    c = sqlite3.connect(home / "db" / "metrics.db")
    try:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        # a cycle is on record whole (a decision per symbol and its snapshot) or not at all
        per_cycle = c.execute("SELECT ts, COUNT(*) FROM decisions WHERE mode='paper' GROUP BY ts").fetchall()
        snaps = dict(c.execute("SELECT ts, COUNT(*) FROM equity_snapshots WHERE mode='paper' GROUP BY ts"))
    finally:
        c.close()
    assert {n for _, n in per_cycle} == {3}
    assert {ts for ts, _ in per_cycle} == set(snaps) and set(snaps.values()) == {1}
    # the journal and the books still agree; the next run carries on
    r = _invoke(home, ["verify"], tmp_path)
    assert r.exit_code == 0, r.output
    r = _invoke(home, ["status", "--json"], tmp_path)
    assert json.loads(r.stdout)["state"] == "crashed"


def test_disk_full_for_the_status_file_never_leaves_running(base_home, tmp_path, monkeypatch):
    """ENOSPC injected at the write point: after two status writes a new file cannot be created. The loop
    stops with one line naming the status file, and the status it leaves says crashed, with the reason."""
    import errno

    import qts.engine.runner as runner
    from qts.fsutil import write_atomic

    home = tmp_path / "home"
    shutil.copytree(base_home, home, symlinks=True)
    calls = []

    def full_after_two(path, data, mode=0o600):
        calls.append(path)
        if len(calls) > 2:
            tmp = Path(path).with_name(".full.tmp")
            try:  # what the real function meets: creating the temporary file fails with ENOSPC
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
            except OSError:
                from qts.fsutil import StateFileError, describe_os_error

                raise StateFileError(path, f"cannot be written: {describe_os_error(OSError(errno.ENOSPC, 'x'))}",
                                     "the previous contents are unchanged") from None
        return write_atomic(path, data, mode)

    monkeypatch.setattr(runner, "write_atomic", full_after_two)
    r = _invoke(home, ["run", "--cycles", "50", "--quiet"], tmp_path)
    monkeypatch.undo()
    assert r.exit_code == 2, r.output
    last = [ln for ln in r.stderr.splitlines() if ln.strip()][-1]
    assert str(home / "run" / "loop.status.json") in last and "disk is full" in last
    st = _status_file(home)  # whole JSON, written in place over the old file's blocks
    assert st["state"] == "crashed" and "disk is full" in st["error"]
    assert not (home / "run" / "loop.pid").exists()


# -- unreadable (chmod 000) as an ordinary user: root reads through it, so these cells run under setpriv ----------

UNREADABLE_COMMANDS = ("status", "once", "verify", "order", "kill_status")


@pytest.mark.parametrize("name", list(STATE_FILES))
def test_unreadable_files_as_an_ordinary_user(base_home, tmp_path, name):
    import agent_support

    user = agent_support.test_user()
    if isinstance(user, str):
        pytest.skip(user)
    uid, gid, _ = user
    must = MUST_REFUSE.get((name, "unreadable"), set())
    failures = []
    for cmd in UNREADABLE_COMMANDS:
        work = Path(tempfile.mkdtemp(prefix="qts-unreadable-", dir="/tmp"))
        try:
            os.chmod(work, 0o755)
            home = work / "home"
            shutil.copytree(base_home, home, symlinks=True)
            path = home / STATE_FILES[name]
            path.touch()
            for root, dirs, files in os.walk(work):
                os.chown(root, uid, gid)
                for f in files:
                    os.chown(os.path.join(root, f), uid, gid)
            path.chmod(0)
            argv = [a.replace("{tmp}", str(work)) for a in COMMANDS[cmd]]
            code = "import sys; from qts.cli import main; main(sys.argv[1:])"
            r = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--",
                                sys.executable, "-c", code, "--home", str(home), *argv],
                               capture_output=True, text=True, timeout=120, cwd=str(work),
                               env={"PATH": "/usr/bin:/bin", "HOME": str(work), "LANG": "C.UTF-8",
                                    "PYTHONPATH": str(agent_support.REPO / "lib"), "PYTHONDONTWRITEBYTECODE": "1",
                                    "XDG_CONFIG_HOME": str(work / "xdg"), "XDG_STATE_HOME": str(work / "xdg"),
                                    "XDG_RUNTIME_DIR": str(work / "xdg")})
        finally:
            shutil.rmtree(work, ignore_errors=True)
        out = r.stdout + r.stderr
        last = [ln for ln in r.stderr.splitlines() if ln.strip()][-1:] or [""]
        if "Traceback" in out:
            failures.append(f"{cmd}: traceback: {out[-400:]}")
        elif r.returncode not in ALLOWED_EXITS:
            failures.append(f"{cmd}: exit {r.returncode}: {out[-300:]}")
        elif r.returncode == 2 and not (str(path) in out or (name in ("wal", "shm", "env") and
                                                              ("metrics.db" in out or ".env" in out))):
            failures.append(f"{cmd}: exit 2 without naming {STATE_FILES[name]}: {last[0][:300]}")
        elif cmd in must and r.returncode != 2:
            failures.append(f"{cmd}: must refuse with exit 2, got {r.returncode}: {out[-300:]}")
        elif cmd == "kill_status" and name == "db" and not r.stdout.startswith("ENGAGED: "):
            failures.append(f"kill_status: reads {r.stdout[:200]!r} with the database unreadable (not ENGAGED)")
    assert not failures, f"{name} unreadable:\n" + "\n".join(failures)


def test_kill_switch_status_reads_the_database_past_a_damaged_journal(base_home, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(base_home, home, symlinks=True)
    r = _invoke(home, ["kill-switch", "engage", "--reason", "stop all"], tmp_path)
    assert (home / "safety" / "KILL_SWITCH").exists(), r.output
    (home / "safety" / "KILL_SWITCH").unlink()  # the flag gone: the database's record must still answer
    damage(home, "trades", "folder", tmp_path / "elsewhere")
    r = _invoke(home, ["kill-switch", "status"], tmp_path)
    assert r.exit_code == 0 and r.stdout.startswith("ENGAGED: stop all"), r.output


@pytest.mark.parametrize("how", ["deleted", "empty", "half"])
def test_a_lost_journal_is_written_again_from_the_database_and_said_so(base_home, tmp_path, how):
    home = tmp_path / "home"
    shutil.copytree(base_home, home, symlinks=True)
    c = sqlite3.connect(home / "db" / "metrics.db")
    fills = c.execute("SELECT COUNT(*) FROM fills").fetchone()[0]
    c.close()
    damage(home, "trades", how, tmp_path / "elsewhere")
    r = _invoke(home, ["once"], tmp_path)
    assert r.exit_code == 0, r.output
    r = _invoke(home, ["verify"], tmp_path)
    assert r.exit_code == 0 and "books agree" in r.stdout, r.output
    c = sqlite3.connect(home / "db" / "metrics.db")
    said = c.execute("SELECT message FROM events WHERE kind='journal' AND severity='warning'").fetchall()
    now = c.execute("SELECT COUNT(*) FROM fills").fetchone()[0]
    c.close()
    assert len(said) == 1 and "trades.jsonl: appended" in said[0][0]
    text = (home / "logs" / "trades.jsonl").read_text().splitlines()
    lines = [json.loads(x) for x in text if x.startswith("{") and x.endswith("}")]  # (a torn fragment is skipped)
    assert len({x["fill_id"] for x in lines}) == now >= fills
