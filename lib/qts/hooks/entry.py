"""The Claude Code hook events, each a function from the hook's stdin text to (exit code, stdout, stderr).

Protocol facts (checked against the real CLI, see DESIGN.md): exit 0 + JSON is read; exit 2 blocks
with stderr to the model; ANY other outcome (exit 1, crash, timeout) lets the tool run. So every
function here catches everything and decides explicitly; on trade paths an error is a deny.
"""

from __future__ import annotations

import json
import os
import re
import time

from . import classify, probe

MAX_INPUT = 8_000_000   # _hook.py reads at most this much: a 1 MB command even when JSON escapes every character
READ_ONLY_AGENTS = ("risk-manager", "trade-reviewer")  # subagents (agent_type in the hook input) that never trade


def _deny(reason: str) -> tuple[int, str, str]:
    out = {"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "deny",
                                  "permissionDecisionReason": reason}}
    return 0, json.dumps(out), ""


def _context(event: str, text: str) -> tuple[int, str, str]:
    return 0, json.dumps({"hookSpecificOutput": {"hookEventName": event, "additionalContext": text}}), ""


SILENT = (0, "", "")


def _parse(stdin_text: str) -> dict:
    if len(stdin_text) > MAX_INPUT:
        raise ValueError(f"hook input larger than {MAX_INPUT} bytes")
    data = json.loads(stdin_text)
    if not isinstance(data, dict):
        raise ValueError("hook input is not a JSON object")
    return data


def plugin_root() -> str:
    from ..paths import plugin_root as pr

    return os.environ.get("CLAUDE_PLUGIN_ROOT") or str(pr())


EDIT_TOOLS = ("Edit", "Write", "MultiEdit", "NotebookEdit")
READ_TOOLS = ("Read", "NotebookRead", "LS", "Grep", "Glob")
SHELL_TOOLS = ("Bash", "Monitor")   # Monitor runs a shell command too (its `command` field)


def protected_places(home, env) -> classify.Protected:
    """What no session may write (the plugin, the state home, the agent's and the key store's folders)."""
    from ..agent.paths import config_root, runtime_root, state_root

    cfg = config_root(env)
    return classify.Protected(plugin_root=plugin_root(), state_home=str(home.root),
                              keystore_root=str(cfg / "keys"),
                              outside_roots=[str(cfg), str(state_root(env)), str(runtime_root(env))])


def _text(tin: dict, name: str) -> str:
    v = tin.get(name)
    if v is not None and not isinstance(v, str):
        raise ValueError(f"tool_input.{name} is not text")
    return v or ""


def pre_tool_use(stdin_text: str, env=None) -> tuple[int, str, str]:
    env = os.environ if env is None else env
    try:
        data = _parse(stdin_text)
        tool = data.get("tool_name")
        tin = data.get("tool_input") or {}
        if not isinstance(tin, dict):
            raise ValueError("tool_input is not an object")
        cwd = data.get("cwd") if isinstance(data.get("cwd"), str) and data.get("cwd") else None
        if tool not in SHELL_TOOLS + EDIT_TOOLS + READ_TOOLS:
            return SILENT
        home = probe.state_home(env)
        prot = protected_places(home, env)
        if tool in SHELL_TOOLS:
            cmd = tin.get("command")
            if tool == "Monitor" and cmd is None:
                return SILENT   # a WebSocket watch: no command runs
            if not isinstance(cmd, str):
                raise ValueError("tool_input.command missing")
            v = classify.classify_command(cmd, prot.plugin_root, cwd, prot)
            if v.kind == classify.DENY:
                return _deny(f"[quant-trading-system] refused ({v.reason}): {v.detail}")
            if v.kind == classify.TRADE:
                agent = str(data.get("agent_type") or "").rsplit(":", 1)[-1]
                if agent in READ_ONLY_AGENTS:
                    # second line behind the agents' own tool lists (no Bash): no trade-class command at all,
                    # --dry-run or not (a flag in a comment or a quoted name once placed an order from here)
                    return _deny(f"[quant-trading-system] refused (AGENT_READ_ONLY): the {agent} subagent reviews; "
                                 "it never places orders or starts the loop. Ask the main session to run "
                                 "`hooks/pre_trade.sh buy|sell SYMBOL AMOUNT` for a verdict.")
                verdict = pre_trade_verdict(cmd, home, env, cwd)
                if verdict == SILENT:
                    _write_mark(data, home)
                return verdict
            return SILENT
        if tool in EDIT_TOOLS:
            path = _text(tin, "file_path") or _text(tin, "notebook_path")
            v = classify.classify_edit(path, str(home.root), prot.plugin_root, cwd, prot)
        else:
            v = classify.classify_read(tool, tin, cwd, prot)
        if v.kind == classify.DENY:
            return _deny(f"[quant-trading-system] refused ({v.reason}): {v.detail}")
        return SILENT
    except Exception as e:  # fail closed: we cannot tell what this would do
        return _deny(f"[quant-trading-system] refused: the safety hook could not read this request "
                     f"({e.__class__.__name__}: {str(e)[:200]}); nothing was run")


def _mark_path(data: dict) -> str | None:
    """Where PreToolUse leaves the post-trade log's size for the PostToolUse of the same tool call."""
    sid = re.sub(r"[^\w.-]", "_", str(data.get("session_id") or ""))[:80]
    tid = re.sub(r"[^\w.-]", "_", str(data.get("tool_use_id") or ""))[:80]
    if not sid or not tid:
        return None
    import tempfile

    return os.path.join(tempfile.gettempdir(), f"qts-hook-{sid}-{tid}.mark")


def _write_mark(data: dict, home) -> None:
    try:
        path = _mark_path(data)
        if path:  # never follow a symlink planted at that name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(str(probe.post_trade_size(home)))
    except OSError:
        pass  # the report falls back to a time window


def _read_mark(data: dict) -> int | None:
    path = _mark_path(data)
    if not path:
        return None
    try:
        with open(path) as fh:
            offset = int(fh.read().strip())
        os.unlink(path)
        return offset
    except (OSError, ValueError):
        return None


def _homes_named_in(cmd: str, cwd: str | None) -> list:
    """State homes a command names itself (`--home DIR`, `QTS_HOME=DIR`): checked as well as the session's."""
    from ..paths import StateHome

    out = []
    for _, raw in re.findall(r"(?:--home[ =]|\bQTS_HOME=)(['\"]?)([^\s'\";&|]+)\1", cmd)[:4]:
        p = os.path.expanduser(raw)
        if "$" in p:
            continue
        out.append(StateHome.resolve(os.path.join(cwd or os.getcwd(), p)))
    return out


def pre_trade_verdict(cmd: str, home, env, cwd: str | None = None) -> tuple[int, str, str]:
    """Fast early answer for trade commands; the gate inside the command re-checks everything."""
    try:
        for h in [home] + _homes_named_in(cmd, cwd):
            verdict = _verdict_for_home(cmd, h, env)
            if verdict != SILENT:
                return verdict
        return SILENT
    except Exception as e:
        return _deny(f"[quant-trading-system] refused: pre-trade check failed ({e.__class__.__name__}: {e})")


def _verdict_for_home(cmd: str, home, env) -> tuple[int, str, str]:
    engaged, why = probe.kill_switch(home)
    if engaged and not re.search(r"kill-switch(?!\s+reset)", cmd):
        return _deny(f"[quant-trading-system] KILL_SWITCH engaged ({why}): no orders until a human resets it "
                     "with the PIN in their own terminal (qts kill-switch reset).")
    b = probe.breaker(home)
    if b["trading_state"] == "HALTED":
        return _deny(f"[quant-trading-system] TRADING_HALTED ({b.get('reason')}): no new orders.")
    wants_live = (re.search(r"PAPER_TRADING=(?:false|0|no|off)\b", cmd, re.I)
                  or str(env.get("PAPER_TRADING", "true")).strip().lower() in ("false", "0", "no", "off")
                  or re.search(r"\s--live(?![\w-])", cmd))  # not --live-data (public prices, paper)
    if wants_live:
        # live orders are intents for the trading agent: say early what it would say
        alive, st = probe.agent(home)
        if not alive:
            return _deny("[quant-trading-system] NO_AGENT: live orders are placed only by the trading agent, and "
                         "none is running for this project. The human starts it in their own terminal with the "
                         "PIN (`qts agent start`); never ask for the PIN here.")
        pol = (st or {}).get("policy") or {}
        if pol.get("kill_switch"):
            return _deny(f"[quant-trading-system] KILL_SWITCH engaged in the trading agent ({pol.get('kill_reason')})")
        if pol.get("trading_state") == "HALTED":
            return _deny(f"[quant-trading-system] TRADING_HALTED in the trading agent ({pol.get('state_reason')})")
        g = pol.get("grant") or {}
        if not g or g.get("expires_ts", 0) <= time.time() * 1000:
            return _deny("[quant-trading-system] LIVE_NOT_APPROVED: the trading agent has no live grant; the human "
                         "approves with the PIN in their own terminal (`qts agent approve grant ...`).")
    return SILENT


def post_tool_use(stdin_text: str, env=None) -> tuple[int, str, str]:
    env = os.environ if env is None else env
    try:
        data = _parse(stdin_text)
        # PostToolUseFailure (the command exited non-zero, e.g. a refused order: exit 3) gets the same report
        event = data.get("hook_event_name") if data.get("hook_event_name") == "PostToolUseFailure" else "PostToolUse"
        if data.get("tool_name") != "Bash":
            return SILENT
        tin = data.get("tool_input")
        cmd = (tin.get("command") if isinstance(tin, dict) else "") or ""
        if not isinstance(cmd, str):
            return SILENT
        if classify.classify_command(cmd, plugin_root()).kind != classify.TRADE:
            return SILENT
        home = probe.state_home(env)
        offset = _read_mark(data)
        if offset is not None:  # exactly what this command appended
            recs = probe.post_trades_from(home, offset)
        else:  # no mark (e.g. the hook was run by hand): the command's own time window
            recs = probe.last_post_trades(home, time.time() - float(data.get("duration_ms") or 0) / 1000 - 1.0)
        lines = []
        for r in recs[-10:]:
            if r.get("accepted"):
                lines.append(f"{r.get('side')} {r.get('symbol')} {r.get('status')} {r.get('filled', 0):.6g}"
                             + (f" @ {r['avg_price']:.2f}" if r.get("avg_price") else ""))
            else:
                lines.append(f"{r.get('side')} {r.get('symbol')} REFUSED {r.get('reason_code')}: {r.get('message')}")
        pf = probe.portfolio(home)
        pnl = ""
        if pf.get("equity") is not None:
            pnl = (f"equity {pf['equity']:.2f}, unrealized P&L {pf.get('unrealized_pnl') or 0:.2f}, "
                   f"realized P&L {pf.get('realized_pnl') or 0:.2f}")
        ctx = "[quant-trading-system] " + ("orders: " + "; ".join(lines) + ". " if lines else "no orders placed. ") \
            + (pnl + ". " if pnl else "") + probe.summary_line(home)
        return _context(event, ctx)
    except Exception as e:
        return _context("PostToolUse", f"[quant-trading-system] post-trade report unavailable ({e.__class__.__name__}); "
                                       "check `qts status` before trading further.")


def session_start(stdin_text: str, env=None) -> tuple[int, str, str]:
    env = os.environ if env is None else env
    try:
        home = probe.state_home(env)
        text = ("[quant-trading-system] " + probe.summary_line(home)
                + ". Orders go only through `qts order` / the loop (the gate). PINs are typed by the human "
                  "in their own terminal, never in this chat.")
    except Exception as e:
        text = (f"[quant-trading-system] trading state unavailable ({e.__class__.__name__}); "
                "treat trading as halted until `qts status` works.")
    warnings = _session_warnings(stdin_text, env)  # never raises
    if not warnings:
        return _context("SessionStart", text)
    out = {"hookSpecificOutput": {"hookEventName": "SessionStart",
                                  "additionalContext": text + "\n\n" + "\n\n".join(w for w, _ in warnings)},
           "systemMessage": "\n".join(short for _, short in warnings)}  # shown to the user
    return 0, json.dumps(out), ""


FALSE_WORDS = ("false", "0", "no", "off")


def _session_project(stdin_text: str, env) -> str:
    """The project Claude Code runs in: CLAUDE_PROJECT_DIR (set for hooks), else the input's cwd."""
    p = env.get("CLAUDE_PROJECT_DIR") or ""
    if not p:
        try:
            data = _parse(stdin_text)
            p = data.get("cwd") if isinstance(data.get("cwd"), str) else ""
        except Exception:
            p = ""
    return os.path.abspath(p or os.getcwd())


def _live_configured(env, home, paths) -> str:
    """Why this project looks set up for live trading ("" when it does not)."""
    if str(env.get("PAPER_TRADING", "")).strip().lower() in FALSE_WORDS:
        return "PAPER_TRADING=false in the environment"
    from ..agent.secrets_check import read_env_file

    if str(read_env_file(home.env_file).get("PAPER_TRADING", "")).strip().lower() in FALSE_WORDS:
        return f"PAPER_TRADING=false in {home.env_file}"
    if paths.state.is_dir():
        return f"the trading agent keeps state for this project ({paths.state})"
    return ""


def _session_warnings(stdin_text: str, env) -> list[tuple[str, str]]:
    """(model context, user message) pairs: missing confinement when live trading is configured, and exchange
    secrets the assistant can see. Names and paths only, never a secret's value. Never raises."""
    out: list[tuple[str, str]] = []
    tag = "[quant-trading-system]"
    try:
        from ..agent.paths import AgentPaths

        home = probe.state_home(env)
        project = _session_project(stdin_text, env)
        paths = AgentPaths.for_home(home.root, env)
    except Exception as e:
        return [(f"{tag} could not check the sandbox confinement or visible secrets ({e.__class__.__name__}).",
                 f"{tag} confinement and secrets check unavailable ({e.__class__.__name__})")]
    try:
        why = _live_configured(env, home, paths)
        if why:
            from ..agent.confinement import check

            rep = check(project, paths, env)
            if not rep.ok:
                items = rep.problems + rep.missing
                listed = "; ".join(items[:12]) + (f"; and {len(items) - 12} more" if len(items) > 12 else "")
                fix = ("Write the settings with `qts agent confine --write` (in a terminal, or "
                       "/quant-trading-system:setup, which offers to write them), then restart Claude Code; "
                       "anything set in another settings file must be changed there by hand.")
                out.append((f"{tag} WARNING: live trading is configured ({why}) but Claude Code's sandbox does not "
                            f"confine this assistant as live trading requires. Missing: {listed}. {fix} Until then, "
                            "going live needs the human's PIN-signed acknowledgement of running unconfined.",
                            f"{tag} Live trading is configured but this session is NOT confined by Claude Code's "
                            f"sandbox ({len(items)} setting(s) missing, e.g. {items[0]}). {fix} Without it, going "
                            "live needs your PIN-signed acknowledgement of running unconfined."))
    except Exception as e:
        out.append((f"{tag} could not check the sandbox confinement ({e.__class__.__name__}); treat this session as "
                    "NOT confined.", f"{tag} confinement check failed ({e.__class__.__name__}): treat the session as "
                                     "not confined"))
    try:
        from ..safety.pin import PIN_RULES, record_rules

        rules = record_rules(home) if paths.pin_record.exists() else None
        if rules is not None and rules < PIN_RULES:
            advice = ("The PIN was set under older rules (it may be all digits), so the prompt guard can check only "
                      "the first few number-like words of a prompt for it. Change it in your own terminal with "
                      "`qts approve set-pin` (a letter and a digit, e.g. 'blue-7-harbor').")
            out.append((f"{tag} {advice}", f"{tag} {advice}"))
    except Exception:
        pass  # advice only
    try:
        from ..agent.secrets_check import visible_secrets

        where = visible_secrets(env, project, home.root)
        if where:
            listed = "; ".join(where[:10]) + (f"; and {len(where) - 10} more" if len(where) > 10 else "")
            move = ("Move them into the encrypted key store: the human types `qts agent import-keys` in their own "
                    "terminal (not in this chat), then removes them from the environment and from those .env files.")
            out.append((f"{tag} WARNING: exchange credentials are visible to this assistant: {listed}. Do not read, "
                        f"print or copy them. {move}",
                        f"{tag} Exchange credentials are visible to the assistant: {listed}. {move}"))
    except Exception as e:
        out.append((f"{tag} could not check for visible exchange secrets ({e.__class__.__name__}).",
                    f"{tag} secrets check failed ({e.__class__.__name__})"))
    return out


def python_env(plugin_data: str = "", env=None) -> str:
    """The Python that hooks/_qts.sh would use, or "" when only a bare python3 is left (same lookup order)."""
    env = os.environ if env is None else env
    data = plugin_data or env.get("CLAUDE_PLUGIN_DATA") or ""
    for c in (env.get("QTS_PYTHON") or "", os.path.join(data, "venv", "bin", "python") if data else "",
              os.path.join(plugin_root(), ".venv", "bin", "python")):
        if c and os.access(c, os.X_OK):
            return c
    return ""


def summary_text(plugin_data: str = "", env=None) -> str:
    """One plain line for a slash command's context: state home, trading state, loop, Python environment."""
    env = os.environ if env is None else env
    home = probe.state_home(env)
    loop = "loop not started"
    try:
        st = json.loads(home.status_file.read_text())
        loop = f"loop last recorded as {st.get('state', 'unknown')}" + (f" (pid {st['pid']})" if st.get("pid") else "")
    except (OSError, ValueError, AttributeError):
        pass
    py = python_env(plugin_data, env)
    envline = (f"Python environment ready ({py})" if py else
               "Python environment NOT set up: run /quant-trading-system:setup before any qts command")
    return (f"[quant-trading-system] state home {home.root}; " + probe.summary_line(home) + f"; {loop}; {envline}")


# "my pin is 4821 93", "PIN: 123456", "/quant-trading-system:approve 123456", "unlock 998877"
# (every repeat is bounded or cannot overlap the next part: linear on any prompt)
PIN_TALK = re.compile(r"(?:\b(?:pin|passcode|pass\s*code|passphrase)\b[^\n\d]{0,30}\d{4,12}(?!\d)"
                      r"|(?:approve|unlock|guard_approve)\S{0,40}\s+(?:live\s+)?(?:with\s+)?[:=]?\s*\d{4,12}\b)", re.I)
PIN_LIKE = re.compile(r"(?<![\w/.-])(\S{4,64})(?![\w/.-])")
LEGACY_TOKENS = 4            # records without the rule marker: today's bounded check (number-like words)
MAX_CANDIDATES = 16          # one full scrypt each (~0.5 s): a prompt with more PIN-like words is checked in part
CHECK_BUDGET_S = 15.0        # and never past this (the hook's timeout is 30 s)
_WRAP = "\"'`()[]{}<>*_"
_TRAIL = ".,;:!?"


def user_prompt_submit(stdin_text: str, env=None) -> tuple[int, str, str]:
    env = os.environ if env is None else env
    try:
        data = _parse(stdin_text)
        prompt = data.get("prompt")
        if not isinstance(prompt, str):
            return SILENT
        home = probe.state_home(env)
        looks_like_approval = PIN_TALK.search(prompt)
        leaked = False if looks_like_approval else _contains_pin(prompt, home)
        if leaked or looks_like_approval:
            msg = ("[quant-trading-system] Blocked: this prompt " + ("contains your PIN" if leaked else
                   "looks like an approval with a PIN") + ". It was NOT sent to the assistant, but Claude Code has "
                   "already written it to the session transcript on disk, where the assistant could read it later. "
                   "Treat that PIN as exposed: change it now in your own terminal (hooks/guard_approve.sh set-pin), "
                   "and approve live trading only there, never in the chat.")
            return 0, json.dumps({"decision": "block", "reason": msg}), ""
        return SILENT
    except Exception:
        return SILENT  # an unreadable prompt cannot leak more than it already has; never block ordinary chat on a bug


def pin_candidates(prompt: str, rules: int) -> list[str]:
    """The words of ``prompt`` that could be the PIN, in order, each once.

    Rule 2 records (the PIN has a letter and a digit and passes the PIN rules): every word, also without
    wrapping quotes or brackets, trailing punctuation, or a `pin=`/`PIN:` prefix; numbers, prices and dates
    are never candidates, so they cost nothing. Older records: today's bounded check, the first
    LEGACY_TOKENS words holding a digit."""
    from ..safety.pin import could_be_pin

    if rules < 2:
        return [t for t in PIN_LIKE.findall(prompt) if re.search(r"\d", t)][:LEGACY_TOKENS]
    out: list[str] = []
    seen: set[str] = set()
    for word in prompt.split():
        if len(word) > 4 * 256 or not any(c.isdigit() for c in word):
            continue
        # the word without wrapping quotes/brackets and trailing punctuation, and with the first punctuation
        # mark put back (a PIN may end in "!"); after a `pin=` / `PIN:` prefix as well
        bases = [word] + [word.split(sep, 1)[1] for sep in ("=", ":") if sep in word]
        for b in bases:
            core = b.strip(_WRAP + _TRAIL)
            if not core:
                continue
            end = b.find(core) + len(core)
            variants = [core] + ([core + b[end]] if end < len(b) and b[end] in _TRAIL else [])
            for v in variants:
                if v not in seen and could_be_pin(v, rules):
                    seen.add(v)
                    out.append(v)
    return out


def _contains_pin(prompt: str, home) -> bool:
    """Hash the prompt's PIN candidates against the stored verifier, one full scrypt each (bounded work)."""
    from ..agent.paths import AgentPaths

    if not AgentPaths.for_home(home.root).pin_record.exists():  # the key store, outside the project
        return False
    try:
        from ..safety.pin import check_pin_quietly, record_rules
    except Exception:
        return False
    rules = record_rules(home)
    if rules is None:
        return False
    deadline = time.monotonic() + CHECK_BUDGET_S
    for t in pin_candidates(prompt, rules)[:MAX_CANDIDATES]:
        if check_pin_quietly(home, t):
            return True
        if time.monotonic() > deadline:
            break
    return False
