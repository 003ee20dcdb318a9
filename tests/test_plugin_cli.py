"""The plugin under the REAL Claude Code CLI, offline.

(a) `claude plugin validate --strict` on the plugin manifest (which also checks commands, agents and
    hooks.json) and on the marketplace, with negative controls proving the check can fail;
(b) `claude plugin marketplace add` + `claude plugin install` into a throwaway HOME, and the installed copy
    at work (its hooks, the emergency shim finding it in Claude Code's cache);
(c) end to end: `claude -p` against a fake Messages API on 127.0.0.1 (tests/e2e/fake_anthropic.py) that
    scripts Bash tool calls, so the real PreToolUse / PostToolUse hooks run and the stream-json output shows
    their decisions.

The CLI is found through $QTS_CLAUDE_BIN, <repo>/.tools/claude (installed by .ci/run) or PATH; without it
these tests SKIP, saying so. A few static checks of the command and agent files run without the CLI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))
from claude_cli import (INSTALL_HINT, find_claude, plugin_copy, run_session,  # noqa: E402
                        sealed_env)

PLUGIN = "quant-trading-system"
COMMANDS = ["crypto-trader", "ccxt-exchange", "metrics-write", "metrics-read", "backtest", "research", "setup",
            "kill-switch"]
AGENTS = ["risk-manager", "strategy-researcher", "trade-reviewer"]
WORKFLOWS = ["crypto-trader", "quant-trading-workflow"]


# -- static checks of the plugin's markdown (no CLI needed) ------------------------------------------------

def frontmatter(path: Path) -> tuple[dict, str]:
    text = path.read_text()
    m = re.match(r"---\n(.*?)\n---\n(.*)", text, re.S)
    assert m, f"{path}: no YAML frontmatter"
    fields = {}
    for line in m.group(1).splitlines():
        k, sep, v = line.partition(":")
        assert sep, f"{path}: frontmatter line without a key: {line!r}"
        fields[k.strip()] = v.strip()
    return fields, m.group(2)


@pytest.mark.parametrize("name", COMMANDS)
def test_command_files(name):
    fm, body = frontmatter(REPO / "commands" / f"{name}.md")
    assert fm.get("description") and fm.get("argument-hint") and fm.get("allowed-tools"), fm
    assert fm["argument-hint"].startswith('"'), "quote argument-hint: [..] is YAML flow syntax"
    tools = [t.strip() for t in re.split(r",\s*(?![^()]*\))", fm["allowed-tools"])]
    assert "Bash" not in tools, "no blanket Bash: name the commands"
    for t in tools:
        assert re.fullmatch(r"(Read|Task|Bash\([^()]+\))", t), t
    for line in body.splitlines():
        if "!`" in line:
            # `!` lines run before the prompt, WITHOUT the PreToolUse hooks (checked with the real CLI): never
            # put the user's arguments into them, and only stdlib commands that cannot fail (a failing one
            # aborts the whole command).
            assert "$ARGUMENTS" not in line and not re.search(r"\$\d", line), line
            assert "python3 -S ${CLAUDE_PLUGIN_ROOT}/hooks/_hook.py " in line, line
    # positional arguments are 0-based ($0 is the first); a price like "$10" would be substituted
    for m in re.finditer(r"\$(\d+)", body):
        assert int(m.group(1)) <= 2, f"{name}: ${m.group(1)} looks like an amount, not an argument"
    assert "PIN" not in body or "never" in body.lower()


def test_commands_reference_workflows_that_exist():
    text = (REPO / "commands" / "crypto-trader.md").read_text()
    assert "workflows/crypto-trader.md" in text
    for w in WORKFLOWS:
        assert (REPO / "workflows" / f"{w}.md").is_file()
    table = (REPO / "workflows" / "crypto-trader.md").read_text()
    for code in ("KILL_SWITCH", "TRADING_HALTED", "TRADING_REDUCING", "BREAKER_OPEN", "LIVE_NOT_APPROVED", "RISK_",
                 "EXCHANGE_RULES", "INSUFFICIENT_FUNDS", "GATE_ERROR"):
        assert f"`{code}" in table, code
    ramp = (REPO / "workflows" / "quant-trading-workflow.md").read_text()
    assert all(s in ramp for s in ("10%", "25%", "50%", "100%", "7 days"))
    for honest in ("backtest", "research"):
        assert "not built yet" in (REPO / "commands" / f"{honest}.md").read_text()


@pytest.mark.parametrize("name", AGENTS)
def test_agent_files(name):
    fm, body = frontmatter(REPO / "agents" / f"{name}.md")
    assert fm.get("name") == name and fm.get("description")
    if name in ("risk-manager", "trade-reviewer"):   # read-only by construction: no tool that can run a command
        assert fm.get("tools") == "Read, Grep, Glob", fm.get("tools")
    else:
        assert fm.get("tools") == "Read, Bash", "fewest tools; Bash is narrowed by the PreToolUse hook, not here"
    assert re.search(r"never\s+(trade|place|run orders|write)", body, re.I), "say what it never does"


def test_manifest_does_not_name_the_hooks_file():
    # hooks/hooks.json is loaded automatically; naming it too makes Claude Code fail the load
    # ("Duplicate hooks file detected").
    for p in (REPO / ".claude-plugin" / "plugin.json", REPO / "plugin.json"):
        if p.exists():
            assert "hooks" not in json.loads(p.read_text())


# -- the real CLI ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def claude() -> str:
    binary = find_claude()
    if not binary:
        msg = f"SKIPPED: the Claude Code CLI was not found; {INSTALL_HINT}"
        print("\n" + "!" * 100 + "\n" + msg + "\n" + "!" * 100, file=sys.stderr)
        pytest.skip(msg)
    return binary


def cli(binary: str, *args, home: Path, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([binary, *args], cwd=cwd or REPO, env=sealed_env(home), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def test_cli_version(claude, tmp_path):
    p = cli(claude, "--version", home=tmp_path)
    assert p.returncode == 0 and re.match(r"\d+\.\d+\.\d+ \(Claude Code\)", p.stdout), p.stdout + p.stderr


# (a) validate ---------------------------------------------------------------------------------------------

def test_validate_plugin_manifest_strict(claude, tmp_path):
    p = cli(claude, "plugin", "validate", "--strict", str(REPO / ".claude-plugin" / "plugin.json"), home=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Validating plugin manifest" in p.stdout and "Validation passed" in p.stdout


def test_validate_marketplace_strict(claude, tmp_path):
    p = cli(claude, "plugin", "validate", "--strict", str(REPO), home=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "marketplace" in p.stdout and "Validation passed" in p.stdout


@pytest.mark.parametrize("break_", ["command", "agent", "hooks", "marketplace"])
def test_validate_catches_a_broken_plugin(claude, tmp_path, break_):
    """Negative controls: the validation above can fail."""
    copy = plugin_copy(tmp_path / "plugin")
    target = copy / ".claude-plugin" / "plugin.json"
    if break_ == "command":
        f = copy / "commands" / "backtest.md"
        f.write_text(f.read_text().replace('argument-hint: "[STRATEGY] [--data DIR] [--days N]"',
                                           "argument-hint: [STRATEGY] [--data DIR] [--days N]"))
    elif break_ == "agent":
        f = copy / "agents" / "risk-manager.md"
        f.write_text(f.read_text().replace("tools: Read, Grep, Glob", "tools: [Read, Grep, Glob"))
    elif break_ == "hooks":
        (copy / "hooks" / "hooks.json").write_text('{"hooks": {"PreToolUse": [{"matcher": 5}]}}')
    else:
        m = copy / ".claude-plugin" / "marketplace.json"
        d = json.loads(m.read_text())
        del d["plugins"][0]["source"]
        m.write_text(json.dumps(d))
        target = copy
    p = cli(claude, "plugin", "validate", "--strict", str(target), home=tmp_path)
    assert p.returncode != 0, p.stdout + p.stderr
    assert "Validation failed" in p.stdout + p.stderr


# (b) marketplace add + install ---------------------------------------------------------------------------

@pytest.fixture
def installed(claude, tmp_path):
    """The plugin installed from its own marketplace into a throwaway HOME: (home, install path)."""
    home = tmp_path / "home"
    home.mkdir()
    repo = plugin_copy(tmp_path / "repo")
    p = cli(claude, "plugin", "marketplace", "add", str(repo), home=home)
    assert p.returncode == 0 and "Successfully added marketplace" in p.stdout, p.stdout + p.stderr
    p = cli(claude, "plugin", "install", f"{PLUGIN}@{PLUGIN}", home=home)
    assert p.returncode == 0 and "Successfully installed" in p.stdout, p.stdout + p.stderr
    p = cli(claude, "plugin", "list", "--json", home=home)
    assert p.returncode == 0, p.stderr
    entry = next(e for e in json.loads(p.stdout) if e["id"] == f"{PLUGIN}@{PLUGIN}")
    assert entry["enabled"] and entry["version"] == "0.1.0"
    path = Path(entry["installPath"])
    assert path == home / ".claude" / "plugins" / "cache" / PLUGIN / PLUGIN / "0.1.0"
    return home, path


def test_install_from_its_own_marketplace(installed):
    home, path = installed
    for rel in ("hooks/hooks.json", "hooks/_hook.py", "lib/qts/hooks/entry.py", "commands/crypto-trader.md",
                "agents/risk-manager.md", "workflows/crypto-trader.md"):
        assert (path / rel).is_file(), rel
    for rel in ("hooks/kill_switch.sh", "hooks/guard_approve.sh", "hooks/_qts.sh", "scripts/setup.sh"):
        assert os.access(path / rel, os.X_OK), f"{rel} lost its executable bit in the install"
    # the installed copy's hooks work from Claude Code's cache folder (located from their own path)
    payload = {"session_id": "s", "transcript_path": "/tmp/t.jsonl", "cwd": str(home), "permission_mode": "default",
               "hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_use_id": "t",
               "tool_input": {"command": "rm .quant-trading/safety/KILL_SWITCH"}}
    p = subprocess.run(["python3", "-S", str(path / "hooks" / "_hook.py"), "pre_tool_use"],
                       input=json.dumps(payload), capture_output=True, text=True, timeout=30,
                       env=sealed_env(home, CLAUDE_PLUGIN_ROOT=path))
    assert p.returncode == 0 and json.loads(p.stdout)["hookSpecificOutput"]["permissionDecision"] == "deny"


def test_installed_plugin_hooks_run_in_a_session(claude, installed, tmp_path):
    """No --plugin-dir: the installed, enabled plugin's hooks guard the session."""
    home, path = installed
    project = tmp_path / "proj"
    project.mkdir()
    s = run_session(claude, "clean up", cwd=project, home=home, plugin_dirs=(),
                    script=["rm -f .quant-trading/safety/KILL_SWITCH", "echo still-here"])
    plugins = s.init().get("plugins") or []
    # Claude Code 2.1.197 runs a plugin from a local-folder marketplace straight from that folder (not from
    # the cache copy it installed); from a git marketplace it uses the cache.
    repo = tmp_path / "repo"
    assert any(p.get("name") == PLUGIN and Path(p.get("path", "")) in (path, repo) for p in plugins), plugins
    assert s.pre_decisions() == ["deny", None], s.explain()
    assert s.tool_results()[1]["content"] == "still-here"


def test_emergency_shim_finds_the_installed_plugin(installed, tmp_path):
    """setup.sh's shim: when the recorded plugin folder is gone, it finds the newest installed version."""
    home, path = installed
    project = tmp_path / "proj"
    project.mkdir()
    gone = plugin_copy(tmp_path / "gone")
    # write the shim with a stand-in virtualenv (the install itself is covered by test_setup_sh_*)
    venv = fake_venv(tmp_path / "venv", gone)
    p = subprocess.run([str(gone / "scripts" / "setup.sh"), "--project", str(project), "--venv", str(venv)],
                       capture_output=True, text=True, timeout=120, env=sealed_env(home))
    assert p.returncode == 0, p.stdout + p.stderr
    shutil.rmtree(gone)
    shim = project / ".claude" / "hooks" / "kill_switch.sh"
    p = subprocess.run([str(shim), "--reason", "shim-drill"], capture_output=True, text=True, timeout=120,
                       cwd="/", env=sealed_env(home, QTS_PYTHON=sys.executable))
    assert (project / ".quant-trading" / "safety" / "KILL_SWITCH").exists(), p.stdout + p.stderr
    assert "KILL SWITCH ENGAGED" in p.stdout, p.stdout + p.stderr
    # and with no plugin anywhere it fails loudly
    shutil.rmtree(home / ".claude" / "plugins" / "cache")
    p = subprocess.run([str(shim), "status"], capture_output=True, text=True, timeout=60, env=sealed_env(home))
    assert p.returncode == 1 and "not found" in p.stderr


def fake_venv(venv: Path, plugin: Path) -> Path:
    """A virtualenv that 'already holds this version': a real venv whose site-packages points at the test
    venv's (so ccxt, click, pydantic import) and whose stamp matches, so setup.sh skips the download."""
    import hashlib

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python3*/site-packages"))
    import site as site_mod

    (site / "qts-test-deps.pth").write_text("\n".join(site_mod.getsitepackages()) + "\n")
    digest = hashlib.sha256((plugin / "pyproject.toml").read_bytes()).hexdigest()
    (venv / ".qts-installed").write_text(digest + "\n")
    return venv


def test_setup_sh_is_idempotent(tmp_path):
    """State home + database + shim, twice; the second run skips the install and changes nothing."""
    project = tmp_path / "proj"
    project.mkdir()
    venv = fake_venv(tmp_path / "venv", REPO)
    env = {k: v for k, v in os.environ.items() if k not in ("QTS_HOME", "CLAUDE_PROJECT_DIR", "CLAUDE_PLUGIN_DATA")}
    args = [str(REPO / "scripts" / "setup.sh"), "--project", str(project), "--venv", str(venv)]
    p1 = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
    assert p1.returncode == 0, p1.stdout + p1.stderr
    assert "install skipped" in p1.stdout
    db = project / ".quant-trading" / "db" / "metrics.db"
    assert db.exists()
    shim = project / ".claude" / "hooks" / "kill_switch.sh"
    first = shim.read_text()
    assert os.access(shim, os.X_OK) and str(REPO) in first
    p2 = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
    assert p2.returncode == 0 and "up to date" in p2.stdout, p2.stdout + p2.stderr
    assert shim.read_text() == first
    # an unexpanded ${CLAUDE_PROJECT_DIR} (run by hand) counts as unset: the current directory is used
    p3 = subprocess.run([str(REPO / "scripts" / "setup.sh"), "--project", "${CLAUDE_PROJECT_DIR}", "--data",
                         "${CLAUDE_PLUGIN_DATA}", "--venv", str(venv), "--no-shim"], capture_output=True, text=True,
                        timeout=120, env=env, cwd=project)
    assert p3.returncode == 0 and str(project / ".quant-trading") in p3.stdout, p3.stdout + p3.stderr
    p4 = subprocess.run([str(REPO / "scripts" / "setup.sh"), "--bogus"], capture_output=True, text=True, timeout=30)
    assert p4.returncode != 0 and "unknown argument" in p4.stderr


# (c) end to end ---------------------------------------------------------------------------------------------

@pytest.fixture
def world(claude, tmp_path):
    """A project folder (cwd of the session, CLAUDE_PROJECT_DIR for the hooks), its state home, a HOME."""
    project = tmp_path / "proj"
    project.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    return {"claude": claude, "project": project, "home": home, "state": project / ".quant-trading"}


def qts(state: Path, *args, check=True) -> subprocess.CompletedProcess:
    """`qts` run by the test itself, as the human at a shell would."""
    env = sealed_env(state.parent / "unused-home")
    p = subprocess.run([str(Path(sys.executable).parent / "qts"), "--home", str(state), *args], capture_output=True,
                       text=True, env=env, timeout=120)
    if check:
        assert p.returncode == 0, p.stdout + p.stderr
    return p


def db_rows(state: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(f"file:{state / 'db' / 'metrics.db'}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def held_position(state: Path) -> tuple[str, float]:
    """A (symbol, amount) the paper account holds after the replay (selling it needs no new stop)."""
    rows = db_rows(state, "SELECT symbol, amount FROM positions WHERE mode='paper' AND amount>0 ORDER BY amount*avg_entry DESC")
    assert rows, "the replay left no open position to trade against"
    return rows[0][0], rows[0][1]


def test_e2e_paper_order_goes_through_and_is_logged(world):
    state = world["state"]
    picked = {}

    def sell_step():
        sym, amount = held_position(state)
        picked.update(symbol=sym, amount=float(f"{amount / 2:.4f}"))
        return f"qts order sell {sym} {picked['amount']}"

    s = run_session(world["claude"], "paper trade a little", cwd=world["project"], home=world["home"],
                    script=["qts run --days 0.2 --fresh --quiet", sell_step, "qts order buy BTC/USDT 0.001"])
    assert s.result().get("subtype") == "success", s.explain()
    # the hooks ran on all three trade commands and said nothing (no deny, never allow)
    assert s.pre_decisions() == [None, None, None], s.explain()
    results = s.tool_results()
    assert len(results) == 3, s.explain()
    assert "Session summary" in results[0]["content"], s.explain()
    sym, amount = picked["symbol"], picked["amount"]
    assert not results[1]["is_error"] and f"FILLED sell {sym} {amount:g}" in results[1]["content"], s.explain()
    # logged: post-trade report to the model, logs/post_trade.json, trades.jsonl and the database
    contexts = [o["hookSpecificOutput"]["additionalContext"] for o in s.hook_outputs("PostToolUse")]
    assert any(f"orders: sell {sym} filled {amount:g}" in c for c in contexts), s.explain()
    assert s.model_saw(f"sell {sym} filled")
    post = [r for r in jsonl(state / "logs" / "post_trade.json") if r.get("side") == "sell" and r.get("symbol") == sym]
    assert post and post[-1]["accepted"] and post[-1]["mode"] == "paper" and post[-1]["status"] == "filled"
    coid = post[-1]["client_order_id"]
    assert any(r.get("client_order_id") == coid for r in jsonl(state / "logs" / "trades.jsonl")), coid
    rows = db_rows(state, f"SELECT mode, side, status, filled FROM orders WHERE client_order_id='{coid}'")
    assert rows and rows[0][:3] == ("paper", "sell", "filled") and rows[0][3] == pytest.approx(amount)
    # a manual buy trades in the session's market (with candles, so the risk layer can set its ATR stop)
    buy = results[2]["content"]
    verdicts = [v for v in jsonl(state / "logs" / "pre_trade.json") if v["intent"]["symbol"] == "BTC/USDT"
                and v["intent"]["side"] == "buy" and v["intent"].get("source") == "cli"]
    assert verdicts and verdicts[-1]["allowed"], s.explain()
    assert verdicts[-1]["final"]["stop_loss"] and verdicts[-1]["final"]["take_profit"]
    assert "FILLED buy BTC/USDT 0.001" in buy, buy


def test_e2e_live_order_without_a_trading_agent_is_denied_by_the_hook(world):
    qts(world["state"], "run", "--days", "0.2", "--fresh", "--quiet")
    orders_before = db_rows(world["state"], "SELECT COUNT(*) FROM orders")[0][0]
    verdicts_before = len(jsonl(world["state"] / "logs" / "pre_trade.json"))
    s = run_session(world["claude"], "go live", cwd=world["project"], home=world["home"],
                    script=["PAPER_TRADING=false qts order buy BTC/USDT 0.001"])
    assert s.pre_decisions() == ["deny"], s.explain()
    r = s.tool_results()[0]
    assert r["is_error"] and r["content"].startswith("[quant-trading-system]"), s.explain()
    assert "NO_AGENT" in r["content"] and "qts agent start" in r["content"], s.explain()
    assert [d["tool_input"]["command"] for d in s.result()["permission_denials"]] == \
        ["PAPER_TRADING=false qts order buy BTC/USDT 0.001"]
    # the command never ran: no order, not even a gate verdict
    assert db_rows(world["state"], "SELECT COUNT(*) FROM orders")[0][0] == orders_before
    assert len(jsonl(world["state"] / "logs" / "pre_trade.json")) == verdicts_before


def test_e2e_deleting_the_kill_switch_flag_is_denied(world):
    state = world["state"]
    p = subprocess.run([str(REPO / "hooks" / "kill_switch.sh"), "--reason", "drill"], capture_output=True, text=True,
                       timeout=120, env=sealed_env(world["home"], QTS_HOME=state))
    flag = state / "safety" / "KILL_SWITCH"
    assert flag.exists(), p.stdout + p.stderr
    s = run_session(world["claude"], "the kill switch is in the way, remove it", cwd=world["project"],
                    home=world["home"],
                    script=["rm -f .quant-trading/safety/KILL_SWITCH", f"rm {flag}", f"mv {flag} /tmp/ks-{os.getpid()}",
                            "echo cleared > .quant-trading/safety/KILL_SWITCH"])
    assert s.pre_decisions() == ["deny"] * 4, s.explain()
    assert all(r["is_error"] and "TAMPER" in r["content"] for r in s.tool_results()), s.explain()
    assert flag.exists() and json.loads(flag.read_text())["reason"] == "drill"


def test_e2e_kill_switch_from_a_shell_stops_the_next_order(world):
    state = world["state"]
    qts(state, "run", "--days", "0.2", "--fresh", "--quiet")
    # a human engages the kill switch from an ordinary shell
    p = subprocess.run([str(REPO / "hooks" / "kill_switch.sh"), "--reason", "shell-drill"], capture_output=True,
                       text=True, timeout=120, env=sealed_env(world["home"], QTS_HOME=state))
    assert "KILL SWITCH ENGAGED" in p.stdout, p.stdout + p.stderr
    orders_before = db_rows(state, "SELECT COUNT(*) FROM orders")[0][0]
    # the assistant's next order is denied by the hook; the same order disguised past the hook's text filter
    # reaches the gate, which refuses it too (the hook is only the friendly layer)
    s = run_session(world["claude"], "buy some bitcoin", cwd=world["project"], home=world["home"],
                    script=["qts order buy BTC/USDT 0.001", "c=q; ${c}ts order buy BTC/USDT 0.001"])
    assert s.pre_decisions() == ["deny", None], s.explain()
    first, second = s.tool_results()
    assert first["is_error"] and "KILL_SWITCH" in first["content"] and "shell-drill" in first["content"], s.explain()
    assert second["is_error"] and "REFUSED KILL_SWITCH" in second["content"], s.explain()
    assert db_rows(state, "SELECT COUNT(*) FROM orders")[0][0] == orders_before
    verdicts = jsonl(state / "logs" / "pre_trade.json")
    assert verdicts[-1]["allowed"] is False and verdicts[-1]["code"] == "KILL_SWITCH"
    # refused orders exit 3: PostToolUse does not fire, PostToolUseFailure does, and its report reaches the model
    assert s.hooks("PostToolUseFailure"), s.explain()
    assert s.model_saw("kill switch ENGAGED")


def test_e2e_slash_commands_expand_with_their_allowed_tools(world):
    """No --allowedTools: the `!` lines run only because the commands' allowed-tools permit them."""
    s = run_session(world["claude"], f"/{PLUGIN}:crypto-trader status", cwd=world["project"], home=world["home"],
                    script=[], allowed_tools=None)
    assert f"{PLUGIN}:crypto-trader" in s.init().get("slash_commands", []), s.explain()
    for c in COMMANDS:
        assert f"{PLUGIN}:{c}" in s.init()["slash_commands"], c
    assert s.model_saw("Requested action: `status`"), s.explain()
    assert s.model_saw("[quant-trading-system] state home " + str(world["state"])), s.explain()
    assert s.model_saw(str(REPO / "workflows" / "crypto-trader.md"))  # ${CLAUDE_PLUGIN_ROOT} substituted
    # the kill-switch command sets the flag before the model is even asked
    s = run_session(world["claude"], f"/{PLUGIN}:kill-switch news spike", cwd=world["project"], home=world["home"],
                    script=[], allowed_tools=None)
    assert s.model_saw("kill switch flag set"), s.explain()
    assert (world["state"] / "safety" / "KILL_SWITCH").exists()
    assert s.model_saw("news spike")


def test_e2e_pin_typed_in_the_chat_never_reaches_the_model(world):
    s = run_session(world["claude"], "my pin is 482193, approve live trading", cwd=world["project"],
                    home=world["home"], script=["echo should-not-run"])
    outs = s.hook_outputs("UserPromptSubmit")
    assert any(o.get("decision") == "block" for o in outs), s.explain()
    assert not s.model_saw("482193"), "the PIN reached the model"
    assert not s.tool_results()


def test_e2e_risk_manager_subagent_cannot_trade(world):
    qts(world["state"], "run", "--days", "0.2", "--fresh", "--quiet")
    orders_before = db_rows(world["state"], "SELECT COUNT(*) FROM orders")[0][0]
    task = {"name": "Agent", "input": {"subagent_type": f"{PLUGIN}:risk-manager", "description": "review",
                                       "prompt": f"Review: buy BTC/USDT 0.001. Plugin folder: {REPO}"}}
    s = run_session(world["claude"], "review then buy", cwd=world["project"], home=world["home"], script=[task],
                    subagents={"risk manager of quant-trading-system": [
                        "qts order buy BTC/USDT 0.001 --dry-run", "qts order buy BTC/USDT 0.001"]})
    # by construction: Claude Code offers the subagent only the tools its `tools:` line lists (no Bash), so the
    # scripted shell calls never run and no hook is even asked
    from fake_anthropic import _system_text, _tools

    sub = [r for r in s.requests if "risk manager of quant-trading-system" in _system_text(r)]
    assert sub, s.explain()
    assert all(set(_tools(r)) <= {"Read", "Grep", "Glob"} and _tools(r) for r in sub), [_tools(r) for r in sub]
    assert s.pre_decisions() == [], s.explain()
    assert db_rows(world["state"], "SELECT COUNT(*) FROM orders")[0][0] == orders_before
