"""EXCHANGE_SANDBOX=true (issue #12): ccxt's sandbox/testnet URLs for public data, downloads and the trading
agent's exchange client; an exchange without a testnet is refused naming the setting, never silently real."""

from __future__ import annotations

import json

from click.testing import CliRunner

from conftest import CONFIG_VARS
from support.loopback_exchange import LoopbackBinance

NO_ENV = {k: None for k in CONFIG_VARS}


def invoke(args, **env):
    from qts.cli import cli

    return CliRunner().invoke(cli, args, env={**NO_ENV, **env})


def test_clients_point_at_the_testnet():
    from qts.agent.main import make_exchange
    from qts.config import load_settings
    from qts.market.ccxt_feed import public_exchange

    assert public_exchange("binance").urls["api"]["public"].startswith("https://api.binance.com/")
    assert public_exchange("binance", sandbox=True).urls["api"]["public"].startswith("https://testnet.binance.vision/")
    s = load_settings(environ={"EXCHANGE_SANDBOX": "true"}, home="/tmp/qts-sandbox-none")
    ex = make_exchange(s, "k", "s")
    assert all("testnet.binance.vision" in u for k, u in ex.urls["api"].items()
               if k in ("public", "private", "v3", "v1") and isinstance(u, str))


def test_sandbox_with_a_local_exchange_url_and_refusals(tmp_path):
    home = ["--home", str(tmp_path / "home")]
    with LoopbackBinance(idle_timeout=30) as srv:
        r = invoke(home + ["market", "ticker", "BTC/USDT"], EXCHANGE_SANDBOX="true", EXCHANGE_URL=srv.base_url)
        assert r.exit_code == 0, r.output
        assert json.loads(r.output)["symbol"] == "BTC/USDT"
        assert any(p.endswith("/ticker/24hr") for _, p, _ in srv.access_log)
    r = invoke(home + ["market", "ticker", "BTC/USDT"], EXCHANGE="kraken", EXCHANGE_SANDBOX="true")
    assert r.exit_code == 2 and "EXCHANGE_SANDBOX: kraken has no sandbox/testnet" in r.output
    r = invoke(home + ["data", "download", "--symbol", "BTC/USDT", "--since", "2024-01-01"], EXCHANGE="kraken",
               EXCHANGE_SANDBOX="1")
    assert r.exit_code == 2 and "EXCHANGE_SANDBOX" in r.output
    r = invoke(home + ["config"], EXCHANGE_SANDBOX="maybe")
    assert r.exit_code == 2 and "EXCHANGE_SANDBOX" in r.output
