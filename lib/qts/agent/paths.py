"""Where the trading agent keeps what must live outside the project. Standard library only.

The assistant's Bash commands, under Claude Code's sandbox, can write only inside the project, so what
the assistant must not be able to rewrite lives outside it, in the user's own folders:

* the KEY STORE (``$XDG_CONFIG_HOME/quant-trading-system/keys/<home-id>/``, else ``~/.config/...``):
  the PIN record, its attempt counter and the exchange keys encrypted under the PIN. The sandbox's
  ``denyRead`` and the ``permissions.deny`` rules keep the assistant from even reading it (an offline
  PIN guess needs the record).
* the AGENT STATE (``$XDG_STATE_HOME/quant-trading-system/agent/<home-id>/``, else
  ``~/.local/state/...``): the running agent's status and its hash-chained journal. The sandboxed
  assistant may read these (``qts agent status`` works from inside) but not write them.
* the RUNTIME folder (``$XDG_RUNTIME_DIR/quant-trading-system/``, else ``/tmp/quant-trading-system-<uid>``,
  mode 0700): the agent's Unix socket, for the human's own shell. (On Linux the sandbox blocks Unix
  sockets altogether.)
* the SPOOL (``<state home>/agent/spool/{in,out}/``): the one channel that works from inside the
  sandbox. Anyone may drop a request there; the agent decides.

``<home-id>`` ties each of them to one state home (a project's ``.quant-trading``), by its resolved path.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

APP = "quant-trading-system"
SOCKET_MAX = 100  # sun_path is 108 bytes on Linux, 104 on macOS


def home_id(root: os.PathLike | str) -> str:
    """A stable id for a state home, from its resolved absolute path."""
    p = Path(root).expanduser()
    try:
        p = p.resolve()
    except OSError:
        p = p.absolute()
    return hashlib.sha256(str(p).encode("utf-8", "surrogateescape")).hexdigest()[:16]


def _user_home(env) -> Path:
    h = env.get("HOME")
    return Path(h) if h else Path.home()


def config_root(env=None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(_user_home(env) / ".config")
    return Path(base) / APP


def state_root(env=None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_STATE_HOME") or str(_user_home(env) / ".local" / "state")
    return Path(base) / APP


def runtime_root(env=None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_RUNTIME_DIR")
    if base:
        return Path(base) / APP
    return Path("/tmp") / f"{APP}-{os.getuid()}"


@dataclass(frozen=True)
class AgentPaths:
    """Every location the agent and its clients use, for one state home."""

    home_root: Path
    id: str
    keystore: Path      # PIN record, attempts, exchange keys (denyRead)
    state: Path         # status.json, journal.jsonl (read-only to the sandboxed assistant)
    runtime: Path       # the socket's folder (0700)

    @classmethod
    def for_home(cls, home_root: os.PathLike | str, env=None) -> "AgentPaths":
        root = Path(home_root).expanduser().absolute()
        hid = home_id(root)
        return cls(root, hid, config_root(env) / "keys" / hid, state_root(env) / "agent" / hid, runtime_root(env))

    # -- key store ------------------------------------------------------------------------------
    @property
    def pin_record(self) -> Path:
        return self.keystore / "pin.json"

    @property
    def pin_attempts(self) -> Path:
        return self.keystore / "pin_attempts.json"

    @property
    def pin_lock(self) -> Path:
        return self.keystore / ".pin.lock"

    @property
    def exchange_keys(self) -> Path:
        return self.keystore / "exchange_keys.enc"

    # -- agent state ----------------------------------------------------------------------------
    @property
    def status_file(self) -> Path:
        return self.state / "status.json"

    @property
    def journal(self) -> Path:
        return self.state / "journal.jsonl"

    @property
    def lock_file(self) -> Path:
        """Held (flock) by the running agent for its whole life: one agent per state home."""
        return self.state / "agent.lock"

    # -- channels -------------------------------------------------------------------------------
    @property
    def socket(self) -> Path:
        p = self.runtime / f"{self.id}.sock"
        if len(str(p)) > SOCKET_MAX:  # a deep XDG_RUNTIME_DIR (tests): a short fallback under /tmp
            p = Path("/tmp") / f"qts-{os.getuid()}" / f"{self.id}.sock"
        return p

    @property
    def spool(self) -> Path:
        return self.home_root / "agent" / "spool"

    @property
    def spool_in(self) -> Path:
        return self.spool / "in"

    @property
    def spool_out(self) -> Path:
        return self.spool / "out"

    def outside_project(self) -> list[Path]:
        """The folders the confinement rules must cover (denyRead for the key store and runtime;
        no writes anywhere here)."""
        return [self.keystore.parent, self.state.parent, self.runtime]
