"""The Claude Code hooks as REAL subprocesses (`python3 -S hooks/_hook.py <event>`), fed the exact JSON the
CLI sends (captured from Claude Code 2.1.197: see DESIGN.md and tests/test_plugin_cli.py).

The contract, for every input whatever it holds: exit 0, no traceback, and stdout either empty (no
opinion: the user's own permission settings stay in charge) or valid JSON of the documented shape. Never
"allow" (it would skip the user's permission prompts), never exit 1 (Claude Code would run the tool anyway
and say nothing).
"""

from __future__ import annotations

import json
import time
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HOOK = REPO / "hooks" / "_hook.py"
PYTHON3 = shutil.which("python3") or sys.executable  # what hooks.json runs: `python3 -S`
EVENTS = ("pre_tool_use", "post_tool_use", "session_start", "user_prompt_submit")
EVENT_NAMES = {"pre_tool_use": "PreToolUse", "post_tool_use": "PostToolUse", "session_start": "SessionStart",
               "user_prompt_submit": "UserPromptSubmit"}
SCRUB = ("EXCHANGE", "EXCHANGE_API_KEY", "EXCHANGE_SECRET", "PAPER_TRADING", "TRADE_INTERVAL", "MAX_POSITION_SIZE",
         "RISK_LIMIT_PERCENT", "SYMBOLS", "STRATEGY", "INITIAL_CASH", "FEE_BPS", "SLIPPAGE_BPS", "QTS_HOME",
         "CLAUDE_PROJECT_DIR", "CLAUDE_PLUGIN_ROOT", "CLAUDE_PLUGIN_DATA", "QTS_PYTHON", "PYTHONPATH")


# -- helpers -------------------------------------------------------------------------------------------

def hook_env(home: Path | None = None, project: Path | None = None, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in SCRUB}
    env["CLAUDE_PLUGIN_ROOT"] = str(REPO)  # Claude Code sets it for hooks
    if home is not None:
        env["QTS_HOME"] = str(home)
    if project is not None:
        env["CLAUDE_PROJECT_DIR"] = str(project)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_hook(event: str, payload, env: dict, hook: Path = HOOK, timeout: float = 30) -> subprocess.CompletedProcess:
    if isinstance(payload, (dict, list)):
        data = json.dumps(payload).encode()
    elif isinstance(payload, str):
        data = payload.encode("utf-8", "surrogatepass")
    else:
        data = payload
    return subprocess.run([PYTHON3, "-S", str(hook), event], input=data, capture_output=True, env=env,
                          timeout=timeout, cwd=env.get("CLAUDE_PROJECT_DIR") or REPO)


def answer(event: str, proc: subprocess.CompletedProcess):
    """Check the protocol contract; return the parsed JSON answer, or None for 'no output'."""
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 0, f"{event} exited {proc.returncode}: {err[-2000:]}"
    assert "Traceback" not in err, err[-2000:]
    out = proc.stdout.decode("utf-8")
    if not out.strip():
        return None
    obj = json.loads(out)
    assert isinstance(obj, dict), out
    name = EVENT_NAMES[event]
    if event == "user_prompt_submit":
        assert obj.get("decision") == "block" and isinstance(obj.get("reason"), str) and obj["reason"], obj
        return obj
    hso = obj.get("hookSpecificOutput")
    assert isinstance(hso, dict), obj
    if event == "pre_tool_use":
        assert hso.get("hookEventName") == name
        assert hso.get("permissionDecision") in ("deny", "ask"), obj  # never "allow"
        assert isinstance(hso.get("permissionDecisionReason"), str) and hso["permissionDecisionReason"]
    else:
        assert hso.get("hookEventName") in ((name, "PostToolUseFailure") if event == "post_tool_use" else (name,))
        assert isinstance(hso.get("additionalContext"), str) and hso["additionalContext"]
    assert "allow" != hso.get("permissionDecision")
    return obj


def decision(obj) -> str | None:
    return None if obj is None else obj["hookSpecificOutput"].get("permissionDecision")


def reason(obj) -> str:
    return obj["hookSpecificOutput"]["permissionDecisionReason"]


# The exact shapes Claude Code 2.1.197 sends (captured with a dump hook; ids shortened).
BASE = {"session_id": "5c7c9720-0b76-426f-b187-af2f6e526d92",
        "transcript_path": "/tmp/claudehome/.claude/projects/-tmp-proj/5c7c9720-0b76-426f-b187-af2f6e526d92.jsonl",
        "cwd": "/tmp/proj", "prompt_id": "72b6aa10-8553-491b-aa45-344c0a6dd852", "permission_mode": "default",
        "effort": {"level": "high"}}


def pre_bash(cmd: str, **extra) -> dict:
    return {**BASE, "hook_event_name": "PreToolUse", "tool_name": "Bash",
            "tool_input": {"command": cmd, "description": "run it"}, "tool_use_id": "toolu_01ABC", **extra}


def pre_edit(tool: str, path: str) -> dict:
    tin = {"file_path": path, "content": "x"} if tool == "Write" else \
        {"file_path": path, "old_string": "a", "new_string": "b", "replace_all": False}
    return {**BASE, "hook_event_name": "PreToolUse", "tool_name": tool, "tool_input": tin, "tool_use_id": "toolu_02"}


def post_bash(cmd: str, stdout: str = "", failure: bool = False, tool_use_id: str = "toolu_01ABC") -> dict:
    if failure:
        return {**BASE, "hook_event_name": "PostToolUseFailure", "tool_name": "Bash",
                "tool_input": {"command": cmd, "description": "run it"}, "tool_use_id": tool_use_id,
                "error": "Exit code 3\n" + stdout, "is_interrupt": False, "duration_ms": 308}
    return {**BASE, "hook_event_name": "PostToolUse", "tool_name": "Bash",
            "tool_input": {"command": cmd, "description": "run it"},
            "tool_response": {"stdout": stdout, "stderr": "", "interrupted": False, "isImage": False,
                              "noOutputExpected": False},
            "tool_use_id": tool_use_id, "duration_ms": 26}


def prompt(text: str) -> dict:
    return {**BASE, "hook_event_name": "UserPromptSubmit", "prompt": text}


SESSION_START = {k: BASE[k] for k in ("session_id", "transcript_path", "cwd")} | \
    {"hook_event_name": "SessionStart", "source": "startup"}

GOOD = {"pre_tool_use": pre_bash("ls -la"), "post_tool_use": post_bash("ls -la", "README.md"),
        "session_start": SESSION_START, "user_prompt_submit": prompt("run the tests please")}


@pytest.fixture
def home(tmp_path) -> Path:
    h = tmp_path / "state"
    for d in ("logs", "db", "run", "safety"):
        (h / d).mkdir(parents=True)
    return h


@pytest.fixture
def env(home, tmp_path) -> dict:
    (tmp_path / "tmp").mkdir()
    return hook_env(home, TMPDIR=tmp_path / "tmp")  # PreToolUse's marks for PostToolUse stay in this test


def engage_flag(home: Path, why: str = "test") -> Path:
    flag = home / "safety" / "KILL_SWITCH"
    flag.write_text(json.dumps({"ts": 1, "reason": why, "pid": 1}))
    return flag


def qts(home: Path, *args, check=True, extra_env=None, timeout=120) -> subprocess.CompletedProcess:
    env = hook_env(home, **(extra_env or {}))
    env.pop("CLAUDE_PLUGIN_ROOT")
    p = subprocess.run([sys.executable, "-c", "import sys; sys.argv[0]='qts'; from qts.cli import main; main()",
                        "--home", str(home), *args], capture_output=True, text=True, env=env, timeout=timeout)
    if check:
        assert p.returncode == 0, p.stdout + p.stderr
    return p


# -- every event, the exact JSON ---------------------------------------------------------------------

@pytest.mark.parametrize("event", EVENTS)
def test_every_event_with_the_exact_json(event, env):
    obj = answer(event, run_hook(event, GOOD[event], env))
    if event in ("pre_tool_use", "post_tool_use", "user_prompt_submit"):
        assert obj is None  # ordinary: no opinion
    else:
        assert "kill switch clear" in obj["hookSpecificOutput"]["additionalContext"]


def test_post_tool_use_failure_event_answers_with_its_own_name(env, home):
    obj = answer("post_tool_use", run_hook("post_tool_use", post_bash("qts order buy BTC/USDT 0.01",
                                                                       "REFUSED X", failure=True), env))
    assert obj["hookSpecificOutput"]["hookEventName"] == "PostToolUseFailure"
    assert "no orders placed" in obj["hookSpecificOutput"]["additionalContext"]


def test_subagent_bash_calls_carry_agent_type(env):
    # Plugin hooks fire for subagents' Bash calls too, with agent_id / agent_type.
    p = pre_bash("ls", agent_id="a1f69f670154fbf36", agent_type="quant-trading-system:strategy-researcher")
    assert answer("pre_tool_use", run_hook("pre_tool_use", p, env)) is None


# -- bad input: always exit 0, never a traceback, never allow -------------------------------------------

HUGE_CMD = "echo " + "A" * 1_100_000
BAD_INPUTS = {
    "empty": b"",
    "whitespace": b"  \n",
    "truncated": b'{"tool_name": "Bash", "tool_input": {"command": "ls"',
    "not_json": b"hello there",
    "array": b"[1, 2, 3]",
    "null": b"null",
    "number": b"42",
    "string": b'"Bash"',
    "empty_object": b"{}",
    "no_tool_input": json.dumps({**BASE, "hook_event_name": "PreToolUse", "tool_name": "Bash"}).encode(),
    "tool_input_string": json.dumps({**BASE, "tool_name": "Bash", "tool_input": "rm -rf /"}).encode(),
    "command_list": json.dumps({**BASE, "tool_name": "Bash", "tool_input": {"command": ["ls", "-la"]}}).encode(),
    "command_null": json.dumps({**BASE, "tool_name": "Bash", "tool_input": {"command": None}}).encode(),
    "file_path_number": json.dumps({**BASE, "tool_name": "Write", "tool_input": {"file_path": 7}}).encode(),
    "prompt_number": json.dumps({**BASE, "hook_event_name": "UserPromptSubmit", "prompt": 482193}).encode(),
    "huge_valid_json": json.dumps(pre_bash(HUGE_CMD)).encode(),
    "huge_garbage": b"\xff" * 3_000_000,
    "nul_bytes_raw": b'{"tool_name": "Bash", "tool_input": {"command": "ls\x00 -la"}}',
    "nul_escaped": json.dumps(pre_bash("ls\u0000; rm x")).encode(),
    "invalid_utf8": b'{"tool_name": "Bash", "tool_input": {"command": "ls \xff\xfe"}}',
    "lone_surrogate": b'{"tool_name": "Bash", "tool_input": {"command": "echo \\ud800"}, "prompt": "\\udfff"}',
    "odd_unicode": json.dumps(pre_bash("echo \u202e\u200b\ufeff \U0001F680 \u0300 \uffff"),
                              ensure_ascii=False).encode("utf-8"),
    "deep_nesting": b'{"tool_input": ' * 5000 + b"1" + b"}" * 5000,
    "bom_prefixed": b"\xef\xbb\xbf" + json.dumps(pre_bash("ls")).encode(),
}


@pytest.mark.parametrize("event", EVENTS)
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_never_crashes(event, case, env):
    answer(event, run_hook(event, BAD_INPUTS[case], env))


@pytest.mark.parametrize("case", ["empty", "truncated", "not_json", "array", "null", "tool_input_string",
                                  "command_list", "command_null", "huge_valid_json", "huge_garbage",
                                  "nul_bytes_raw", "deep_nesting"])
def test_unreadable_pre_tool_use_fails_closed(case, env):
    """PreToolUse cannot tell what an unreadable request would do: it denies (it never fails open)."""
    assert decision(answer("pre_tool_use", run_hook("pre_tool_use", BAD_INPUTS[case], env))) == "deny"


def test_pre_tool_use_denies_when_the_library_cannot_load(tmp_path, env):
    """A broken install (lib/ missing) is still an explicit deny on stdout with exit 0, not a crash."""
    broken = tmp_path / "plugin" / "hooks"
    broken.mkdir(parents=True)
    shutil.copy(HOOK, broken / "_hook.py")
    obj = answer("pre_tool_use", run_hook("pre_tool_use", pre_bash("ls"), env, hook=broken / "_hook.py"))
    assert decision(obj) == "deny" and "setup" in reason(obj)
    for ev in ("post_tool_use", "session_start", "user_prompt_submit"):
        assert answer(ev, run_hook(ev, GOOD[ev], env, hook=broken / "_hook.py")) is None
    p = subprocess.run([PYTHON3, "-S", str(broken / "_hook.py"), "summary"], capture_output=True, text=True,
                       env=env, timeout=30)
    assert p.returncode == 0 and "unavailable" in p.stdout and "Traceback" not in p.stderr


def test_unknown_event_is_silent(env):
    p = run_hook("no_such_event", GOOD["pre_tool_use"], env)
    assert p.returncode == 0 and p.stdout == b"" and b"Traceback" not in p.stderr


# -- ordinary commands: no output at all (never "allow") ------------------------------------------------

ORDINARY = ["ls", "ls -la", "git status", "git diff HEAD~1", "pytest -q", "python -m pytest tests/test_hooks.py",
            "cat README.md", "grep -rn TODO lib/", "python script.py", "python3 script.py --days 3", "npm test",
            "make test", "echo hello", "cd lib && ls", "head -n 5 pyproject.toml", "qts status", "qts config",
            "qts market ticker BTC/USDT", "qts metrics read pnl", "qts order --help", "qts kill-switch status",
            "qts breaker status", "hooks/pre_trade.sh buy BTC/USDT 0.01", "sqlite3 -readonly .quant-trading/db/"
            "metrics.db 'SELECT * FROM orders'", "cat .quant-trading/logs/trades.jsonl", "find . -name '*.py'",
            "docker ps", "pip list", "export FOO=bar", "settings.py", "git log --oneline -5",
            "qts promote sma_cross-1a2b --to paper", "qts registry list"]


@pytest.mark.parametrize("cmd", ORDINARY)
def test_ordinary_commands_produce_no_output(cmd, env):
    p = run_hook("pre_tool_use", pre_bash(cmd), env)
    assert answer("pre_tool_use", p) is None, p.stdout
    assert p.stdout == b""


def test_ordinary_commands_stay_silent_with_the_kill_switch_engaged(env, home):
    engage_flag(home)
    for cmd in ("ls", "git status", "qts status", "qts kill-switch status"):
        assert answer("pre_tool_use", run_hook("pre_tool_use", pre_bash(cmd), env)) is None


# -- tamper cases: denied --------------------------------------------------------------------------------

TAMPER = [
    "rm .quant-trading/safety/KILL_SWITCH",
    "rm -f \"$QTS_HOME/safety/KILL_SWITCH\"",
    "mv .quant-trading/safety/KILL_SWITCH /tmp/ks",
    "truncate -s 0 .quant-trading/safety/KILL_SWITCH",
    "echo '' > .quant-trading/safety/KILL_SWITCH",
    "echo '{\"state\":\"closed\"}' >> .quant-trading/logs/circuit_breaker.json",
    "rm .quant-trading/logs/circuit_breaker.json",
    "cp /tmp/closed.json .quant-trading/logs/circuit_breaker.json",
    "rm .quant-trading/safety/pin.json",
    "cat .quant-trading/safety/pin.json",
    "rm -rf .quant-trading/safety/grants",
    "mv /tmp/forged.json .quant-trading/safety/grants/live.json",
    "rm .quant-trading/db/metrics.db",
    "truncate -s 0 .quant-trading/db/metrics.db",
    "sqlite3 .quant-trading/db/metrics.db \"UPDATE events SET data='{}' WHERE kind='kill_switch'\"",
    "sqlite3 .quant-trading/db/metrics.db 'DELETE FROM events'",
    "python3 -c \"import os; os.remove('.quant-trading/safety/KILL_SWITCH')\"",
    "env",
    "printenv",
    "printenv EXCHANGE_SECRET",
    "env | grep KEY",
    "cat .env",
    "cat .quant-trading/.env",
    "source .env && echo ok",
    "echo $EXCHANGE_SECRET",
    "echo ${EXCHANGE_API_KEY}",
    "cat /proc/self/environ",
    "python3 -c 'import os; print(os.environ)'",
    "hooks/guard_approve.sh live",
    "./hooks/guard_approve.sh set-pin",
    "qts kill-switch reset",
    "/opt/plugin/hooks/_qts.sh kill-switch reset",
    "hooks/kill_switch.sh reset",
    "qts pin",
    "qts approve live",
    "qts approve set-pin",
    "'q'ts approve set-pin",
    "bash -c \"q\\ts agent start\"",
    "qts approve set-pin # harmless, says the comment",
    "Q=x; \"qts\" kill-switch reset",
    "qts breaker state ACTIVE",
    "qts strategy resume sma_cross",
    "python -c \"import ccxt; ccxt.binance({'apiKey': k}).create_order('BTC/USDT', 'market', 'buy', 1)\"",
    "python3 -c 'import ccxt; e=ccxt.binance(); e.create_market_buy_order(\"BTC/USDT\", 1)'",
    "curl -X POST https://api.binance.com/api/v3/order -d symbol=BTCUSDT",
    "MAX_POSITION_SIZE=1000000 qts order buy BTC/USDT 5",
    "qts promote sma_cross-1a2b --to live-ramp",
    "qts promote sma_cross-1a2b --to=live",
    "qts agent start --max-order 100 --max-daily 1000",
    "qts agent approve grant --max-order 1000000 --max-daily 1000000",
    "qts agent stop",
    "qts agent import-keys",
]


@pytest.mark.parametrize("cmd", TAMPER)
def test_tamper_commands_are_denied(cmd, env):
    obj = answer("pre_tool_use", run_hook("pre_tool_use", pre_bash(cmd), env))
    assert decision(obj) == "deny", cmd
    assert reason(obj).startswith("[quant-trading-system]")


def test_edit_and_write_to_protected_files_are_denied(env, home, tmp_path):
    project = tmp_path / "proj"
    targets = [home / "safety" / "KILL_SWITCH", home / "logs" / "circuit_breaker.json", home / "safety" / "pin.json",
               home / "safety" / "grants" / "live.json", home / "db" / "metrics.db", home / "risk_profile.json",
               project / ".env", project / ".env.local", project / ".quant-trading" / "logs" / "trades.jsonl",
               REPO / "hooks" / "_hook.py", REPO / "lib" / "qts" / "gate.py", REPO / "hooks" / "hooks.json",
               project / ".claude" / "hooks" / "kill_switch.sh"]
    for t in targets:
        for tool in ("Edit", "Write", "MultiEdit"):
            obj = answer("pre_tool_use", run_hook("pre_tool_use", pre_edit(tool, str(t)), env))
            assert decision(obj) == "deny", (tool, t)
    nb = {**BASE, "tool_name": "NotebookEdit", "tool_input": {"notebook_path": str(home / "db" / "x.ipynb")}}
    assert decision(answer("pre_tool_use", run_hook("pre_tool_use", nb, env))) == "deny"


def test_edit_of_ordinary_files_is_silent(env, tmp_path):
    for tool in ("Edit", "Write"):
        for path in (tmp_path / "proj" / "src" / "strategy.py", tmp_path / "proj" / "README.md"):
            assert answer("pre_tool_use", run_hook("pre_tool_use", pre_edit(tool, str(path)), env)) is None


# -- trade commands and the kill switch ----------------------------------------------------------------

TRADE = ["qts order buy BTC/USDT 0.01", "qts run", "qts once", "qts --home /tmp/x order sell ETH/USDT 1",
         ".venv/bin/qts order buy BTC/USDT 0.01 --limit 60000", "python3 -m qts order buy BTC/USDT 0.01",
         "/opt/plugin/hooks/_qts.sh order buy BTC/USDT 0.01", "/opt/plugin/hooks/_qts.sh run --live-data"]


@pytest.mark.parametrize("cmd", TRADE)
def test_trade_commands_silent_when_clear_and_denied_with_the_kill_switch(cmd, env, home):
    assert answer("pre_tool_use", run_hook("pre_tool_use", pre_bash(cmd), env)) is None
    engage_flag(home, "drill")
    obj = answer("pre_tool_use", run_hook("pre_tool_use", pre_bash(cmd), env))
    assert decision(obj) == "deny" and "KILL_SWITCH" in reason(obj) and "drill" in reason(obj)


def test_kill_switch_found_through_claude_project_dir(tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    env = hook_env(project=project)
    assert answer("pre_tool_use", run_hook("pre_tool_use", pre_bash("qts order buy BTC/USDT 0.01"), env)) is None
    (project / ".quant-trading" / "safety").mkdir(parents=True)
    engage_flag(project / ".quant-trading")
    obj = answer("pre_tool_use", run_hook("pre_tool_use", pre_bash("qts order buy BTC/USDT 0.01"), env))
    assert decision(obj) == "deny" and "KILL_SWITCH" in reason(obj)


def test_kill_switch_of_a_home_named_in_the_command(env, tmp_path):
    other = tmp_path / "other"
    (other / "safety").mkdir(parents=True)
    engage_flag(other, "other-home")
    for cmd in (f"qts --home {other} order buy BTC/USDT 0.01", f"QTS_HOME={other} qts run",
                f"cd {tmp_path} && qts --home=other once"):
        pl = pre_bash(cmd)
        pl["cwd"] = str(tmp_path)
        obj = answer("pre_tool_use", run_hook("pre_tool_use", pl, env))
        assert decision(obj) == "deny" and "other-home" in reason(obj), cmd


def test_garbage_kill_flag_still_counts_as_engaged(env, home):
    (home / "safety" / "KILL_SWITCH").write_bytes(b"\x00\xffnot json")
    obj = answer("pre_tool_use", run_hook("pre_tool_use", pre_bash("qts order buy BTC/USDT 0.01"), env))
    assert decision(obj) == "deny" and "KILL_SWITCH" in reason(obj)


def test_deleted_flag_still_engaged_through_the_database(env, home):
    """Fail safe: the kill switch recorded in the database holds even after its flag file is gone."""
    qts(home, "db", "migrate")
    qts(home, "kill-switch", "engage", "--reason", "db-drill", check=False)
    flag = home / "safety" / "KILL_SWITCH"
    assert flag.exists()
    flag.unlink()
    obj = answer("pre_tool_use", run_hook("pre_tool_use", pre_bash("qts order buy BTC/USDT 0.01"), env))
    # (the per-user anchor holds it too, and names the missing flag)
    assert decision(obj) == "deny" and "KILL_SWITCH" in reason(obj) and "flag file" in reason(obj)
    assert "database" in reason(obj) or "anchor" in reason(obj)


def _agent_status(home: Path, env: dict, **policy) -> None:
    """What a running agent's status file says (outside the project, where the agent writes it)."""
    from qts.agent.paths import AgentPaths

    paths = AgentPaths.for_home(home, env=env)
    paths.state.mkdir(parents=True, exist_ok=True)
    pol = {"kill_switch": False, "trading_state": "ACTIVE", "grant": None, **policy}
    paths.status_file.write_text(json.dumps({"state": "running", "heartbeat": time.time(), "policy": pol}))


def test_live_orders_are_denied_early_unless_a_trading_agent_would_take_them(env, home):
    for cmd in ("PAPER_TRADING=false qts order buy BTC/USDT 0.001", "qts order buy BTC/USDT 0.001 --live"):
        obj = answer("pre_tool_use", run_hook("pre_tool_use", pre_bash(cmd), env))
        assert decision(obj) == "deny", cmd
        assert "NO_AGENT" in reason(obj) and "qts agent start" in reason(obj)
    env_live = dict(env, PAPER_TRADING="false")
    obj = answer("pre_tool_use", run_hook("pre_tool_use", pre_bash("qts order buy BTC/USDT 0.001"), env_live))
    assert decision(obj) == "deny"
    _agent_status(home, env)                                           # running, no grant
    obj = answer("pre_tool_use", run_hook("pre_tool_use", pre_bash("qts order buy BTC/USDT 0.001"), env_live))
    assert decision(obj) == "deny" and "LIVE_NOT_APPROVED" in reason(obj)
    _agent_status(home, env, trading_state="HALTED", state_reason="drill")
    obj = answer("pre_tool_use", run_hook("pre_tool_use", pre_bash("qts order buy BTC/USDT 0.001"), env_live))
    assert decision(obj) == "deny" and "TRADING_HALTED" in reason(obj)
    _agent_status(home, env, grant={"expires_ts": (time.time() + 3600) * 1000})
    obj = answer("pre_tool_use", run_hook("pre_tool_use", pre_bash("qts order buy BTC/USDT 0.001"), env_live))
    assert obj is None  # no opinion: the agent decides (and the user's own permission settings stay in charge)


def test_halted_trading_state_denies_orders(env, home):
    (home / "logs" / "circuit_breaker.json").write_text(
        json.dumps({"state": "open", "trading_state": "HALTED", "reason": "drill", "since_ts": 1}) + "\n")
    obj = answer("pre_tool_use", run_hook("pre_tool_use", pre_bash("qts order buy BTC/USDT 0.01"), env))
    assert decision(obj) == "deny" and "TRADING_HALTED" in reason(obj)


@pytest.mark.parametrize("cmd", ["qts order buy BTC/USDT 0.01", "qts order buy BTC/USDT 0.01 --dry-run",
                                 "qts order buy BTC/USDT 0.01 # --dry-run", "'qts' order buy BTC/USDT 0.01",
                                 "q''ts once", "\"qts\" run --days 1", "bash -c 'q\\ts order sell ETH/USDT 1'"])
def test_read_only_subagents_cannot_trade(cmd, env):
    """No pattern to slip past: any trade-class command from these agents is refused, --dry-run or not (a
    flag in a comment or a quoted command name once placed a paper order from the risk manager)."""
    for agent in ("quant-trading-system:risk-manager", "quant-trading-system:trade-reviewer"):
        obj = answer("pre_tool_use", run_hook("pre_tool_use", pre_bash(cmd, agent_id="a1", agent_type=agent), env))
        assert decision(obj) == "deny" and "AGENT_READ_ONLY" in reason(obj), (agent, cmd)
    main = pre_bash(cmd)
    assert answer("pre_tool_use", run_hook("pre_tool_use", main, env)) is None


def test_read_only_agents_have_no_tool_that_can_trade():
    """By construction: their `tools:` allowlist holds only file readers (Claude Code gives them nothing else)."""
    for name in ("risk-manager", "trade-reviewer"):
        front = (REPO / "agents" / f"{name}.md").read_text().split("---")[1]
        tools = [line.split(":", 1)[1] for line in front.splitlines() if line.startswith("tools:")]
        assert len(tools) == 1, name
        assert {t.strip() for t in tools[0].split(",")} <= {"Read", "Grep", "Glob"}, (name, tools)


# -- PostToolUse and SessionStart report the state -----------------------------------------------------

def test_post_tool_use_reports_a_paper_fill(env, home):
    qts(home, "run", "--days", "0.2", "--fresh", "--quiet")  # prices, and positions the replay left open
    pos = json.loads(qts(home, "status", "--json").stdout)["positions"]
    assert pos, "the replay left no open position"
    sym, amount = pos[0]["symbol"], float(f"{pos[0]['amount'] / 2:.4f}")
    cmd = f"qts order sell {sym} {amount}"
    before = (home / "logs" / "post_trade.json").read_text() if (home / "logs" / "post_trade.json").exists() else ""
    # PreToolUse marks where the post-trade log stood; PostToolUse of the same tool call reports what came after
    assert answer("pre_tool_use", run_hook("pre_tool_use", pre_bash(cmd), env)) is None
    p = qts(home, "order", "sell", sym, str(amount), check=False)
    assert p.returncode == 0, f"paper order refused: {p.stdout}{p.stderr}"
    obj = answer("post_tool_use", run_hook("post_tool_use", post_bash(cmd, p.stdout), env))
    ctx = obj["hookSpecificOutput"]["additionalContext"]
    assert f"orders: sell {sym} filled {amount:g}" in ctx and "equity" in ctx and "kill switch clear" in ctx
    assert ctx.count(" filled ") == 1, f"only this command's order, not the loop's earlier ones: {ctx} / {before}"
    # an ordinary command gets no report
    assert answer("post_tool_use", run_hook("post_tool_use", post_bash("ls"), env)) is None


def test_post_tool_use_reports_only_what_this_command_did(env, home):
    log = home / "logs" / "post_trade.json"
    old = {"logged_at": 0, "accepted": True, "side": "sell", "symbol": "ETH/USDT", "status": "filled", "filled": 1.0}
    log.write_text(json.dumps(old) + "\n")
    cmd = "qts once"
    assert answer("pre_tool_use", run_hook("pre_tool_use", pre_bash(cmd), env)) is None
    new = dict(old, side="buy", symbol="SOL/USDT", logged_at=2)
    with log.open("a") as fh:
        fh.write(json.dumps(new) + "\n")
    ctx = answer("post_tool_use", run_hook("post_tool_use", post_bash(cmd), env))["hookSpecificOutput"]["additionalContext"]
    assert "buy SOL/USDT filled" in ctx and "ETH/USDT" not in ctx
    # the mark is used once: a second report of the same call falls back to the time window (nothing recent)
    ctx = answer("post_tool_use", run_hook("post_tool_use", post_bash(cmd), env))["hookSpecificOutput"]["additionalContext"]
    assert "no orders placed" in ctx


def test_session_start_reports_an_engaged_kill_switch(env, home):
    engage_flag(home, "weekend")
    obj = answer("session_start", run_hook("session_start", SESSION_START, env))
    assert "kill switch ENGAGED: weekend" in obj["hookSpecificOutput"]["additionalContext"]


def test_summary_and_kill_flag_for_commands(env, home):
    p = subprocess.run([PYTHON3, "-S", str(HOOK), "summary", "/nonexistent"], capture_output=True, text=True,
                       env=env, timeout=30)
    assert p.returncode == 0 and str(home) in p.stdout and "kill switch clear" in p.stdout
    p = subprocess.run([PYTHON3, "-S", str(HOOK), "kill_flag", "--reason", "slash"], capture_output=True,
                       text=True, env=env, timeout=30)
    assert p.returncode == 0 and "flag set" in p.stdout
    assert json.loads((home / "safety" / "KILL_SWITCH").read_text())["reason"] == "slash"


# -- UserPromptSubmit: a PIN in the chat is blocked -------------------------------------------------------

PIN_PROMPTS = ["my pin is 482193", "My PIN: 482193, go live", "pin=482193", "here is the passcode 90817263",
               "/quant-trading-system:crypto-trader approve 482193", "unlock 4821930", "approve live with 482193",
               "PIN 4821 then trade"]
PLAIN_PROMPTS = ["run the tests", "what is the BTC price?", "buy 0.01 BTC in paper mode",
                 "/quant-trading-system:crypto-trader status", "set the trade interval to 15 minutes",
                 "my order id is 482193", "how do I set a PIN?", "pin the numpy version", "show the last 20 trades",
                 "", "🚀 \u202e odd text"]


@pytest.mark.parametrize("text", PIN_PROMPTS)
def test_prompt_with_a_pin_is_blocked(text, env):
    obj = answer("user_prompt_submit", run_hook("user_prompt_submit", prompt(text), env))
    assert obj is not None and obj["decision"] == "block"
    assert "change it" in obj["reason"] and "transcript" in obj["reason"]
    assert "482193" not in obj["reason"]  # never echo it back


@pytest.mark.parametrize("text", PLAIN_PROMPTS)
def test_ordinary_prompts_pass_silently(text, env):
    p = run_hook("user_prompt_submit", prompt(text), env)
    assert answer("user_prompt_submit", p) is None and p.stdout == b""


def test_the_actual_pin_is_blocked_even_without_the_word_pin(env, home):
    code = ("import sys; from qts.paths import StateHome; from qts.safety.pin import set_pin; "
            "set_pin(StateHome(__import__('pathlib').Path(sys.argv[1])), sys.argv[2], scrypt_n=2**10)")
    subprocess.run([sys.executable, "-c", code, str(home), "k7Qx93vB"], check=True, capture_output=True,
                   env=hook_env(), timeout=60)
    obj = answer("user_prompt_submit", run_hook("user_prompt_submit", prompt("ok go: k7Qx93vB"), env))
    assert obj["decision"] == "block" and "contains your PIN" in obj["reason"]
    assert answer("user_prompt_submit", run_hook("user_prompt_submit", prompt("ok go: k7Qx93vC"), env)) is None


# -- the shell tools ------------------------------------------------------------------------------------

SH_TOOLS = ["hooks/pre_trade.sh", "hooks/post_trade.sh", "hooks/circuit_breaker.sh", "hooks/guard_approve.sh",
            "hooks/kill_switch.sh", "hooks/_qts.sh", "scripts/setup.sh"]


@pytest.mark.parametrize("tool", SH_TOOLS)
def test_shell_tools_help(tool, tmp_path):
    env = hook_env(tmp_path / "state")
    env.pop("CLAUDE_PLUGIN_ROOT")
    env["QTS_PYTHON"] = sys.executable
    path = REPO / tool
    assert os.access(path, os.X_OK), f"{tool} is not executable"
    p = subprocess.run([str(path), "--help"], capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "usage" in p.stdout.lower() or tool.split("/")[-1].removesuffix(".sh").lstrip("_") in p.stdout
    assert len(p.stdout.strip().splitlines()) >= 2
    assert not (tmp_path / "state").exists(), "--help must not create the state home"


def test_hook_scripts_pass_through_to_hook_events(env):
    for script, flag, payload, event in (("pre_trade.sh", "--hook", pre_bash("rm .quant-trading/safety/KILL_SWITCH"),
                                          "pre_tool_use"),
                                         ("post_trade.sh", "--session-start", SESSION_START, "session_start"),
                                         ("post_trade.sh", "--prompt-guard", prompt("my pin is 482193"),
                                          "user_prompt_submit")):
        p = subprocess.run([str(REPO / "hooks" / script), flag], input=json.dumps(payload).encode(),
                           capture_output=True, env=env, timeout=30)
        obj = answer(event, p)
        assert obj is not None, script


def test_hooks_json_runs_every_event_with_python3_dash_s():
    cfg = json.loads((REPO / "hooks" / "hooks.json").read_text())["hooks"]
    assert set(cfg) >= {"PreToolUse", "PostToolUse", "PostToolUseFailure", "SessionStart", "UserPromptSubmit"}
    for event, groups in cfg.items():
        for g in groups:
            for h in g["hooks"]:
                assert h["command"].startswith('python3 -S "${CLAUDE_PLUGIN_ROOT}/hooks/_hook.py" '), h
                assert h["timeout"] <= 30
    matcher = cfg["PreToolUse"][0]["matcher"].split("|")
    # every tool that runs a command or reads or writes files (Claude Code 2.1's tool names; LS, NotebookRead
    # and MultiEdit for older versions)
    assert set(matcher) >= {"Bash", "Monitor", "Edit", "Write", "MultiEdit", "NotebookEdit", "Read", "NotebookRead",
                            "Grep", "Glob", "LS"}, matcher


# -- read-only and risk-reducing commands pass; the CLI itself guards loosening ----------------------------

PASSING = ["qts approve status", "qts approve status --json", "qts approve revoke", "qts risk set max_positions=3",
           "qts risk show", "qts agent status", "qts agent halt", "qts agent revoke", "qts breaker state HALTED",
           "qts breaker trip --reason news", "qts kill-switch engage --reason news", "qts stop"]


@pytest.mark.parametrize("cmd", PASSING)
def test_read_only_and_risk_reducing_commands_pass(cmd, env):
    assert answer("pre_tool_use", run_hook("pre_tool_use", pre_bash(cmd), env)) is None


def test_risk_set_is_safe_to_let_through_without_a_terminal(home):
    """Why the hook lets `qts risk set` pass: tightening needs nothing, and loosening asks for the PIN on
    /dev/tty, which the assistant's commands do not have (start_new_session: no controlling terminal)."""
    def run(*args):
        env = hook_env(home)
        env.pop("CLAUDE_PLUGIN_ROOT")
        return subprocess.run([sys.executable, "-c", "import sys; sys.argv[0]='qts'; from qts.cli import main; main()",
                               "--home", str(home), *args], capture_output=True, text=True, env=env, timeout=120,
                              stdin=subprocess.DEVNULL, start_new_session=True)

    p = run("risk", "set", "max_positions=3")
    assert p.returncode == 0, p.stdout + p.stderr
    shown = lambda: json.loads(run("risk", "show", "--json").stdout)["profile"]["max_positions"]  # noqa: E731
    assert shown() == 3
    p = run("risk", "set", "max_positions=50")              # loosening: the PIN, from a terminal
    assert p.returncode != 0 and "terminal" in (p.stdout + p.stderr).lower(), p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    assert shown() == 3


# -- a hard time budget for any input ------------------------------------------------------------------------

# prefixes that made the old patterns quadratic (timed on the old classify: '>' * 5,000 took 3 s,
# 'python3 -m qts ' * 5,000 took 12 s); repeated to 1 MB they would have run for hours
ADVERSARIAL = ["qts ", ">", "cat ", "python3 -m qts ", "qts --home x ", "sed -x ", "/proc/", "cp ", "open(", "$(",
               "`", "\"", "'", "\\", "<<EOF\n", "( ", "bash -c '", "a=b ", "sudo ", "approve "]


@pytest.mark.parametrize("unit", ADVERSARIAL)
def test_a_one_megabyte_command_is_refused_as_too_long(unit, env):
    cmd = (unit * (1_000_000 // len(unit) + 1))[:1_000_000]
    obj = answer("pre_tool_use", run_hook("pre_tool_use", pre_bash(cmd), env, timeout=20))
    assert decision(obj) == "deny" and "TOO_LONG" in reason(obj) and "1,000,000" in reason(obj)


@pytest.mark.parametrize("unit", ADVERSARIAL)
def test_commands_just_under_the_cap_are_still_read(unit):
    """Below the cap the command is parsed (linear time) and judged: a deny hidden at the end is found."""
    from qts.hooks import classify

    filler = (unit * (90_000 // len(unit) + 1))[:90_000]
    tail = "\n; rm .quant-trading/safety/KILL_SWITCH\n"
    v = classify.classify_command(filler + tail, "/opt/plugin", "/tmp/proj")
    if unit in ("'", "\"", "<<EOF\n", "bash -c '"):    # an unterminated quote swallows the rest: text checks still see it
        assert v.kind == classify.DENY, v
    elif unit == "open(":                                 # 18,000 commands: more than the hook follows
        assert v.kind == classify.DENY and v.reason == "TOO_COMPLEX", v
    else:
        assert v.kind == classify.DENY and v.reason == "TAMPER", v


def test_too_complex_is_a_deny_with_that_reason():
    from qts.hooks import classify

    cmd = "qts order buy BTC/USDT 1"
    for _ in range(6):   # echo "$(echo \"$(...)\")": each level a quoted command substitution
        cmd = 'echo "$(' + cmd.replace("\\", "\\\\").replace('"', '\\"') + ')"'
    v = classify.classify_command(cmd)
    assert v.kind == classify.DENY and v.reason == "TOO_COMPLEX" and "nested" in v.detail, v
    v = classify.classify_command("true;" * 6000)
    assert v.kind == classify.DENY and v.reason == "TOO_COMPLEX"


# -- the file tools: reads of secrets, writes by resolved path ------------------------------------------------

def _tool(tool: str, cwd: str, **tin) -> dict:
    return {**BASE, "cwd": cwd, "hook_event_name": "PreToolUse", "tool_name": tool, "tool_input": tin,
            "tool_use_id": "toolu_03"}


@pytest.fixture
def world(tmp_path, home):
    """A project with a .env, a user HOME whose key store holds a PIN record, and links that hide both."""
    user = tmp_path / "user"
    project = tmp_path / "proj"
    (project / ".claude" / "hooks").mkdir(parents=True)
    (project / ".claude" / "hooks" / "kill_switch.sh").write_text("#!/bin/sh\n")
    (project / ".env").write_text("EXCHANGE_SECRET=s3cr3t\n")
    (project / "src").mkdir()
    keys = user / ".config" / "quant-trading-system" / "keys" / "abc123"
    keys.mkdir(parents=True)
    (keys / "pin.json").write_text("{}")
    (project / "innocent").symlink_to(keys / "pin.json")
    (project / "docs").symlink_to(REPO / "hooks")
    (project / "shim").symlink_to(project / ".claude" / "hooks")
    env = hook_env(home, HOME=user, TMPDIR=tmp_path)
    for k in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR"):
        env.pop(k, None)
    return {"env": env, "project": project, "keys": keys, "user": user}


READ_DENIED = [("Read", {"file_path": ".env"}), ("Read", {"file_path": "src/../.env.local"}),
               ("Read", {"file_path": "innocent"}), ("Read", {"file_path": "{keys}/pin.json"}),
               ("Read", {"file_path": "/proc/self/environ"}), ("NotebookRead", {"notebook_path": "{keys}/x.ipynb"}),
               ("LS", {"path": "{keys}"}), ("Grep", {"pattern": "verifier", "path": "{keys}"}),
               ("Grep", {"pattern": "KEY", "glob": ".env*"}), ("Grep", {"pattern": "EXCHANGE_SECRET"}),
               ("Grep", {"pattern": "x", "path": "{user}/.config"}), ("Glob", {"pattern": "**/.env"}),
               ("Glob", {"pattern": "*.json", "path": "{keys}"}), ("Glob", {"pattern": "{user}/.config/**/pin.json"})]
READ_ALLOWED = [("Read", {"file_path": "src/strategy.py"}), ("Read", {"file_path": ".env.example"}),
                ("Read", {"file_path": str(REPO / "README.md")}), ("Grep", {"pattern": "def main", "path": "src"}),
                ("Grep", {"pattern": "api_key", "glob": "*.py"}), ("Glob", {"pattern": "**/*.py"}),
                ("LS", {"path": "src"}), ("Read", {"file_path": "{user}/.config/other-app/settings.json"})]


def _fill(tin: dict, world) -> dict:
    return {k: v.format(keys=world["keys"], user=world["user"]) for k, v in tin.items()}


@pytest.mark.parametrize("tool, tin", READ_DENIED)
def test_reading_secrets_is_refused_for_every_file_tool(tool, tin, world):
    obj = answer("pre_tool_use", run_hook("pre_tool_use", _tool(tool, str(world["project"]), **_fill(tin, world)),
                                          world["env"]))
    assert decision(obj) == "deny" and "SECRET" in reason(obj), (tool, tin)


@pytest.mark.parametrize("tool, tin", READ_ALLOWED)
def test_ordinary_reads_stay_silent(tool, tin, world):
    p = run_hook("pre_tool_use", _tool(tool, str(world["project"]), **_fill(tin, world)), world["env"])
    assert answer("pre_tool_use", p) is None and p.stdout == b""


WRITE_DENIED = ["docs/_hook.py", "docs/../hooks/hooks.json", "shim/kill_switch.sh", "./.claude/hooks/kill_switch.sh",
                "src/../../proj/.claude/hooks/kill_switch.sh", "{keys}/pin.json", str(REPO / "lib" / "qts" / "gate.py")]


@pytest.mark.parametrize("path", WRITE_DENIED)
def test_edits_are_judged_by_resolved_path(path, world):
    for tool in ("Edit", "Write", "MultiEdit"):
        pl = pre_edit(tool, path.format(keys=world["keys"]))
        pl["cwd"] = str(world["project"])
        obj = answer("pre_tool_use", run_hook("pre_tool_use", pl, world["env"]))
        assert decision(obj) == "deny", (tool, path)


BASH_WRITE_DENIED = ["echo x > docs/_hook.py", "tee -a docs/hooks.json < /dev/null", "cp /tmp/evil.sh shim/kill_switch.sh",
                     "ln -sf /tmp/evil .claude/hooks/kill_switch.sh", "rm -rf .claude", "cd docs && rm _hook.py",
                     "cd src; sed -i s/deny/allow/ ../docs/_hook.py", "mv /tmp/x src/../shim/kill_switch.sh",
                     "printf x >> ./docs/../docs/pre_trade.sh", "dd if=/dev/zero of=docs/_qts.sh",
                     "rm -rf {user}/.config/quant-trading-system"]
BASH_WRITE_ALLOWED = ["cp docs/_hook.py /tmp/copy.py", "cat docs/hooks.json > /tmp/h.json", "echo hi > src/notes.txt",
                      "rm -rf build dist", "cd src && touch a.py", "ls -la .claude/hooks"]


@pytest.mark.parametrize("cmd", BASH_WRITE_DENIED)
def test_bash_writes_into_the_plugin_or_the_shim_are_refused_by_resolved_path(cmd, world):
    pl = pre_bash(cmd.format(user=world["user"]))
    pl["cwd"] = str(world["project"])
    obj = answer("pre_tool_use", run_hook("pre_tool_use", pl, world["env"]))
    assert decision(obj) == "deny", cmd


@pytest.mark.parametrize("cmd", BASH_WRITE_ALLOWED)
def test_bash_reads_of_the_plugin_and_ordinary_writes_pass(cmd, world):
    pl = pre_bash(cmd)
    pl["cwd"] = str(world["project"])
    assert answer("pre_tool_use", run_hook("pre_tool_use", pl, world["env"])) is None, cmd


def test_monitor_tool_commands_are_guarded_like_bash(env):
    mon = {**BASE, "hook_event_name": "PreToolUse", "tool_name": "Monitor", "tool_use_id": "toolu_04",
           "tool_input": {"description": "watch", "timeout_ms": 1000, "persistent": False, "command": "env"}}
    assert decision(answer("pre_tool_use", run_hook("pre_tool_use", mon, env))) == "deny"
    mon["tool_input"]["command"] = "tail -f .quant-trading/logs/trades.jsonl"
    assert answer("pre_tool_use", run_hook("pre_tool_use", mon, env)) is None


# -- the prompt guard: hashes only words that could be the PIN -----------------------------------------------

def _numbers_prompt(words: int = 300, numbers: int = 20) -> str:
    nums = ["65000", "0.01", "2024-05-01", "63,500.50", "1.5%", "3x", "14:30", "-2.4%", "10", "1e-3"]
    text = ("please review the last session and tell me whether the breaker tripped too often and what the "
            "stop losses cost us compared with holding ").split()
    out = []
    for i in range(words - numbers):
        out.append(text[i % len(text)])
    for i in range(numbers):
        out.insert((i * 13) % len(out), nums[i % len(nums)])
    return " ".join(out)


@pytest.fixture
def pin_home(home, monkeypatch):
    from qts.paths import StateHome
    from qts.safety import pin as pinmod

    sh = StateHome(home)
    pinmod.set_pin(sh, "k7Qx93vB", scrypt_n=2 ** 10)
    from qts.safety import pin_kdf

    calls = []
    real = pin_kdf.derive
    monkeypatch.setattr(pin_kdf, "derive", lambda *a, **k: (calls.append(a[0]), real(*a, **k))[1])
    monkeypatch.setenv("QTS_HOME", str(home))
    return sh, calls


def test_a_number_heavy_prompt_runs_no_scrypt(pin_home):
    from qts.hooks import entry

    _, calls = pin_home
    text = _numbers_prompt()
    assert len(text.split()) == 300 and sum(any(c.isdigit() for c in w) for w in text.split()) == 20
    assert entry.user_prompt_submit(json.dumps(prompt(text))) == (0, "", "")
    assert calls == []
    entry.user_prompt_submit(json.dumps(prompt("buy 0.01 BTC at 65000 on 2024-05-01 with python3 and sha256")))
    assert calls == []


def test_a_leaked_pin_at_the_end_of_a_long_prompt_is_blocked(pin_home):
    from qts.hooks import entry

    _, calls = pin_home
    for tail in ("ok go: k7Qx93vB", "and then 'k7Qx93vB'.", "pin=k7Qx93vB!"):
        code, out, _ = entry.user_prompt_submit(json.dumps(prompt(_numbers_prompt() + " " + tail)))
        assert code == 0 and json.loads(out)["decision"] == "block" and "k7Qx93vB" not in out, tail
    assert 0 < len(calls) <= 3 * 4          # each PIN-like word costs at most a few full scrypts
    calls.clear()
    code, out, _ = entry.user_prompt_submit(json.dumps(prompt(_numbers_prompt() + " ok go: k7Qx93vC")))
    assert out == "" and len(calls) == 1    # one candidate, one full scrypt, no match


def test_legacy_records_keep_the_bounded_check(pin_home):
    """A record written before the rule marker (maybe an all-digit PIN) is checked the old way: up to four
    number-like words, each a full scrypt; SessionStart suggests changing the PIN."""
    from qts.hooks import entry
    from qts.safety import pin as pinmod

    sh, calls = pin_home
    rec = pinmod._build_record("482193", pinmod.SigningKey.generate(), 2 ** 10, "created", 1_700_000_000_000)
    del rec["pin_rules"]
    pinmod.pin_path(sh).write_text(json.dumps(rec))
    calls.clear()
    assert entry.user_prompt_submit(json.dumps(prompt(_numbers_prompt()))) == (0, "", "")
    assert len(calls) == 4
    code, out, _ = entry.user_prompt_submit(json.dumps(prompt("order id 482193 please")))
    assert json.loads(out)["decision"] == "block"
    ctx = json.loads(entry.session_start(json.dumps(SESSION_START))[1])
    assert "older rules" in ctx["systemMessage"] and "qts approve set-pin" in ctx["systemMessage"]


@pytest.mark.parametrize("tool, tin", [("Read", {"file_path": 7}), ("Grep", {"pattern": ["x"]}),
                                       ("Glob", {"pattern": "*", "path": {"a": 1}}), ("Read", "not an object")])
def test_unreadable_file_tool_requests_fail_closed(tool, tin, env):
    pl = {**BASE, "hook_event_name": "PreToolUse", "tool_name": tool, "tool_input": tin, "tool_use_id": "toolu_05"}
    obj = answer("pre_tool_use", run_hook("pre_tool_use", pl, env))
    assert decision(obj) == "deny" and "could not read" in reason(obj)
