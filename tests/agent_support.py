"""Test equipment for the trading agent: a real agent process, the standalone loopback exchange, and an
attacker that is the SAME unprivileged user as the agent (the threat model: the assistant runs commands
as the human's own user).

* :func:`test_user` -- the unprivileged user (``qtsagent``, made by tests/support/prepare_test_user.sh when
  the tests run as root; the current user otherwise). The agent refuses root, rightly.
* :class:`World` -- a project folder, the user's own XDG folders (key store, agent state, runtime), a
  standalone loopback Binance in its own process with its state on disk, and helpers that run commands AS
  the user (``run``, ``python``).
* :class:`AgentProcess` -- ``qts agent start`` in a pseudo-terminal (the human's terminal): the test types
  the PIN at its prompt, as the human would.
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import termios
import time
from decimal import Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for p in (REPO / "lib", REPO / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

PIN = "Tr4de-Safely!"
SCRYPT_N = 2 ** 10
USER = os.environ.get("QTS_TEST_USER", "qtsagent")
PYTHON = sys.executable
QTS = str(Path(sys.executable).parent / "qts")
SYMBOLS = ("BTC/USDT", "ETH/USDT")


def test_user() -> tuple[int, int, str] | str:
    """(uid, gid, name) of the user that runs both the agent and the attacker, or the reason there is none."""
    if os.geteuid() != 0:
        pw = pwd.getpwuid(os.geteuid())
        return pw.pw_uid, pw.pw_gid, pw.pw_name
    try:
        pw = pwd.getpwnam(USER)
    except KeyError:
        return (f"no unprivileged test user {USER!r}: as root, run tests/support/prepare_test_user.sh "
                f"{PYTHON} (make test does)")
    probe = subprocess.run(["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups", "--",
                            PYTHON, "-c", "import qts, ccxt"], capture_output=True, text=True,
                           env={"PYTHONPATH": str(REPO / "lib"), "PATH": "/usr/bin:/bin"}, timeout=60)
    if probe.returncode != 0:
        return (f"the test user {USER} cannot run {PYTHON} ({probe.stderr.strip()[-200:]}): run "
                "tests/support/prepare_test_user.sh as root")
    return pw.pw_uid, pw.pw_gid, pw.pw_name


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    if os.geteuid() != 0:
        return
    for root, dirs, files in os.walk(path):
        os.chown(root, uid, gid)
        for f in files:
            os.chown(os.path.join(root, f), uid, gid)


class World:
    """Everything one scenario needs, owned by the test user. Use as a context manager."""

    def __init__(self, uid: int, gid: int, symbols=SYMBOLS, balances=None, paper=False):
        from support.loopback_exchange import start_standalone

        self.uid, self.gid = uid, gid
        self.base = Path(tempfile.mkdtemp(prefix="qts-agent-", dir="/tmp"))
        os.chmod(self.base, 0o755)
        self.home_dir = self.base / "home"
        self.project = self.base / "project"
        self.state_home = self.project / ".quant-trading"
        for d in (self.home_dir, self.project, self.base / "xdg" / "config", self.base / "xdg" / "state",
                  self.base / "xdg" / "run"):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base / "xdg" / "run", 0o700)
        _chown_tree(self.base, uid, gid)
        self.symbols = tuple(symbols)
        self.exchange_dir = self.base / "exchange"  # the exchange's own files: not the user's
        self.exchange_dir.mkdir()
        import secrets as _secrets

        # a random secret per world: a fixed one would "appear" in any transcript that merely searched for it
        self.exchange_proc, self.server = start_standalone(
            self.exchange_dir, symbols=list(self.symbols), balances=balances or {"USDT": "10000"},
            idle_timeout=600, max_lifetime=1800, api_key="k" + _secrets.token_hex(16),
            secret="s" + _secrets.token_hex(24))
        for s in self.symbols:
            self.server.backfill(s)
        self.env = {
            "HOME": str(self.home_dir), "USER": USER, "LOGNAME": USER, "LANG": "C.UTF-8", "TERM": "xterm",
            "PATH": f"{Path(PYTHON).parent}:/usr/bin:/bin",
            "XDG_CONFIG_HOME": str(self.base / "xdg" / "config"), "XDG_STATE_HOME": str(self.base / "xdg" / "state"),
            "XDG_RUNTIME_DIR": str(self.base / "xdg" / "run"), "QTS_HOME": str(self.state_home),
            "CLAUDE_PROJECT_DIR": str(self.project), "EXCHANGE": "binance", "EXCHANGE_URL": self.server.base_url,
            "SYMBOLS": ",".join(self.symbols), "PAPER_TRADING": "true" if paper else "false",
            "PYTHONPATH": str(REPO / "lib"), "PYTHONDONTWRITEBYTECODE": "1",
        }
        self.agents: list[AgentProcess] = []

    # -- running things as the user ---------------------------------------------------------------
    def as_user(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return list(argv)
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", "--", *argv]

    def run(self, argv: list[str], env: dict | None = None, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self.as_user(argv), env={**self.env, **(env or {})}, cwd=str(self.project),
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw)

    def popen(self, argv: list[str], env: dict | None = None, **kw) -> subprocess.Popen:
        return subprocess.Popen(self.as_user(argv), env={**self.env, **(env or {})}, cwd=str(self.project),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)

    def python(self, code: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return self.run([PYTHON, "-c", code], env=env, timeout=timeout)

    def qts(self, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return self.run([QTS, *args], env=env, timeout=timeout)

    # -- what the human does once, in their own terminal ----------------------------------------------
    def set_pin_and_keys(self, pin: str = PIN) -> None:
        """set-pin and store-keys, done through the library with a low scrypt cost (what `qts approve
        set-pin` / `store-keys` do after reading the terminal)."""
        code = f"""
from qts.paths import StateHome
from qts.safety import pin, secret_store
home = StateHome({str(self.state_home)!r}).ensure()
pin.set_pin(home, {pin!r}, scrypt_n={SCRYPT_N})
key = pin.unlock(home, {pin!r})
secret_store.store_keys(home, key, "binance", {self.server.api_key!r}, {self.server.secret!r})
print(key.fingerprint)
"""
        p = self.python(code)
        assert p.returncode == 0, p.stderr
        self.key_fingerprint = p.stdout.strip()

    def write_confinement(self) -> None:
        p = self.qts("agent", "confine", "--write", "--project", str(self.project))
        assert p.returncode == 0, p.stdout + p.stderr

    # -- the agent --------------------------------------------------------------------------------
    def start_agent(self, *args: str, pin: str = PIN, expect: str = "listening", timeout: float = 60,
                    env: dict | None = None) -> "AgentProcess":
        a = AgentProcess(self, list(args), env=env)
        self.agents.append(a)
        a.wait_for("PIN to unlock", timeout)
        a.send(pin)
        a.wait_for(expect, timeout)
        return a

    def in_terminal(self, *qts_args: str, pin: str | None = PIN, timeout: float = 60) -> tuple[int, str]:
        """A qts command the human types in their own terminal (answering the PIN prompt)."""
        t = AgentProcess(self, [], command=[QTS, *qts_args])
        try:
            if pin is not None:
                t.wait_for(r"(^|\n)PIN: $", timeout)  # the prompt itself (input typed before it is flushed)
                t.send(pin)
            t.proc.wait(timeout)
            return t.proc.returncode, t.output
        finally:
            t.kill()

    @property
    def paths(self):
        from qts.agent.paths import AgentPaths

        return AgentPaths.for_home(self.state_home, env=self.env)

    def agent_status(self) -> dict | None:
        try:
            return json.loads(self.paths.status_file.read_text())
        except (OSError, ValueError):
            return None

    # -- the exchange's truth ---------------------------------------------------------------------
    def exchange_orders(self, symbol: str | None = None) -> list[dict]:
        return self.server.orders(symbol)

    def exchange_buy_notional(self) -> float:
        return sum(float(t["quoteQty"]) if "quoteQty" in t else float(t["qty"]) * float(t["price"])
                   for s in self.symbols for t in self.server.trades(s) if t.get("isBuyer"))

    def store(self):
        from qts.paths import StateHome
        from qts.store import Store

        return Store.open(StateHome(self.state_home))

    def close(self) -> None:
        from support.loopback_exchange import stop_standalone

        for a in self.agents:
            a.kill()
        try:
            stop_standalone(self.exchange_proc)
        except Exception:
            pass
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class AgentProcess:
    """``qts agent start`` (or any ``qts`` command, ``command=``) in a pseudo-terminal that is its
    controlling terminal: the human's terminal."""

    def __init__(self, world: World, args: list[str], env: dict | None = None, command: list[str] | None = None):
        self.world = world
        master, slave = os.openpty()
        if os.geteuid() == 0:
            os.chown(os.ttyname(slave), world.uid, world.gid)
        attrs = termios.tcgetattr(slave)
        attrs[3] &= ~termios.ECHO
        termios.tcsetattr(slave, termios.TCSANOW, attrs)

        def child_setup():
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(world.as_user(command or [QTS, "agent", "start", *args]), stdin=slave, stdout=slave,
                                     stderr=slave, env={**world.env, **(env or {})}, cwd=str(world.project),
                                     preexec_fn=child_setup, close_fds=True)
        os.close(slave)
        self.master = master
        self.buf = b""

    def _pump(self, timeout: float) -> bool:
        r, _, _ = select.select([self.master], [], [], timeout)
        if not r:
            return False
        try:
            chunk = os.read(self.master, 65536)
        except OSError:
            return False
        if not chunk:
            return False
        self.buf += chunk
        return True

    @property
    def output(self) -> str:
        while self._pump(0):
            pass
        return self.buf.decode("utf-8", "replace")

    def wait_for(self, pattern: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while time.monotonic() < deadline:
            text = self.buf.decode("utf-8", "replace")
            if rx.search(text):
                return text
            if not self._pump(0.1) and self.proc.poll() is not None:
                self._pump(0.2)
                text = self.buf.decode("utf-8", "replace")
                if rx.search(text):
                    return text
                raise AssertionError(f"the agent exited ({self.proc.returncode}) before {pattern!r}:\n{text}")
        raise AssertionError(f"no {pattern!r} within {timeout} s:\n{self.buf.decode('utf-8', 'replace')}")

    def send(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def stop(self, timeout: float = 20) -> int:
        """Ctrl-C on its terminal, as the human would."""
        if self.proc.poll() is None:
            os.write(self.master, b"\x03")
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGINT)
                self.proc.wait(timeout)
        self.output  # noqa: B018 - drain
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        try:
            os.close(self.master)
        except OSError:
            pass

    @property
    def pid(self) -> int:
        """The agent's own pid (setpriv and qts exec into it: the same process)."""
        return self.proc.pid


def totals(server) -> dict[str, float]:
    return {a: float(Decimal(str(f)) + Decimal(str(l))) for a, (f, l) in server.balances().items()}


class _Spec:
    def __init__(self, step):
        self.step_size = step


class RemoteForCompare:
    """A RemoteLoopback with ``spec(symbol).step_size`` (from the exchange's own market list, read through
    ccxt), so ``live_support.compare`` can hold the books against an exchange in another process."""

    def __init__(self, remote):
        from support.loopback_exchange import make_ccxt_client

        self.remote = remote
        ex = make_ccxt_client(remote)
        ex.load_markets()
        self.steps = {s: Decimal(str(m["precision"]["amount"])) for s, m in ex.markets.items()}

    def spec(self, symbol):
        return _Spec(self.steps[symbol])

    def __getattr__(self, name):
        return getattr(self.remote, name)


def books_disagree(world: World) -> list[str]:
    from live_support import compare

    store = world.store()
    try:
        return compare(store, RemoteForCompare(world.server), list(world.symbols))
    finally:
        store.close()
