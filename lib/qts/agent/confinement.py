"""Is the assistant confined by Claude Code's own sandbox? Check, and write, the settings live trading needs.

Standard library only, and quick: SessionStart runs `check` on every session start.

Live trading is only safe when the assistant cannot reach the agent's secrets or write what the agent
trusts (DESIGN.md, "The trading agent (the ssh-agent model), and the confinement it needs"):

* the Bash sandbox on and failing closed: ``sandbox.enabled``, ``sandbox.failIfUnavailable`` true,
  ``sandbox.allowUnsandboxedCommands`` false (its default is true: the model may ask to run unsandboxed);
* ``sandbox.filesystem.denyRead`` hides the key store folder and the agent's runtime folder from sandboxed
  commands (the agent's state folder stays READABLE: ``qts agent status`` works from inside);
* ``permissions.deny`` rules keep the Read/Edit/Write tools, which are NOT OS-sandboxed, off the key store
  (Read, Edit, Write), the agent's state (Edit, Write), its runtime folder (Read, Edit, Write), the per-user
  anchor ``state_root()`` (Edit, Write) and the user's shell rc files (Edit, Write).

How Claude Code reads its settings (checked against the CLI, v2.1.197): the user file
(``$CLAUDE_CONFIG_DIR/settings.json``, else ``~/.claude/settings.json``) < the project's
``.claude/settings.json`` < the project's ``.claude/settings.local.json`` < managed policy files. A scalar
comes from the highest file that sets it; lists (``permissions.deny``, ``denyRead``, ...) are unions over all
files. Paths: ``//abs`` is absolute, ``~/x`` is under HOME; in sandbox path lists a single-slash ``/abs`` is
absolute too (in permission rules it is relative to the settings file, so it is not counted here).

What counts as covering a requirement, conservatively:
* a ``permissions.deny`` rule covers a folder when it is the bare tool name or ``Tool(PATTERN/**)`` whose
  PATTERN (``*`` and ``**`` allowed) matches that folder or one of its parents; a file when it names the file
  exactly or covers a parent folder. Relative patterns are not counted (they depend on the working folder).
* a ``denyRead`` entry covers a folder when it is that folder or a parent, given as a plain path. Glob entries
  are not counted: on Linux the sandbox expands them to the files that exist when a command starts, so a
  file created later (a new key store) is not hidden, while a plain folder is masked whole.

Beyond the required keys the check also reports what would undo them: a managed or local file switching a key
back, ``sandbox.filesystem.disabled``, ``sandbox.enableWeakerNestedSandbox``, commands excluded from the
sandbox (``sandbox.excludedCommands`` run outside it), ``allowRead`` entries re-opening a hidden folder,
``allowWrite`` / ``permissions.additionalDirectories`` entries reaching a protected place, and a project
folder that itself contains one (the sandbox lets commands write anywhere in the project).
"""

from __future__ import annotations

import fnmatch
import json
import os
import stat
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .paths import AgentPaths, state_root
from .secrets_check import read_regular_file

MAX_SETTINGS_BYTES = 4 * 1024 * 1024
RC_FILES = (".bashrc", ".zshrc", ".profile", ".bash_profile", ".zprofile", ".config/fish/config.fish")
PROJECT_FILE = ".claude/settings.json"
LOCAL_FILE = ".claude/settings.local.json"
WRITE_COMMAND = "qts agent confine --write"
SETUP_COMMAND = "/quant-trading-system:setup"
# (key path, required value, what Claude Code does when no file sets it)
SCALARS = ((("sandbox", "enabled"), True, "off by default"),
           (("sandbox", "failIfUnavailable"), True, "by default Claude Code runs commands unsandboxed when the "
                                                    "sandbox cannot start"),
           (("sandbox", "allowUnsandboxedCommands"), False, "Claude Code's default is true"))
# set to true, these undo the sandbox whatever else is configured
UNDOERS = ((("sandbox", "filesystem", "disabled"), "turns the sandbox's filesystem rules off"),
           (("sandbox", "enableWeakerNestedSandbox"), "weakens the sandbox's isolation"))


@dataclass
class Report:
    ok: bool
    missing: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self, limit: int = 3) -> str:
        """One short line: what is wrong, the first few items."""
        if self.ok:
            return "Claude Code's sandbox confines the assistant as live trading requires"
        items = self.problems + self.missing
        head = "; ".join(items[:limit]) + (f"; and {len(items) - limit} more" if len(items) > limit else "")
        return f"{len(items)} confinement setting(s) missing or damaged: {head}"


@dataclass(frozen=True)
class _Target:
    what: str
    path: str              # absolute, no trailing slash
    is_dir: bool
    tools: tuple[str, ...]
    deny_read: bool


@dataclass
class _Source:
    label: str
    path: str
    data: dict


# -- what is required ---------------------------------------------------------------------------------------

def _home(env) -> str:
    return env.get("HOME") or os.path.expanduser("~")


def _forms(p) -> list[str]:
    """The path as given and, when a symlink lies on the way (macOS /tmp -> /private/tmp), as resolved."""
    a = os.path.normpath(os.path.abspath(os.fspath(p)))
    try:
        r = os.path.realpath(a)
    except (OSError, ValueError):
        r = a
    return [a] if r == a else [a, r]


def _targets(paths: AgentPaths, env) -> list[_Target]:
    rw, w = ("Read", "Edit", "Write"), ("Edit", "Write")
    base = [("the key store", paths.keystore.parent, True, rw, True),
            ("the trading agent's state", paths.state.parent, True, w, False),
            ("the trading agent's runtime folder", paths.runtime, True, rw, True),
            ("the per-user anchor", state_root(env), True, w, False)]
    base += [(f"~/{rc}", Path(_home(env)) / rc, False, w, False) for rc in RC_FILES]
    return [_Target(what, form, is_dir, tools, dr) for what, p, is_dir, tools, dr in base for form in _forms(p)]


def _rule(tool: str, t: _Target) -> str:
    return f"{tool}(/{t.path}/**)" if t.is_dir else f"{tool}(/{t.path})"  # "//abs": an absolute path


def _uniq(items) -> list:
    return list(dict.fromkeys(items))


def required_settings(paths: AgentPaths, env=None) -> dict:
    """The settings fragment that confines the assistant as live trading requires."""
    env = os.environ if env is None else env
    ts = _targets(paths, env)
    return {"sandbox": {"enabled": True, "failIfUnavailable": True, "allowUnsandboxedCommands": False,
                        "filesystem": {"denyRead": _uniq("/" + t.path for t in ts if t.deny_read)}},
            "permissions": {"deny": _uniq(_rule(tool, t) for t in ts for tool in t.tools)}}


# -- reading the settings ------------------------------------------------------------------------------------

def settings_files(project_dir, env=None) -> list[tuple[str, str]]:
    """(label, path) of every settings file Claude Code reads, lowest precedence first."""
    env = os.environ if env is None else env
    home = _home(env)
    user_dir = env.get("CLAUDE_CONFIG_DIR") or os.path.join(home, ".claude")
    user = os.path.join(user_dir, "settings.json")
    user_label = "~" + user[len(home):] if home and user.startswith(home.rstrip("/") + "/") else user
    proj = os.path.abspath(os.fspath(project_dir))
    out = [(user_label, user), (PROJECT_FILE, os.path.join(proj, PROJECT_FILE)),
           (LOCAL_FILE, os.path.join(proj, LOCAL_FILE))]
    managed = "/Library/Application Support/ClaudeCode" if sys.platform == "darwin" else "/etc/claude-code"
    out.append((os.path.join(managed, "managed-settings.json"),) * 2)
    try:
        drop = os.path.join(managed, "managed-settings.d")
        out += [(os.path.join(drop, n),) * 2 for n in sorted(os.listdir(drop)) if n.endswith(".json")]
    except OSError:
        pass
    return out


def _load(project_dir, env) -> tuple[list[_Source], list[str], list[str]]:
    sources, files, problems, seen = [], [], [], set()
    for label, path in settings_files(project_dir, env):
        if not os.path.lexists(path):
            continue
        try:
            real = os.path.realpath(path)
        except (OSError, ValueError):
            real = path
        if real in seen:  # the project is the home folder: one file, read once
            continue
        seen.add(real)
        files.append(path)
        try:
            raw = read_regular_file(path, MAX_SETTINGS_BYTES, truncate=False)
            text = raw.decode("utf-8-sig")
            data = json.loads(text) if text.strip() else {}
        except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            why = (f"not valid JSON ({e.msg}, line {e.lineno})" if isinstance(e, json.JSONDecodeError)
                   else f"unreadable ({e.__class__.__name__}: {e})")
            problems.append(f"{label} is {why}: a damaged settings file cannot be relied on to confine; fix it by hand")
            continue
        if not isinstance(data, dict):
            problems.append(f"{label} is not a JSON object: a damaged settings file cannot be relied on; "
                            "fix it by hand")
            continue
        src = _Source(label, path, data)
        problems += _shape_problems(src)
        sources.append(src)
    return sources, files, problems


_SHAPES = ((("sandbox",), dict), (("sandbox", "filesystem"), dict), (("permissions",), dict),
           (("permissions", "deny"), list), (("permissions", "additionalDirectories"), list),
           (("sandbox", "filesystem", "denyRead"), list), (("sandbox", "filesystem", "allowRead"), list),
           (("sandbox", "filesystem", "allowWrite"), list), (("sandbox", "excludedCommands"), list))


def _shape_problems(src: _Source) -> list[str]:
    out = []
    for keys, typ in _SHAPES:
        found, v = _get(src.data, keys)
        if found and not isinstance(v, typ):
            out.append(f"{'.'.join(keys)} in {src.label} is not a JSON {'object' if typ is dict else 'list'}: "
                       "Claude Code may ignore the file; fix it by hand")
        elif found and typ is list and not all(isinstance(x, str) for x in v):
            out.append(f"{'.'.join(keys)} in {src.label} holds entries that are not strings; fix it by hand")
    return out


def _get(data, keys) -> tuple[bool, object]:
    cur = data
    for k in keys:
        if not isinstance(cur, dict) or k not in cur:
            return False, None
        cur = cur[k]
    return True, cur


def _strings(sources, keys) -> list[tuple[str, _Source]]:
    out = []
    for src in sources:
        found, v = _get(src.data, keys)
        if found and isinstance(v, list):
            out += [(x, src) for x in v if isinstance(x, str)]
    return out


# -- path matching -------------------------------------------------------------------------------------------

def _segs(p: str) -> list[str]:
    return [s for s in p.split("/") if s]


def _match(pat: list[str], segs: list[str]) -> bool:
    if not pat:
        return not segs
    if pat[0] == "**":
        return any(_match(pat[1:], segs[i:]) for i in range(len(segs) + 1))
    return bool(segs) and fnmatch.fnmatchcase(segs[0], pat[0]) and _match(pat[1:], segs[1:])


def _under(child: str, parent: str) -> bool:
    """child is parent or inside it (plain absolute paths)."""
    return child == parent or child.startswith(parent.rstrip("/") + "/")


def _sandbox_path(entry: str, home: str, project: str) -> str:
    """An entry of a sandbox path list as an absolute path (CLI 2.1.197: // and / absolute, ~/ home,
    anything else relative to the project)."""
    e = entry.strip()
    if e.startswith("//"):
        e = e[1:]
    elif e == "~" or e.startswith("~/"):
        e = home + e[1:]
    elif not e.startswith("/"):
        e = os.path.join(project, e)
    return os.path.normpath(e)


def _has_glob(p: str) -> bool:
    return any(c in p for c in "*?[")


def _glob_base(p: str) -> str:
    """The folder a glob pattern cannot reach outside of."""
    if not _has_glob(p):
        return p
    head = p.split("*")[0].split("?")[0].split("[")[0]
    return head.rstrip("/") if head.endswith("/") else (os.path.dirname(head) or "/")


def _rule_covers(rule: str, tool: str, t: _Target, home: str) -> bool:
    rule = rule.strip()
    if rule == tool:  # the bare tool name: every use of it
        return True
    if not (rule.startswith(tool + "(") and rule.endswith(")")):
        return False
    spec = rule[len(tool) + 1:-1].strip()
    if spec == "**":
        return True
    if spec.startswith("//"):
        pat = spec[1:]
    elif spec == "~" or spec.startswith("~/"):
        pat = home + spec[1:]
    else:  # "/x" (relative to the settings file) or relative to the working folder: not counted
        return False
    ps, ts = _segs(pat), _segs(t.path)
    if ps and ps[-1] == "**":  # PATTERN/**: everything under what PATTERN matches
        base = ps[:-1]
        upto = len(ts) + 1 if t.is_dir else len(ts)
        return any(_match(base, ts[:k]) for k in range(upto))
    return not t.is_dir and _match(ps, ts)


# -- the check -----------------------------------------------------------------------------------------------

def check(project_dir, paths: AgentPaths, env=None) -> Report:
    """What is missing for the confinement live trading requires. Never raises."""
    try:
        env = os.environ if env is None else env
        return _check(os.path.abspath(os.fspath(project_dir)), paths, env)
    except Exception as e:  # noqa: BLE001 - a check that cannot run is a "not confined"
        return Report(False, [], [], [f"the confinement check could not run ({e.__class__.__name__}: {e})"])


def _check(project: str, paths: AgentPaths, env) -> Report:
    sources, files, problems = _load(project, env)
    home = _home(env)
    missing: list[str] = []

    for keys, want, default in SCALARS:
        name, want_s = ".".join(keys), json.dumps(want)
        for src in reversed(sources):  # the highest file that sets it decides
            found, v = _get(src.data, keys)
            if found:
                if v is not want:
                    missing.append(f"{name} is not {want_s} ({json.dumps(v)} in {src.label})")
                break
        else:
            missing.append(f"{name} is not {want_s} (not set in any settings file; {default})")
    for keys, why in UNDOERS:
        for src in reversed(sources):
            found, v = _get(src.data, keys)
            if found:
                if v is True:
                    missing.append(f"{'.'.join(keys)} is true in {src.label}: it {why}; remove it")
                break

    targets = _targets(paths, env)
    deny_read = [_sandbox_path(e, home, project) for e, _ in _strings(sources, ("sandbox", "filesystem", "denyRead"))
                 if not _has_glob(e)]
    for t in targets:
        if t.deny_read and not any(_under(t.path, d) for d in deny_read):
            missing.append(f"sandbox.filesystem.denyRead lacks /{t.path} ({t.what})")
    rules = [r for r, _ in _strings(sources, ("permissions", "deny"))]
    for t in targets:
        for tool in t.tools:
            if not any(_rule_covers(r, tool, t, home) for r in rules):
                missing.append(f"permissions.deny lacks {_rule(tool, t)} ({t.what})")

    # what would undo the rules above
    hidden = [t for t in targets if t.deny_read]
    for e, src in _strings(sources, ("sandbox", "filesystem", "allowRead")):
        p = _glob_base(_sandbox_path(e, home, project))
        for t in hidden:
            if _under(p, t.path):
                missing.append(f"sandbox.filesystem.allowRead entry {e!r} in {src.label} re-opens {t.what}; remove it")
                break
    for keys in (("sandbox", "filesystem", "allowWrite"), ("permissions", "additionalDirectories")):
        for e, src in _strings(sources, keys):
            p = _glob_base(_sandbox_path(e, home, project))
            hit = next((t for t in targets if _under(t.path, p) or _under(p, t.path)), None)
            if hit:
                missing.append(f"{'.'.join(keys)} entry {e!r} in {src.label} lets sandboxed commands write "
                               f"{hit.what}; remove it")
    excluded = _uniq(e for e, _ in _strings(sources, ("sandbox", "excludedCommands")))
    if excluded:
        where = ", ".join(_uniq(src.label for _, src in _strings(sources, ("sandbox", "excludedCommands"))))
        missing.append(f"sandbox.excludedCommands is not empty ({', '.join(excluded[:5])} in {where}): those "
                       "commands run outside the sandbox; remove them for live trading")
    for form in _forms(project):
        hit = next((t for t in targets if _under(t.path, form)), None)
        if hit:
            missing.append(f"the project folder {form} contains {hit.what} ({hit.path}): the sandbox lets commands "
                           "write anywhere in the project; open Claude Code in a project folder of its own")
            break

    missing = _uniq(missing)
    return Report(ok=not missing and not problems, missing=missing, files=files, problems=problems)


# -- writing the settings ------------------------------------------------------------------------------------

def write(project_dir, paths: AgentPaths, env=None) -> list[str]:
    """Merge the required fragment into the project's .claude/settings.json (created when missing), keeping
    every other key and list entry. Atomic; idempotent (no change, no write). Returns the changes made.
    ValueError (naming the file) when the file is not valid JSON or not of the expected shape."""
    env = os.environ if env is None else env
    path = os.path.join(os.path.abspath(os.fspath(project_dir)), PROJECT_FILE)
    data: dict = {}
    if os.path.lexists(path):
        path = os.path.realpath(path)  # a symlinked settings file is updated where it lives
        try:
            text = read_regular_file(path, MAX_SETTINGS_BYTES, truncate=False).decode("utf-8-sig")
            data = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e.msg}, line {e.lineno}); nothing was written: "
                             "fix or remove it by hand, then run this again") from None
        except (OSError, ValueError) as e:
            raise ValueError(f"{path} cannot be read ({e.__class__.__name__}: {e}); nothing was written") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path} is not a JSON object; nothing was written: fix or remove it by hand")
    changes: list[str] = []
    _merge(data, required_settings(paths, env), "", changes, path)
    if changes:
        _atomic_write_json(path, data)
    keys = paths.keystore.parent
    if not keys.exists():  # the sandbox hides only folders that exist when a command starts
        keys.mkdir(parents=True, mode=0o700, exist_ok=True)
        changes.append(f"created {keys} (mode 0700) so the sandbox can hide it from the first command on")
    return changes


def _merge(dst: dict, src: dict, prefix: str, changes: list, path: str) -> None:
    for k, v in src.items():
        name = prefix + k
        if isinstance(v, dict):
            cur = dst.setdefault(k, {})
            if not isinstance(cur, dict):
                raise ValueError(f"{path}: {name} is not a JSON object; nothing was written: fix it by hand")
            _merge(cur, v, name + ".", changes, path)
        elif isinstance(v, list):
            cur = dst.setdefault(k, [])
            if not isinstance(cur, list):
                raise ValueError(f"{path}: {name} is not a JSON list; nothing was written: fix it by hand")
            for item in v:
                if item not in cur:
                    cur.append(item)
                    changes.append(f"{name} += {item}")
        elif dst.get(k) is not v or k not in dst:
            changes.append(f"{name}: {json.dumps(dst[k]) if k in dst else 'unset'} -> {json.dumps(v)}")
            dst[k] = v


def _atomic_write_json(path: str, data: dict) -> None:
    """Replace the settings file in one step (fsutil.write_atomic), keeping its mode."""
    from ..fsutil import write_atomic

    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mode = 0o644
    write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n", mode=mode)


# -- the command ---------------------------------------------------------------------------------------------

USAGE = """usage: confine [--write] [--project DIR] [--json]
  Check that Claude Code's sandbox settings confine the assistant as live trading requires.
  --write        merge the required settings into DIR/.claude/settings.json, then check again
  --project DIR  the project Claude Code runs in (default: $CLAUDE_PROJECT_DIR, else the current folder)
  --json         print the report as JSON
  exit 0: confined; 1: not confined (what is missing is printed); 2: bad arguments
"""


def format_report(rep: Report, project: str, changes=None, write_error: str | None = None,
                  wrote: bool = False) -> str:
    lines = [f"Claude Code sandbox confinement for live trading (project {project}): "
             + ("CONFINED" if rep.ok else "NOT CONFINED")]
    lines.append("settings files read: " + (", ".join(rep.files) if rep.files else "none"))
    if wrote:
        if write_error:
            lines.append(f"NOT written: {write_error}")
        elif changes:
            lines.append(f"wrote {PROJECT_FILE}:")
            lines += [f"  + {c}" for c in changes]
        else:
            lines.append(f"{PROJECT_FILE} already holds every setting this command writes")
    if rep.problems:
        lines.append("damaged settings:")
        lines += [f"  - {p}" for p in rep.problems]
    if rep.missing:
        lines.append("missing:")
        lines += [f"  - {m}" for m in rep.missing]
    if not rep.ok:
        lines.append("Without this confinement, going live needs the human's PIN-signed acknowledgement of "
                     "running unconfined.")
        lines.append(f"To write the settings: {WRITE_COMMAND} --project {project}   (or run {SETUP_COMMAND}); "
                     "anything set in another file (named above) must be changed there by hand.")
    if wrote and changes and not write_error:
        lines.append("Restart Claude Code so that it reads the new settings.")
    return "\n".join(lines) + "\n"


def cli_main(argv: list[str], env=None) -> int:
    env = os.environ if env is None else env
    do_write = as_json = False
    project = None
    args = list(argv)
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-h", "--help"):
            sys.stdout.write(USAGE)
            return 0
        if a == "--write":
            do_write = True
        elif a == "--json":
            as_json = True
        elif a == "--project":
            if i + 1 >= len(args) or not args[i + 1]:
                sys.stderr.write("confine: --project needs a folder\n" + USAGE)
                return 2
            project = args[i + 1]
            i += 1
        elif a.startswith("--project="):
            project = a.split("=", 1)[1]
        else:
            sys.stderr.write(f"confine: unknown argument: {a}\n" + USAGE)
            return 2
        i += 1
    if not project or "${" in project:  # an unexpanded ${CLAUDE_PROJECT_DIR} counts as unset
        project = env.get("CLAUDE_PROJECT_DIR") or os.getcwd()
        if "${" in project:
            project = os.getcwd()
    if not os.path.isdir(project):
        sys.stderr.write(f"confine: project folder not found: {project}\n")
        return 2
    project = os.path.abspath(project)
    try:
        from ..paths import resolve_home

        paths = AgentPaths.for_home(resolve_home(None, {**env, "CLAUDE_PROJECT_DIR": project}), env)
    except Exception as e:  # noqa: BLE001
        sys.stderr.write(f"confine: cannot locate the state home ({e.__class__.__name__}: {e})\n")
        return 1
    changes: list[str] = []
    write_error = None
    if do_write:
        try:
            changes = write(project, paths, env)
        except (ValueError, OSError) as e:
            write_error = str(e)
    rep = check(project, paths, env)
    if as_json:
        out = {**rep.to_dict(), "project": project, "settings_file": os.path.join(project, PROJECT_FILE)}
        if do_write:
            out.update(changes=changes, write_error=write_error)
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        sys.stdout.write(format_report(rep, project, changes, write_error, do_write))
    if write_error:
        return 1
    return 0 if rep.ok else 1
