"""PIN and key prompts typed on a real (pseudo-)terminal: two entries that differ, Ctrl-C and Ctrl-D at the
prompt end in one line and exit code 2, never a traceback, and change nothing."""

from __future__ import annotations

import os
import pty
import select
import signal
import sys
import time

import pytest

QTS = [sys.executable, "-c", "import sys; from qts.cli import main; sys.argv[0] = 'qts'; main()"]
PIN = "correct-horse-42"


def run_in_pty(args: list[str], steps: list[tuple[str, bytes]], env: dict, timeout: float = 60) -> tuple[str, int]:
    """Run qts ARGS with a pseudo-terminal as its controlling terminal (so /dev/tty is it). For each step wait
    until the output holds the text, then type the bytes. Returns (everything printed, exit code)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the pty is its terminal
        try:
            # a shell's background job (or nohup) ignores SIGINT, and an ignored signal stays ignored across
            # exec: a human's terminal delivers Ctrl-C, so the child gets the default disposition back
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.execve(QTS[0], QTS + args, env)
        finally:
            os._exit(127)
    out = b""
    seen = 0  # each prompt is looked for after the previous one
    deadline = time.monotonic() + timeout
    pending = list(steps)
    try:
        while time.monotonic() < deadline:
            if pending:
                at = out.find(pending[0][0].encode(), seen)
                if at >= 0:
                    seen = at + len(pending[0][0])
                    os.write(fd, pending.pop(0)[1])
            r, _, _ = select.select([fd], [], [], 0.1)
            if r:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
    finally:
        grace = time.monotonic() + 30
        done, status = os.waitpid(pid, os.WNOHANG)
        while not done and time.monotonic() < grace:  # let it finish; a hung child is killed, not waited on forever
            time.sleep(0.05)
            done, status = os.waitpid(pid, os.WNOHANG)
        if not done:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert not pending, f"the prompt never came: {pending[0][0]!r}; output so far: {out!r}"
    return out.decode("utf-8", "replace").replace("\r\n", "\n"), os.waitstatus_to_exitcode(status)


@pytest.fixture
def env(tmp_path):
    e = {k: v for k, v in os.environ.items() if k not in ("QTS_HOME", "CLAUDE_PROJECT_DIR")}
    e["QTS_HOME"] = str(tmp_path / "home")
    return e


def _no_traceback(out: str):
    assert "Traceback" not in out and "Error:" not in out.replace("error:", ""), out


def _last_line(out: str) -> str:
    return [line for line in out.splitlines() if line.strip()][-1]


def test_two_new_pins_that_differ(env, tmp_path):
    out, code = run_in_pty(["approve", "set-pin"], [("New PIN", f"{PIN}\n".encode()),
                                                      ("Repeat the new PIN", b"something-else-1\n")], env)
    assert code == 2, out
    _no_traceback(out)
    assert _last_line(out) == "error: the two entries do not match; nothing was changed"
    # nothing was set: the status still says no PIN
    out, code = run_in_pty(["approve", "status"], [], env)
    assert code == 0 and "PIN        missing" in out, out


@pytest.mark.parametrize("key,name", [(b"\x03", "Ctrl-C"), (b"\x04", "Ctrl-D")])
@pytest.mark.parametrize("args,prompt", [(["approve", "set-pin"], "New PIN"),
                                         (["kill-switch", "reset"], "PIN to reset"),
                                         (["approve", "store-keys"], "PIN: "),
                                         (["agent", "import-keys"], "PIN: ")])
def test_cancelling_a_prompt_is_one_line_and_exit_2(env, args, prompt, key, name):
    if args[0] == "agent":
        env = {**env, "EXCHANGE_API_KEY": "k" * 16, "EXCHANGE_SECRET": "s" * 16}
    out, code = run_in_pty(args, [(prompt, key)], env)
    assert code == 2, out
    _no_traceback(out)
    assert "cancelled" in _last_line(out) and ("nothing" in _last_line(out)), out
    if args[0] != "agent":
        assert f"({name})" in _last_line(out)


def test_cancelling_the_second_key_prompt_after_a_good_pin(env):
    out, code = run_in_pty(["approve", "set-pin"], [("New PIN", f"{PIN}\n".encode()), ("Repeat", f"{PIN}\n".encode())],
                           env)
    assert code == 0, out
    out, code = run_in_pty(["approve", "store-keys"], [("PIN: ", f"{PIN}\n".encode()), ("API key", b"abc\n"),
                                                       ("API secret", b"\x03")], env)
    assert code == 2, out
    _no_traceback(out)
    assert _last_line(out) == "cancelled: input cancelled (Ctrl-C); nothing was changed"
