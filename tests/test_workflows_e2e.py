"""Both workflows driven end to end through the REAL Claude Code CLI with a scripted model (issue #14).

Each test runs `claude -p` with the plugin loaded (`--plugin-dir`) against the fake Messages API of
tests/e2e/fake_anthropic.py on 127.0.0.1, prompted with the plugin's own slash command, so the command's
`!` lines and its `allowed-tools` are what let the scripted Bash calls run (no blanket `--allowedTools
Bash`; only what a user would approve on top: placing an order, writing the notes file). The real
PreToolUse / PostToolUse hooks run, and the state home's SQLite database, logs, status file and registry
file are read afterwards: the assertions are on what happened there, not on the scripted model's text.

1. The five-minute loop (workflows/crypto-trader.md via /quant-trading-system:crypto-trader start):
   the loop started in the background with `--live-data --or-generated` (offline: it falls back to the
   generated market and says so), `Q status`, an order the gate's risk layer refuses (its reason code in
   the tool result and in the post-trade hook's report), `Q stop`, a restart, the kill switch engaged by a
   human from a plain shell while the session goes on, the next order and the next cycle refused.
2. Research to paper (workflows/quant-trading-workflow.md via /quant-trading-system:research, then
   /quant-trading-system:crypto-trader start): offline research on the generated market registers
   survivors as `backtested`, the model reads the registry and writes the backtest report, a try at
   `promote --to live-ramp` is refused as human-only, the human promotes to paper in a shell (the workflow's
   rule: "the user runs it"), and the trader runs the promoted strategy with its registered parameters.

The CLI is found like tests/test_plugin_cli.py finds it; without it these tests SKIP, saying so.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))
from claude_cli import INSTALL_HINT, find_claude, run_session, sealed_env  # noqa: E402
from qts.engine.status_file import pid_alive  # noqa: E402

PLUGIN = "quant-trading-system"
Q = f"{REPO}/hooks/_qts.sh"   # the launcher the commands call `Q` (the plugin root is REPO under --plugin-dir)
SESSION_TIMEOUT = 170


# -- fixtures and helpers ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def claude() -> str:
    binary = find_claude()
    if not binary:
        msg = f"SKIPPED: the Claude Code CLI was not found; {INSTALL_HINT}"
        print("\n" + "!" * 100 + "\n" + msg + "\n" + "!" * 100, file=sys.stderr)
        pytest.skip(msg)
    return binary


@pytest.fixture
def world(claude, tmp_path):
    """A project (the session's cwd and CLAUDE_PROJECT_DIR), its state home, a throwaway HOME, and a TMPDIR
    of its own (where the CLI writes background commands' output). Afterwards any loop process this test
    started that is still alive is stopped (by its pid, checked to run in this project)."""
    project, home, tmp = tmp_path / "proj", tmp_path / "home", tmp_path / "tmp"
    for d in (project, home, tmp):
        d.mkdir()
    w = {"claude": claude, "project": project, "home": home, "tmp": tmp, "state": project / ".quant-trading",
         "pids": set()}
    yield w
    for pid in set(w["pids"]) | {_pid_file(w["state"])} - {None}:
        if pid and pid_alive(pid) and _cwd_of(pid) == str(project):
            os.kill(pid, signal.SIGTERM)


def _pid_file(state: Path) -> int | None:
    try:
        return int((state / "run" / "loop.pid").read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None


def _cwd_of(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None


def loop_status(state: Path) -> dict:
    try:
        return json.loads((state / "run" / "loop.status.json").read_text())
    except (OSError, ValueError):
        return {}


def wait_for(pred, timeout: float = 40.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def db_rows(state: Path, sql: str, args: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(f"file:{state / 'db' / 'metrics.db'}?mode=ro", uri=True)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def human(world, *args, timeout: float = 120) -> subprocess.CompletedProcess:
    """A command typed by the human in their own terminal (not through the session, no hooks)."""
    return subprocess.run(list(args), cwd=world["project"], capture_output=True, text=True, timeout=timeout,
                          env=sealed_env(world["home"], QTS_HOME=world["state"]), stdin=subprocess.DEVNULL)


def background_output(world, needle: str) -> Path | None:
    """The output file the CLI writes for a background Bash command (under the session's TMPDIR)."""
    for p in sorted(world["tmp"].glob("claude-*/*/*/tasks/*.output"), key=lambda p: p.stat().st_mtime):
        try:
            if needle in p.read_text(errors="replace"):
                return p
        except OSError:
            pass
    return None


class Steps:
    """Scripted steps decided when they are due (they run in the fake API's thread while the CLI waits):
    a failure is recorded, the model is given a harmless command instead, and the test reports it."""

    def __init__(self):
        self.errors: list[str] = []
        self.seen: dict = {}

    def __call__(self, fn):
        def step():
            try:
                return fn()
            except Exception as e:  # noqa: BLE001 - reported by check()
                self.errors.append(f"{fn.__name__}: {e.__class__.__name__}: {e}")
                return f"echo scripted step {fn.__name__} failed"
        step.__name__ = fn.__name__
        return step

    def check(self, s):
        assert not self.errors, "\n".join(self.errors) + "\n" + s.explain()


def bg(command: str, description: str) -> dict:
    """A Bash call with the tool's run_in_background option (how the command starts the loop)."""
    return {"name": "Bash", "input": {"command": command, "description": description, "run_in_background": True}}


def post_context(s, event: str) -> list[str]:
    return [(o.get("hookSpecificOutput") or {}).get("additionalContext") or "" for o in s.hook_outputs(event)]


# -- 1. the five-minute loop ------------------------------------------------------------------------------------

def test_five_minute_loop_start_status_refusal_stop_and_kill_switch_from_a_shell(world):
    state, steps = world["state"], Steps()
    seen = steps.seen
    start = f"{Q} run --live-data --or-generated --pace 1"   # offline: falls back to the generated market

    @steps
    def status_once_running():
        st = wait_for(lambda: (lambda s: s if s.get("state") == "running" and s.get("cycles", 0) >= 3 else None)(
            loop_status(state)), what="the background loop to run 3 cycles")
        seen["pid1"] = st["pid"]
        world["pids"].add(st["pid"])
        return f"{Q} status"

    @steps
    def read_the_loop_output():
        # the first line the model must report: no network, so SYNTHETIC prices
        out = wait_for(lambda: background_output(world, "falling back to the generated market"),
                       what="the loop's fallback line in the background output")
        return {"name": "Read", "input": {"file_path": str(out)}}

    @steps
    def restart_after_stop():
        seen["after_stop"] = dict(loop_status(state))
        seen["pid1_alive_after_stop"] = pid_alive(seen["pid1"])
        seen["rows_after_stop"] = db_rows(state, "SELECT COUNT(*), MAX(ts), MAX(id) FROM decisions")[0]
        return bg(start, "restart the paper loop")

    @steps
    def kill_switch_from_a_shell():
        st = wait_for(lambda: (lambda s: s if s.get("state") == "running" and s.get("pid") != seen["pid1"]
                               and s.get("cycles", 0) >= 2 else None)(loop_status(state)),
                      what="the restarted loop to run 2 cycles")
        seen["pid2"] = st["pid"]
        world["pids"].add(st["pid"])
        # the human, in an ordinary shell, while the session goes on
        p = human(world, str(REPO / "hooks" / "kill_switch.sh"), "--reason", "e2e-shell-drill")
        seen["kill"] = p
        seen["rows_at_kill"] = db_rows(state, "SELECT (SELECT COUNT(*) FROM decisions), "
                                              "(SELECT COUNT(*) FROM equity_snapshots), (SELECT COUNT(*) FROM orders)")[0]
        return f"{Q} order buy ETH/USDT 0.01"      # the next order

    script = [
        bg(start, "start the paper loop"),
        status_once_running,
        read_the_loop_output,
        f"{Q} order sell ETH/USDT 100",              # beyond what the risk layer allows (long-only: no shorts)
        f"{Q} stop",
        restart_after_stop,
        kill_switch_from_a_shell,
        f"{Q} once --live-data --or-generated",      # the next cycle
        f"{Q} kill-switch status",
        f"{Q} status",
    ]
    t0 = time.monotonic()
    s = run_session(world["claude"], f"/{PLUGIN}:crypto-trader start", cwd=world["project"], home=world["home"],
                    script=script, allowed_tools=(f"Bash({Q} order:*)",),   # the user approved placing orders
                    extra_env={"TMPDIR": world["tmp"]}, timeout=SESSION_TIMEOUT)
    elapsed = time.monotonic() - t0
    steps.check(s)
    assert s.result().get("subtype") == "success", s.explain()
    results = s.tool_results()
    assert len(results) == len(script), s.explain()
    # the command's allowed-tools let every step run; the hook denied exactly the two after the kill switch
    assert s.pre_decisions() == [None] * 6 + ["deny", "deny"] + [None] * 2, s.explain()
    # ... and those two are the session's only denials: no step needed a permission the command lacks
    assert [d["tool_input"]["command"] for d in s.result().get("permission_denials") or []] == \
        [f"{Q} order buy ETH/USDT 0.01", f"{Q} once --live-data --or-generated"], s.result().get("permission_denials")

    # start: a background task, the loop on the generated market, and the model could read why
    assert "running in background" in results[0]["content"], s.explain()
    assert "cannot reach" in results[2]["content"] and "falling back to the generated market" in results[2]["content"]
    assert "SYNTHETIC" in results[2]["content"], results[2]["content"]
    # status: running, with the loop's pid
    assert f"RUNNING   pid {seen['pid1']}" in results[1]["content"], results[1]["content"]
    assert "SYNTHETIC market data" in results[1]["content"]

    # the refused order: the reason code reaches the model in the tool result (in the next request) ...
    refused = results[3]
    assert refused["is_error"] and "REFUSED RISK_SHORT_NOT_ALLOWED" in refused["content"], s.explain()
    assert s.model_saw("REFUSED RISK_SHORT_NOT_ALLOWED: sell 100 ETH/USDT exceeds the held")   # the next request
    # refused orders exit 3: PostToolUseFailure fires and its report reaches the model too. (It lists what was
    # appended to logs/post_trade.json while the command ran: refusals are not logged there, and a fill of the
    # background loop in that window is listed as if it were this command's, so only its frame is asserted.)
    failure = post_context(s, "PostToolUseFailure")
    assert len(failure) == 1 and failure[0].startswith("[quant-trading-system] "), failure
    assert "ETH/USDT filled" not in failure[0] and "kill switch clear" in failure[0], failure
    assert s.model_saw(failure[0][:120])
    # ... and is on record: the verdict log and the events table
    verdicts = [v for v in jsonl(state / "logs" / "pre_trade.json") if v["intent"]["symbol"] == "ETH/USDT"
                and v["intent"]["side"] == "sell" and v["intent"].get("source") == "cli"]
    assert len(verdicts) == 1 and verdicts[0]["allowed"] is False and verdicts[0]["code"] == "RISK_SHORT_NOT_ALLOWED"
    assert db_rows(state, "SELECT COUNT(*) FROM events WHERE kind='gate' AND message LIKE ?",
                   ("%refused sell ETH/USDT: RISK_SHORT_NOT_ALLOWED%",))[0][0] == 1
    assert db_rows(state, "SELECT COUNT(*) FROM orders WHERE symbol='ETH/USDT' AND side='sell' AND amount>=100")[0][0] == 0

    # stop: the loop finished its cycle and exited, and its status file says so
    assert results[4]["content"] == f"stopped the trading loop (pid {seen['pid1']})", s.explain()
    after_stop = seen["after_stop"]
    assert after_stop["state"] == "stopped" and after_stop["reason"] == "signal" and after_stop["pid"] == seen["pid1"]
    assert not seen["pid1_alive_after_stop"]
    n_stop, last_ts_stop, last_id_stop = seen["rows_after_stop"]
    n_sym = db_rows(state, "SELECT COUNT(DISTINCT symbol) FROM decisions")[0][0]
    assert n_sym >= 1 and n_stop >= 3 * n_sym and n_stop % n_sym == 0   # a decision per symbol, whole cycles

    # the kill switch from a shell: the running loop stopped for good (status file, neither process alive),
    # the flag with its reason, the event, the paper account flat
    st = loop_status(state)
    assert st["state"] == "stopped" and st["pid"] == seen["pid2"], st
    assert not pid_alive(seen["pid1"]) and not pid_alive(seen["pid2"])
    kill = seen["kill"]
    assert kill.returncode == 0 and "KILL SWITCH ENGAGED" in kill.stdout, kill.stdout + kill.stderr
    assert f"paper loop: stopped pid {seen['pid2']}" in kill.stdout, kill.stdout
    flag = json.loads((state / "safety" / "KILL_SWITCH").read_text())
    assert flag["reason"] == "e2e-shell-drill"
    assert db_rows(state, "SELECT severity, json_extract(data, '$.reason') FROM events WHERE kind='kill_switch' "
                          "AND json_extract(data, '$.action')='engaged'") == [("critical", "e2e-shell-drill")]
    assert db_rows(state, "SELECT COUNT(*) FROM positions WHERE mode='paper' AND amount>0")[0][0] == 0
    # the next order and the next cycle: refused, with the reason, and nothing happened
    for r in (results[6], results[7]):
        assert r["is_error"] and "KILL_SWITCH engaged (e2e-shell-drill)" in r["content"], s.explain()
    assert "ENGAGED: e2e-shell-drill" in results[8]["content"]
    # the hook is only the friendly layer: without it (a human's shell, or a hook that failed open) the next
    # cycle is refused by qts itself, and still nothing is written
    p = human(world, str(Path(sys.executable).parent / "qts"), "once")
    assert p.returncode != 0 and "kill switch engaged (e2e-shell-drill)" in p.stderr, p.stdout + p.stderr
    assert db_rows(state, "SELECT (SELECT COUNT(*) FROM decisions), (SELECT COUNT(*) FROM equity_snapshots), "
                          "(SELECT COUNT(*) FROM orders)")[0] == seen["rows_at_kill"]
    final = results[9]["content"]
    assert "loop          STOPPED" in final and "kill switch   ENGAGED" in final and "e2e-shell-drill" in final, final

    # both runs' cycles are on record once each, the restart resumed after the stop, every cycle has its
    # equity snapshot, and the strategy is the default one
    n, n_cycles, n_keys = db_rows(state, "SELECT COUNT(*), COUNT(DISTINCT cycle_id), COUNT(DISTINCT cycle_id || symbol) "
                                         "FROM decisions")[0]
    assert n == n_keys == n_sym * n_cycles and n > n_stop, (n, n_cycles, n_keys, n_stop)
    assert db_rows(state, "SELECT MIN(ts) FROM decisions WHERE id > ?", (last_id_stop,))[0][0] > last_ts_stop
    assert db_rows(state, "SELECT COUNT(DISTINCT ts) FROM equity_snapshots WHERE mode='paper'")[0][0] >= n_cycles
    assert db_rows(state, "SELECT DISTINCT mode, strategy FROM decisions") == [("paper", "sma_cross")]
    assert elapsed < 150, f"the session took {elapsed:.0f}s"


# -- 2. research to paper -------------------------------------------------------------------------------------

EXPLORE_GATES = ("--gate min_trades=1 --gate min_oos_trades=1 --gate max_pbo=1 --gate min_dsr=0 "
                 "--gate min_oos_sharpe=-100 --gate max_oos_drawdown=1")
IDEA = "mean reversion on BTC/USDT: buy oversold dips in ranging markets"


def registry(state: Path) -> dict:
    return json.loads((state / "registry" / "strategies.json").read_text())


def test_research_to_paper_registry_report_promotion_and_the_trader(world):
    state, project, steps = world["state"], world["project"], Steps()
    seen = steps.seen

    # -- turn 1: /research — notes, the pipeline, the registry, the report -----------------------------------
    @steps
    def show_first_survivor():
        entries = registry(state)["strategies"]
        seen["entry"] = entries[0]
        return f"{Q} registry show {entries[0]['id']}"

    @steps
    def backtest_report():
        e = seen["entry"]
        params = " ".join(f"--param {k}={v}" for k, v in sorted(e["params"].items()))
        return (f"{Q} backtest {e['strategy']} --synthetic --days 30 {params} --validate {EXPLORE_GATES} "
                f"--report backtest-report.html --json")

    @steps
    def try_to_promote_to_paper():
        return f"{Q} promote {seen['entry']['id']} --to paper"

    @steps
    def try_to_promote_to_live():
        return f"{Q} promote {seen['entry']['id']} --to live-ramp"

    script1 = [
        {"name": "Write", "input": {"file_path": str(project / "research-notes.md"), "content": IDEA + "\n"}},
        f"{Q} research --notes research-notes.md --synthetic --offline --days 30 --max-candidates 2 "
        f"{EXPLORE_GATES} --json",
        f"{Q} registry list",
        show_first_survivor,
        backtest_report,
        try_to_promote_to_paper,     # the commands say never to; the session's permissions agree
        try_to_promote_to_live,      # human-only: the hook refuses it outright
    ]
    t0 = time.monotonic()
    s1 = run_session(world["claude"], f"/{PLUGIN}:research {IDEA} --synthetic", cwd=project, home=world["home"],
                     script=script1, allowed_tools=("Write",),   # the user let it write the notes file
                     extra_env={"TMPDIR": world["tmp"]}, timeout=SESSION_TIMEOUT)
    steps.check(s1)
    assert s1.result().get("subtype") == "success", s1.explain()
    r = s1.tool_results()
    assert len(r) == len(script1), s1.explain()
    assert s1.pre_decisions() == [None] * 6 + ["deny"], s1.explain()
    # the research command's allowed-tools do not include promote: without the user's approval it is refused
    assert [d["tool_input"].get("command") for d in s1.result().get("permission_denials") or []] == \
        [f"{Q} promote {seen['entry']['id']} --to paper", f"{Q} promote {seen['entry']['id']} --to live-ramp"]
    assert (project / "research-notes.md").read_text() == IDEA + "\n"

    # the research output reached the model; the registry file holds exactly what it says it registered
    out = json.loads(r[1]["content"])
    assert out["source"].startswith("proposer(") and out["registered"], r[1]["content"][:2000]
    reg = registry(state)
    entries = {e["id"]: e for e in reg["strategies"]}
    assert sorted(entries) == sorted(out["registered"])
    for eid, e in entries.items():
        assert e["stage"] == "backtested" and e["validation"]["passed"]
        assert e["validation"]["data"]["synthetic"] is True and e["validation"]["strict_gates"] is False
        assert e["provenance"]["source"] == out["source"]
        ev = next(x for x in out["evaluations"] if x["passed"] and x["strategy"] == e["strategy"])
        assert e["params"] == ev["params"]
        assert eid in r[2]["content"]                                 # registry list
    entry = seen["entry"]
    assert entry["id"] in r[3]["content"] and "stage backtested" in r[3]["content"], r[3]["content"]
    assert "SYNTHETIC" in r[3]["content"] and "next: paper: ELIGIBLE" in r[3]["content"], r[3]["content"]

    # the backtest report: HTML (self-contained, offline) and the PNG next to it, for the registered params
    bt = json.loads(r[4]["content"])
    assert bt["strategy"] == entry["strategy"] and bt["params"] == entry["params"] and bt["synthetic"] is True
    html, png = project / "backtest-report.html", project / "backtest-report.png"
    assert html.is_file() and png.is_file(), sorted(os.listdir(project))
    text = html.read_text()
    assert f"Backtest: {entry['strategy']} on BTC/USDT" in text
    assert "<script src=" not in text and "http://" not in text and "https://" not in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # promotion is the user's step: to paper the session has no permission for it, beyond paper (the PIN) the
    # hook refused it before it ran; the registry did not move
    assert r[5]["is_error"] and "requires approval" in r[5]["content"], s1.explain()
    assert r[6]["is_error"] and "HUMAN_ONLY" in r[6]["content"], s1.explain()
    assert registry(state)["strategies"][0]["stage"] == "backtested"
    assert [h["action"] for h in registry(state)["history"]] == ["add"] * len(entries)

    # -- the human promotes to paper in their own terminal (the workflow: "no PIN; the user runs it") --------
    p = human(world, str(Path(sys.executable).parent / "qts"), "promote", entry["id"], "--to", "paper")
    assert p.returncode == 0 and f"{entry['id']} is now paper" in p.stdout, p.stdout + p.stderr
    # promote says the paper loop runs the entry itself (the roster reads the registry: its symbol, its pinned
    # parameters); 8 replayed days so that the entry closes a trade on its one symbol
    assert any("the paper loop runs it on" in x and "qts run" in x for x in p.stdout.splitlines()), p.stdout
    run_args = "--days 8"
    promoted = next(e for e in registry(state)["strategies"] if e["id"] == entry["id"])
    assert promoted["stage"] == "paper" and promoted["params"] == entry["params"]
    assert registry(state)["history"][-1]["action"] == "transition"

    # -- turn 2: /crypto-trader start with the promoted strategy --------------------------------------------
    @steps
    def status_when_the_replay_ends():
        st = wait_for(lambda: (lambda s: s if s.get("state") == "stopped" else None)(loop_status(state)),
                      timeout=90, what="the fallback replay to finish")
        seen["status"] = st
        return f"{Q} status"

    script2 = [bg(f"{Q} run --live-data --or-generated {run_args}", "start the paper loop"),
               status_when_the_replay_ends]
    s2 = run_session(world["claude"], f"/{PLUGIN}:crypto-trader start {run_args}", cwd=project,
                     home=world["home"], script=script2, allowed_tools=None,
                     extra_env={"TMPDIR": world["tmp"]}, timeout=SESSION_TIMEOUT)
    elapsed = time.monotonic() - t0
    steps.check(s2)
    assert s2.result().get("subtype") == "success", s2.explain()
    r2 = s2.tool_results()
    assert len(r2) == 2 and s2.pre_decisions() == [None, None], s2.explain()
    assert s2.model_saw(f"Requested action: `start`")

    # the trader ran the promoted strategy with exactly its registered parameters, every cycle
    st = seen["status"]
    assert st["reason"] == "finished" and st["cycles"] > 100, st
    rows = db_rows(state, "SELECT strategy, json_extract(inputs, '$.params'), COUNT(*), COUNT(DISTINCT cycle_id) "
                          "FROM decisions WHERE mode='paper' GROUP BY 1, 2")
    assert len(rows) == 1, rows
    strategy, params, n, cycles = rows[0]
    assert strategy == entry["strategy"] and json.loads(params) == entry["params"], rows
    n_sym = db_rows(state, "SELECT COUNT(DISTINCT symbol) FROM decisions")[0][0]
    assert cycles == st["cycles"] and n == n_sym * cycles, (cycles, n, n_sym, st)
    assert db_rows(state, "SELECT COUNT(DISTINCT ts) FROM equity_snapshots WHERE mode='paper'")[0][0] == cycles
    orders = db_rows(state, "SELECT DISTINCT strategy FROM orders WHERE reason != 'manual'")
    assert orders in ([], [(entry["strategy"],)]), orders
    assert entry["strategy"] in r2[1]["content"] and "STOPPED" in r2[1]["content"]   # the status table it read
    # the promotion is on record in the events table of the same state home
    assert db_rows(state, "SELECT json_extract(data, '$.to') FROM events WHERE kind='registry' AND "
                          "json_extract(data, '$.entry_id')=?", (entry["id"],)) == [("paper",)]
    # the registry's paper record does not count a replay: the generated market's cycles are timestamped in
    # its own (past) calendar, before the entry reached paper, so 2 replayed days in seconds are neither paper
    # days nor paper trades toward the live ramp (only wall-clock paper, `--live-data`, counts)
    closed = db_rows(state, "SELECT COUNT(*) FROM closed_trades WHERE mode='paper' AND strategy=?",
                     (entry["strategy"],))[0][0]
    assert closed >= 1, "the replay closed no trade: the check below would prove nothing"
    p = human(world, str(Path(sys.executable).parent / "qts"), "registry", "show", entry["id"])
    assert p.returncode == 0 and "stage paper since" in p.stdout, p.stdout + p.stderr
    assert "0 realized paper trades < 5 required" in p.stdout and "0.0 days in paper < 7" in p.stdout, p.stdout
    assert "next: live-ramp (step 1): not yet" in p.stdout, p.stdout
    print(f"\nreplay: {cycles} cycles, {closed} closed {entry['strategy']} trades, none counted by the registry")
    assert elapsed < 170, f"both turns took {elapsed:.0f}s"
