"""Every `qts ...` command that a message, a docstring, a slash command or a workflow tells someone to run
exists in the CLI (a hint to a command that does not exist, such as `qts pin set`, leaves a user stuck)."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from qts.cli import cli

REPO = Path(__file__).resolve().parents[1]
SOURCES = [*sorted((REPO / "lib" / "qts").rglob("*.py")), *sorted((REPO / "commands").glob("*.md")),
           *sorted((REPO / "workflows").glob("*.md")), *sorted((REPO / "agents").glob("*.md")),
           *sorted((REPO / "hooks").glob("*")), REPO / "README.md", REPO / "Makefile"]
WORD = r"[a-z][a-z0-9-]*"
# "qts" used as a noun in prose: "the names qts reads", "through qts commands", "every qts invocation"
PROSE = {"reads", "commands", "command", "invocation", "is", "call", "or"}


def _mentions():
    """(file, line number, the words after qts / Q / _qts.sh) for every command mentioned."""
    pats = [re.compile(rf"(?<![\w./-])qts((?: {WORD})+)"),  # qts kill-switch reset
            re.compile(rf"`Q((?: {WORD})+)"),  # `Q status` in the slash commands (Q = hooks/_qts.sh)
            re.compile(rf"_qts\.sh((?: {WORD})+)")]  # allowed-tools: Bash(${CLAUDE_PLUGIN_ROOT}/hooks/_qts.sh market:*)
    for path in SOURCES:
        if not path.is_file():
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            for pat in pats if path.suffix == ".md" else pats[:1]:  # Q and _qts.sh: the markdown's shorthands
                for m in pat.finditer(line):
                    yield f"{path.relative_to(REPO)}:{n}", m.group(1).split()


def _resolve(words: list[str]) -> str | None:
    """None when the words name a command (extra words after a leaf command are its arguments or prose);
    otherwise what is wrong."""
    cmd: click.Command = cli
    ctx = click.Context(cli)
    for i, w in enumerate(words):
        if not isinstance(cmd, click.Group):
            return None
        sub = cmd.get_command(ctx, w)
        if sub is None:
            if i == 0 and w in PROSE:
                return None
            if i > 0 and cmd.invoke_without_command:
                return None  # e.g. `qts kill-switch now`: the group runs its own action
            known = ", ".join(cmd.list_commands(ctx))
            return f"`qts {' '.join(words[:i + 1])}`: no such command (under `qts {' '.join(words[:i])}`: {known})"
        cmd = sub
    return None


def test_the_scan_finds_the_hints():
    found = list(_mentions())
    assert len(found) > 100
    assert any(words[:2] == ["kill-switch", "reset"] for _, words in found)
    assert _resolve(["pin", "set"]) is not None  # the hint this test was written for would fail
    assert _resolve(["agent", "approve", "nothing"]) is not None


def test_every_command_named_anywhere_exists():
    bad = [f"{where}: {problem}" for where, words in _mentions() if (problem := _resolve(words))]
    assert not bad, "\n".join(bad)
