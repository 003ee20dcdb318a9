"""Settings from the environment plus an optional ``.env`` in the state home.

One pydantic model. A bad value raises :class:`ConfigError` naming the variable and what is
allowed; the CLI turns that into exit code 2 before anything starts. Secrets are ``SecretStr``: they
never appear in repr, logs or error messages (errors for secret fields never echo the value).
Precedence: process environment > ``<state home>/.env`` > defaults.
"""

from __future__ import annotations

import importlib.util
import os
import re
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from .paths import HOME_ENV, StateHome, resolve_home

TIMEFRAME_MINUTES = (1, 3, 5, 15, 30, 60, 120, 240, 360, 480, 720, 1440)
SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,15}/[A-Z0-9]{2,10}$")
SECRET_FIELDS = {"EXCHANGE_API_KEY", "EXCHANGE_SECRET"}
TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off"}


class ConfigError(ValueError):
    """A setting is invalid. ``variable`` names it; ``str()`` is safe to print."""

    def __init__(self, variable: str, message: str):
        self.variable = variable
        super().__init__(f"{variable}: {message}")


@lru_cache(maxsize=1)
def ccxt_exchange_ids() -> frozenset[str]:
    """Exchange ids that ccxt supports, read from its package without importing it (~0.4 s)."""
    spec = importlib.util.find_spec("ccxt")
    if not spec or not spec.origin:
        return frozenset()
    text = Path(spec.origin).read_text(encoding="utf-8", errors="replace")
    m = re.search(r"^exchanges = \[(.*?)\]", text, re.S | re.M)
    return frozenset(re.findall(r"'([a-z0-9_]+)'", m.group(1))) if m else frozenset()


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    EXCHANGE: str = Field("binance", description="ccxt exchange id")
    EXCHANGE_API_KEY: SecretStr | None = None
    EXCHANGE_SECRET: SecretStr | None = None
    PAPER_TRADING: bool = True
    EXCHANGE_SANDBOX: bool = Field(False, description="use the exchange's sandbox/testnet (ccxt set_sandbox_mode)")
    TRADE_INTERVAL: int = Field(5, description="minutes between cycles (a candle timeframe)")
    MAX_POSITION_SIZE: float = Field(1000.0, gt=0, le=1e9, description="USD per position")
    RISK_LIMIT_PERCENT: float = Field(2.0, gt=0, le=100, description="% of equity at risk per trade")
    SYMBOLS: tuple[str, ...] = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
    STRATEGY: str = "sma_cross"
    INITIAL_CASH: float = Field(10_000.0, gt=0, le=1e12, description="paper account starting cash (USD)")
    FEE_BPS: float = Field(10.0, ge=0, le=1000, description="paper fee per fill, basis points")
    SLIPPAGE_BPS: float = Field(5.0, ge=0, le=1000, description="paper slippage, basis points")
    EXCHANGE_URL: str | None = Field(None, description="point the exchange client at this base URL (a local "
                                                         "test exchange or a proxy); read by the agent at start")
    CANDLE_MAX_JUMP: float = Field(5.0, gt=1, le=1e6, description="a candle priced beyond this multiple (or "
                                   "fraction) of the recent median close is a bad print: quarantined, never used")
    CANDLE_MAX_QUOTE_VOLUME: float = Field(1e12, gt=0, description="a candle whose volume x close exceeds this is "
                                           "quarantined (absurd volume)")
    QTS_HOME: Path

    @field_validator("EXCHANGE_URL")
    @classmethod
    def _exchange_url(cls, v):
        if v is None or str(v).strip() == "":
            return None
        from .market.exchange_url import validate_exchange_url

        return validate_exchange_url(str(v))

    @field_validator("EXCHANGE")
    @classmethod
    def _exchange(cls, v: str) -> str:
        v = v.strip().lower()
        known = ccxt_exchange_ids()
        if known and v not in known:
            raise ValueError("unknown exchange; allowed: any ccxt exchange id, e.g. binance, kraken, coinbase")
        if not re.fullmatch(r"[a-z0-9_]+", v):
            raise ValueError("allowed: a ccxt exchange id (lowercase letters, digits, _)")
        return v

    @field_validator("PAPER_TRADING", "EXCHANGE_SANDBOX", mode="before")
    @classmethod
    def _bool(cls, v):
        if isinstance(v, bool):
            return v
        s = str(v).strip().lower()
        if s in TRUE:
            return True
        if s in FALSE:
            return False
        raise ValueError("allowed: true or false (also 1/0, yes/no, on/off)")

    @field_validator("TRADE_INTERVAL", mode="before")
    @classmethod
    def _interval(cls, v):
        try:
            n = int(str(v).strip())
        except ValueError:
            n = None
        if n not in TIMEFRAME_MINUTES:
            raise ValueError("allowed minutes: " + ", ".join(map(str, TIMEFRAME_MINUTES)))
        return n

    @field_validator("SYMBOLS", mode="before")
    @classmethod
    def _symbols(cls, v):
        items = [s.strip().upper() for s in v.split(",")] if isinstance(v, str) else list(v)
        items = [s for s in items if s]
        if not items:
            raise ValueError("allowed: a comma-separated list like BTC/USDT,ETH/USDT")
        for s in items:
            if not SYMBOL_RE.match(s):
                raise ValueError(f"{s!r} is not a BASE/QUOTE symbol like BTC/USDT")
        if len(set(items)) != len(items):
            raise ValueError("symbols must not repeat")
        return tuple(items)

    @field_validator("STRATEGY")
    @classmethod
    def _strategy(cls, v: str) -> str:
        from .strategies import STRATEGIES
        from .strategies.user import NAME_RE

        if v not in STRATEGIES and not NAME_RE.match(v):  # a user file's name: checked once the home is known
            raise ValueError("allowed: " + ", ".join(sorted(STRATEGIES)) + ", or a user strategy's name")
        return v

    @property
    def home(self) -> StateHome:
        return StateHome(self.QTS_HOME)

    @property
    def has_keys(self) -> bool:
        return bool(self.EXCHANGE_API_KEY and self.EXCHANGE_SECRET
                    and self.EXCHANGE_API_KEY.get_secret_value() and self.EXCHANGE_SECRET.get_secret_value())

    def public_dict(self) -> dict:
        """Everything safe to print or log: secrets reduced to 'set' / 'unset'."""
        d = self.model_dump(exclude=SECRET_FIELDS)
        d["QTS_HOME"] = str(self.QTS_HOME)
        d["SYMBOLS"] = list(self.SYMBOLS)
        for k in SECRET_FIELDS:
            d[k] = "set" if getattr(self, k) else "unset"
        return d


def parse_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; '#' comments; optional quotes. Unknown keys are kept (ignored later)."""
    out: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return out
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(str(path), f"cannot read .env file ({e.__class__.__name__})") from None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[7:].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ConfigError(f"{path.name} line {n}", "expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key] = value
    return out


def load_settings(environ: dict | None = None, home: str | os.PathLike | None = None, ignore: frozenset = frozenset(),
                  **overrides) -> Settings:
    """``ignore``: settings read as unset wherever they are given, and ".env" to skip the state home's .env
    file (see load_settings_reducing_risk)."""
    env = dict(os.environ if environ is None else environ)
    root = resolve_home(home, env)
    values: dict = {}
    names = set(Settings.model_fields) - set(ignore)
    for k, v in ({} if ".env" in ignore else parse_env_file(StateHome(root).env_file)).items():
        if k in names:
            values[k] = v
    for k in names:
        if k in env and env[k] != "":
            values[k] = env[k]
    values.update({k: v for k, v in overrides.items() if v is not None})
    values[HOME_ENV] = root
    try:
        s = Settings(**values)
    except ValidationError as e:
        err = e.errors()[0]
        var = str(err["loc"][0]) if err.get("loc") else "config"
        msg = err.get("msg", "invalid value").removeprefix("Value error, ")
        if var not in SECRET_FIELDS and var in values:
            shown = str(values[var])
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            msg = f"{msg} (got {shown!r})"
        raise ConfigError(var, msg) from None
    from .strategies import STRATEGIES
    from .strategies.user import file_for, set_home, user_dir

    # a user strategy: only its file's presence is checked here (no user code runs while settings load)
    if s.STRATEGY not in STRATEGIES and file_for(s.STRATEGY, root) is None:
        raise ConfigError("STRATEGY", f"unknown {s.STRATEGY!r}; allowed: {', '.join(sorted(STRATEGIES))}, or a "
                                      f"file {user_dir(root) / (s.STRATEGY + '.py')} defining it")
    set_home(root)  # user strategy files are looked up in this home's strategies/ (strategies/user.py)
    return s


def load_settings_reducing_risk(environ: dict | None = None, home=None) -> tuple[Settings, list[str]]:
    """Settings for a command that only reduces risk (the kill switch's flatten): a bad value must not block it
    (a .env is a file the assistant can write), so each bad setting falls back to its default and is
    reported. Returns (settings, one line per setting that was replaced)."""
    dropped: list[str] = []
    ignore: set[str] = set()
    while True:
        try:
            return load_settings(environ, home, ignore=frozenset(ignore)), dropped
        except ConfigError as e:
            if e.variable in Settings.model_fields and e.variable != HOME_ENV and e.variable not in ignore:
                ignore.add(e.variable)
                dropped.append(f"{e}: the default is used")
            elif ".env" not in ignore:  # the .env file itself is unreadable or malformed: do without it
                ignore.add(".env")
                dropped.append(f"{e}: the .env file is left out")
            else:
                raise
