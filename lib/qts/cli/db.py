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



@db_grp.command("query")
@click.argument("sql")
@click.option("--param", "params", multiple=True, help="A value for each ? in SQL, in order (repeatable).")
@click.option("--max-rows", type=click.IntRange(1, 1_000_000), default=100_000, show_default=True,
              help="Refuse (rather than cut) an answer with more rows.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as a JSON list.")
@click.pass_context
def db_query(ctx, sql, params, max_rows, as_json):
    """Run one read-only SELECT (or WITH) query on the state database and print the rows.

    The database is opened read-only and SQLite's authorizer allows reads only: any other statement
    (INSERT, UPDATE, ATTACH, PRAGMA, a second statement) is refused. Example:

        qts db query "SELECT kind, COUNT(*) AS n FROM events GROUP BY kind"
    """
    import json

    from ..store.query import QueryError, run_query

    try:
        rows = run_query(StateHome.resolve(ctx.obj.get("home")), sql, list(params), max_rows=max_rows)
    except QueryError as e:
        raise InputError(str(e)) from None
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        click.echo("(no rows)")
        return
    cols = list(rows[0])
    click.echo("\t".join(cols))
    for r in rows:
        click.echo("\t".join("" if r[c] is None else str(r[c]) for c in cols))
    click.echo(f"({len(rows)} row{'s' if len(rows) != 1 else ''})", err=True)


@db_grp.command("export")
@click.argument("table")
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True, help="The file to write.")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default=None,
              help="Default: the file's suffix.")
@click.pass_context
def db_export(ctx, table, out, fmt):
    """Write every row of TABLE to a CSV or JSON file that `sqlite-utils insert` and Datasette load as
    they are (written atomically: a failed export leaves no partial file)."""
    import os

    from ..hooks.classify import DENY, classify_edit
    from ..hooks.entry import protected_places
    from ..store.query import QueryError, export_table

    home = StateHome.resolve(ctx.obj.get("home"))
    # the same places the assistant's Write tool may not touch (state home, plugin, key store, .env): an
    # export is a file write, and must not become a way around that rule
    v = classify_edit(out, None, None, os.getcwd(), protected_places(home, os.environ))
    if v.kind == DENY:
        raise InputError(f"--out {out}: {v.detail}; nothing was written (export elsewhere, e.g. ./{table}.csv)")
    try:
        n = export_table(home, table, out, fmt)
    except QueryError as e:
        raise InputError(str(e)) from None
    click.echo(f"{n} rows -> {out}")
