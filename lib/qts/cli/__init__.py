"""``qts``: every operation of quant-trading-system from one command line.

A thin skin over the library: each command parses its options, calls a library function and prints
the result (``--json`` where a machine reads it). Exit codes: 0 ok, 1 the operation failed,
2 bad input (configuration, options, candle files) with a message naming what is wrong.

The root group ``cli`` lives in ``base``; each module below registers its commands on it when imported here.
Only click and the standard library load at start: a command imports what it needs when it runs.
"""

from __future__ import annotations

import os
import sys

import click

from . import (agent, approvals, control, data, db, edges, market, monitor, notify, orders,  # noqa: F401
               registry, research, research_compile, safety, strategies, trading)  # each registers its commands on base.cli

from .base import cli
from .errors import InputError, state_error_line

research.research_cmd.add_command(edges.edges_cmd)  # qts research edges
research.research_cmd.add_command(research_compile.compile_cmd)  # qts research compile

__all__ = ["cli", "main", "InputError"]


def main(argv=None):
    try:
        cli.main(args=argv, prog_name="qts", standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # raised outside a command (QtsGroup handles those inside one)
        line = state_error_line(e, os.environ.get("QTS_HOME"))
        if line is None:
            raise
        click.echo(f"error: {line}", err=True)
        sys.exit(2)


