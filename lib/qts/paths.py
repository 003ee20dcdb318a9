"""Where runtime state lives: one state home in the user's project, never in the plugin folder.

Resolution order: ``QTS_HOME`` (explicit), else ``$CLAUDE_PROJECT_DIR/.quant-trading`` (set for
Claude Code hooks), else ``./.quant-trading`` in the current directory. Standard library only:
hooks import this on every Bash call.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "QTS_HOME"
HOME_DIRNAME = ".quant-trading"


def resolve_home(explicit: str | os.PathLike | None = None, environ: dict | None = None) -> Path:
    env = os.environ if environ is None else environ
    if explicit:
        return Path(explicit).expanduser().absolute()
    if env.get(HOME_ENV):
        return Path(env[HOME_ENV]).expanduser().absolute()
    base = env.get("CLAUDE_PROJECT_DIR") or os.getcwd()
    return (Path(base) / HOME_DIRNAME).absolute()


class StateHome:
    """Named locations inside the state home (the seed's names are kept: logs/, db/metrics.db).

    A plain immutable value (not a dataclass: the hooks import this on every Bash call, and the kill
    switch's flag must be set in milliseconds; ``dataclasses`` alone costs ~20 ms to import)."""

    __slots__ = ("root",)

    def __init__(self, root):
        object.__setattr__(self, "root", root if isinstance(root, Path) else Path(root))

    def __setattr__(self, name, value):
        raise AttributeError("StateHome is immutable")

    def __eq__(self, other):
        return isinstance(other, StateHome) and other.root == self.root

    def __hash__(self):
        return hash(("StateHome", self.root))

    def __repr__(self):
        return f"StateHome(root={self.root!r})"

    @classmethod
    def resolve(cls, explicit=None, environ=None) -> "StateHome":
        return cls(resolve_home(explicit, environ))

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def db_dir(self) -> Path:
        return self.root / "db"

    @property
    def db_path(self) -> Path:
        return self.db_dir / "metrics.db"

    @property
    def trades_log(self) -> Path:
        return self.logs / "trades.jsonl"

    @property
    def pre_trade_log(self) -> Path:
        return self.logs / "pre_trade.json"

    @property
    def post_trade_log(self) -> Path:
        return self.logs / "post_trade.json"

    @property
    def breaker_file(self) -> Path:
        return self.logs / "circuit_breaker.json"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "loop.pid"

    @property
    def status_file(self) -> Path:
        return self.run_dir / "loop.status.json"

    @property
    def safety_dir(self) -> Path:
        return self.root / "safety"

    @property
    def kill_flag(self) -> Path:
        return self.safety_dir / "KILL_SWITCH"

    @property
    def env_file(self) -> Path:
        return self.root / ".env"

    def ensure(self) -> "StateHome":
        for d in (self.root, self.logs, self.db_dir, self.run_dir, self.safety_dir):
            d.mkdir(parents=True, exist_ok=True)
        return self


def plugin_root() -> Path:
    """The repository / installed plugin folder, located from this file (not from its name)."""
    return Path(__file__).resolve().parents[2]
