"""User strategies: Python files a user drops in ``<state home>/strategies/`` (or the folder named by
``QTS_STRATEGY_PATH``), one strategy per file, the file named after the strategy: ``my_breakout.py`` defines a
:class:`qts.strategies.Strategy` subclass whose ``name = "my_breakout"`` (with ``Params``, ``lookback`` and
``signals``, the shape of the built-ins in ``library.py``).

A file is imported only when its strategy is asked for by name (``qts backtest my_breakout``, a registry entry,
``STRATEGY=my_breakout``) or listed (``qts strategies list``); never by the hooks (nothing under ``qts.hooks``
imports this package). The module is compiled from the very bytes that were hashed, so the class that runs is
the code the registry pinned (:func:`load` returns both); an edited file gets a new hash and the roster refuses
its entries until they are re-validated. A file named after a built-in is refused without being imported; a
file that fails to import is reported as ``<path>: <error>``, and the built-ins go on working.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import types
from pathlib import Path

from .base import Strategy, StrategyError

PATH_ENV = "QTS_STRATEGY_PATH"
DIRNAME = "strategies"
NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")
MODULE_PREFIX = "qts_user_strategies."

_home: Path | None = None  # the state home of the settings loaded last (config.load_settings sets it)
_cache: dict[tuple[str, str], type[Strategy]] = {}  # (path, sha256 of its bytes) -> class


def set_home(home) -> None:
    global _home
    _home = None if home is None else Path(home)


def user_dir(home=None) -> Path:
    """``QTS_STRATEGY_PATH`` if set, else ``<state home>/strategies``."""
    if os.environ.get(PATH_ENV):
        return Path(os.environ[PATH_ENV]).expanduser().absolute()
    if home is None:
        home = _home
    if home is None:
        from ..paths import resolve_home

        home = resolve_home()
    from ..paths import StateHome

    return Path(home.root if isinstance(home, StateHome) else home) / DIRNAME


def file_for(name: str, home=None) -> Path | None:
    """The user file that would define ``name`` (it exists), else None. Nothing is imported."""
    if not NAME_RE.match(name):
        return None
    p = user_dir(home) / f"{name}.py"
    return p if p.is_file() else None


def names(home=None) -> list[str]:
    d = user_dir(home)
    try:
        return sorted(p.stem for p in d.glob("*.py") if p.is_file() and not p.name.startswith("_"))
    except OSError:
        return []


def load(name: str, builtins, home=None) -> tuple[type[Strategy], str]:
    """(class, sha256 of the file's bytes) for user strategy ``name``. StrategyError naming the file otherwise."""
    if name in builtins:
        raise StrategyError(f"strategy: {name!r} is a built-in strategy; a user file cannot replace it")
    path = file_for(name, home)
    if path is None:
        raise StrategyError(f"strategy: unknown {name!r}; allowed: {', '.join(sorted(builtins))}, or a file "
                            f"{user_dir(home) / (name + '.py')} defining it")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise StrategyError(f"{path}: unreadable: {e.strerror or e}") from None
    sha = hashlib.sha256(data).hexdigest()
    key = (str(path), sha)
    if key in _cache:
        return _cache[key], sha
    modname = MODULE_PREFIX + name
    mod = types.ModuleType(modname)
    mod.__file__ = str(path)
    prev = sys.modules.get(modname)
    sys.modules[modname] = mod  # pydantic resolves annotations through the module
    try:
        code = compile(data, str(path), "exec")
        exec(code, mod.__dict__)  # noqa: S102 - the user's own strategy file, pinned by its hash
    except BaseException as e:  # noqa: BLE001 - SystemExit / KeyboardInterrupt from a file are its errors too
        if prev is None:
            sys.modules.pop(modname, None)
        else:
            sys.modules[modname] = prev
        if isinstance(e, KeyboardInterrupt):
            raise
        where = f" (line {e.lineno})" if isinstance(e, SyntaxError) and e.lineno else ""
        raise StrategyError(f"{path}: failed to import{where}: {type(e).__name__}: {e}") from None
    found = [v for v in vars(mod).values()
             if isinstance(v, type) and issubclass(v, Strategy) and v is not Strategy and v.__module__ == modname]
    if not found:
        raise StrategyError(f"{path}: defines no Strategy subclass (class ...(Strategy) with name = {name!r})")
    match = [c for c in found if getattr(c, "name", None) == name]
    if len(match) != 1:
        got = ", ".join(repr(getattr(c, "name", None)) for c in found)
        raise StrategyError(f"{path}: needs exactly one Strategy subclass with name = {name!r} "
                            f"(the file's name); found name {got}")
    cls = match[0]
    missing = [a for a in ("Params", "lookback", "signals") if getattr(cls, a, None) is getattr(Strategy, a, None)]
    if missing:
        raise StrategyError(f"{path}: {cls.__name__} does not define {', '.join(missing)}")
    cls.__qts_source_sha256__ = sha
    _cache[key] = cls
    return cls, sha


def scan(builtins, home=None) -> tuple[dict[str, tuple[type[Strategy], str]], list[str]]:
    """Every user file: ({name: (class, sha256)}, one line per file refused, naming the file and why)."""
    ok, problems = {}, []
    d = user_dir(home)
    for n in names(home):
        path = d / f"{n}.py"
        if not NAME_RE.match(n):
            problems.append(f"{path}: the file name must be a strategy name (lower case letters, digits, _)")
            continue
        try:
            ok[n] = load(n, builtins, home)
        except StrategyError as e:
            problems.append(str(e) if str(e).startswith(str(path)) else f"{path}: {e}")
    return ok, problems
