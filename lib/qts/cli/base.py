"""The root group ``cli`` and what every command shares: the settings check before a command runs, damaged state
turned into one line, and small parsers. Command modules register on ``cli`` from here (not from the package
``qts.cli``, whose ``__init__`` imports them: that would be an import circle)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import click

from .. import __version__
from ..paths import StateHome
from .errors import InputError, state_error_line


def _settings(ctx: click.Context, **overrides):
    from ..config import ConfigError, load_settings

    try:
        return load_settings(home=ctx.obj.get("home"), **overrides)
    except ConfigError as e:
        raise InputError(f"configuration: {e}") from None


def _iso(ts_ms) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M") if ts_ms else "-"


def _parse_params(items, option: str = "--param") -> dict:
    """NAME=VALUE pairs; VALUE as JSON when it parses (numbers, lists), else text."""
    out = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise InputError(f"{option + ' ' if option else ''}{item!r}: expected NAME=VALUE")
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


READ_ONLY_COMMANDS = ("status", "report", "perf", "verify", "breaker", "metrics")


class QtsGroup(click.Group):
    """Turns a damaged state file into one line on stderr and exit code 2, for every command (CliRunner
    included), instead of a traceback. A stored row with NaN in its JSON (an older version wrote them) is
    repaired on the spot; a read-only command then runs again, any other asks to be run again."""

    def invoke(self, ctx):
        pending = getattr(ctx, "_protected_args", None)
        argv = [*(pending if pending is not None else ctx.protected_args), *ctx.args]  # for the one retry below
        try:
            return super().invoke(ctx)
        except Exception as e:
            if "malformed JSON" in str(e) and e.__class__.__module__ == "sqlite3":
                from ..store.db import repair_home_json

                fixed = repair_home_json(StateHome.resolve((ctx.obj or {}).get("home")))
                if fixed and ctx.invoked_subcommand in READ_ONLY_COMMANDS:
                    name, cmd, rest = self.resolve_command(ctx, argv)
                    with cmd.make_context(name, rest, parent=ctx) as sub:
                        return cmd.invoke(sub)
                if fixed:
                    click.echo(f"error: {fixed} stored value(s) held NaN/Infinity and were repaired (now null); "
                               "nothing else was changed: run the command again", err=True)
                    ctx.exit(2)
            line = state_error_line(e, (ctx.obj or {}).get("home"))
            if line is None:
                raise
            click.echo(f"error: {line}", err=True)
            ctx.exit(2)


# Commands that only reduce risk run even when a setting is bad (a .env is a file the assistant can write: a
# typo there must not keep the kill switch or a halt from working); they warn instead. Every other command
# stops on a bad setting with one line naming it, exit code 2.
RISK_REDUCING = {("kill-switch",), ("kill-switch", "engage"), ("stop",), ("breaker", "trip"),
                 ("breaker", "state", "HALTED"), ("breaker", "state", "REDUCING"), ("approve", "revoke"),
                 ("agent", "halt"), ("agent", "reduce"), ("agent", "revoke"), ("agent", "lower"), ("agent", "stop"),
                 ("strategy", "pause")}


class _Root(QtsGroup):
    def resolve_command(self, ctx, args):
        name, cmd, rest = super().resolve_command(ctx, args)
        ctx.meta["qts.command_path"] = _command_path(cmd, name, rest)
        return name, cmd, rest


def _command_path(cmd, name, rest) -> tuple:
    """("breaker", "state", "HALTED"): the command names typed after ``qts`` (options left out), or () for help."""
    if any(a in ("-h", "--help") for a in rest):
        return ()
    path = [name]
    words = [a for a in rest if not a.startswith("-")]
    while isinstance(cmd, click.Group) and words:
        sub = cmd.get_command(None, words[0]) if words[0] in cmd.list_commands(None) else None
        if sub is None:
            break
        path.append(words.pop(0))
        cmd = sub
    if tuple(path) == ("breaker", "state") and words:
        path.append(words[0].upper())
    return tuple(path)


def _check_settings(ctx) -> None:
    path = ctx.meta.get("qts.command_path", ())
    if not path or path[0] in ("config",):  # help; `qts config` reports the bad setting itself
        return
    if path in RISK_REDUCING:
        from ..config import ConfigError, load_settings

        try:
            load_settings(home=ctx.obj.get("home"))
        except ConfigError as e:
            click.echo(f"warning: configuration: {e} (carrying on: `qts {' '.join(path)}` only reduces risk)",
                       err=True)
        return
    _settings(ctx)


@click.group(cls=_Root, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="qts")
@click.option("--home", type=click.Path(file_okay=False), envvar="QTS_HOME",
              help="State home (database, logs, flags). Default: $CLAUDE_PROJECT_DIR/.quant-trading "
                   "or ./.quant-trading.")
@click.pass_context
def cli(ctx, home):
    """quant-trading-system: research, backtest, paper-trade and (with a human PIN) live-trade crypto.

    Paper trading is the default and needs no keys. Every order, whoever proposes it, passes one
    gate. Settings come from the environment (EXCHANGE, SYMBOLS, TRADE_INTERVAL, MAX_POSITION_SIZE,
    RISK_LIMIT_PERCENT, PAPER_TRADING, ...) or a .env file in the state home: see `qts config`.
    """
    ctx.ensure_object(dict)
    ctx.obj["home"] = home
    _check_settings(ctx)  # a bad setting: one line naming it, exit 2, before any command runs


@cli.command("config")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def config_cmd(ctx, as_json):
    """Show the effective settings (secrets shown only as set/unset).

    A bad value stops here with exit code 2 and a message naming the variable and what is allowed.
    """
    s = _settings(ctx)
    d = s.public_dict()
    if as_json:
        click.echo(json.dumps(d, indent=2))
    else:
        for k, v in d.items():
            click.echo(f"{k:20} {', '.join(v) if isinstance(v, list) else v}")


def _store(ctx):
    from ..store import Store

    return Store.open(StateHome.resolve(ctx.obj.get("home")))
