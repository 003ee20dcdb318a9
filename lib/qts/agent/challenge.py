"""The loosening protocol: a single-use challenge from the agent, signed with the PIN's key.

1. Anyone asks the agent for a challenge for an action and its parameters (``op: challenge``). The
   agent answers with a fresh random nonce bound to its instance, the state home, the exchange account
   and the hash of its current policy, valid for at most :data:`MAX_TTL_S` seconds.
2. The human, in their own terminal (``qts agent approve ...``), types the PIN, which unlocks the
   signing key from the key store, and signs :func:`signed_bytes`: a domain prefix per action, then
   every field of the challenge, the action, its parameters and an expiry.
3. The agent verifies the signature with the public key it has held in memory since the human unlocked
   it at start (a PIN record replaced on disk changes nothing), checks the nonce is one it issued and
   has not used, that nothing changed in its policy since, and that the expiry is near; then applies
   the change and forgets the nonce.

The agent never signs anything with the PIN's key on request (there is no signing oracle), and there are
no keystroke confirmations: a "y" typed by anything with a terminal proves nothing.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass

MAX_TTL_S = 120
MAX_OUTSTANDING = 32
ACTIONS = ("resume", "reset_kill_switch", "grant", "limits", "approve_order", "stop", "risk_profile")


class ChallengeError(ValueError):
    pass


@dataclass(frozen=True)
class Challenge:
    nonce: str
    instance: str
    home: str
    account: str
    policy_hash: str
    action: str
    params: dict
    issued_ts: int
    expires_ts: int

    def to_dict(self) -> dict:
        return asdict(self)


def domain(action: str) -> bytes:
    return f"quant-trading-system/agent-loosen/v1/{action}\x00".encode()


def signed_bytes(ch: Challenge | dict, expires_ts: int) -> bytes:
    """Exactly what the PIN signs. Both sides build it from the same fields."""
    d = ch.to_dict() if isinstance(ch, Challenge) else dict(ch)
    body = {k: d[k] for k in ("nonce", "instance", "home", "account", "policy_hash", "action", "params")}
    body["expires_ts"] = int(expires_ts)
    return domain(d["action"]) + json.dumps(body, sort_keys=True, separators=(",", ":"),
                                            allow_nan=False).encode()


def sign(signing_key, ch: dict, expires_ts: int | None = None) -> dict:
    """The human's side: sign challenge ``ch`` (as the agent sent it). Returns the loosen request params."""
    import base64

    exp = int(expires_ts if expires_ts is not None else ch["expires_ts"])
    sig = signing_key.sign(signed_bytes(ch, exp))
    return {"nonce": ch["nonce"], "action": ch["action"], "params": ch["params"], "expires_ts": exp,
            "signature": base64.b64encode(sig).decode(), "key_fingerprint": signing_key.fingerprint}


class ChallengeBook:
    """The agent's outstanding challenges (memory only)."""

    def __init__(self, instance: str, home: str, account: str, public_key: bytes):
        self.instance, self.home, self.account, self.public_key = instance, home, account, public_key
        self._open: dict[str, Challenge] = {}

    def issue(self, action: str, params: dict, policy_hash: str, now_ms: int | None = None,
              ttl_s: int = MAX_TTL_S) -> Challenge:
        if action not in ACTIONS:
            raise ChallengeError(f"action: {action!r} is not a loosening; allowed: {', '.join(ACTIONS)}")
        if not isinstance(params, dict):
            raise ChallengeError("params: must be an object")
        json.dumps(params, allow_nan=False)  # ValueError on NaN/Infinity: never signed, never stored
        now = int(now_ms if now_ms is not None else time.time() * 1000)
        ttl = min(int(ttl_s), MAX_TTL_S)
        ch = Challenge(secrets.token_hex(32), self.instance, self.home, self.account, policy_hash, action,
                       dict(params), now, now + ttl * 1000)
        self._expire(now)
        while len(self._open) >= MAX_OUTSTANDING:  # oldest first: a flood of requests only evicts challenges
            self._open.pop(next(iter(self._open)))
        self._open[ch.nonce] = ch
        return ch

    def _expire(self, now: int) -> None:
        for n in [n for n, c in self._open.items() if c.expires_ts <= now]:
            del self._open[n]

    def redeem(self, req: dict, policy_hash: str, now_ms: int | None = None) -> Challenge:
        """Verify a signed loosening; on success the challenge is used up. ChallengeError says why not."""
        import base64

        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        now = int(now_ms if now_ms is not None else time.time() * 1000)
        self._expire(now)
        nonce = req.get("nonce")
        ch = self._open.get(nonce) if isinstance(nonce, str) else None
        if ch is None:
            raise ChallengeError("unknown, expired or already used challenge: ask for a new one")
        if req.get("action") != ch.action or req.get("params") != ch.params:
            raise ChallengeError("the signed action or parameters differ from the challenge")
        exp = req.get("expires_ts")
        if isinstance(exp, bool) or not isinstance(exp, int) or exp > ch.expires_ts or exp > now + MAX_TTL_S * 1000:
            raise ChallengeError("expires_ts: must be an integer no later than the challenge's expiry")
        if exp <= now:
            raise ChallengeError("the signed approval has expired")
        try:
            sig = base64.b64decode(str(req.get("signature", "")), validate=True)
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(sig, signed_bytes(ch, exp))
        except (InvalidSignature, ValueError, TypeError):
            raise ChallengeError("signature does not verify with the PIN key this agent was unlocked with") from None
        if policy_hash != ch.policy_hash:
            del self._open[nonce]
            raise ChallengeError("the policy changed since the challenge was issued: ask for a new one")
        del self._open[nonce]
        return ch
