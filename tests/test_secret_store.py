"""Exchange keys stored encrypted under the PIN: readable only with the PIN's key, carried over a PIN
change, never printed, and the only way to trade live with them is from a terminal."""

import json

import pytest

from qts.paths import StateHome
from qts.safety import secret_store
from qts.safety.approve import set_pin_from_terminal
from qts.safety.pin import SigningKey, set_pin, unlock
from qts.store import Store

PIN, NEW_PIN = "correct horse 42", "battery staple 77"
API_KEY, SECRET = "k" * 64, "s3cr3t-" + "x" * 57


@pytest.fixture
def home(tmp_path):
    return StateHome(tmp_path / "home").ensure()


@pytest.fixture
def key(home):
    set_pin(home, PIN, scrypt_n=2 ** 10)
    return unlock(home, PIN)


def test_round_trip_and_nothing_in_clear(home, key):
    secret_store.store_keys(home, key, "binance", API_KEY, SECRET)
    assert secret_store.load_keys(home, key) == {"exchange": "binance", "api_key": API_KEY, "secret": SECRET}
    for p in home.root.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            assert SECRET.encode() not in data and API_KEY.encode() not in data, p


def test_another_key_cannot_read_them(home, key):
    secret_store.store_keys(home, key, "binance", API_KEY, SECRET)
    with pytest.raises(secret_store.SecretStoreError) as e:
        secret_store.load_keys(home, SigningKey.generate())
    assert SECRET not in str(e.value)


@pytest.mark.parametrize("damage", [b"", b"garbage", None])
def test_damaged_file_is_a_clear_error_never_the_secret(home, key, damage):
    secret_store.store_keys(home, key, "binance", API_KEY, SECRET)
    p = secret_store.path(home)
    if damage is None:  # a flipped ciphertext byte: authentication fails
        rec = json.loads(p.read_text())
        ct = bytearray(__import__("base64").b64decode(rec["ciphertext"]))
        ct[0] ^= 1
        rec["ciphertext"] = __import__("base64").b64encode(bytes(ct)).decode()
        p.write_text(json.dumps(rec))
    else:
        p.write_bytes(damage)
    with pytest.raises(secret_store.SecretStoreError) as e:
        secret_store.load_keys(home, key)
    assert SECRET not in str(e.value)


def test_a_pin_change_carries_the_keys_over(home):
    store = Store.open(home)
    answers = iter([PIN, PIN])
    set_pin_from_terminal(store, reader=lambda prompt: next(answers))
    secret_store.store_keys(home, unlock(home, PIN), "binance", API_KEY, SECRET)
    answers = iter([PIN, NEW_PIN, NEW_PIN])  # current PIN, new PIN twice
    set_pin_from_terminal(store, reader=lambda prompt: next(answers))
    store.close()
    assert secret_store.load_keys(home, unlock(home, NEW_PIN))["secret"] == SECRET


def test_live_with_stored_keys_needs_the_pin_on_a_terminal(home, key, monkeypatch):
    """In the assistant's shell there is no terminal: live trading cannot start with stored keys."""
    from qts.safety import tty

    def no_terminal(prompt, reader=None):  # as in Claude Code's Bash tool (and in CI)
        raise tty.NoTerminal("cannot open a terminal (/dev/tty): run it in your own terminal")
    monkeypatch.setattr(tty, "read_secret", no_terminal)
    from live_support import ccxt_client, make_server, live_settings, write_breaker_closed

    from qts.engine.session import SessionError, open_session
    from qts.market.ccxt_feed import CcxtFeed

    secret_store.store_keys(home, key, "binance", API_KEY, SECRET)
    with make_server() as srv:
        settings = live_settings(home, srv, ["BTC/USDT"], EXCHANGE_API_KEY="", EXCHANGE_SECRET="")
        assert not settings.has_keys
        write_breaker_closed(home)
        ex = ccxt_client(srv)
        ex.apiKey = ex.secret = ""
        with pytest.raises(SessionError) as e:
            open_session(settings, CcxtFeed(ex, settings.SYMBOLS, 5), exchange=ex)
    assert "PIN" in str(e.value) and SECRET not in str(e.value)


def test_the_kill_switch_live_flatten_asks_for_the_pin_when_keys_are_stored(home, key, monkeypatch):
    """The kill switch builds its live broker the same way: with keys stored under the PIN and no
    terminal it cannot reach the account (and says why); the flag was set before this step."""
    from live_support import ccxt_client, make_server, live_settings

    from qts.engine.session import SessionError
    from qts.safety import tty
    from qts.safety.session_tools import live_tools

    def no_terminal(prompt, reader=None):
        raise tty.NoTerminal("cannot open a terminal (/dev/tty): run it in your own terminal")
    monkeypatch.setattr(tty, "read_secret", no_terminal)
    secret_store.store_keys(home, key, "binance", API_KEY, SECRET)
    store = Store.open(home)
    try:
        with make_server() as srv:
            settings = live_settings(home, srv, ["BTC/USDT"], EXCHANGE_API_KEY="", EXCHANGE_SECRET="")
            ex = ccxt_client(srv)
            ex.apiKey = ex.secret = ""
            with pytest.raises(SessionError) as e:
                live_tools(settings, store, exchange=ex)
        assert "PIN" in str(e.value) and SECRET not in str(e.value)
    finally:
        store.close()
