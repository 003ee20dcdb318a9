"""What a shell command or a file edit would do, from its text. Standard library only.

This is the fast, friendly layer: it explains a refusal before anything runs. It is a speed bump,
not the guarantee (base64, a script file or `python -c` get around any text filter); the safety
kernel's fail-safe state and PIN-signed approvals are what hold when a command slips past it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ORDINARY, TRADE, DENY = "ordinary", "trade", "deny"

# the CLI, however it is reached
QTS = r"(?:\bqts\b|_qts\.sh\b|python3?\s+-m\s+qts\b|\bqts\.cli\b)"  # _qts.sh: the plugin's launcher
TRADE_SUBCMDS = r"(?:order|run|once|live|cancel)"
HUMAN_ONLY_SUBCMDS = (r"(?:pin\b|approve\b|agent\s+(?:start|stop|import-keys)\b|kill-switch\s+reset\b|"
                      r"breaker\s+state\s+active\b|"
                      r"breaker\s+state\s+reducing\b|risk\s+set\b|risk\s+loosen\b|promote\b[^;&|]*--to[\s=]+live)")

STATE_FILES = (r"(?:\.quant-trading\b|KILL_SWITCH|circuit_breaker\.json|metrics\.db|trades\.jsonl|"
               r"pre_trade\.json|post_trade\.json|pin\.json|risk_profile\.json|grants/|/safety/|loop\.pid|"
               r"loop\.status\.json|pin_attempts|used_nonces)")
WRITE_VERBS = (r"(?:\brm\b|\bunlink\b|\bmv\b|\bcp\b|\btruncate\b|\bshred\b|\bdd\b|\bchmod\b|\bchown\b|"
               r"\bln\b|\btouch\b|\btee\b|\bsed\s+(?:-\w*\s+)*-i|\bperl\s+-\w*i|\bwrite_text\b|"
               r"\bwrite_bytes\b|\bos\.remove\b|\bos\.unlink\b|\bshutil\.|\.unlink\(|open\([^)]*['\"][wa+])")
SQL_WRITE = r"\b(?:insert|update|delete|drop|alter|replace|vacuum|attach|pragma\s+\w+\s*=)\b"

SECRET_READ = [
    (r"(?:^|[\s;&|(])(?:env|printenv)\s*(?:$|[;&|)>])", "dumps the environment, which holds exchange keys"),
    (r"(?:^|[\s;&|(])(?:export\s+-p|declare\s+-x|set)\s*(?:$|[;&|)>])", "dumps the environment"),
    (r"\bprintenv\s+\w*(?:KEY|SECRET|PASS|TOKEN)", "prints a secret"),
    (r"\$\{?\w*(?:EXCHANGE_(?:API_KEY|SECRET)|_SECRET\b|API_KEY\b|PASSWORD)", "expands a secret variable"),
    (r"/proc/[^\s]*/environ", "reads a process environment"),
    (r"os\.environ(?!\.get\(['\"](?:QTS_HOME|CLAUDE_PROJECT_DIR)['\"])", "reads the environment from Python"),
    (r"(?:\bcat|\bless|\bmore|\bhead|\btail|\bgrep|\bsed|\bawk|\bstrings|\bxxd|\bod|\bbase64|\bcp|\bsource|\.)\s+"
     r"[^;&|]*\.env\b", "reads a .env file with exchange keys"),
    (r"pin\.json|secret\.enc|exchange_secret", "reads the PIN record or an encrypted secret"),
]
ORDER_API = (r"(?:create_?(?:market_|limit_)?(?:buy_|sell_)?order|createOrder|cancel_?(?:all_)?orders?\b|"
             r"cancelOrder|edit_?order|private_?post_?order|privatePost\w*Order|/api/v3/order|\bwithdraw\b|"
             r"private_?delete_?order|transfer\()")
GUARD_SCRIPTS = r"(?:guard_approve(?:\.sh)?|kill_switch\.sh\s+reset\b)"


@dataclass
class Verdict:
    kind: str           # ordinary | trade | deny
    reason: str = ""
    detail: str = ""


def _has(pattern: str, text: str) -> bool:
    return re.search(pattern, text, re.I | re.M) is not None


def classify_command(cmd: str, plugin_root: str | None = None) -> Verdict:
    text = cmd or ""
    if _has(GUARD_SCRIPTS, text) or _has(QTS + r"[^;&|]*\s" + HUMAN_ONLY_SUBCMDS, text):
        return Verdict(DENY, "HUMAN_ONLY",
                       "PIN approvals, kill-switch resets and loosening risk limits happen only in the user's own "
                       "terminal, typed by the human. Ask the user to run it there.")
    for pat, why in SECRET_READ:
        if _has(pat, text):
            return Verdict(DENY, "SECRET", f"this command {why}; secrets never enter the assistant's context")
    if _has(ORDER_API, text) and _has(r"\b(?:python3?|node|curl|wget|ccxt|ruby|perl|php|http)\b", text):
        return Verdict(DENY, "ORDER_API_OUTSIDE_GATE",
                       "exchange order APIs may only be reached through the gate: use `qts order ...`")
    if _has(r">{1,2}\s*['\"]?[^\s;&|'\"]*" + STATE_FILES, text):
        return Verdict(DENY, "TAMPER", "redirects output into the trading state")
    if _has(STATE_FILES, text):
        if _has(WRITE_VERBS, text):
            return Verdict(DENY, "TAMPER", "writes or deletes the trading state (kill switch, breaker, approvals, "
                                           "database, logs); that state only changes through qts commands")
        if _has(r"\bsqlite3?\b", text) and _has(SQL_WRITE, text):
            return Verdict(DENY, "TAMPER", "modifies the trading database directly")
    if _has(r"(?:^|[\s;&|])(?:export\s+)?(?:MAX_POSITION_SIZE|RISK_LIMIT_PERCENT)=", text) and _has(QTS, text):
        return Verdict(DENY, "RISK_LIMIT", "risk limits change only with the PIN (qts risk set, in the user's terminal)")
    if plugin_root and plugin_root in text and _has(WRITE_VERBS, text):
        return Verdict(DENY, "PLUGIN_FILES", "edits the installed plugin's own files")
    if (_has(QTS + r"\s+(?:--home(?:\s+|=)\S+\s+)?" + TRADE_SUBCMDS + r"\b", text)
            and not _has(r"\s(?:--help|-h)\b", text)):
        return Verdict(TRADE, "TRADE", "places, changes or cancels orders, or starts the loop")
    return Verdict(ORDINARY)


def classify_edit(path: str, state_home: str | None, plugin_root: str | None) -> Verdict:
    p = path or ""
    if state_home and (p == state_home or p.startswith(state_home.rstrip("/") + "/")):
        return Verdict(DENY, "TAMPER", "the trading state home changes only through qts commands")
    if re.search(STATE_FILES, p):
        return Verdict(DENY, "TAMPER", "this file is trading state (flags, approvals, database, logs)")
    if re.search(r"(?:^|/)\.env(?:\.|$)", p):
        return Verdict(DENY, "SECRET", ".env files hold exchange keys and limits; edit them yourself, outside the assistant")
    if plugin_root and (p.startswith(plugin_root.rstrip("/") + "/")):
        return Verdict(DENY, "PLUGIN_FILES", "the installed plugin's files are not edited from a session")
    if re.search(r"\.claude/hooks/kill_switch\.sh$", p):
        return Verdict(DENY, "TAMPER", "the emergency kill-switch shim is not edited from a session")
    return Verdict(ORDINARY)
