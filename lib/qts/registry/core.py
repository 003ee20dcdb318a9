"""The strategy registry file: load (fail safe), verify, change (locked, atomic, hash-chained).

``<state home>/registry/strategies.json`` holds ``{"schema_version", "version", "strategies": [...],
"history": [...]}``. Every change appends a history record carrying the changed entry as it was after
the change, the hash of all entries after it, and the previous record's hash (a hash chain), and
bumps ``version``. On load the whole chain is re-computed: a file that does not parse, fails the
schema, or whose chain or state hash does not match is CORRUPT.

Fail safe: a missing registry has no entries; a corrupt one is reported (``Registry.problem``) and
treated as having no entries either, so nothing is live, nothing can be promoted, and
:func:`qts.registry.capital_fraction` is 0 for every strategy. ``Registry.reset`` moves a damaged file
aside (never deletes it) and starts an empty registry; adding a research result does the same
automatically. The hash chain detects damage and careless edits; it is NOT what makes live stages
safe against deliberate edits (anyone who can write the file can recompute hashes): that is the
PIN-signed authorization each live-ramp step and the live stage carry, which only the human can make
and which :func:`qts.registry.capital_fraction` verifies on every call.
"""

from __future__ import annotations

import base64
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

from pydantic import ValidationError

from ..fsutil import LockTimeout, file_lock, write_atomic
from ..paths import StateHome
from .models import (DAY_MS, DEFAULT_TTL_DAYS, GENESIS, LEGAL, LIVE_STAGES, PATH, RAMP_STEPS, STAGES, Entry,
                     HistoryRecord, RegistryFile, canonical, params_hash, sha256)

MAX_FILE_BYTES = 32 * 1024 * 1024


class RegistryError(RuntimeError):
    """A registry operation was refused or failed; the message says why and what to do."""


class RegistryCorrupt(RegistryError):
    pass


def now_ms() -> int:
    return int(time.time() * 1000)


def registry_dir(home: StateHome) -> Path:
    return Path(home.root) / "registry"


def registry_path(home: StateHome) -> Path:
    return registry_dir(home) / "strategies.json"


@contextmanager
def _locked(home: StateHome, timeout_s: float = 30.0):
    d = registry_dir(home)
    try:
        with file_lock(d / ".lock", timeout_s):
            yield
    except LockTimeout:
        raise RegistryError(f"the registry is locked by another process ({d / '.lock'})") from None


def entry_id(strategy: str, params: dict, symbol: str | None, timeframe: float | None) -> str:
    h = sha256({"strategy": strategy, "params": params, "symbol": symbol, "timeframe": timeframe})
    return f"{strategy}-{h[:8]}"


# -- authorization (the PIN-signed approval carried by a live stage) ---------------------------------

def authorization_payload(entry: Entry, to_stage: str, ramp_step: int | None) -> dict:
    """What a promotion approval signs: this entry, these parameters, this stage and step."""
    return {"entry_id": entry.id, "strategy": entry.strategy, "params_sha256": params_hash(entry.strategy, entry.params),
            "to_stage": to_stage, "ramp_step": ramp_step}


def verify_authorization(home: StateHome, auth, entry: Entry, to_stage: str, ramp_step: int | None) -> str | None:
    """None if ``auth`` is a promote-strategy-live approval signed by this home's PIN key for exactly
    this entry, parameters, stage and step; else why not. Checks the signature only (not expiry or
    single use: that was checked when it was used for the promotion). Never raises."""
    try:
        from ..safety import pin
        from ..safety.grants import ACTION_PROMOTE_STRATEGY_LIVE, APPROVAL_DOMAIN, Approval, home_id

        if not isinstance(auth, dict) or "signature" not in auth:
            return "no PIN-signed authorization"
        body = Approval.model_validate({k: v for k, v in auth.items() if k != "signature"}, strict=True)
        if body.action != ACTION_PROMOTE_STRATEGY_LIVE:
            return f"the authorization is for {body.action!r}, not a strategy promotion"
        if body.state_home != home_id(home):
            return "the authorization belongs to another state home"
        if body.key_fingerprint != pin.fingerprint(home):
            return "the authorization was signed by another PIN key"
        sig = base64.b64decode(str(auth["signature"]), validate=True)
        if not pin.verify_signature(home, APPROVAL_DOMAIN + body.canonical_bytes(), sig):
            return "the authorization's signature does not verify"
        if body.payload != authorization_payload(entry, to_stage, ramp_step):
            return "the authorization is for another entry, parameter set, stage or step"
        return None
    except Exception as e:
        return f"the authorization cannot be verified ({e.__class__.__name__})"


# -- the registry --------------------------------------------------------------------------------------

def _verify_chain(f: RegistryFile) -> str | None:
    prev = GENESIS
    for i, rec in enumerate(f.history):
        if rec.version != i + 1:
            return f"history record {i + 1} has version {rec.version}"
        if rec.prev_hash != prev:
            return f"history chain broken at version {rec.version}"
        if sha256(rec.body()) != rec.hash:
            return f"history record {rec.version} was altered (hash mismatch)"
        prev = rec.hash
    if f.version != len(f.history):
        return f"version {f.version} does not match {len(f.history)} history records"
    expect = f.history[-1].state_hash if f.history else sha256([])
    if f.state_hash() != expect:
        return "the entries do not match the last history record (edited outside qts?)"
    ids = [e.id for e in f.strategies]
    if len(set(ids)) != len(ids):
        return "duplicate entry ids"
    return None


class Registry:
    """The registry as read from disk. Never raises on load: see ``ok`` / ``problem``."""

    def __init__(self, home: StateHome, file: RegistryFile, problem: str | None = None, exists: bool = True):
        self.home, self._file, self.problem, self.exists = home, file, problem, exists

    # -- reading ----------------------------------------------------------------------------------
    @classmethod
    def load(cls, home: StateHome | str | Path) -> "Registry":
        home = home if isinstance(home, StateHome) else StateHome(Path(home))
        path = registry_path(home)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return cls(home, RegistryFile(), None, exists=False)
        except OSError as e:
            return cls(home, RegistryFile(), f"{path}: unreadable ({e.strerror}): treated as empty, nothing is live")
        try:
            import stat as _stat

            if not _stat.S_ISREG(st.st_mode):
                raise ValueError("not a regular file")
            if st.st_size > MAX_FILE_BYTES:
                raise ValueError("file too large")
            raw = json.loads(path.read_bytes().decode("utf-8"))
            f = RegistryFile.model_validate(raw)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(x) for x in err["loc"])
            return cls(home, RegistryFile(), f"{path}: fails the schema at {where}: {err['msg']}: treated as empty, "
                                             "nothing is live (qts registry reset moves it aside)")
        except Exception as e:
            return cls(home, RegistryFile(), f"{path}: unreadable ({e.__class__.__name__}: {e}): treated as empty, "
                                             "nothing is live (qts registry reset moves it aside)")
        why = _verify_chain(f)
        if why:
            return cls(home, RegistryFile(), f"{path}: corrupt: {why}: treated as empty, nothing is live "
                                             "(qts registry reset moves it aside)")
        return cls(home, f, None)

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def path(self) -> Path:
        return registry_path(self.home)

    @property
    def version(self) -> int:
        return self._file.version

    @property
    def entries(self) -> list[Entry]:
        return list(self._file.strategies)

    @property
    def history(self) -> list[HistoryRecord]:
        return list(self._file.history)

    def get(self, eid: str) -> Entry:
        if not self.ok:
            raise RegistryCorrupt(self.problem)
        for e in self._file.strategies:
            if e.id == eid:
                return e
        raise RegistryError(f"no registry entry {eid!r} (see: qts registry list)")

    def active_for(self, strategy: str) -> Entry | None:
        """The entry of ``strategy`` in paper / live-ramp / live (there is at most one)."""
        for e in self._file.strategies:
            if e.strategy == strategy and e.stage in ("paper", "live-ramp", "live"):
                return e
        return None

    def versions(self) -> list[dict]:
        return [{"version": r.version, "ts": r.ts, "action": r.action, "entry_id": r.entry_id,
                 "from": r.from_stage, "to": r.to_stage, "ramp_step": r.ramp_step, "detail": r.detail}
                for r in self._file.history]

    def entry_at(self, eid: str, version: int) -> dict | None:
        """The entry as it was after change ``version`` (None if it did not exist yet)."""
        snap = None
        for r in self._file.history:
            if r.version > version:
                break
            if r.entry_id == eid:
                snap = r.entry
        return snap

    # -- writing ----------------------------------------------------------------------------------
    @classmethod
    def reset(cls, home: StateHome, now: int | None = None) -> Path | None:
        """Move a damaged (or any) registry file aside and start empty. Returns where it went."""
        now = now or now_ms()
        with _locked(home):
            path = registry_path(home)
            if not path.exists():
                return None
            dest = path.with_name(f"strategies.corrupt-{now}.json")
            os.replace(path, dest)
            reg = cls(home, RegistryFile(), None)
            reg._commit(reg._file.model_copy(deep=True), now, "reset", None, None, None, None,
                        f"previous file moved to {dest.name}; nothing carried over")
            return dest

    def _commit(self, f: RegistryFile, now: int, action: str, entry: Entry | None, from_stage, to_stage,
                ramp_step, detail: str) -> None:
        prev = f.history[-1].hash if f.history else GENESIS
        body = {"version": f.version + 1, "ts": int(now), "action": action, "entry_id": entry.id if entry else None,
                "from_stage": from_stage, "to_stage": to_stage, "ramp_step": ramp_step, "detail": detail[:2000],
                "entry": entry.model_dump(mode="json") if entry else None, "state_hash": f.state_hash(),
                "prev_hash": prev}
        rec = HistoryRecord(**body, hash=sha256(HistoryRecord(**body, hash="").body()))
        f.history.append(rec)
        f.version = rec.version
        data = canonical(f.model_dump(mode="json"))
        write_atomic(registry_path(self.home), json.dumps(json.loads(data), indent=1, sort_keys=True) + "\n")
        self._file, self.problem, self.exists = f, None, True

    def mutate(self, fn, *, now: int | None = None, reset_if_corrupt: bool = False):
        """Run ``fn(file, now) -> (action, entry, from, to, step, detail, result)`` on a fresh copy
        under the lock, then write it. Raises RegistryCorrupt on a damaged file (unless
        ``reset_if_corrupt``: the damaged file is moved aside first)."""
        now = int(now if now is not None else now_ms())
        with _locked(self.home):
            cur = Registry.load(self.home)
            if not cur.ok:
                if not reset_if_corrupt:
                    raise RegistryCorrupt(cur.problem)
                problem = cur.problem
                path = registry_path(self.home)
                dest = path.with_name(f"strategies.corrupt-{now}.json")
                if os.path.lexists(path):
                    os.replace(path, dest)
                cur = Registry(self.home, RegistryFile(), None)
                cur._commit(RegistryFile(), now, "reset", None, None, None, None,
                            f"previous registry was damaged and moved to {dest.name} (nothing carried over): {problem}")
            f = cur._file.model_copy(deep=True)
            action, entry, frm, to, step, detail, result = fn(f, now)
            cur._commit(f, now, action, entry, frm, to, step, detail)
            self._file, self.problem, self.exists = cur._file, None, True
            return result

    # -- the operations ---------------------------------------------------------------------------
    def add(self, *, strategy: str, params: dict, stage: str = "backtested", symbol: str | None = None,
            timeframe_minutes: float | None = None, expected=None, validation=None, grid: dict | None = None,
            provenance=None, ttl_days: float = DEFAULT_TTL_DAYS, now: int | None = None, note: str = "") -> Entry:
        """Add a research result (``research``) or a validated one (``backtested``: needs a passed
        validation). The same strategy, parameters, symbol and timeframe again: its validation,
        expectations and expiry are renewed instead (a failed re-validation takes a live stage back to
        paper). A retired entry is never revived: a new entry is made."""
        from ..strategies import StrategyError, resolve_hashed

        if stage not in ("research", "backtested"):
            raise RegistryError(f"new entries start in research or backtested, not {stage!r} ({PATH})")
        try:  # a built-in or a user file (<home>/strategies/NAME.py): the class and the hash of one read
            cls, code = resolve_hashed(strategy, self.home)
        except StrategyError as e:
            raise RegistryError(str(e)) from None
        s = cls(**(params or {}))  # the strategy's own validation
        params = {**s.params.model_dump(), **s.exits.nonzero()}  # exit rules (if any) are pinned with the signals
        base = entry_id(strategy, params, symbol, timeframe_minutes)

        def fn(f: RegistryFile, now: int):
            same = [e for e in f.strategies if e.id == base or e.id.startswith(base + "-")]
            live = [e for e in same if e.stage != "retired"]
            if live:
                e = live[0]
                i = f.strategies.index(e)
                upd = {"expected": expected or e.expected, "validation": validation or e.validation,
                       "grid": grid or e.grid, "updated_ts": now, "provenance": provenance or e.provenance}
                frm, to, detail = e.stage, e.stage, "re-validated"
                if validation is not None and validation.passed:
                    upd["expires_ts"] = now + int(ttl_days * DAY_MS)
                    upd["code_sha256"] = code  # a passed re-validation pins the code it ran
                    if e.stage == "research" and stage == "backtested":
                        upd.update(stage="backtested", stage_since_ts=now)
                        to = "backtested"
                    detail = "re-validated: passed; expiry renewed"
                elif validation is not None:
                    detail = "re-validation FAILED: " + "; ".join(validation.reasons)[:500]
                    if e.stage in LIVE_STAGES:
                        upd.update(stage="paper", ramp_step=None, step_since_ts=None, stage_since_ts=now,
                                   authorization=None)
                        to = "paper"
                        detail += "; demoted to paper"
                ne = e.model_copy(update=upd)
                ne = Entry.model_validate(ne.model_dump())
                f.strategies[i] = ne
                return "revalidate", ne, frm, to, ne.ramp_step, detail, ne
            if stage == "backtested" and not (validation is not None and validation.passed):
                raise RegistryError("only a strategy that passed validation enters the registry as backtested")
            eid = base if not same else f"{base}-{len(same) + 1}"
            ne = Entry(id=eid, strategy=strategy, params=params, symbol=symbol, timeframe_minutes=timeframe_minutes,
                       stage=stage, created_ts=now, updated_ts=now, expires_ts=now + int(ttl_days * DAY_MS),
                       stage_since_ts=now, expected=expected, validation=validation, grid=grid or {},
                       provenance=provenance or {}, note=note[:500], code_sha256=code)
            f.strategies.append(ne)
            return "add", ne, None, stage, None, f"added as {stage}", ne

        return self.mutate(fn, now=now, reset_if_corrupt=True)

    def transition(self, eid: str, to: str, *, now: int | None = None, detail: str = "",
                   authorization: dict | None = None, ramp_step: int | None = None,
                   require_fresh: bool = True) -> Entry:
        """Move entry ``eid`` to stage ``to`` if the edge exists and its conditions hold. Moving to a live
        stage (or up a ramp step) also needs ``authorization``: a PIN-signed promote-strategy-live
        approval for exactly this entry, stage and step (see :mod:`qts.registry.lifecycle`, which
        also checks realized performance before it gets here)."""
        if to not in STAGES:
            raise RegistryError(f"unknown stage {to!r}; stages: {', '.join(STAGES)}")

        def fn(f: RegistryFile, now: int):
            e = next((x for x in f.strategies if x.id == eid), None)
            if e is None:
                raise RegistryError(f"no registry entry {eid!r} (see: qts registry list)")
            frm = e.stage
            if to not in LEGAL[frm]:
                allowed = ", ".join(LEGAL[frm]) or "nothing (retired is final)"
                raise RegistryError(f"illegal transition {frm} -> {to} for {eid}: from {frm} it can go to {allowed}. "
                                    f"The path is {PATH}")
            promotion = (STAGES.index(to) > STAGES.index(frm) and to != "retired") or (frm == to == "live-ramp")
            upd: dict = {"stage": to, "updated_ts": now}
            step = None
            if promotion:
                if require_fresh and e.expired(now):
                    raise RegistryError(f"{eid}: its validation expired on {_iso(e.expires_ts)}; re-validate before "
                                        "any promotion (qts backtest ... --validate --register, or qts research)")
                if e.validation is None or not e.validation.passed:
                    raise RegistryError(f"{eid}: no passed validation on record; it cannot be promoted")
                if to in ("paper", "live-ramp", "live"):
                    other = next((x for x in f.strategies if x.strategy == e.strategy and x.id != e.id
                                  and x.stage in ("paper", "live-ramp", "live")), None)
                    if other is not None:
                        raise RegistryError(f"{eid}: {other.id} already runs {e.strategy} in {other.stage}; realized "
                                            f"results are attributed by strategy name, so retire or demote it first")
            if to == "live-ramp":
                step = 0 if frm == "paper" else (e.ramp_step or 0) + 1
                if frm == "live-ramp" and step >= len(RAMP_STEPS):
                    raise RegistryError(f"{eid}: already at the last ramp step (100%); promote it to live")
                if ramp_step is not None and ramp_step != step:
                    raise RegistryError(f"{eid}: the next ramp step is {step}, not {ramp_step}")
            if to == "live" and (frm != "live-ramp" or e.ramp_step != len(RAMP_STEPS) - 1):
                raise RegistryError(f"{eid}: live needs the last ramp step (100%) first; it is {e.stage_label()}")
            if to in LIVE_STAGES:
                why = verify_authorization(self.home, authorization, e, to, step)
                if why:
                    raise RegistryError(f"{eid}: {to} needs the human's PIN approval: {why}")
                if not e.validation.strict_gates:
                    raise RegistryError(f"{eid}: validated with gates looser than the defaults; live stages need a "
                                        "validation under the default (strict) gates")
                if e.validation.data.synthetic:
                    raise RegistryError(f"{eid}: validated on SYNTHETIC data only; live stages need real market data")
                upd.update(ramp_step=step, step_since_ts=now, authorization=authorization)
            else:
                upd.update(ramp_step=None, step_since_ts=None, authorization=None)
            if to != frm:
                upd["stage_since_ts"] = now
            ne = Entry.model_validate(e.model_copy(update=upd).model_dump())
            f.strategies[f.strategies.index(e)] = ne
            what = f"{frm} -> {ne.stage_label()}"
            return "transition", ne, frm, to, step, (detail + "; " if detail else "") + what, ne

        return self.mutate(fn, now=now)

    def retire(self, eid: str, *, now: int | None = None, reason: str = "") -> Entry:
        return self.transition(eid, "retired", now=now, detail=reason or "retired by hand")

    def demote(self, eid: str, *, now: int | None = None, reason: str) -> Entry:
        """Back to paper (free: reducing risk never needs the PIN)."""
        return self.transition(eid, "paper", now=now, detail=reason)


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ms / 1000))
