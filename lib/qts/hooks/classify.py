"""What a shell command, a file edit or a file read would do, from its text. Standard library only.

This is the fast, friendly layer: it explains a refusal before anything runs. It is a speed bump,
not the guarantee (base64, a script file or `python -c` get around any text filter); the safety
kernel's fail-safe state, the trading agent and PIN-signed approvals are what hold when a command
slips past it.

Time budget: a command longer than MAX_COMMAND_CHARS is refused unread ("too long to check"). Shorter
ones are split into words once (shell.py, linear), and every check below is either a test on single
words or a pattern whose repeated parts cannot overlap, so no input makes the work grow faster than
its length (bench/bench_hooks.py measures it against the old patterns).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from . import shell

ORDINARY, TRADE, DENY = "ordinary", "trade", "deny"

MAX_COMMAND_CHARS = 100_000      # longer than any command a person reviews; refused as too long to check
MAX_PATHS_RESOLVED = 200         # realpath() calls per command (each a few syscalls)

HUMAN_ONLY_DETAIL = ("PIN approvals, kill-switch resets, starting or stopping the trading agent and loosening "
                     "trading happen only in the user's own terminal, typed by the human. Ask the user to run it there.")

# -- the qts CLI, however it is reached ----------------------------------------------------------------------

QTS_NAMES = {"qts", "_qts.sh", "qts.cli"}
TRADE_SUBCMDS = {"order", "run", "once", "live", "cancel"}
HELP = {"--help", "-h"}

# -- trading state and secrets, by name -------------------------------------------------------------------------

STATE_FILES = re.compile(r"\.quant-trading\b|KILL_SWITCH|circuit_breaker\.json|metrics\.db|trades\.jsonl|"
                         r"pre_trade\.json|post_trade\.json|pin\.json|risk_profile\.json|grants/|/safety/|loop\.pid|"
                         r"loop\.status\.json|pin_attempts|used_nonces")
KEY_STORE_NAMES = re.compile(r"pin\.json|secret\.enc|exchange_secret|exchange_keys\.enc|pin_attempts|"
                             r"quant-trading-system/keys\b")
# whole words only (\b on both sides): a literal alternation, linear
WRITE_WORDS = re.compile(r"\b(?:rm|unlink|mv|cp|truncate|shred|dd|chmod|chown|ln|touch|tee|install|rsync|rmdir|"
                         r"write_text|write_bytes|os\.remove|os\.unlink|os\.rename|os\.replace|shutil\.\w+|"
                         r"\w+\.unlink)\b")
INPLACE_OPT = re.compile(r"(?<![\w-])-[A-Za-z]*i|--in-place")           # sed -i, sed -ni, perl -pi
SQL_WRITE = re.compile(r"\b(?:insert|update|delete|drop|alter|replace|vacuum|attach|pragma\s+\w+\s*=)\b", re.I)
SQLITE = re.compile(r"\bsqlite3?\b")
ORDER_API = re.compile(r"create_?(?:market_|limit_)?(?:buy_|sell_)?order|createOrder|cancel_?(?:all_)?orders?\b|"
                       r"cancelOrder|edit_?order|private_?post_?order|privatePost\w*Order|/api/v3/order|\bwithdraw\b|"
                       r"private_?delete_?order|transfer\(", re.I)
INTERPRETERS = re.compile(r"\b(?:python3?|node|curl|wget|ccxt|ruby|perl|php|http)\b", re.I)
SECRET_VAR = re.compile(r"EXCHANGE_(?:API_KEY|SECRET)|_SECRET$|API_KEY$|PASSWORD|^SECRET$")
VAR_REF = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")
PROC_ENVIRON = re.compile(r"/proc/[\w$.{}()-]*/environ")
OS_ENVIRON = re.compile(r"os\.environ(?!\.get\(['\"](?:QTS_HOME|CLAUDE_PROJECT_DIR)['\"])")
RISK_ENV = re.compile(r"(?<![\w])(?:MAX_POSITION_SIZE|RISK_LIMIT_PERCENT)=")
ATOM = re.compile(r"[\w.@:+,=/-]+")
DOT_ENV = re.compile(r"(?:^|/)\.env(?:\.[\w.-]+)?$|\.env$")
ENV_TEMPLATES = {".env.example", ".env.sample", ".env.template", ".env.dist"}
READERS = {"cat", "less", "more", "head", "tail", "grep", "egrep", "fgrep", "rg", "ag", "sed", "awk", "gawk", "strings",
           "xxd", "od", "hexdump", "base64", "cp", "source", ".", "bat", "nl", "tac", "cut", "sort", "uniq", "diff",
           "vi", "vim", "nano", "emacs", "view", "jq", "yq", "python", "python3", "node", "perl", "ruby", "tee", "dd",
           "scp", "rsync", "curl", "openssl", "gpg", "zip", "tar", "git", "paste", "column", "fold", "rev", "sponge"}
ENV_DUMPS = {"env", "printenv"}
WRITE_CMDS = {"rm", "rmdir", "unlink", "mv", "cp", "install", "rsync", "truncate", "shred", "dd", "chmod", "chown",
              "chgrp", "ln", "touch", "tee", "sponge", "git", "find", "sed", "perl", "mkdir", "scp"}
COPY_CMDS = {"cp", "install", "rsync", "ln", "scp"}
DESTROY_CMDS = {"rm", "rmdir", "mv", "shred", "chmod", "chown", "chgrp", "find", "rsync"}
SHELLS = {"bash", "sh", "zsh", "dash", "ksh", "fish", "eval", "su", "script", "watch", "ssh", "busybox"}
SHIM = "/.claude/hooks/kill_switch.sh"
SECRET_FILE_NAMES = {"pin.json", "pin_attempts.json", "exchange_keys.enc", "secret.enc", ".netrc", ".pgpass",
                     "id_rsa", "id_ed25519", "id_ecdsa", "id_dsa"}


@dataclass
class Verdict:
    kind: str           # ordinary | trade | deny
    reason: str = ""
    detail: str = ""


@dataclass
class Protected:
    """The places a session must not write (and, for secrets, read), as given and as resolved."""
    plugin_root: str | None = None
    state_home: str | None = None
    keystore_root: str | None = None        # ~/.config/quant-trading-system/keys (every home's key store)
    outside_roots: list[str] = field(default_factory=list)   # the agent's and the anchor's folders (no writes)

    def roots(self, p: str | None) -> list[str]:
        if not p:
            return []
        out = [os.path.normpath(os.path.abspath(os.path.expanduser(p)))]
        try:
            r = os.path.realpath(out[0])
            if r != out[0]:
                out.append(r)
        except (OSError, ValueError):
            pass
        return out


def _inside(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _contains(path: str, roots: list[str]) -> bool:
    """``path`` is an ancestor of one of ``roots`` (deleting it deletes them)."""
    return any(r.startswith(path.rstrip("/") + "/") for r in roots)


def resolve(path: str, cwd: str | None) -> list[str]:
    """The path as written (made absolute against the tool's cwd) and through symlinks and `..`."""
    p = os.path.expanduser(path)
    if not os.path.isabs(p):
        p = os.path.join(cwd or os.getcwd(), p)
    out = [os.path.normpath(p)]
    try:
        real = os.path.realpath(p)
        if real != out[0]:
            out.append(real)
    except (OSError, ValueError):
        pass
    return out


# -- the qts CLI -------------------------------------------------------------------------------------------------

def _qts_args(words: list[str]) -> list[list[str]]:
    """The argument lists of every qts invocation among ``words`` (`qts`, `.venv/bin/qts`, `_qts.sh`,
    `python -m qts`, `qts.cli`), global options (`--home DIR`) removed."""
    out = []
    n = len(words)
    for i, w in enumerate(words):
        b = shell.basename(w)
        hit = b in QTS_NAMES or (w in ("qts", "qts.cli") and i > 0 and words[i - 1] == "-m")
        if not hit:
            continue
        args, j = [], i + 1
        while j < n and len(args) < 8:   # the subcommand and its first options are enough to decide
            a = words[j]
            if a == "--home" and not args:
                j += 2
                continue
            if a.startswith("--home=") and not args:
                j += 1
                continue
            args.append(a)
            j += 1
        out.append(args)
    return out


def _help_only(args: list[str]) -> bool:
    """`--help` that click will honour: not the value of an option that takes one (`--client-order-id --help`)."""
    for k, a in enumerate(args):
        if a in HELP:
            prev = args[k - 1] if k else ""
            if not (prev.startswith("--") and "=" not in prev and prev not in ("--json", "--dry-run", "--quiet")):
                return True
    return False


def _qts_verdict(args: list[str]) -> Verdict | None:
    if not args or _help_only(args):
        return None
    sub = args[0]
    rest = [a.lower() for a in args[1:]]
    nxt = rest[0] if rest else ""
    human = (sub == "pin"
             or (sub == "approve" and nxt not in ("status", "revoke", ""))
             or (sub == "agent" and nxt in ("start", "stop", "import-keys", "approve"))
             or (sub == "kill-switch" and nxt == "reset")
             or (sub == "breaker" and nxt == "state" and len(rest) > 1 and rest[1] == "active")
             or (sub == "risk" and nxt == "loosen")
             or (sub == "strategy" and nxt == "resume")  # a resume loosens (the PIN signs it)
             or (sub == "promote" and _promotes_to_live(rest)))
    if human:
        return Verdict(DENY, "HUMAN_ONLY", HUMAN_ONLY_DETAIL)
    if sub in TRADE_SUBCMDS:
        return Verdict(TRADE, "TRADE", "places, changes or cancels orders, or starts the loop")
    return None


def _promotes_to_live(rest: list[str]) -> bool:
    for k, a in enumerate(rest):
        if a.startswith("--to="):
            if a[5:].startswith("live"):
                return True
        elif a == "--to" and k + 1 < len(rest) and rest[k + 1].startswith("live"):
            return True
    return False


def _worst(verdicts) -> Verdict | None:
    """DENY beats TRADE beats nothing."""
    best = None
    for v in verdicts:
        if v is None:
            continue
        if v.kind == DENY:
            return v
        if best is None:
            best = v
    return best


# -- commands ----------------------------------------------------------------------------------------------------

def classify_command(cmd: str, plugin_root: str | None = None, cwd: str | None = None,
                     protected: Protected | None = None) -> Verdict:
    text = cmd or ""
    if len(text) > MAX_COMMAND_CHARS:
        return Verdict(DENY, "TOO_LONG", f"the command is {len(text):,} characters long; commands over "
                                         f"{MAX_COMMAND_CHARS:,} are not checked and so not run. Write it to a "
                                         "script file and run that, or split it.")
    try:
        segs = _segments(text)
    except shell.TooComplex as e:
        return Verdict(DENY, "TOO_COMPLEX", f"the command is too complex to check ({e}); nothing was run. "
                                            "Split it into simpler commands.")
    prot = protected or Protected(plugin_root=plugin_root)
    if protected is not None and plugin_root and not prot.plugin_root:
        prot.plugin_root = plugin_root
    qts = _worst(_qts_verdict(a) for s in segs for a in _qts_args(s.words))
    if qts is None or qts.kind != DENY:  # a qts call inside a string the shell does not split (python -c "...")
        qts = _worst([qts, _worst(_qts_verdict(a) for a in _qts_args(ATOM.findall(text)))])
    if qts is not None and qts.kind == DENY:
        return qts
    for check in (_check_guard_scripts, _check_secrets, _check_order_api, _check_tamper, _check_paths):
        v = check(text, segs, prot, cwd)
        if v is not None:
            return v
    return qts or Verdict(ORDINARY)


def _segments(text: str) -> list[shell.Segment]:
    segs = shell.split(text)
    # the arguments of `bash -c`, `eval`, `ssh host ...` and a shell's here-document are commands too
    extra: list[shell.Segment] = []
    for s in segs:
        ci = shell.command_index(s.words)
        if ci >= 0 and shell.basename(s.words[ci]) in SHELLS:
            for w in s.words[ci + 1:]:
                if any(c in w for c in " \t\n;&|$`'\""):
                    extra.extend(shell.split(w, s.depth + 1))
            for body in s.heredocs:
                extra.extend(shell.split(body, s.depth + 1))
    return segs + extra


def _check_guard_scripts(text, segs, prot, cwd) -> Verdict | None:
    for s in segs:
        for k, w in enumerate(s.words):
            if w.endswith("kill_switch.sh") and "reset" in s.words[k + 1:k + 4]:
                return Verdict(DENY, "HUMAN_ONLY", HUMAN_ONLY_DETAIL)
    if "guard_approve" in text:
        return Verdict(DENY, "HUMAN_ONLY", HUMAN_ONLY_DETAIL)
    return None


def _secret(why: str) -> Verdict:
    return Verdict(DENY, "SECRET", f"this command {why}; secrets never enter the assistant's context")


def _is_dot_env(word: str) -> bool:
    return bool(DOT_ENV.search(word)) and shell.basename(word) not in ENV_TEMPLATES


def _dumps_env(words: list[str]) -> bool:
    """`env`, `sudo env -i`, `printenv`: the program prints the whole environment (no command after it)."""
    last = ""
    for k, w in enumerate(words):
        if shell.ASSIGNMENT.match(w) or (w.startswith("-") and k):
            continue
        last = shell.basename(w)
        if last not in shell.WRAPPERS and last not in ENV_DUMPS:
            return False
    return last in ENV_DUMPS


def _check_secrets(text, segs, prot, cwd) -> Verdict | None:
    for s in segs:
        if _dumps_env(s.words):
            return _secret("dumps the environment, which holds exchange keys")
        ci = shell.command_index(s.words)
        if ci < 0:
            continue
        prog, args = shell.basename(s.words[ci]), s.words[ci + 1:]
        if prog == "printenv" and any(re.search(r"KEY|SECRET|PASS|TOKEN", a) for a in args):
            return _secret("prints a secret")
        if (prog == "set" and not args) or (prog == "export" and args[:1] == ["-p"]) or \
                (prog in ("declare", "typeset") and args[:1] in (["-x"], ["-p"])) or (prog == "compgen" and "-v" in args):
            return _secret("dumps the environment")
        if prog in READERS and (any(_is_dot_env(a) for a in args) or
                                any(op.startswith("<") and _is_dot_env(t) for op, t in s.redirects)):
            return _secret("reads a .env file with exchange keys")
        if any(op.startswith("<") and op not in ("<<", "<<-", "<<<") and _is_dot_env(t) for op, t in s.redirects):
            return _secret("reads a .env file with exchange keys")
    for m in VAR_REF.finditer(text):
        if SECRET_VAR.search(m.group(1)):
            return _secret("expands a secret variable")
    if PROC_ENVIRON.search(text):
        return _secret("reads a process environment")
    if OS_ENVIRON.search(text):
        return _secret("reads the environment from Python")
    if KEY_STORE_NAMES.search(text):
        return _secret("reads the PIN record, the key store or an encrypted secret")
    return None


def _check_order_api(text, segs, prot, cwd) -> Verdict | None:
    if ORDER_API.search(text) and INTERPRETERS.search(text):
        return Verdict(DENY, "ORDER_API_OUTSIDE_GATE",
                       "exchange order APIs may only be reached through the gate: use `qts order ...`")
    return None


def _opens_for_writing(text: str) -> bool:
    """`open(..., 'w')` and the like, looking at most 300 characters past each `open(` (linear)."""
    start = text.find("open(")
    while start >= 0:
        window = text[start + 5:start + 305]
        close = window.find(")")
        if re.search(r"['\"][wax+]", window if close < 0 else window[:close]):
            return True
        start = text.find("open(", start + 5)
    return False


def _writes(text: str, segs, redirects: bool = True) -> bool:
    if WRITE_WORDS.search(text) or _opens_for_writing(text):
        return True
    if (re.search(r"\bsed\b", text) or re.search(r"\bperl\b", text)) and INPLACE_OPT.search(text):
        return True
    return redirects and any(s.write_targets for s in segs)


def _check_tamper(text, segs, prot, cwd) -> Verdict | None:
    for s in segs:
        for t in s.write_targets:
            if STATE_FILES.search(t):
                return Verdict(DENY, "TAMPER", "redirects output into the trading state")
    if STATE_FILES.search(text):
        if _writes(text, segs):
            return Verdict(DENY, "TAMPER", "writes or deletes the trading state (kill switch, breaker, approvals, "
                                           "database, logs); that state only changes through qts commands")
        if SQLITE.search(text) and SQL_WRITE.search(text):
            return Verdict(DENY, "TAMPER", "modifies the trading database directly")
    if RISK_ENV.search(text) and any(_qts_args(s.words) for s in segs):
        return Verdict(DENY, "RISK_LIMIT", "risk limits change only with the PIN (qts risk set, in the user's terminal)")
    if prot.plugin_root and any(r in text for r in prot.roots(prot.plugin_root)) and _writes(text, segs, False):
        return Verdict(DENY, "PLUGIN_FILES", "edits the installed plugin's own files")
    return None


def _writes_in(s: shell.Segment) -> tuple[list[str], bool]:
    """The words of a segment that name files it may write, and whether it may delete or move them."""
    targets = list(s.write_targets)
    ci = shell.command_index(s.words)
    if ci < 0:
        return targets, False
    prog, args = shell.basename(s.words[ci]), s.words[ci + 1:]
    if prog == "sed" or prog == "perl":
        if not any(INPLACE_OPT.match(a) for a in args):
            return targets, False
    if prog == "git" and (not args or args[0] not in ("checkout", "restore", "rm", "mv", "clean", "apply")):
        return targets, False
    if prog == "find" and not any(a in ("-delete", "-exec", "-execdir", "-fprint") for a in args):
        return targets, False
    if prog in WRITE_CMDS:
        files = [a for a in args if not a.startswith("-")]
        if prog in COPY_CMDS:   # only the destination is written: the last name, or `-t DIR`
            t = [args[k + 1] for k, a in enumerate(args[:-1]) if a in ("-t", "--target-directory")]
            files = t or files[-1:]
        elif prog == "dd":
            files = [a[3:] for a in args if a.startswith("of=")]
        targets += files
    return targets, prog in DESTROY_CMDS


def _check_paths(text, segs, prot, cwd) -> Verdict | None:
    """Writes that resolve into the plugin, the emergency shim or the agent's own folders, whatever the
    spelling (symlinks, `..`, relative to the tool's cwd, after a `cd`)."""
    plugin = prot.roots(prot.plugin_root)
    outside = [r for p in prot.outside_roots for r in prot.roots(p)] + prot.roots(prot.keystore_root)
    if not plugin and not outside and not any(SHIM[1:] in w or "kill_switch.sh" in w for s in segs for w in s.words):
        return None
    here = cwd
    budget = MAX_PATHS_RESOLVED
    for s in segs:
        ci = shell.command_index(s.words)
        if ci >= 0 and s.words[ci] == "cd" and s.depth == 0:
            dest = next((a for a in s.words[ci + 1:] if not a.startswith("-")), "~")
            if "$" not in dest and "`" not in dest:
                here = resolve(dest, here)[-1]
            continue
        targets, destroys = _writes_in(s)
        for t in targets:
            if not t or "$" in t or "`" in t:
                continue
            t = re.split(r"[*?\[]", t, 1)[0] or "."     # a glob: the folder it expands in
            budget -= 1
            if budget < 0:
                return Verdict(DENY, "TOO_COMPLEX", "the command writes to more paths than the hook checks; "
                                                    "split it into simpler commands")
            for p in resolve(t, here):
                if _inside(p, plugin) or (destroys and _contains(p, plugin)):
                    return Verdict(DENY, "PLUGIN_FILES", f"writes into the installed plugin's own files ({p})")
                if p.endswith(SHIM) or p.endswith("/.claude/hooks") or (destroys and p.endswith("/.claude")):
                    return Verdict(DENY, "TAMPER", "the emergency kill-switch shim (.claude/hooks/kill_switch.sh) is "
                                                   "not changed from a session")
                if _inside(p, outside) or (destroys and _contains(p, outside)):
                    return Verdict(DENY, "TAMPER", f"writes into the trading agent's or the key store's folders ({p})")
    return None


# -- file tools --------------------------------------------------------------------------------------------------

def classify_edit(path: str, state_home: str | None, plugin_root: str | None, cwd: str | None = None,
                  protected: Protected | None = None) -> Verdict:
    """Edit / Write / MultiEdit / NotebookEdit of ``path``, judged by its spelling and by its resolved path."""
    prot = protected or Protected(plugin_root=plugin_root, state_home=state_home)
    given = path or ""
    if not given:
        return Verdict(ORDINARY)
    cands = resolve(given, cwd)
    homes = prot.roots(prot.state_home or state_home)
    plugin = prot.roots(prot.plugin_root or plugin_root)
    outside = [r for p in prot.outside_roots for r in prot.roots(p)] + prot.roots(prot.keystore_root)
    for p in cands:
        if _inside(p, homes):
            return Verdict(DENY, "TAMPER", "the trading state home changes only through qts commands")
        if STATE_FILES.search(p):
            return Verdict(DENY, "TAMPER", "this file is trading state (flags, approvals, database, logs)")
        if _is_dot_env(p):
            return Verdict(DENY, "SECRET", ".env files hold exchange keys and limits; edit them yourself, "
                                           "outside the assistant")
        if _inside(p, plugin):
            return Verdict(DENY, "PLUGIN_FILES", "the installed plugin's files are not edited from a session")
        if p.endswith(SHIM):
            return Verdict(DENY, "TAMPER", "the emergency kill-switch shim is not edited from a session")
        if _inside(p, outside):
            return Verdict(DENY, "TAMPER", "the trading agent's and the key store's folders are not edited "
                                           "from a session")
    return Verdict(ORDINARY)


def _secret_path(p: str, prot: Protected) -> str:
    """Why reading ``p`` would expose a secret ("" if it would not)."""
    b = shell.basename(p)
    if _inside(p, prot.roots(prot.keystore_root)):
        return "the key store (PIN record, encrypted exchange keys)"
    if _is_dot_env(p):
        return "a .env file with exchange keys"
    if b in SECRET_FILE_NAMES:
        return "a secret file (" + b + ")"
    if PROC_ENVIRON.search(p) or (p.startswith("/proc/") and b == "environ"):
        return "a process environment"
    return ""


def classify_read(tool: str, tin: dict, cwd: str | None, protected: Protected) -> Verdict:
    """Read / NotebookRead / LS / Grep / Glob: refuse what would show a secret (the key store, .env files,
    key files, a process environment), by the path as given and as resolved."""
    def text_field(name):
        v = tin.get(name)
        if v is not None and not isinstance(v, str):
            raise ValueError(f"tool_input.{name} is not text")
        return v or ""

    def deny(why):
        return Verdict(DENY, "SECRET", f"{tool} would show {why}; secrets never enter the assistant's context")

    keys = protected.roots(protected.keystore_root)
    if tool in ("Read", "NotebookRead", "LS"):
        path = text_field("file_path") or text_field("notebook_path") or text_field("path")
        for p in (resolve(path, cwd) if path else []):
            why = _secret_path(p, protected)
            if why:
                return deny(why)
        return Verdict(ORDINARY)
    # Grep and Glob: a folder (path), a file-name filter (Grep's glob, Glob's pattern), Grep's regex (pattern)
    path, pattern = text_field("path"), text_field("pattern")
    name_filter = text_field("glob") if tool == "Grep" else pattern
    base = resolve(path or ".", cwd)
    config_dirs = [os.path.dirname(os.path.dirname(k)) for k in keys]     # ~/.config: where the key store sits
    for p in base:
        why = _secret_path(p, protected)
        if why:
            return deny(why)
        if _contains(p, keys) and _inside(p, config_dirs):
            return deny("the key store (it lies inside this folder)")
    if name_filter:
        fixed = re.split(r"[*?\[{]", os.path.join(base[0], os.path.expanduser(name_filter)), 1)[0]
        fixed = os.path.normpath(fixed) if fixed else "/"
        if _inside(fixed, keys) or (_contains(fixed, keys) and _inside(fixed, config_dirs)):
            return deny("the key store")
        tail = shell.basename(name_filter)
        if (".env" in tail and tail not in ENV_TEMPLATES) or any(n in name_filter for n in SECRET_FILE_NAMES):
            return deny("a .env file or a secret file")
    if tool == "Grep" and not name_filter and not tin.get("type") and \
            re.search(r"secret|api_?key|password|passphrase", pattern, re.I):
        return Verdict(DENY, "SECRET", "searching every file for a secret's name would show the values in .env "
                                       "files; narrow the search with `glob` (e.g. \"*.py\") or `type`")
    return Verdict(ORDINARY)
