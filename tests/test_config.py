"""Settings: defaults, one clear error per bad value, secrets never shown, .env + environment."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from qts.cli import cli
from qts.config import ConfigError, load_settings

SECRET = "sEcReT-9f8e7d6c5b4a"
API_KEY = "kEy-0a1b2c3d4e5f"


def test_defaults(tmp_path):
    s = load_settings(environ={}, home=tmp_path)
    assert s.EXCHANGE == "binance"
    assert s.PAPER_TRADING is True
    assert s.TRADE_INTERVAL == 5
    assert s.MAX_POSITION_SIZE == 1000
    assert s.RISK_LIMIT_PERCENT == 2
    assert s.SYMBOLS == ("BTC/USDT", "ETH/USDT", "SOL/USDT")
    assert s.EXCHANGE_SECRET is None and not s.has_keys
    assert s.QTS_HOME == tmp_path.absolute()


def test_environment_values_are_parsed(tmp_path):
    s = load_settings(environ={"EXCHANGE": "Kraken", "PAPER_TRADING": "yes", "TRADE_INTERVAL": "15",
                               "MAX_POSITION_SIZE": "250.5", "RISK_LIMIT_PERCENT": "1.5",
                               "SYMBOLS": " btc/usdt , eth/usdt "}, home=tmp_path)
    assert s.EXCHANGE == "kraken"
    assert s.PAPER_TRADING is True
    assert s.TRADE_INTERVAL == 15
    assert s.MAX_POSITION_SIZE == 250.5
    assert s.RISK_LIMIT_PERCENT == 1.5
    assert s.SYMBOLS == ("BTC/USDT", "ETH/USDT")
    assert load_settings(environ={"PAPER_TRADING": "0"}, home=tmp_path).PAPER_TRADING is False


# (variable, bad value, words the message must contain to say what is allowed)
BAD = [
    ("TRADE_INTERVAL", "7", ["1, 3, 5, 15"]),
    ("TRADE_INTERVAL", "five", ["allowed"]),
    ("PAPER_TRADING", "maybe", ["true", "false"]),
    ("MAX_POSITION_SIZE", "-1", ["greater than 0"]),
    ("MAX_POSITION_SIZE", "0", ["greater than 0"]),
    ("SYMBOLS", "BTCUSDT", ["BTC/USDT"]),
    ("SYMBOLS", "BTC/USDT,BTC/USDT", ["repeat"]),
    ("SYMBOLS", " , ", ["BTC/USDT"]),
    ("EXCHANGE", "notanexchange", ["ccxt"]),
    ("RISK_LIMIT_PERCENT", "0", ["greater than 0"]),
    ("RISK_LIMIT_PERCENT", "150", ["100"]),
    ("STRATEGY", "buy_everything", ["sma_cross"]),
]


@pytest.mark.parametrize("var,value,allowed", BAD, ids=[f"{v}={x}" for v, x, _ in BAD])
def test_bad_value_names_the_variable_and_what_is_allowed(tmp_path, var, value, allowed):
    with pytest.raises(ConfigError) as ei:
        load_settings(environ={var: value, "EXCHANGE_SECRET": SECRET, "EXCHANGE_API_KEY": API_KEY},
                      home=tmp_path)
    e = ei.value
    assert e.variable == var
    msg = str(e)
    assert msg.startswith(var)
    for word in allowed:
        assert word in msg, f"{msg!r} does not say what is allowed ({word!r})"
    assert SECRET not in msg and API_KEY not in msg


CLI_BAD = [b for b in BAD if b[:2] in {("TRADE_INTERVAL", "7"), ("PAPER_TRADING", "maybe"), ("MAX_POSITION_SIZE", "-1"),
                                       ("SYMBOLS", "BTCUSDT"), ("EXCHANGE", "notanexchange"),
                                       ("RISK_LIMIT_PERCENT", "0")}]


@pytest.mark.parametrize("var,value,allowed", CLI_BAD, ids=[f"{v}={x}" for v, x, _ in CLI_BAD])
def test_cli_config_exits_2_with_the_message(tmp_path, var, value, allowed):
    r = CliRunner().invoke(cli, ["--home", str(tmp_path), "config"],
                           env={var: value, "EXCHANGE_SECRET": SECRET})
    assert r.exit_code == 2, r.output
    assert var in r.output
    for word in allowed:
        assert word in r.output
    assert SECRET not in r.output
    assert "Traceback" not in r.output


def test_secrets_never_shown(tmp_path):
    s = load_settings(environ={"EXCHANGE_SECRET": SECRET, "EXCHANGE_API_KEY": API_KEY}, home=tmp_path)
    assert s.has_keys
    assert s.EXCHANGE_SECRET.get_secret_value() == SECRET  # kept, just never printed
    for text in (repr(s), str(s), json.dumps(s.public_dict()), repr(s.public_dict())):
        assert SECRET not in text and API_KEY not in text
    d = s.public_dict()
    assert d["EXCHANGE_SECRET"] == "set" and d["EXCHANGE_API_KEY"] == "set"

    r = CliRunner().invoke(cli, ["--home", str(tmp_path), "config", "--json"],
                           env={"EXCHANGE_SECRET": SECRET, "EXCHANGE_API_KEY": API_KEY})
    assert r.exit_code == 0, r.output
    assert SECRET not in r.output and API_KEY not in r.output
    assert json.loads(r.output)["EXCHANGE_SECRET"] == "set"


def test_secret_in_env_file_not_shown_when_another_line_is_bad(tmp_path):
    (tmp_path / ".env").write_text(f"EXCHANGE_SECRET={SECRET}\nTRADE_INTERVAL=7\n")
    with pytest.raises(ConfigError) as ei:
        load_settings(environ={}, home=tmp_path)
    assert ei.value.variable == "TRADE_INTERVAL"
    assert SECRET not in str(ei.value) and SECRET not in repr(ei.value)


def test_env_file_is_read_and_environment_overrides_it(tmp_path):
    (tmp_path / ".env").write_text(
        "# paper settings\n"
        "\n"
        "TRADE_INTERVAL=15\n"
        "export MAX_POSITION_SIZE=500\n"
        "SYMBOLS=\"ETH/USDT,SOL/USDT\"\n"
        "SOMETHING_ELSE=ignored\n"
    )
    s = load_settings(environ={}, home=tmp_path)
    assert s.TRADE_INTERVAL == 15
    assert s.MAX_POSITION_SIZE == 500
    assert s.SYMBOLS == ("ETH/USDT", "SOL/USDT")

    s = load_settings(environ={"TRADE_INTERVAL": "60"}, home=tmp_path)
    assert s.TRADE_INTERVAL == 60  # environment wins
    assert s.MAX_POSITION_SIZE == 500  # the rest still from .env

    # through the CLI, with the state home given by --home
    r = CliRunner().invoke(cli, ["--home", str(tmp_path), "config", "--json"], env={"MAX_POSITION_SIZE": "42"})
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["TRADE_INTERVAL"] == 15 and d["MAX_POSITION_SIZE"] == 42


def test_malformed_env_line_reported_with_its_number(tmp_path):
    (tmp_path / ".env").write_text(f"TRADE_INTERVAL=5\n# ok\nthis line has no equals sign {SECRET}\n")
    with pytest.raises(ConfigError) as ei:
        load_settings(environ={}, home=tmp_path)
    assert "line 3" in ei.value.variable
    assert ".env" in str(ei.value)
    assert SECRET not in str(ei.value)

    r = CliRunner().invoke(cli, ["--home", str(tmp_path), "config"])
    assert r.exit_code == 2
    assert "line 3" in r.output and SECRET not in r.output


def test_bad_value_in_env_file_is_a_config_error(tmp_path):
    (tmp_path / ".env").write_text("PAPER_TRADING=maybe\n")
    with pytest.raises(ConfigError) as ei:
        load_settings(environ={}, home=tmp_path)
    assert ei.value.variable == "PAPER_TRADING"


def test_risk_reducing_settings_stand_in_defaults_for_bad_values(tmp_path):
    """The kill switch's flatten reads settings this way: a bad value (or a garbled .env) must not block it."""
    from qts.config import load_settings_reducing_risk

    home = tmp_path / "h"
    home.mkdir()
    (home / ".env").write_text("MAX_POSITION_SIZE=-1\nSYMBOLS=ETH/USDT\n")
    s, replaced = load_settings_reducing_risk({"TRADE_INTERVAL": "abc"}, home=home)
    assert s.TRADE_INTERVAL == 5 and s.MAX_POSITION_SIZE == 1000 and s.SYMBOLS == ("ETH/USDT",)
    assert len(replaced) == 2 and {r.split(":")[0] for r in replaced} == {"TRADE_INTERVAL", "MAX_POSITION_SIZE"}
    (home / ".env").write_text("this is not a setting\n")
    s, replaced = load_settings_reducing_risk({"RISK_LIMIT_PERCENT": "1"}, home=home)
    assert s.RISK_LIMIT_PERCENT == 1 and len(replaced) == 1 and "the .env file is left out" in replaced[0]
    s, replaced = load_settings_reducing_risk({}, home=tmp_path / "none")
    assert replaced == []
