"""Read a secret (the PIN) from the controlling terminal, with echo off. Standard library only.

The PIN is read from ``/dev/tty`` and from nowhere else: never from stdin, an environment variable
or a command-line argument, because each of those is visible to (or writable by) the AI assistant:
its Bash commands run with stdin at /dev/null, inherit the user's environment, and their command
lines land in the session transcript.

Commands the assistant runs through Claude Code's Bash tool have no controlling terminal, and
``open('/dev/tty')`` fails there (even though ``test -r /dev/tty`` says the file is readable). That
failure is turned into :class:`NoTerminal`, whose message tells the user to run the command in their
own terminal.

What this is NOT: proof that a human is present. A same-user process can allocate a
pseudo-terminal (``script``, ``expect``, ``pty.spawn``) and drive a command through it. The terminal
only keeps the PIN out of argv, env, stdin and the transcript; the PIN itself is the proof.

Tests inject a ``reader`` callable as a function argument (never through an environment variable).
"""

from __future__ import annotations

import os
from typing import Callable

TTY_PATH = "/dev/tty"
MAX_SECRET_BYTES = 4096

NO_TERMINAL_HELP = (
    "cannot open a terminal (/dev/tty) to ask for the PIN. Run this command yourself, in your own "
    "terminal window, not through the AI assistant: the PIN must be typed by you, and never pasted "
    "into the chat, a command line, a file or an environment variable."
)


class NoTerminal(RuntimeError):
    """There is no controlling terminal to read the secret from (e.g. inside the assistant's Bash tool)."""

    def __init__(self, detail: str = ""):
        msg = NO_TERMINAL_HELP + (f" ({detail})" if detail else "")
        super().__init__(msg)


class SecretCancelled(RuntimeError):
    """The user cancelled the prompt: Ctrl-D on an empty line, or Ctrl-C."""


class SecretInputError(ValueError):
    """What was typed cannot be used (too long, not UTF-8, two entries that differ). ``str()`` says which."""


class SecretMismatch(SecretInputError):
    """The two entries of a new secret differ."""


# what a command turns into one line on stderr and exit code 2 (nothing was changed)
PROMPT_ENDED = (NoTerminal, SecretCancelled, SecretInputError)


def _read_line(fd: int) -> bytes:
    buf = bytearray()
    while True:
        chunk = os.read(fd, 1)
        if not chunk:  # EOF (Ctrl-D on an empty line, or the terminal went away)
            if not buf:
                raise SecretCancelled("input cancelled (Ctrl-D)")
            return bytes(buf)
        if chunk in (b"\n", b"\r"):
            return bytes(buf)
        buf += chunk
        if len(buf) > MAX_SECRET_BYTES:
            raise SecretInputError(f"input longer than {MAX_SECRET_BYTES} bytes")


def read_secret(prompt: str, *, reader: Callable[[str], str] | None = None) -> str:
    """Ask for a secret on the controlling terminal with echo off; return it without the newline.

    ``reader`` (tests only, a function argument): called as ``reader(prompt)`` instead of using the
    terminal. Raises :class:`NoTerminal` when /dev/tty cannot be opened or is not a terminal,
    :class:`SecretCancelled` on Ctrl-D or Ctrl-C (the terminal is restored), :class:`SecretInputError` for
    input that cannot be used. :data:`PROMPT_ENDED` lists the three for a caller's ``except``.
    """
    if reader is not None:
        value = reader(prompt)
        if not isinstance(value, str):
            raise TypeError("reader must return a str")
        return value

    import termios

    try:
        fd = os.open(TTY_PATH, os.O_RDWR | os.O_NOCTTY)
    except OSError as e:
        raise NoTerminal(f"{e.__class__.__name__}: {e.strerror or e}") from None
    try:
        try:
            old = termios.tcgetattr(fd)
        except termios.error:
            raise NoTerminal("/dev/tty is not a terminal") from None
        new = termios.tcgetattr(fd)
        new[3] &= ~(termios.ECHO | termios.ECHOE | termios.ECHOK)
        new[3] |= termios.ICANON
        # TCSAFLUSH: anything typed (or injected) before the prompt is discarded
        termios.tcsetattr(fd, termios.TCSAFLUSH, new)
        try:
            os.write(fd, prompt.encode("utf-8", "replace"))
            raw = _read_line(fd)
        except KeyboardInterrupt:
            raise SecretCancelled("input cancelled (Ctrl-C)") from None
        finally:
            termios.tcsetattr(fd, termios.TCSAFLUSH, old)
            try:
                os.write(fd, b"\n")  # the Enter key was not echoed
            except OSError:
                pass
    finally:
        os.close(fd)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretInputError("the terminal sent input that is not UTF-8") from None


def read_new_secret(prompt: str, confirm_prompt: str, *,
                    reader: Callable[[str], str] | None = None) -> str:
    """Ask twice (for a new PIN) and require both entries to match."""
    first = read_secret(prompt, reader=reader)
    second = read_secret(confirm_prompt, reader=reader)
    if first != second:
        raise SecretMismatch("the two entries do not match; nothing was changed")
    return first
