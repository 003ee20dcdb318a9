"""The PIN's cryptography: scrypt (PIN -> verifier + key-encryption key), the Ed25519 signing key and
its AES-GCM sealing inside the record. No file access here; ``pin_record`` reads and writes the record.

Standard library at import time (the hooks' prompt guard hashes with :func:`derive`); the signing and
sealing functions import ``cryptography`` when called.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import unicodedata
from .pin_common import PinRecord, PinRecordCorrupt, _b64, _canonical

RECORD_AAD = b"qts-pin-record-v1\x00"

DEFAULT_SCRYPT_N = 2 ** 17
SCRYPT_R = 8
SCRYPT_P = 1
MIN_SCRYPT_N = 2 ** 10          # lower N only as a function argument (tests); never from the env
MAX_SCRYPT_N = 2 ** 20
MAX_SCRYPT_MEM = 1 << 30        # refuse records asking for more than 1 GiB
SALT_BYTES = 32
DKLEN = 64


def normalize_pin(pin: str) -> str:
    if not isinstance(pin, str):
        raise TypeError("the PIN must be a string")
    return unicodedata.normalize("NFC", pin)


def check_kdf_params(n, r, p) -> None:
    for name, v in (("n", n), ("r", r), ("p", p)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"scrypt {name} must be an integer")
    if n < MIN_SCRYPT_N or n > MAX_SCRYPT_N or n & (n - 1):
        raise ValueError(f"scrypt n must be a power of two between {MIN_SCRYPT_N} and {MAX_SCRYPT_N}")
    if not (1 <= r <= 32 and 1 <= p <= 16) or 128 * r * n * p > MAX_SCRYPT_MEM:
        raise ValueError("scrypt r/p out of range")


def derive(pin: str, salt: bytes, n: int, r: int, p: int) -> tuple[bytes, bytes]:
    """scrypt(PIN) -> (verifier, key-encryption key), 32 bytes each."""
    maxmem = 128 * r * (n + p + 2) + (32 << 20)
    out = hashlib.scrypt(normalize_pin(pin).encode("utf-8"), salt=salt, n=n, r=r, p=p,
                         maxmem=maxmem, dklen=DKLEN)
    return out[:32], out[32:]


def fingerprint_of(public_key_bytes: bytes) -> str:
    return hashlib.sha256(public_key_bytes).hexdigest()[:32]


def aad(public_key_bytes: bytes, kdf: dict) -> bytes:
    return RECORD_AAD + public_key_bytes + _canonical(kdf)


class SigningKey:
    """An unlocked Ed25519 signing key. Not picklable; its repr shows only the fingerprint."""

    __slots__ = ("_key", "public_key", "fingerprint")

    def __init__(self, private_key):
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        if not isinstance(private_key, Ed25519PrivateKey):
            raise TypeError("an Ed25519PrivateKey is required")
        self._key = private_key
        self.public_key = private_key.public_key().public_bytes_raw()
        self.fingerprint = fingerprint_of(self.public_key)

    @classmethod
    def generate(cls) -> "SigningKey":
        """A fresh key NOT protected by any PIN (tests; the attacker can make these too)."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return cls(Ed25519PrivateKey.generate())

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(bytes(data))

    def derive_key(self, purpose: bytes) -> bytes:
        """A 32-byte symmetric key for ``purpose`` (HKDF-SHA256 over the private key): what only the
        PIN can unlock, e.g. the encrypted exchange secret."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        raw = self._key.private_bytes_raw()
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"qts:" + purpose).derive(raw)

    def __repr__(self) -> str:
        return f"<SigningKey {self.fingerprint}>"

    def __reduce__(self):
        raise TypeError("a SigningKey cannot be pickled or copied")


def seal_key(pin: str, key: SigningKey, n: int) -> tuple[dict, bytes, bytes, bytes]:
    """Encrypt ``key`` under scrypt(``pin``): (kdf block, verifier, nonce, ciphertext)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    salt = secrets.token_bytes(SALT_BYTES)
    verifier, kek = derive(pin, salt, n, SCRYPT_R, SCRYPT_P)
    kdf = {"name": "scrypt", "n": n, "r": SCRYPT_R, "p": SCRYPT_P, "dklen": DKLEN, "salt": _b64(salt)}
    nonce = secrets.token_bytes(12)
    return kdf, verifier, nonce, AESGCM(kek).encrypt(nonce, key._key.private_bytes_raw(), aad(key.public_key, kdf))


def verify_pin(rec: PinRecord, pin: str) -> bytes | None:
    """The key-encryption key if ``pin`` matches ``rec``'s verifier (constant-time compare), else None."""
    verifier, kek = derive(pin, rec.salt, rec.kdf["n"], rec.kdf["r"], rec.kdf["p"])
    return kek if hmac.compare_digest(verifier, rec.verifier) else None


def open_key(rec: PinRecord, kek: bytes) -> SigningKey:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        raw = AESGCM(kek).decrypt(rec.nonce, rec.ciphertext, aad(rec.public_key, rec.kdf))
    except InvalidTag:
        raise PinRecordCorrupt("the PIN is right but the stored signing key does not decrypt: "
                               "the PIN record was tampered with") from None
    key = SigningKey(Ed25519PrivateKey.from_private_bytes(raw))
    if not hmac.compare_digest(key.public_key, rec.public_key):
        raise PinRecordCorrupt("the stored signing key does not match the stored public key")
    return key


def verify_with(public_key_bytes: bytes, data: bytes, sig: bytes) -> bool:
    """True only if ``sig`` is a valid Ed25519 signature of ``data`` under ``public_key_bytes``. Never raises."""
    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        Ed25519PublicKey.from_public_bytes(bytes(public_key_bytes)).verify(bytes(sig), bytes(data))
        return True
    except Exception:
        return False
