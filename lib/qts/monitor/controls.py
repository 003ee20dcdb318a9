"""The dashboard's tightening controls, checked HERE (on the server), never trusted from the page.

- :func:`lower_limit`: one risk-profile field set to a stricter value. Stricter is decided by the profile's own
  rules (``LIMIT_DIRECTIONS`` in safety/risk_profile.py) against the EFFECTIVE profile (the saved file made at
  least as strict as the per-user anchor's copy, then tightened by settings): a value equal to or looser than
  the one in force, a field that cannot be ranked ("any change"), or a value the profile rejects is refused
  with what to run in a terminal instead. The new profile is then saved by ``save_profile`` without any key,
  which refuses a loosening by itself (a second check that does not depend on this one).
- :func:`pause_strategy`: a strategy takes no new entries (safety/pauses.py). Resuming needs the PIN.

Each returns (HTTP status, JSON body).
"""

from __future__ import annotations

from ..safety.risk_profile import ANY, HIGHER, LIMIT_DIRECTIONS, LOWER, SIZING_STRICTNESS


def tightenable_fields() -> list[str]:
    return [k for k, d in LIMIT_DIRECTIONS.items() if d != ANY]


def _stricter(direction: str, new, cur) -> bool:
    if direction == HIGHER:
        return new < cur
    if direction == LOWER:
        return new > cur
    if direction == "sizing":
        return SIZING_STRICTNESS.get(new, -1) > SIZING_STRICTNESS.get(cur, -1)
    return False


def effective_profile(home):
    """(saved profile in force: file + anchor, effective: also tightened by settings)."""
    from ..reports.status import _settings_or_none
    from ..safety.risk_profile import load_profile

    saved = load_profile(home)
    settings, _ = _settings_or_none(home)
    eff = saved.profile.tightened_by_settings(settings) if settings is not None else saved.profile
    return saved, eff


def limits_view(home) -> dict:
    """What the page's "lower a limit" control offers: each rankable field, its effective value, which way is
    stricter."""
    saved, eff = effective_profile(home)
    return {"version": saved.version, "source": saved.source,
            "fields": [{"field": k, "value": getattr(eff, k), "saved": getattr(saved.profile, k),
                        "stricter": {HIGHER: "lower", LOWER: "higher", "sizing": "kelly"}[LIMIT_DIRECTIONS[k]]}
                       for k in tightenable_fields()]}


def lower_limit(home, store, body: dict) -> tuple[int, dict]:
    from ..safety.risk_profile import ProfileChangeRefused, RiskProfileError, save_profile, validate_profile

    field, value = body.get("field"), body.get("value")
    cmd = f"qts risk set {field}={value}  (in your own terminal; loosening asks for the PIN)"
    if not isinstance(field, str) or field not in LIMIT_DIRECTIONS:
        return 400, {"error": "field: one of " + ", ".join(tightenable_fields()), "changed": False}
    direction = LIMIT_DIRECTIONS[field]
    if direction == ANY:
        return 409, {"error": f"{field}: a change to it cannot be ranked as stricter, so it needs the PIN",
                     "changed": False, "command": cmd}
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return 400, {"error": f"value: a number{' or a sizing name' if direction == 'sizing' else ''}", "changed": False}
    saved, eff = effective_profile(home)
    try:
        new = validate_profile({**saved.profile.model_dump(), field: value})
    except RiskProfileError as e:
        return 400, {"error": str(e), "changed": False}
    cur = getattr(eff, field)
    if not _stricter(direction, getattr(new, field), cur):
        return 409, {"error": f"{field}: {getattr(new, field)!r} is not stricter than the value in force {cur!r} "
                              f"(stricter is {'lower' if direction == HIGHER else 'higher' if direction == LOWER else 'kelly'})"
                              ": not from the dashboard", "changed": False, "command": cmd, "current": cur}
    log = lambda kind, msg, d=None: store.event("risk", f"dashboard: {msg}", "warning", d)  # noqa: E731
    try:
        out = save_profile(home, new, log=log)  # no key: save_profile itself refuses any loosening
    except ProfileChangeRefused as e:
        return 409, {"error": str(e), "changed": False, "command": cmd}
    return 200, {"changed": True, "field": field, "old": cur, "new": getattr(out.profile, field),
                 "version": out.version,
                 "undo": f"qts risk set {field}={cur}  (in your own terminal, with the PIN)"}


def pause_strategy(home, store, body: dict) -> tuple[int, dict]:
    from ..safety import pauses

    name, reason = body.get("strategy"), body.get("reason", "dashboard")
    try:
        out = pauses.pause(home, name, reason=f"dashboard: {reason}" if isinstance(reason, str) else reason,
                           store=store)
    except pauses.PauseError as e:
        return 400, {"error": str(e), "changed": False}
    return 200, {"changed": out["changed"], "strategy": out["strategy"], "paused": sorted(out["paused"]),
                 "undo": f"qts strategy resume {out['strategy']}  (in your own terminal, with the PIN)"}
