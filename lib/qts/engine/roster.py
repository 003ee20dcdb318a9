"""What the trader runs: the strategies the registry promoted (paper, live-ramp, live), each on its own symbol
with its pinned parameters; the environment's single ``STRATEGY`` on every ``SYMBOLS`` only when the registry
has none.

An entry is refused (not run, the reason recorded) when its code changed since it was registered (its
``code_sha256`` differs from :func:`qts.strategies.code_hash`, or none was recorded), when it was validated
at another timeframe than ``TRADE_INTERVAL`` (the loop runs one interval), or when another entry already
trades its symbol (one position per symbol). When the registry has active entries but none can run, the
session is refused with the reasons: the environment's strategy does not silently take their place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

STAGE_ORDER = {"live": 0, "live-ramp": 1, "paper": 2}


@dataclass
class Roster:
    strategies: dict  # symbol -> Strategy
    source: str  # "registry" or "env"
    entries: dict = field(default_factory=dict)  # symbol -> registry entry id
    refused: list[str] = field(default_factory=list)  # one line per entry not run, naming it and why
    notes: list[str] = field(default_factory=list)

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(self.strategies)


class RosterError(RuntimeError):
    """The registry has promoted strategies and none of them can run."""


def load_roster(settings, strategy_params: dict | None = None, stages=None) -> Roster:
    """The roster for ``settings`` from the registry's entries in ``stages`` (default: paper, live-ramp, live)."""
    from ..registry import ACTIVE_STAGES, Registry
    from ..strategies import StrategyError, resolve_hashed

    stages = ACTIVE_STAGES if stages is None else tuple(stages)

    reg = Registry.load(settings.home)
    notes = []
    if not reg.ok:
        notes.append(f"registry unreadable ({reg.problem}): running the configured STRATEGY")
    active = sorted((e for e in reg.entries if e.stage in stages),
                    key=lambda e: (STAGE_ORDER.get(e.stage, 9), e.id))
    if not active:
        from ..strategies import make

        strategies = {s: make(settings.STRATEGY, strategy_params, settings.home) for s in settings.SYMBOLS}
        return Roster(strategies, "env", notes=notes)
    if strategy_params:
        notes.append("--param ignored: the registry's strategies run with their pinned parameters")
    strategies, entries, refused = {}, {}, []
    for e in active:
        symbols = (e.symbol,) if e.symbol else tuple(settings.SYMBOLS)
        try:  # a user file is read once: the class that runs is the code whose hash is checked here
            cls, current = resolve_hashed(e.strategy, settings.home)
        except StrategyError as err:
            refused.append(f"{e.id}: {err}")
            continue
        if e.code_sha256 is None:
            refused.append(f"{e.id}: no code hash recorded at registration; re-validate it to pin its code")
            continue
        if e.code_sha256 != current:
            refused.append(f"{e.id}: the code of {e.strategy} changed since it was registered "
                           f"({e.code_sha256[:12]} -> {current[:12]}); re-validate it before it trades again")
            continue
        if e.timeframe_minutes is not None and int(e.timeframe_minutes) != settings.TRADE_INTERVAL:
            refused.append(f"{e.id}: validated at {e.timeframe_minutes:g}m, the loop runs TRADE_INTERVAL="
                           f"{settings.TRADE_INTERVAL}")
            continue
        try:
            strat = cls(**(e.params or {}))
        except StrategyError as err:
            refused.append(f"{e.id}: pinned parameters no longer valid: {err}")
            continue
        for sym in symbols:
            if sym in strategies:
                refused.append(f"{e.id}: {sym} is already traded by {entries[sym]}")
                continue
            strategies[sym], entries[sym] = strat, e.id
    if not strategies:
        raise RosterError("the registry's promoted strategies cannot run: " + "; ".join(refused))
    return Roster(strategies, "registry", entries, refused, notes)


def roster_settings(settings, roster: Roster):
    """The settings with SYMBOLS set to the roster's symbols (the feed follows exactly those)."""
    if roster.source != "registry" or tuple(settings.SYMBOLS) == roster.symbols:
        return settings
    return settings.model_copy(update={"SYMBOLS": roster.symbols})


def live_strategies(settings, symbols) -> tuple[dict, list[str]]:
    """The trading agent's live loop: the registry's live-ramp / live entries on the agent's ``symbols`` (code
    checked as above), and the configured STRATEGY on the agent's other symbols (as before: the registry's ramp
    gives it no capital unless it is itself promoted, and it still exits what is held). Returns (symbol ->
    Strategy, notes naming every entry not run and why)."""
    from ..registry import LIVE_STAGES
    from ..strategies import StrategyError, make

    notes: list[str] = []
    try:
        roster = load_roster(settings, stages=LIVE_STAGES)
    except RosterError as e:
        roster, notes = None, [str(e)]
    chosen = {}
    if roster is not None and roster.source == "registry":
        notes += [f"not run: {r}" for r in roster.refused]
        for sym, strat in roster.strategies.items():
            if sym in symbols:
                chosen[sym] = strat
            else:
                notes.append(f"not run: {roster.entries[sym]}: {sym} is not one of the agent's SYMBOLS")
    elif roster is not None:
        notes += roster.notes
    for sym in symbols:
        if sym in chosen:
            continue
        try:  # a user strategy runs in the agent only through a registry entry that pinned its code
            chosen[sym] = make(settings.STRATEGY, home=settings.home, allow_user=False)
        except StrategyError as e:
            notes.append(f"not run: {sym}: {e}")
    return chosen, notes
