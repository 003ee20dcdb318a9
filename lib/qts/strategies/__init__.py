"""Strategies: candles in, target exposure out (0 = flat, 1 = fully in the allocated position; a
strategy may enter with a confidence in (0, 1] instead, that share of a full position: ``edge_meta``).

Long-only spot. Each strategy defines entry and exit conditions per bar; :meth:`Strategy.targets`
turns them into a position series (vectorized over history, for backtests and look-ahead checks) and
:meth:`Strategy.decide` gives the next target for the live loop from the current position, so the
loop and a backtest follow the same rule.
"""

from .base import Strategy, StrategyError  # noqa: F401
from .edge import EdgeMeta
from .library import BUILTIN, BollingerReversion, RsiReversion, SmaCross, ZScoreReversion  # noqa: F401

STRATEGIES: dict[str, type[Strategy]] = {**BUILTIN, EdgeMeta.name: EdgeMeta}  # the built-ins (user files: .user)


def resolve(name: str, home=None) -> tuple[type[Strategy], str | None]:
    """(class, sha256 of its user file or None for a built-in). A user strategy is compiled from the bytes
    that were hashed (see :mod:`.user`). StrategyError naming the strategy or the file otherwise."""
    if name in STRATEGIES:
        return STRATEGIES[name], None
    from . import user

    return user.load(name, STRATEGIES, home)


def strategy_class(name: str, home=None) -> type[Strategy]:
    return resolve(name, home)[0]


def exists(name: str, home=None) -> bool:
    """A built-in, or a user file named after it (nothing is imported: config validation uses this)."""
    from . import user

    return name in STRATEGIES or user.file_for(name, home) is not None


def available(home=None) -> tuple[dict[str, type[Strategy]], list[str]]:
    """(built-in and user strategies by name, one line per user file refused)."""
    from . import user

    found, problems = user.scan(STRATEGIES, home)
    return {**STRATEGIES, **{n: c for n, (c, _) in found.items()}}, problems


def is_user(name: str) -> bool:
    return name not in STRATEGIES


def make(name: str, params: dict | None = None, home=None, allow_user: bool = True) -> Strategy:
    if not allow_user and name not in STRATEGIES:
        raise StrategyError(f"strategy: {name!r} is a user strategy; it runs here only through a registry entry "
                            f"that pinned its code")
    return resolve(name, home)[0](**(params or {}))


def code_hash(name: str, home=None) -> str:
    """SHA-256 of the code that decides for strategy ``name``: its class (for a user strategy: its file's bytes),
    the strategy base (decide, hysteresis), the indicators and the exit rules. The registry pins it at
    registration; the trader refuses an entry whose code changed since (a re-validation pins the new code)."""
    return resolve_hashed(name, home)[1]


def resolve_hashed(name: str, home=None) -> tuple[type[Strategy], str]:
    """(class, its code hash as :func:`code_hash`), both from one read of a user file."""
    import hashlib
    import inspect

    from . import base, exits, indicators

    cls, file_sha = resolve(name, home)
    h = hashlib.sha256()
    own = inspect.getsource(cls) if file_sha is None else f"user-file:{file_sha}"
    for src in (own, inspect.getsource(base), inspect.getsource(indicators), inspect.getsource(exits)):
        h.update(src.encode("utf-8"))
        h.update(b"\0")
    return cls, h.hexdigest()


def catalog(home=None) -> dict:
    """``qts strategies list``: {"strategies": [{name, source ("built-in" or the user file), doc, params:
    [{name, type, default, bounds}]}], "refused": [one line per user file refused]}."""
    from . import user

    found, refused = available(home)
    rows = []
    for name in sorted(found):
        cls = found[name]
        params = []
        for pname, f in cls.Params.model_fields.items():
            bounds = {}
            for m in f.metadata:
                for b in ("ge", "gt", "le", "lt"):
                    if getattr(m, b, None) is not None:
                        bounds[b] = getattr(m, b)
            typ = getattr(f.annotation, "__name__", str(f.annotation))
            default = None if f.is_required() else f.default
            params.append({"name": pname, "type": typ, "default": default, "bounds": bounds})
        doc = (cls.__doc__ or "").strip().splitlines()
        rows.append({"name": name, "source": "built-in" if name in STRATEGIES else str(user.file_for(name, home)),
                     "doc": doc[0] if doc else "", "params": params})
    return {"strategies": rows, "user_dir": str(user.user_dir(home)), "refused": refused}
