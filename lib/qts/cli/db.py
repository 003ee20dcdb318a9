"""The books and the database: ``verify`` (journal, fills, positions and cash agree; --rebuild from the journal)
and ``db migrate``."""

from __future__ import annotations

import sys

import click

from ..paths import StateHome
from .base import _settings, cli
from .errors import InputError


@cli.command("verify")
@click.option("--mode", type=click.Choice(["paper", "live"]), default="paper", show_default=True)
@click.option("--rebuild", is_flag=True,
              help="Rebuild the paper books from logs/trades.jsonl when the database is missing, empty or damaged "
                   "(a damaged one is moved to archive/ first). Cash starts from INITIAL_CASH.")
@click.pass_context
def verify_cmd(ctx, mode, rebuild):
    """Check that the trades journal, fills, positions, cash and P&L agree. Exit 1 if they do not.

    --rebuild recovers lost paper books from the journal; to start a new paper account deliberately
    instead, use `qts run --fresh` (the old journal is archived, nothing is deleted).
    """
    from ..reports.verify import verify_books
    from ..store import Store

    if rebuild:
        _rebuild(ctx, mode)
        return

    store = Store.open(StateHome.resolve(ctx.obj.get("home")))
    problems = verify_books(store, mode)
    n = store.scalar("SELECT COUNT(*) FROM fills WHERE mode=?", (mode,))
    store.close()
    for p in problems:
        click.echo(f"MISMATCH: {p}")
    if problems:
        sys.exit(1)
    click.echo(f"books agree: {n} fills in trades.jsonl and the database, cash, positions and P&L consistent")


def _rebuild(ctx, mode):
    from ..reports.verify import RebuildError, rebuild_books

    if mode != "paper":
        raise InputError("--rebuild: paper books only (live positions come from the exchange: the trading agent "
                         "reconciles them when it starts)")
    settings = _settings(ctx)
    try:
        out = rebuild_books(settings.home, settings.INITIAL_CASH)
    except RebuildError as e:
        raise InputError(str(e)) from None
    if out["moved_aside"]:
        click.echo(f"the damaged database was moved to {out['moved_aside']}")
    click.echo(f"rebuilt the paper books from {settings.home.trades_log}: {out['fills']} fills, cash "
               f"{out['cash']:,.2f} (starting from INITIAL_CASH {out['initial_cash']:,.2f}), positions "
               + (", ".join(f"{k} {v:.6g}" for k, v in out["positions"].items()) or "none"))
    click.echo("not in the journal, so not rebuilt: the loop's decisions and equity history, and the events of a "
               "moved database (the kill-switch flag file still counts)")
    for p in out["problems"]:
        click.echo(f"MISMATCH: {p}")
    if out["problems"]:
        sys.exit(1)


@cli.group("db")
def db_grp():
    """The state database (SQLite, WAL) in the state home."""


@db_grp.command("migrate")
@click.pass_context
def db_migrate(ctx):
    """Create the database or apply pending migrations from db/migrations."""
    from ..store.db import open_checked

    home = StateHome.resolve(ctx.obj.get("home"))
    applied: list[int] = []
    # damage is refused by name; a new empty database opens no account (the next command checks the journal)
    open_checked(home, check_journal=False, applied=applied).close()
    click.echo(f"{home.db_path}: " + (f"applied {applied}" if applied else "up to date"))

