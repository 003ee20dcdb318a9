"""Launch hygiene for the trading agent, as ssh-agent does it. Standard library only.

* :func:`harden` first thing: no tracing and no core dumps of this process (``prctl(PR_SET_DUMPABLE, 0)``
  makes /proc/PID/mem, environ and ptrace attach refuse a same-user process; RLIMIT_CORE 0).
* :func:`refusals` before the PIN is read: not while traced (TracerPid), not as root, not with
  CAP_SYS_PTRACE or CAP_SYS_ADMIN in reach (a process holding them can read any memory).
* :func:`isolated_argv` / :func:`clean_environment`: the agent runs Python with ``-I`` (no PYTHONPATH,
  no user site, no current folder on the path) and an allowlisted environment: no proxy or CA-bundle
  variables (they would let something else read or redirect the exchange traffic), no LD_*.
* :func:`code_hash`: a hash of the code it runs, printed at start so the human can compare.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

PR_SET_DUMPABLE = 4
CAP_SYS_PTRACE = 19
CAP_SYS_ADMIN = 21

# variables the agent keeps; everything else is dropped before Python starts
ALLOWED_ENV = (
    "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TERM", "TZ", "COLUMNS", "LINES",
    "XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR",
    "QTS_HOME", "CLAUDE_PROJECT_DIR", "EXCHANGE", "EXCHANGE_URL", "EXCHANGE_SANDBOX", "SYMBOLS", "STRATEGY",
    "TRADE_INTERVAL", "MAX_POSITION_SIZE", "RISK_LIMIT_PERCENT", "INITIAL_CASH", "FEE_BPS", "SLIPPAGE_BPS",
    "PAPER_TRADING", "NUMBA_CACHE_DIR",
)
# named explicitly so a review can see they are gone (proxies, CA bundles, loader and Python knobs)
DROPPED_EXAMPLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
                    "SSL_CERT_FILE", "SSL_CERT_DIR", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "LD_PRELOAD",
                    "LD_LIBRARY_PATH", "EXCHANGE_API_KEY", "EXCHANGE_SECRET")


def clean_environment(env=None) -> dict:
    env = os.environ if env is None else env
    out = {k: env[k] for k in ALLOWED_ENV if k in env}
    out["PATH"] = "/usr/bin:/bin"
    out["PYTHONDONTWRITEBYTECODE"] = "1"
    return out


def lib_dir() -> Path:
    return Path(__file__).resolve().parents[2]


def isolated_argv(python: str, args: list[str]) -> list[str]:
    """``python -I -c <bootstrap> args...``: -I ignores PYTHONPATH and the user's site folder and does not
    put the current folder on sys.path; the bootstrap adds exactly the plugin's own lib/."""
    boot = ("import sys; sys.path.insert(0, %r); sys.argv[0] = 'qts-agent'; "
            "from qts.agent.main import isolated_main; sys.exit(isolated_main(sys.argv[1:]))" % str(lib_dir()))
    return [python, "-I", "-c", boot, *args]


def harden() -> list[str]:
    """Disable tracing and core dumps of this process. Returns what could not be done (empty: all)."""
    problems = []
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except Exception as e:  # noqa: BLE001
        problems.append(f"core dumps could not be disabled ({e.__class__.__name__})")
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
                problems.append(f"prctl(PR_SET_DUMPABLE, 0) failed (errno {ctypes.get_errno()})")
        except Exception as e:  # noqa: BLE001
            problems.append(f"prctl unavailable ({e.__class__.__name__})")
    elif sys.platform == "darwin":
        try:  # PT_DENY_ATTACH
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.ptrace(31, 0, None, 0)
        except Exception as e:  # noqa: BLE001
            problems.append(f"ptrace(PT_DENY_ATTACH) unavailable ({e.__class__.__name__})")
    return problems


def dumpable() -> int | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(3, 0, 0, 0, 0))  # PR_GET_DUMPABLE
    except Exception:  # noqa: BLE001
        return None


def _status_fields(pid: str = "self") -> dict[str, str]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            out[k] = v.strip()
    except OSError:
        pass
    return out


def tracer_pid() -> int:
    try:
        return int(_status_fields().get("TracerPid", "0") or 0)
    except ValueError:
        return -1


def dangerous_caps() -> list[str]:
    """CAP_SYS_PTRACE / CAP_SYS_ADMIN in this process's effective, permitted or ambient sets."""
    f = _status_fields()
    found = []
    for key in ("CapEff", "CapPrm", "CapAmb"):
        try:
            mask = int(f.get(key, "0"), 16)
        except ValueError:
            continue
        for bit, name in ((CAP_SYS_PTRACE, "CAP_SYS_PTRACE"), (CAP_SYS_ADMIN, "CAP_SYS_ADMIN")):
            if mask >> bit & 1 and name not in found:
                found.append(name)
    return found


def refusals(allow_root: bool = False) -> list[str]:
    """Reasons the agent must not unlock keys here (empty: none)."""
    out = []
    if hasattr(os, "geteuid") and os.geteuid() == 0 and not allow_root:
        out.append("running as root: any process of root can read the agent's memory; start it as your own user")
    caps = dangerous_caps()
    if caps and not allow_root:
        out.append(f"the process holds {', '.join(caps)}: with it any process of this user could read the "
                   "agent's memory")
    tp = tracer_pid()
    if tp != 0:
        out.append(f"the process is being traced (TracerPid {tp}): refusing to unlock anything")
    return out


def code_hash() -> str:
    """sha256 over the agent's library code (every .py under lib/qts, by relative path) and the Python
    version: what the human can compare between starts."""
    root = lib_dir() / "qts"
    h = hashlib.sha256(sys.version.encode())
    for p in sorted(root.rglob("*.py")):
        h.update(str(p.relative_to(root)).encode() + b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()
