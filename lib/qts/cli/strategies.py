"""``qts strategies``: the built-in strategies and the user's own (``<home>/strategies/NAME.py``)."""

from __future__ import annotations

import json

import click

from .base import _settings, cli


@cli.group("strategies")
def strategies_grp():
    """Strategies: the built-ins and your own files in <home>/strategies/ (or QTS_STRATEGY_PATH)."""


@strategies_grp.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def list_cmd(ctx, as_json):
    """Every strategy with its parameters (default and bounds); user files that cannot load, with why.

    A user strategy is a file NAME.py defining one Strategy subclass with name = "NAME" (see README).
    """
    from ..strategies import catalog

    settings = _settings(ctx)
    cat = catalog(settings.home)
    if as_json:
        click.echo(json.dumps(cat, indent=2, default=str))
        return
    for s in cat["strategies"]:
        click.echo(f"{s['name']:22} {s['source']}")
        if s["doc"]:
            click.echo(f"    {s['doc']}")
        for p in s["params"]:
            bounds = ", ".join(f"{k} {v}" for k, v in p["bounds"].items())
            default = "required" if p["default"] is None else f"default {p['default']}"
            click.echo(f"    {p['name']:14} {p['type']:6} {default}{'; ' + bounds if bounds else ''}")
    click.echo(f"user strategies folder: {cat['user_dir']}")
    for line in cat["refused"]:
        click.echo(f"refused: {line}")
