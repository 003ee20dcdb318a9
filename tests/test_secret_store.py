"""Exchange keys stored encrypted under the PIN, in the key store OUTSIDE the project: readable only
with the PIN's key, carried over a PIN change, never printed. Only the trading agent unlocks them (at its
start, in the human's terminal: tests/test_redteam.py); nothing else asks for the PIN to reach them:
neither a session (live is refused there) nor the kill switch (without an agent it says UNVERIFIED)."""

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
    stored = secret_store.path(home)
    assert stored.is_file() and stored.stat().st_mode & 0o077 == 0          # the owner's only
    files = [p for d in (home.root, stored.parent) for p in d.rglob("*") if p.is_file()]
    assert stored in files
    for p in files:
        data = p.read_bytes()
        assert SECRET.encode() not in data and API_KEY.encode() not in data, p


def test_the_keys_live_in_the_key_store_outside_the_project(home, key):
    """The sandboxed assistant may read and write the project: the keys (and the PIN record they are
    encrypted under) are kept where the sandbox's denyRead covers them, the agent's key store."""
    from qts.agent.paths import AgentPaths
    from qts.safety.pin import pin_path

    secret_store.store_keys(home, key, "binance", API_KEY, SECRET)
    stored = secret_store.path(home).resolve()
    root = home.root.resolve()
    assert root not in stored.parents and root.parent not in stored.parents
    assert stored == AgentPaths.for_home(home.root).exchange_keys.resolve()
    assert stored.parent == pin_path(home).resolve().parent
    assert not any(p.name == stored.name for p in home.root.rglob("*"))


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


def _no_terminal(monkeypatch) -> list[str]:
    """As in Claude Code's Bash tool (and in CI): no terminal. Returns the prompts anyone tried."""
    from qts.safety import tty

    asked: list[str] = []

    def no_terminal(prompt, reader=None):
        asked.append(prompt)
        raise tty.NoTerminal("cannot open a terminal (/dev/tty): run it in your own terminal")
    monkeypatch.setattr(tty, "read_secret", no_terminal)
    return asked


def test_a_live_session_with_stored_keys_is_refused_without_asking_for_the_pin(home, key, monkeypatch):
    """`qts run` / `qts once` never unlock the stored keys: live is the trading agent's, started by the
    human with `qts agent start`; the refusal says so, asks for no PIN and reaches no exchange."""
    from live_support import ccxt_client, live_settings, make_server

    from qts.engine.session import SessionError, open_session
    from qts.market.ccxt_feed import CcxtFeed

    asked = _no_terminal(monkeypatch)
    secret_store.store_keys(home, key, "binance", API_KEY, SECRET)
    with make_server() as srv:
        settings = live_settings(home, srv, ["BTC/USDT"], EXCHANGE_API_KEY="", EXCHANGE_SECRET="")
        assert not settings.has_keys
        ex = ccxt_client(srv)
        ex.apiKey = ex.secret = ""
        before = len(srv.access_log)
        with pytest.raises(SessionError) as e:
            open_session(settings, CcxtFeed(ex, settings.SYMBOLS, 5), exchange=ex)
        assert srv.access_log[before:] == []
    assert "qts agent start" in str(e.value)
    assert asked == [] and SECRET not in str(e.value) and API_KEY not in str(e.value)


def test_the_kill_switch_never_asks_for_the_pin_even_with_keys_stored(home, key, monkeypatch):
    """Live configured, keys stored under the PIN, no trading agent running: `qts kill-switch` sets the
    flag, asks for no PIN (the moment a trojan would want it typed) and says UNVERIFIED, pointing to the
    exchange's own close-all. It exits 1: nothing at the exchange was confirmed."""
    from click.testing import CliRunner

    from conftest import CONFIG_VARS
    from qts.cli import cli
    from qts.safety import kill_switch as ks

    asked = _no_terminal(monkeypatch)
    secret_store.store_keys(home, key, "binance", API_KEY, SECRET)
    env = {**{k: None for k in CONFIG_VARS}, "PAPER_TRADING": "false", "SYMBOLS": "BTC/USDT"}
    r = CliRunner().invoke(cli, ["--home", str(home.root), "kill-switch", "--reason", "test"], env=env,
                           catch_exceptions=False)
    assert r.exit_code == 1, r.output
    assert "UNVERIFIED" in r.output and "Cancel All" in r.output and "flat." not in r.output
    assert asked == [] and "PIN:" not in r.output
    assert SECRET not in r.output and API_KEY not in r.output
    assert home.kill_flag.exists()
    store = Store.open(home)
    try:
        assert ks.status(home, store).engaged
    finally:
        store.close()
