"""Notifications after trades and on breaker and kill-switch events.

Configured by environment variables (or the state home's ``.env``; the process environment wins):

=============================  ===========================================================================
QTS_NOTIFY_WEBHOOK_URL         chat webhook (Slack, Discord, Mattermost...): JSON POST {"text", "content"}
QTS_NOTIFY_WEBHOOK_FORMAT      ``chat`` (default) or ``json`` (adds the structured event under "event")
QTS_TELEGRAM_TOKEN             bot token (from @BotFather); never logged
QTS_TELEGRAM_CHAT_ID           chat to post to
QTS_TELEGRAM_API               base URL of the bot API (default https://api.telegram.org; for tests)
QTS_SMTP_HOST / QTS_SMTP_PORT  mail server (port default 587: STARTTLS; 465: implicit TLS)
QTS_SMTP_USER / _PASSWORD      login (optional)
QTS_SMTP_FROM / QTS_SMTP_TO    sender; recipients (comma-separated)
QTS_SMTP_STARTTLS / _SSL       force STARTTLS / implicit TLS on or off (1/0)
QTS_NOTIFY_LOG                 ``0`` turns off the events-table sink (kind ``notify``); on by default
QTS_NOTIFY_RATE                notifications per minute per sink (token bucket refill, default 20)
QTS_NOTIFY_BURST               bucket size (default 5)
QTS_NOTIFY_QUEUE               queued notifications per sink before dropping (default 100)
QTS_NOTIFY_TIMEOUT             seconds per network send (default 5)
QTS_NOTIFY_REPLAY              ``1``: also notify trades and alerts of replays / the synthetic market (default: no)
QTS_NOTIFY_LEVEL               lowest severity sent to the webhook / Telegram / email sinks: ``info`` (paper
                               fills too), ``warning`` (default: fills of paper stay in the events table;
                               drawdown throttle, demotion, stale feed, refusals piling up, live fills,
                               and every critical alert go out) or ``critical``
QTS_ALERT_REFUSALS             gate refusals within 10 minutes that raise "refusals piling up" (default 5)
QTS_SUMMARY_AT                 HH:MM (UTC): the loop sends the previous day's summary at the first cycle
                               past it (qts.reports.daily); unset: no scheduled summary
=============================  ===========================================================================

Levels route: ``info`` goes to the events table only (unless QTS_NOTIFY_LEVEL=info), ``warning`` and
``critical`` to every configured sink. Each alert of :mod:`qts.notify.alerts` has a cooldown per subject,
and every sink its token bucket (critical alerts skip the bucket, never the queue bound).

The library calls three hooks, each returning at once and never raising:
:func:`on_trade` (the gate, after an order is placed), :func:`on_breaker` (each breaker transition),
:func:`on_kill_switch` (engaged, flattened, reset).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time

from .core import Event, EventWriter, Notifier
from .masking import Masker, mask_url
from ..token_bucket import TokenBucket
from .sinks import EmailSink, LogSink, SinkError, TelegramSink, WebhookSink

__all__ = ["Event", "Notifier", "Masker", "TokenBucket", "SinkError", "WebhookSink", "TelegramSink", "EmailSink",
           "LogSink", "NotifyConfigError", "from_env", "get_notifier", "notify", "shutdown", "on_trade",
           "on_breaker", "on_kill_switch", "mask_url", "ENV_VARS"]

log = logging.getLogger("qts.notify")
ENV_VARS = ("QTS_NOTIFY_WEBHOOK_URL", "QTS_NOTIFY_WEBHOOK_FORMAT", "QTS_TELEGRAM_TOKEN", "QTS_TELEGRAM_CHAT_ID",
            "QTS_TELEGRAM_API", "QTS_SMTP_HOST", "QTS_SMTP_PORT", "QTS_SMTP_USER", "QTS_SMTP_PASSWORD",
            "QTS_SMTP_FROM", "QTS_SMTP_TO", "QTS_SMTP_STARTTLS", "QTS_SMTP_SSL", "QTS_NOTIFY_LOG", "QTS_NOTIFY_RATE",
            "QTS_NOTIFY_BURST", "QTS_NOTIFY_QUEUE", "QTS_NOTIFY_TIMEOUT", "QTS_NOTIFY_REPLAY", "QTS_NOTIFY_LEVEL",
            "QTS_ALERT_REFUSALS", "QTS_SUMMARY_AT")
SECRET_VARS = ("QTS_TELEGRAM_TOKEN", "QTS_SMTP_PASSWORD", "QTS_NOTIFY_WEBHOOK_URL")


class NotifyConfigError(ValueError):
    """A notification setting is invalid; the message names the variable (never its secret value)."""


def _dotenv(path) -> dict:
    """QTS_* lines of the state home's .env (standard library only: hooks import this module). The full
    parser, with its errors, is qts.config.parse_env_file; a line it would reject is skipped here."""
    out = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return out
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("export "):
            line = line[7:].lstrip()
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in ENV_VARS:
            continue
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key] = value
    return out


def _env(home=None, environ=None) -> dict:
    env = dict(os.environ if environ is None else environ)
    if home is not None:
        for k, v in _dotenv(home.env_file).items():
            if not env.get(k):
                env[k] = v
    return {k: env[k] for k in ENV_VARS if env.get(k, "") != ""}


def _num(env, name, default, lo, hi, cast=float):
    raw = env.get(name)
    if raw is None:
        return default
    try:
        v = cast(raw)
    except ValueError:
        raise NotifyConfigError(f"{name}: expected a number, got {raw!r}") from None
    if not (lo <= v <= hi):
        raise NotifyConfigError(f"{name}: must be between {lo} and {hi}, got {raw!r}")
    return v


def _flag(env, name, default=None):
    raw = env.get(name)
    if raw is None:
        return default
    s = raw.strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off"):
        return False
    raise NotifyConfigError(f"{name}: expected 1/0 (true/false), got {raw!r}")


def from_env(home=None, environ=None, log_sink: bool | None = None) -> Notifier:
    """A Notifier with the sinks the environment configures (plus the events-table sink when ``home``)."""
    env = _env(home, environ)
    timeout = _num(env, "QTS_NOTIFY_TIMEOUT", 5.0, 0.1, 60)
    masker = Masker([env[k] for k in SECRET_VARS if k in env])
    sinks = []
    try:
        if "QTS_NOTIFY_WEBHOOK_URL" in env:
            w = WebhookSink(env["QTS_NOTIFY_WEBHOOK_URL"], timeout, env.get("QTS_NOTIFY_WEBHOOK_FORMAT", "chat"), masker)
            masker.add(*w.secrets)
            sinks.append(w)
        if "QTS_TELEGRAM_TOKEN" in env or "QTS_TELEGRAM_CHAT_ID" in env:
            sinks.append(TelegramSink(env.get("QTS_TELEGRAM_TOKEN", ""), env.get("QTS_TELEGRAM_CHAT_ID", ""),
                                      env.get("QTS_TELEGRAM_API", "https://api.telegram.org"), timeout, masker))
        if "QTS_SMTP_HOST" in env:
            to = [x.strip() for x in env.get("QTS_SMTP_TO", "").split(",") if x.strip()]
            sinks.append(EmailSink(env["QTS_SMTP_HOST"], int(_num(env, "QTS_SMTP_PORT", 587, 1, 65535, int)),
                                   env.get("QTS_SMTP_FROM", env.get("QTS_SMTP_USER", "")), to,
                                   env.get("QTS_SMTP_USER"), env.get("QTS_SMTP_PASSWORD"),
                                   _flag(env, "QTS_SMTP_STARTTLS"), _flag(env, "QTS_SMTP_SSL"), timeout, masker))
    except ValueError as e:
        raise NotifyConfigError(masker(str(e))) from None
    level = env.get("QTS_NOTIFY_LEVEL", "warning").strip().lower()
    if level not in ("debug", "info", "warning", "error", "critical"):
        raise NotifyConfigError(f"QTS_NOTIFY_LEVEL: info, warning or critical, got {env['QTS_NOTIFY_LEVEL']!r}")
    _num(env, "QTS_ALERT_REFUSALS", 5, 1, 100_000, int)  # checked here so a bad value is named at start
    writer = EventWriter(home) if home is not None else None
    use_log = _flag(env, "QTS_NOTIFY_LOG", True) if log_sink is None else log_sink
    if use_log and writer is not None:
        sinks.append(LogSink(writer))
    return Notifier(sinks, rate_per_min=_num(env, "QTS_NOTIFY_RATE", 20.0, 0.1, 100_000),
                    burst=int(_num(env, "QTS_NOTIFY_BURST", 5, 1, 10_000, int)),
                    queue_size=int(_num(env, "QTS_NOTIFY_QUEUE", 100, 1, 100_000, int)), masker=masker,
                    writer=writer, send_replays=bool(_flag(env, "QTS_NOTIFY_REPLAY", False)), min_level=level)


# -- one notifier per state home in this process ----------------------------------------------------------

_lock = threading.Lock()
_notifiers: dict[str, Notifier] = {}
_disabled: dict[str, str] = {}


def get_notifier(home) -> Notifier | None:
    """The process's notifier for ``home`` (built from the environment on first use). None, logged once,
    when the configuration is invalid: a bad setting must not stop trading."""
    key = str(home.root)
    with _lock:
        n = _notifiers.get(key)
        if n is not None and not n.closed:
            return n
        if key in _disabled:
            return None
        try:
            n = from_env(home)
        except NotifyConfigError as e:
            _disabled[key] = str(e)
            log.error("notifications disabled: %s", e)
            return None
        _notifiers[key] = n
        return n


def notify(home, event: Event) -> int:
    try:
        n = get_notifier(home)
        return n.notify(event) if n else 0
    except Exception as e:  # never let a notification break the caller
        log.warning("notify: %s: %s", e.__class__.__name__, e)
        return 0


def shutdown(timeout: float = 3.0) -> None:
    """Flush and stop every notifier of this process (bounded). Registered at exit."""
    with _lock:
        items = list(_notifiers.items())
        _notifiers.clear()
        _disabled.clear()
    per = timeout / max(1, len(items))
    for _, n in items:
        try:
            n.close(per)
        except Exception:
            pass


atexit.register(shutdown, 3.0)


# -- hooks the library calls ----------------------------------------------------------------------------

def _is_replay(source) -> bool:
    s = str(source or "")
    return s.startswith("synthetic") or s.startswith("replay")


def _get(obj, name, default=None):
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def on_trade(home, result, intent=None, mode: str = "paper", source: str | None = None) -> int:
    """After the gate placed an order: notify fills (and resting limit orders). ``result``: an
    OrderResult or its dict; ``intent``: the OrderIntent (symbol, side, strategy, reason). Replays and
    the synthetic market are not notified unless QTS_NOTIFY_REPLAY=1. Returns at once."""
    try:
        if not _get(result, "accepted"):
            return 0
        n = get_notifier(home)
        if n is None or (_is_replay(source) and not n.send_replays):
            return 0
        status = _get(result, "status", "")
        filled = float(_get(result, "filled", 0) or 0)
        if filled <= 0 and status not in ("open", "partially_filled"):
            return 0
        side = str(_get(intent, "side", _get(result, "side", "?"))).upper()
        sym = _get(intent, "symbol", _get(result, "symbol", "?"))
        px = _get(result, "avg_price")
        amount = filled if filled > 0 else float(_get(intent, "amount", 0) or 0)
        title = f"{mode.upper()} {side} {amount:.6g} {sym}" + (f" @ {px:,.2f}" if px else "") + f" [{status}]"
        bits = []
        if _get(result, "fee"):
            bits.append(f"fee {float(_get(result, 'fee')):.2f}")
        if _get(intent, "strategy"):
            bits.append(f"strategy {_get(intent, 'strategy')}")
        if _get(intent, "reason"):
            bits.append(str(_get(intent, "reason")))
        if _get(intent, "source") and _get(intent, "source") != "loop":
            bits.append(f"via {_get(intent, 'source')}")
        ev = Event("trade", title, " \u00b7 ".join(bits), "warning" if mode == "live" else "info",
                   {"mode": mode, "symbol": sym, "side": side.lower(), "filled": filled, "avg_price": px,
                    "status": status, "client_order_id": _get(result, "client_order_id"), "source": source})
        return n.notify(ev)
    except Exception as e:
        log.warning("on_trade: %s: %s", e.__class__.__name__, e)
        return 0


def on_breaker(home, record: dict) -> int:
    """After a breaker transition (the record appended to logs/circuit_breaker.json)."""
    try:
        frm, to = record.get("from", "?"), record.get("state", "?")
        ts = record.get("trading_state")
        tripped = to == "open" and frm != "open"
        sev = "critical" if ts == "HALTED" else "warning" if to != "closed" else "info"
        title = f"Circuit breaker {frm} \u2192 {to}" + (f" (trading {ts})" if ts and ts != "ACTIVE" else "")
        text = str(record.get("reason", ""))
        if tripped:
            text += "\nLive orders are refused; trading continues in paper. Going live again needs a fresh PIN grant."
        return notify(home, Event("breaker", title, text, sev, {k: v for k, v in record.items() if k != "extra"},
                                  ts=record.get("since_ts") or int(time.time() * 1000)))
    except Exception as e:
        log.warning("on_breaker: %s: %s", e.__class__.__name__, e)
        return 0


def on_kill_switch(home, action: str, reason: str = "", data: dict | None = None) -> int:
    """``action``: engaged | flatten | reset."""
    try:
        if action == "engaged":
            ev = Event("kill_switch", "KILL SWITCH ENGAGED", f"{reason}\nEvery order except flattening is refused. "
                                                             "A human resets it with the PIN.", "critical", data or {})
        elif action == "flatten":
            d = data or {}
            ev = Event("kill_switch", "Kill switch: flatten " + ("done" if not d.get("failed") else "INCOMPLETE"),
                       f"cancelled {len(d.get('cancelled', []))}, closed {len(d.get('closed', []))}, "
                       f"failed {len(d.get('failed', []))}", "critical" if d.get("failed") else "warning", d)
        else:
            ev = Event("kill_switch", f"Kill switch {action}", reason, "warning", data or {})
        return notify(home, ev)
    except Exception as e:
        log.warning("on_kill_switch: %s: %s", e.__class__.__name__, e)
        return 0
