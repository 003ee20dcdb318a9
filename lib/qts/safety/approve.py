"""The human side of approvals: unlock the PIN on a terminal, and the records the gate checks.

* Failures and successes are logged to the events table (``pin_failure`` / ``pin_unlocked``), and
  the count since the last success is passed back to the lockout, so deleting the attempts file
  gives no fresh tries.
* Every PIN key fingerprint is recorded the first time it is seen (``pin_key_seen`` event, with a
  loud warning): a new key, set by the human or forged, enables live trading only after the
  cool-down (pin.DEFAULT_COOLDOWN_S).
"""

from __future__ import annotations

import json
import time

from ..paths import StateHome


class ApprovalError(RuntimeError):
    """Shown to the user as is (no traceback); ``exit_code`` 2 for 'run this in your terminal'."""

    def __init__(self, message: str, exit_code: int = 1):
        self.exit_code = exit_code
        super().__init__(message)


def now_ms() -> int:
    return int(time.time() * 1000)


def recent_failures(store) -> int:
    last_ok = store.scalar("SELECT MAX(id) FROM events WHERE kind='pin_unlocked'") or 0
    return int(store.scalar("SELECT COUNT(*) FROM events WHERE kind='pin_failure' AND id>?", (last_ok,)) or 0)


def key_first_seen(store, home: StateHome, now: int | None = None) -> dict[str, int]:
    """{fingerprint: first seen ms} for the current PIN key, recording (and announcing) a new one."""
    from .pin import NoPin, PinRecordCorrupt, fingerprint

    now = now or now_ms()
    try:
        fp = fingerprint(home)
    except (NoPin, PinRecordCorrupt):
        return {}
    row = store.scalar("SELECT MIN(ts) FROM events WHERE kind='pin_key_seen' AND json_extract(data,'$.fingerprint')=?",
                       (fp,))
    # the per-user anchor remembers the first sighting too, outside the project: when it has one, it wins
    # (a deleted database does not restart the human's key's cool-down, and a backdated database record,
    # which the sandboxed assistant can write, does not shorten a planted key's)
    from . import anchor

    view = anchor.check(home)
    anchored = view.keys.get(fp) if view.known or view.problem else None
    if isinstance(anchored, int) and not isinstance(anchored, bool):
        row = anchored
    else:
        anchored = None
    if row is None:
        store.event("pin_key_seen", f"a new PIN key {fp[:12]}... was seen for the first time: live trading waits for "
                                    "the cool-down. If you did not just set a PIN, engage the kill switch now.",
                    severity="critical", data={"fingerprint": fp}, ts=now)
        row = now
    if (view.known or view.problem) and (anchored is None or int(row) < anchored):  # (meeting a home is kill_switch's)
        anchor.try_record(home, "key_seen", now, fingerprint=fp, seen_ts=int(row))
    return {fp: int(row)}


def unlock_from_terminal(store, prompt: str = "PIN: ", reader=None):
    """Read the PIN from /dev/tty (never argv, env or stdin) and return the unlocked signing key."""
    from . import pin as pinmod
    from .tty import NoTerminal, read_secret

    home = store.home
    try:
        secret = read_secret(prompt, reader=reader)
    except NoTerminal as e:
        raise ApprovalError(str(e), exit_code=2) from None
    try:
        key = pinmod.unlock(home, secret, now=now_ms(), recent_failures=recent_failures(store), announce=store.event)
    except pinmod.PinError as e:
        raise ApprovalError(str(e)) from None
    finally:
        secret = None  # noqa: F841  (drop our reference; Python cannot wipe it)
    key_first_seen(store, home)
    return key


def set_pin_from_terminal(store, reader=None) -> dict:
    from . import pin as pinmod
    from .tty import NoTerminal, read_new_secret, read_secret

    home = store.home
    try:
        old = None
        if pinmod.pin_status(home, now=now_ms()).get("state") == "set":
            old = read_secret("Current PIN: ", reader=reader)
        new = read_new_secret("New PIN (10+ characters recommended): ", "Repeat the new PIN: ", reader=reader)
    except NoTerminal as e:
        raise ApprovalError(str(e), exit_code=2) from None
    from . import secret_store

    keys = None
    if old is not None and secret_store.exists(home):  # carry the stored exchange keys over to the new key
        try:
            keys = secret_store.load_keys(home, pinmod.unlock(home, old, now=now_ms(),
                                                              recent_failures=recent_failures(store),
                                                              announce=store.event))
        except (pinmod.PinError, secret_store.SecretStoreError) as e:
            raise ApprovalError(str(e)) from None
    try:
        res = pinmod.set_pin(home, new, old, now=now_ms(), announce=store.event,
                             recent_failures=recent_failures(store))
    except pinmod.PinError as e:
        raise ApprovalError(str(e)) from None
    if keys is not None:
        secret_store.store_keys(home, pinmod.unlock(home, new, now=now_ms(), announce=store.event),
                                keys["exchange"], keys["api_key"], keys["secret"])
        keys = None
    warnings = pinmod.pin_strength_warnings(new)
    key_first_seen(store, home)
    return {"origin": res.origin, "fingerprint": res.fingerprint, "warnings": warnings,
            "key_rotated": res.key_rotated}


def save_approval(home: StateHome, name: str, approval: dict) -> None:
    from ..fsutil import write_atomic

    folder = home.safety_dir / "approvals"
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / f"{name}.json", json.dumps(approval))


def load_approval(home: StateHome, name: str) -> dict | None:
    try:
        return json.loads((home.safety_dir / "approvals" / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None


def key_was_ready(store, home: StateHome, approval: dict) -> bool:
    """Was the key that signed ``approval`` past its cool-down when it signed it? A PIN record
    replaced by someone else carries a key nobody has seen before: its approvals count only an hour
    (pin.DEFAULT_COOLDOWN_S) after it was first seen, and that first sighting is announced."""
    from .pin import pin_ready_since

    try:
        issued = int(approval.get("issued_ts"))
        seen = key_first_seen(store, home)
        if not seen or approval.get("key_fingerprint") not in seen:
            return False
        return pin_ready_since(home, seen, now=issued).ready
    except Exception:
        return False
