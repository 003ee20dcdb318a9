"""The CLI's error lines: bad input exits 2 naming what is wrong, an unreachable exchange is one line (exit 1),
a damaged state file is one line (exit 2); never a traceback for any of them."""

from __future__ import annotations

import functools
import sys
from contextlib import contextmanager

import click

from ..paths import StateHome


class InputError(click.ClickException):
    exit_code = 2


@contextmanager
def input_errors():
    from ..market.candles import CandleFileError
    from ..strategies import StrategyError

    try:
        yield
    except (CandleFileError, StrategyError) as e:
        raise InputError(str(e)) from None
    except ValueError as e:
        raise InputError(str(e)) from None


def _network_errors(fn):
    """An exchange that cannot be reached is one line naming the exchange, the endpoint and why ("offline?"),
    exit code 1: never a page of traceback."""
    @functools.wraps(fn)
    def wrapper(*a, **kw):
        from ..market.ccxt_feed import ExchangeFailed

        try:
            return fn(*a, **kw)
        except ExchangeFailed as e:
            raise click.ClickException(str(e)) from None
    return wrapper


def state_error_line(e: BaseException, home_opt=None) -> str | None:
    """The one line for a damaged or unwritable state file (None for any other error): a StateFileError
    names its file; a SQLite error raised past the checks (disk full mid-cycle, damage found in a page the
    open did not read) is named after the state home's database."""
    from ..fsutil import StateFileError

    if isinstance(e, StateFileError):
        return str(e)
    import sqlite3

    if isinstance(e, sqlite3.DatabaseError):
        home = StateHome.resolve(home_opt)
        what = "the disk is full" if "full" in str(e) else f"SQLite says {e}"
        return (f"{home.db_path}: {what}; the change in progress was rolled back (nothing half-written) and no "
                "further order was placed")
    return None



def _approval_errors(fn):
    """A refused approval or a cancelled PIN prompt: one line and its exit code (2 for a prompt that ended),
    and nothing changed."""
    @functools.wraps(fn)
    def wrapper(*a, **kw):
        from ..safety.approve import ApprovalError
        from ..safety.tty import PROMPT_ENDED, SecretCancelled

        try:
            return fn(*a, **kw)
        except ApprovalError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)
        except PROMPT_ENDED as e:  # no terminal, Ctrl-C / Ctrl-D at a prompt, two PIN entries that differ
            msg = str(e) if "nothing was changed" in str(e) else f"{e}; nothing was changed"
            click.echo(("cancelled: " if isinstance(e, SecretCancelled) else "error: ") + msg, err=True)
            sys.exit(2)
    return wrapper
