"""``qts notify``: the notification sinks (webhook, Telegram, email, the events table), their status and a
test message."""

from __future__ import annotations

import json
import sys

import click

from .base import cli
from .errors import InputError
from .monitor import _home


# -- notifications -----------------------------------------------------------------------------------------

@cli.group("notify")
def notify_grp():
    """Notifications (webhook, Telegram, email, the events table) after trades and safety events.

    Configured by environment variables or the state home's .env: QTS_NOTIFY_WEBHOOK_URL,
    QTS_TELEGRAM_TOKEN + QTS_TELEGRAM_CHAT_ID (+ QTS_TELEGRAM_API), QTS_SMTP_HOST / PORT / USER /
    PASSWORD / FROM / TO, QTS_NOTIFY_RATE (per minute per sink), QTS_NOTIFY_BURST, QTS_NOTIFY_QUEUE,
    QTS_NOTIFY_TIMEOUT, QTS_NOTIFY_LOG=0, QTS_NOTIFY_REPLAY=1. Secrets are never printed.
    """


def _notifier(ctx):
    from ..notify import NotifyConfigError, from_env

    try:
        return from_env(_home(ctx).ensure())
    except NotifyConfigError as e:
        raise InputError(f"notifications: {e}") from None


@notify_grp.command("status")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def notify_status(ctx, as_json):
    """The configured sinks (secrets masked) and the rate limit."""
    n = _notifier(ctx)
    d = {"sinks": n.describe(), "rate_per_min": n.lanes[0].bucket.rate * 60 if n.lanes else None,
         "burst": n.lanes[0].bucket.capacity if n.lanes else None, "send_replays": n.send_replays}
    n.close(0.5)
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    if not d["sinks"]:
        click.echo("no notification sinks configured (see `qts notify --help`)")
        return
    for s in d["sinks"]:
        click.echo(f"{s['name']:9} " + "  ".join(f"{k}={v}" for k, v in s.items() if k != "name"))
    click.echo(f"rate limit: {d['rate_per_min']:g}/min per sink, burst {d['burst']:g}; replays "
               f"{'notified' if d['send_replays'] else 'not notified'}")


@notify_grp.command("test")
@click.option("--message", default="test notification from qts", show_default=True)
@click.option("--timeout", type=click.FloatRange(0.5, 120), default=15, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def notify_test(ctx, message, timeout, as_json):
    """Send one test notification through every sink and report each result (exit 1 if any failed)."""
    from ..notify import Event

    n = _notifier(ctx)
    n.notify(Event("test", message, f"state home {_home(ctx).root}", "info"))
    n.flush(timeout)
    stats = n.stats()
    n.close(1.0)
    if as_json:
        click.echo(json.dumps(stats, indent=2))
    else:
        if not stats:
            click.echo("no notification sinks configured (see `qts notify --help`)")
        for name, s in stats.items():
            state = "sent" if s["sent"] else "FAILED: " + str(s["last_error"]) if s["failed"] else "not sent (timeout)"
            click.echo(f"{name:9} {state}")
    sys.exit(0 if all(s["sent"] for s in stats.values()) else 1)
