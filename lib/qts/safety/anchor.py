"""The per-user ANCHOR: what the project's state home must not be able to forget. Standard library only.

Files the assistant can write cannot remember on their own: deleting or rolling back the project's
``.quant-trading/`` used to read as a fresh install (kill switch clear, ACTIVE, default limits). The anchor
lives outside the project, in the user's XDG state folder (``$XDG_STATE_HOME/quant-trading-system/anchor/
<home-id>.json``, ``agent/paths.py state_root()``), which Claude Code's sandbox does not let the assistant
write (and whose Edit/Write the confinement rules deny). Per state home it holds:

* the state home's resolved path and ``home_id``, and the SHA-256 of a random instance id written into the
  state home (``safety/anchor_id.json``) when the anchor first met it: a deleted and re-created home has
  another id, and the anchor's copy is a hash, so reading the anchor does not tell how to forge the id;
* a ``generation`` bumped on every safety transition, also written into the state home's id file: a home
  restored from an older copy carries an older generation;
* the kill switch (engaged or reset, and which reset), the trading state (ACTIVE / REDUCING / HALTED) and the
  last saved risk profile.

Readers combine it with the state home and keep the STRICTER of the two. A state home that is missing, older
than the anchor, or not the one the anchor knows reads as kill switch engaged + HALTED + the anchor's last
profile, with a reason that says what happened, until the human resets with the PIN (``qts kill-switch
reset``, ``qts breaker state ACTIVE``). A damaged or missing anchor for a home that has an id file reads the
same way. A brand-new user (no anchor entry, no id file) is a fresh install.

Writes: one flock per anchor file serialises read-modify-write; both files are replaced atomically; the id
file is written after the anchor when the anchor first meets a home (so a first write the sandbox refuses
leaves no id file behind, and the home stays a fresh install), and before it afterwards (a crash between
the two leaves the home AHEAD of the anchor, which is not suspicious, rather than behind).

What remains (README, Safety): an unconfined process running as the user can delete or rewrite the anchor
too; deleting BOTH the anchor entry and the state home is indistinguishable from a new user.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from ..fsutil import file_lock, write_atomic

FORMAT = 1
MARK_NAME = "anchor_id.json"
MAX_BYTES = 1_000_000
HISTORY = 50
STATES = {"ACTIVE": 0, "REDUCING": 1, "HALTED": 2}
RESET_HINT = "a human resets it with the PIN: qts kill-switch reset (and qts breaker state ACTIVE)"


class AnchorError(RuntimeError):
    """The anchor could not be written (e.g. a read-only file system: Claude Code's sandbox)."""


def _state_root(env=None) -> Path:
    from ..agent.paths import state_root

    return state_root(env)


def _home_id(root) -> str:
    from ..agent.paths import home_id

    return home_id(root)


def anchor_path(home, env=None) -> Path:
    return _state_root(env) / "anchor" / f"{_home_id(home.root)}.json"


def mark_path(home) -> Path:
    return Path(home.safety_dir) / MARK_NAME


def _when(ts) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(int(ts) / 1000))
    except (TypeError, ValueError, OverflowError, OSError):
        return "an unknown time"


def _sha(s: str) -> str:
    return hashlib.sha256(s.encode("utf-8")).hexdigest()


def _read_json(path: Path) -> tuple[dict | None, str | None]:
    """(object, None), (None, "missing") or (None, what is wrong). Never raises."""
    try:
        if not os.path.lexists(path):
            return None, "missing"
        if os.path.isdir(path):
            return None, "a folder is in its place"
        with open(path, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except OSError as e:
        return None, f"unreadable ({e.__class__.__name__}: {e.strerror or e})"
    if len(raw) > MAX_BYTES:
        return None, f"larger than {MAX_BYTES} bytes"
    if not raw.strip():
        return None, "empty"
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        return None, f"not JSON ({e.__class__.__name__})"
    if not isinstance(obj, dict):
        return None, f"wrong shape (a JSON {type(obj).__name__}, not an object)"
    return obj, None


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _anchor_problem(a: dict) -> str | None:
    ks = a.get("kill_switch")
    rp = a.get("risk_profile")
    if a.get("format") != FORMAT:
        return "wrong shape (format)"
    if not (_is_int(a.get("generation")) and a["generation"] >= 1):
        return "wrong shape (generation)"
    if not (isinstance(a.get("instance_sha"), str) and len(a["instance_sha"]) == 64):
        return "wrong shape (instance_sha)"
    if not (isinstance(ks, dict) and isinstance(ks.get("engaged"), bool)):
        return "wrong shape (kill_switch)"
    if a.get("trading_state") not in STATES:
        return "wrong shape (trading_state)"
    if rp is not None and not (isinstance(rp, dict) and isinstance(rp.get("profile"), dict)):
        return "wrong shape (risk_profile)"
    return None


def _mark_problem(m: dict) -> str | None:
    """The id file holds one entry per anchor file that knows the home (a cron job or a service with another
    XDG_STATE_HOME has its own anchor, and must not look like a re-created home to the user's)."""
    entries = m.get("anchors")
    if m.get("format") != FORMAT or not isinstance(entries, dict):
        return "wrong shape (anchors)"
    for e in entries.values():
        if not (isinstance(e, dict) and isinstance(e.get("instance_id"), str) and len(e["instance_id"]) == 32
                and _is_int(e.get("generation")) and e["generation"] >= 1):
            return "wrong shape (an entry)"
    return None


def _read_mark(home, path: Path) -> tuple[dict | None, dict | None, str | None]:
    """(whole id file, this anchor's entry, problem): problem "missing" (no file) or "no entry" or damage."""
    m, prob = _read_json(mark_path(home))
    if m is not None:
        prob = _mark_problem(m)
    if prob:
        return None, None, prob
    entry = m["anchors"].get(str(path))
    return m, entry, None if entry is not None else "no entry"


class AnchorView:
    """What the anchor says about one state home, already combined with the home's id file."""

    __slots__ = ("path", "known", "problem", "generation", "kill_engaged", "kill_reason", "kill_since",
                 "reset_nonce", "reset_covers", "engagements", "keys", "trading_state", "trading_reason", "profile", "updated_ts",
                 "paused")

    def __init__(self, path: Path, **kw):
        self.path = path
        self.known = False          # the anchor holds a valid entry for this home
        self.problem = None         # deleted / rolled back / re-created / damaged: reads as engaged + HALTED
        self.generation = 0
        self.kill_engaged = False
        self.kill_reason = ""
        self.kill_since = None
        self.reset_nonce = None     # the nonce of the last PIN reset the anchor recorded
        self.reset_covers = None    # ... and the last engagement (events row id) that reset covered
        self.engagements = 0        # engagements recorded here: a reset covers only those it saw
        self.keys = {}              # PIN key fingerprint -> first seen (ms)
        self.trading_state = "ACTIVE"
        self.trading_reason = ""
        self.profile = None         # {"version", "hash", "profile"}: the last saved risk profile
        self.updated_ts = None
        self.paused = {}            # strategy -> {"since_ts", "reason"}: paused strategies (safety/pauses.py)
        for k, v in kw.items():
            setattr(self, k, v)

    @property
    def strict(self) -> bool:
        return self.problem is not None


def _strict(path: Path, problem: str, anchor: dict | None = None) -> AnchorView:
    v = AnchorView(path, problem=problem, kill_engaged=True, kill_reason=problem, trading_state="HALTED",
                   trading_reason=problem)
    if anchor is not None:
        v.known, v.generation, v.updated_ts = True, anchor["generation"], anchor.get("updated_ts")
        v.profile = anchor.get("risk_profile")
        v.keys = anchor.get("keys") if isinstance(anchor.get("keys"), dict) else {}
        v.kill_since = (anchor.get("kill_switch") or {}).get("since_ts")
        v.engagements = int(anchor.get("engagements") or 0)
        v.paused = _paused_of(anchor)
    return v


def _paused_of(a: dict) -> dict:
    p = a.get("paused_strategies")
    return {str(k): v for k, v in p.items() if isinstance(v, dict)} if isinstance(p, dict) else {}


def check(home, env=None) -> AnchorView:
    """The anchor's reading for ``home``. Never raises: anything it cannot read is the strict reading."""
    try:
        return _check(home, env)
    except Exception as e:  # noqa: BLE001 - fail closed, with the reason
        return _strict(Path("?"), f"the per-user anchor could not be checked ({e.__class__.__name__}: {e})")


def _check(home, env) -> AnchorView:
    path = anchor_path(home, env)
    a, aprob = _read_json(path)
    if a is not None:
        aprob = _anchor_problem(a)
        if aprob:
            a = None
    mpath = mark_path(home)
    _, m, mprob = _read_mark(home, path)
    if a is None:
        if aprob == "missing":
            if mprob in ("missing", "no entry"):
                return AnchorView(path)  # a new user, or a home this anchor never met: a fresh install
            return _strict(path, f"the per-user anchor {path} for this state home is missing (the state home's "
                                 f"id file says it was known): reads as kill switch engaged and HALTED")
        return _strict(path, f"the per-user anchor {path} is damaged ({aprob}): reads as kill switch engaged "
                             "and HALTED")
    since = _when(a.get("updated_ts"))
    problem = None
    if m is None:
        if mprob == "missing" and not os.path.isdir(home.root):
            problem = (f"the state home {home.root} was deleted since {since} (the per-user anchor knows it, "
                       f"generation {a['generation']})")
        elif mprob == "missing":
            problem = (f"the state home's safety files were deleted since {since} ({mpath} is gone; the per-user "
                       f"anchor knows this home, generation {a['generation']})")
        elif mprob == "no entry":
            problem = (f"the state home was deleted and re-created since {since} (its id file {mpath} does not "
                       "know the per-user anchor that knows it)")
        else:
            problem = f"the state home's id file {mpath} is damaged ({mprob})"
    elif _sha(m["instance_id"]) != a["instance_sha"]:
        problem = (f"the state home was deleted and re-created since {since} (its id is not the one the per-user "
                   "anchor knows)")
    elif m["generation"] < a["generation"]:
        problem = (f"the state home was rolled back: generation {m['generation']} < anchor {a['generation']} "
                   f"(last change {since})")
    if problem:
        return _strict(path, problem, a)
    ks = a["kill_switch"]
    return AnchorView(path, known=True, generation=a["generation"], kill_engaged=ks["engaged"],
                      kill_reason=str(ks.get("reason") or ""), kill_since=ks.get("since_ts"),
                      reset_nonce=ks.get("reset_nonce"), reset_covers=ks.get("reset_covers"),
                      engagements=int(a.get("engagements") or 0),
                      keys=a.get("keys") if isinstance(a.get("keys"), dict) else {},
                      trading_state=a["trading_state"], trading_reason=str(a.get("trading_reason") or ""),
                      profile=a.get("risk_profile"), updated_ts=a.get("updated_ts"), paused=_paused_of(a))


def record(home, event: str, now_ms: int | None = None, env=None, **kw) -> dict:
    """One safety transition, under the anchor's lock. ``event``:

    * ``register``: nothing but making sure the anchor knows the home;
    * ``engaged`` (reason): the kill switch engaged;
    * ``reset`` (nonce, covers, seen_engagements): a PIN-signed reset (the caller verified the PIN); refused
      when an engagement was recorded after the reset read the anchor (two processes at once);
    * ``trading`` (state, reason, signed): the trading state; without ``signed`` it can only tighten;
    * ``profile`` (version, hash, profile): a saved risk profile (the caller enforced the PIN rules);
    * ``pause`` (strategy, paused, reason, signed): a strategy paused; resumed only with ``signed``;
    * ``key_seen`` (fingerprint, seen_ts): when a PIN key was first seen (its cool-down survives the database).

    If the home is deleted, rolled back or re-created when this runs, that is persisted first (kill switch
    engaged + HALTED, with the reason), so writing through the library cannot launder it. Raises AnchorError
    when the anchor cannot be written."""
    ts = int(time.time() * 1000) if now_ms is None else int(now_ms)
    path = anchor_path(home, env)
    try:
        with file_lock(path.with_suffix(".lock"), timeout_s=10):
            return _record_locked(home, path, event, ts, env, kw)
    except AnchorError:
        raise
    except Exception as e:  # noqa: BLE001
        raise AnchorError(f"cannot write the per-user anchor {path}: {e.__class__.__name__}: {e}") from None


def _record_locked(home, path: Path, event: str, ts: int, env, kw: dict) -> dict:
    view = _check(home, env)
    old, _ = _read_json(path)
    if old is not None and _anchor_problem(old):
        old = None
    whole, m, _ = _read_mark(home, path)
    if event == "register" and view.known and not view.problem:
        return old
    first = old is None and view.problem is None          # a home the anchor meets for the first time
    if event == "register" and first and kw.get("nonce"):  # a reset the home proved before the anchor existed
        kw = {**kw, "seen_engagements": 0}
        event = "reset"
    a = dict(old) if old is not None else {
        "format": FORMAT, "home": str(Path(home.root).resolve()), "home_id": _home_id(home.root),
        "created_ts": ts, "kill_switch": {"engaged": False, "reason": "", "since_ts": None},
        "trading_state": "ACTIVE", "trading_reason": "", "risk_profile": None, "history": []}
    a["kill_switch"] = dict(a["kill_switch"])
    same_home = m is not None and old is not None and _sha(m["instance_id"]) == old["instance_sha"]
    import secrets  # only when writing: the readers (hooks, on every call) skip its import

    instance_id = m["instance_id"] if same_home else secrets.token_hex(16)
    history = list(a.get("history") or [])[-(HISTORY - 1):]
    if view.problem:  # persisted before anything else: only the PIN paths release it
        a["kill_switch"] = {"engaged": True, "reason": view.problem, "since_ts": ts}
        a["trading_state"], a["trading_reason"] = "HALTED", view.problem
        history.append({"ts": ts, "event": "tamper", "detail": view.problem[:300]})
    ks = a["kill_switch"]
    if event == "engaged":
        a["engagements"] = int(a.get("engagements") or 0) + 1
        if not ks.get("engaged"):
            ks["since_ts"] = ts
        ks.update(engaged=True, reason=str(kw.get("reason") or "engaged")[:500])
    elif event == "reset":
        if int(a.get("engagements") or 0) != int(kw.get("seen_engagements") or 0):
            # engaged again since the reset began: this reset does not cover that engagement
            raise AnchorError("the kill switch was engaged again while the reset ran")
        a["kill_switch"] = {"engaged": False, "reason": "reset with the PIN", "since_ts": ts,
                            "reset_nonce": kw.get("nonce"), "reset_covers": kw.get("covers")}
    elif event == "trading":
        target = kw.get("state")
        if target not in STATES:
            raise AnchorError(f"trading state: one of {', '.join(STATES)}")
        if kw.get("signed") or STATES[target] >= STATES[a["trading_state"]]:
            a["trading_state"], a["trading_reason"] = target, str(kw.get("reason") or "")[:500]
    elif event == "key_seen":  # when a PIN key was first seen: a deleted database must not restart its cool-down
        keys = dict(a.get("keys") or {})
        fp, seen = str(kw.get("fingerprint")), int(kw.get("seen_ts") or ts)
        keys[fp] = min(int(keys.get(fp, seen)), seen)
        a["keys"] = dict(list(keys.items())[-20:])
    elif event == "pause":  # a strategy paused (free) or resumed (``signed``: the caller verified the PIN)
        paused = _paused_of(a)
        name = str(kw.get("strategy") or "")[:100]
        if kw.get("paused"):
            paused.setdefault(name, {"since_ts": ts, "reason": str(kw.get("reason") or "")[:200]})
        elif kw.get("signed"):
            paused.pop(name, None)
        a["paused_strategies"] = dict(list(paused.items())[-500:])
    elif event == "profile":
        a["risk_profile"] = {"version": kw.get("version"), "hash": kw.get("hash"), "profile": kw.get("profile")}
    elif event != "register":
        raise AnchorError(f"unknown anchor event {event!r}")
    generation = max(int(a.get("generation") or 0), int(m["generation"]) if m else 0) + 1
    a.update(generation=generation, updated_ts=ts, instance_sha=_sha(instance_id))
    history.append({"ts": ts, "event": event, "generation": generation})
    a["history"] = history
    mark = {"format": FORMAT, "home_id": a["home_id"], "anchors": dict((whole or {}).get("anchors") or {})}
    mark["anchors"][str(path)] = {"instance_id": instance_id, "generation": generation}
    body = json.dumps(a, sort_keys=True, separators=(",", ":"))
    if first:  # anchor first: a refused anchor write leaves no id file, so the home stays a fresh install
        _write(path, body)
        write_atomic(mark_path(home), json.dumps(mark))
    else:      # id file first: a crash between leaves the home ahead of the anchor, not behind it
        write_atomic(mark_path(home), json.dumps(mark))
        _write(path, body)
    return a


def _write(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, body)


def try_record(home, event: str, now_ms: int | None = None, env=None, **kw) -> str | None:
    """:func:`record` for tightenings, which must not fail because the anchor is out of reach (inside the
    sandbox the state home's own records still hold). Returns the error, or None."""
    try:
        record(home, event, now_ms, env, **kw)
        return None
    except Exception as e:  # noqa: BLE001
        return str(e)
