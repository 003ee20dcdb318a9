"""The exchange keys, stored encrypted under the PIN: the recommended alternative to environment
variables (which every command the assistant runs inherits, and any `env` would print).

``exchange_keys.enc`` in the key store (outside the project, beside the PIN record) holds the API key and secret encrypted with AES-256-GCM under a key
derived from the PIN-unlocked signing key (pin.SigningKey.derive_key), bound to this state home and
to that key's fingerprint. Reading them needs the PIN, typed on a terminal: so live trading with
stored keys can only be started by the human, in their own terminal. Changing the PIN re-encrypts
them (approve.set_pin_from_terminal); deleting the file only removes the keys (safer).
"""

from __future__ import annotations

import base64
import json
import os

from ..fsutil import write_atomic
from ..paths import StateHome

PURPOSE = b"exchange-keys-v1"


class SecretStoreError(RuntimeError):
    pass


def path(home: StateHome):
    from .pin import keystore_dir

    return keystore_dir(home) / "exchange_keys.enc"


def exists(home: StateHome) -> bool:
    return path(home).exists()


def _aad(home: StateHome, fingerprint: str) -> bytes:
    return json.dumps({"home": str(home.root), "key": fingerprint}, sort_keys=True).encode()


def store_keys(home: StateHome, signing_key, exchange: str, api_key: str, secret: str) -> None:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if not api_key or not secret:
        raise SecretStoreError("both the API key and the secret are needed")
    nonce = os.urandom(12)
    plain = json.dumps({"exchange": exchange, "api_key": api_key, "secret": secret}).encode()
    ct = AESGCM(signing_key.derive_key(PURPOSE)).encrypt(nonce, plain, _aad(home, signing_key.fingerprint))
    from .pin import ensure_keystore

    ensure_keystore(home)
    write_atomic(path(home), json.dumps({"version": 1, "fingerprint": signing_key.fingerprint,
                                         "nonce": base64.b64encode(nonce).decode(),
                                         "ciphertext": base64.b64encode(ct).decode()}), mode=0o600)


def load_keys(home: StateHome, signing_key) -> dict:
    """{"exchange", "api_key", "secret"}; SecretStoreError (never the secret) when it cannot be read."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        rec = json.loads(path(home).read_text())
        if rec.get("fingerprint") != signing_key.fingerprint:
            raise SecretStoreError("the stored exchange keys were encrypted under another PIN key: store them again")
        plain = AESGCM(signing_key.derive_key(PURPOSE)).decrypt(
            base64.b64decode(rec["nonce"]), base64.b64decode(rec["ciphertext"]), _aad(home, signing_key.fingerprint))
        out = json.loads(plain)
        if not out.get("api_key") or not out.get("secret"):
            raise SecretStoreError("the stored exchange keys are incomplete")
        return out
    except SecretStoreError:
        raise
    except FileNotFoundError:
        raise SecretStoreError("no exchange keys are stored (qts approve store-keys)") from None
    except Exception as e:
        raise SecretStoreError(f"the stored exchange keys cannot be read ({e.__class__.__name__})") from None
