"""`qts report`: a self-contained HTML file, checked in a real headless Chromium.

The browser is driven over the DevTools protocol with a small standard-library WebSocket client (no
playwright): load the file, collect console errors, uncaught exceptions and every network request,
move the mouse over the equity chart (the hover script must answer), take a full-page screenshot and
check it is not blank. Two negative controls prove the checks can fail: a page with a script error
and an external script, and a blank page.

Chromium: /usr/bin/chromium (Debian's `chromium` package). When it is missing the test installs it
with apt-get in CI (CI=true) or when QTS_INSTALL_CHROMIUM=1; otherwise it skips and says why. Set
QTS_REPORT_SCREENSHOT=/path.png to keep the screenshot for a human to look at.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import CONFIG_VARS
from qts.cli import cli

NO_ENV = {k: None for k in CONFIG_VARS}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--mute-audio", "--remote-debugging-address=127.0.0.1",
                  "--remote-debugging-port=0", "--window-size=1280,900"]


def invoke(args, **env):
    return CliRunner().invoke(cli, args, env={**NO_ENV, **env}, catch_exceptions=False)


# -- Chromium ------------------------------------------------------------------------------------------

def _find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    return "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None


@pytest.fixture(scope="session")
def chromium() -> str:
    exe = _find_chromium()
    if exe:
        return exe
    allowed = os.environ.get("CI", "").lower() == "true" or os.environ.get("QTS_INSTALL_CHROMIUM") == "1"
    if not allowed:
        pytest.skip("headless Chromium not found (/usr/bin/chromium). Install Debian's `chromium` package, or run "
                    "with QTS_INSTALL_CHROMIUM=1 (or CI=true) to let the test apt-get install it")
    if not shutil.which("apt-get"):
        pytest.skip("Chromium is missing and apt-get is not available to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    r = subprocess.run(["apt-get", "install", "-y", "chromium"], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, text=True)
        r = subprocess.run(["apt-get", "install", "-y", "chromium"], env=env, capture_output=True, text=True)
    exe = _find_chromium()
    if not exe:
        pytest.fail(f"apt-get install chromium failed: {r.stderr[-2000:]}")
    return exe


class WebSocket:
    """Just enough RFC 6455 for the DevTools protocol: masked text frames out, text frames in."""

    def __init__(self, url: str, timeout: float = 30.0):
        m = re.match(r"ws://([^/:]+):(\d+)(/.*)", url)
        assert m, url
        host, port, path = m.group(1), int(m.group(2)), m.group(3)
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("websocket handshake: connection closed")
            head += chunk
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            raise ConnectionError(f"websocket handshake refused: {status!r}")
        self.buf = head.split(b"\r\n\r\n", 1)[1]

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise ConnectionError("websocket closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, text: str) -> None:
        payload = text.encode()
        head = bytearray([0x81])
        n = len(payload)
        if n < 126:
            head.append(0x80 | n)
        elif n < 65536:
            head.append(0x80 | 126)
            head += struct.pack(">H", n)
        else:
            head.append(0x80 | 127)
            head += struct.pack(">Q", n)
        mask = os.urandom(4)
        head += mask
        self.sock.sendall(bytes(head) + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def recv(self) -> str:
        parts = []
        while True:
            b0, b1 = self._read(2)
            op, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else None
            data = self._read(n)
            if mask:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            if op == 0x8:
                raise ConnectionError("websocket closed by the browser")
            if op == 0x9:  # ping -> pong
                self.sock.sendall(bytes([0x8A, 0x80 | len(data)]) + b"\0\0\0\0" + data)
                continue
            if op in (0x1, 0x0, 0x2):
                parts.append(data)
                if b0 & 0x80:
                    return b"".join(parts).decode("utf-8", "replace")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class Browser:
    """A headless Chromium process and one page, driven over CDP."""

    def __init__(self, exe: str, profile: Path):
        self.profile = profile
        self.proc = subprocess.Popen([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited: {self.proc.stderr.read().decode(errors='replace')[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("chromium did not open its DevTools port within 60 s")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        targets = []
        while not targets:
            targets = [t for t in json.loads(opener.open(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
                       if t.get("type") == "page"]
            if time.monotonic() > deadline:
                raise RuntimeError("chromium opened no page")
            time.sleep(0.05)
        self.ws = WebSocket(targets[0]["webSocketDebuggerUrl"])
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        my = self.next_id
        self.ws.send(json.dumps({"id": my, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def wait_event(self, method: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        for e in self.events:
            if e["method"] == method:
                return e
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            if "method" in msg:
                self.events.append(msg)
                if msg["method"] == method:
                    return msg
        raise TimeoutError(method)

    def evaluate(self, expr: str):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"evaluate {expr!r}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def open(self, url: str) -> None:
        self.events.clear()
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired")
        self.evaluate("new Promise(r => setTimeout(r, 300))")  # late scripts and timers

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions, failed loads: what a user would see in the console."""
        out = []
        for e in self.events:
            m, p = e["method"], e.get("params", {})
            if m == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append("Uncaught: " + str(d.get("exception", {}).get("description") or d.get("text")))
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console error: " + " ".join(str(a.get("value", a.get("description"))) for a in p.get("args", [])))
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append("log error: " + p["entry"].get("text", ""))
        return out

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e["method"] == "Network.requestWillBeSent"]

    def screenshot(self, width: int = 1280, max_height: int = 8000) -> bytes:
        metrics = self.call("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        height = int(min(max_height, max(600, size["height"])))
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        return base64.b64decode(shot["data"])

    def close(self) -> None:
        self.ws.close()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # chromium and the helpers it started, by our process group
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        if self.proc.stderr:
            self.proc.stderr.close()


@pytest.fixture
def browser(chromium, tmp_path):
    b = Browser(chromium, tmp_path / "chromium-profile")
    yield b
    b.close()


def pixel_stats(png: bytes) -> tuple[float, int, tuple[int, int]]:
    """(mean per-channel variance, number of distinct colours in a sample, size)."""
    from PIL import Image, ImageStat

    im = Image.open(io.BytesIO(png)).convert("RGB")
    var = sum(ImageStat.Stat(im).var) / 3
    raw = im.resize((200, max(1, im.height * 200 // im.width))).tobytes()
    return var, len({raw[i:i + 3] for i in range(0, len(raw), 3)}), im.size


# -- fixtures -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def replay_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("report") / "home"
    r = invoke(["--home", str(home), "run", "--days", "3", "--fresh", "--quiet"])
    assert r.exit_code == 0, r.output
    return home


@pytest.fixture(scope="module")
def report(replay_home, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "report.html"
    r = invoke(["--home", str(replay_home), "report", "--out", str(out), "--png", "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


# -- the file itself ------------------------------------------------------------------------------------

def test_report_is_self_contained(report):
    html = Path(report["html"]).read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    # nothing fetched from anywhere: no external scripts, stylesheets, images or fonts
    assert not re.search(r"""<(script|link|img|iframe)[^>]+(src|href)\s*=\s*["']?(https?:)?//""", html, re.I)
    assert "@import" not in html and "url(http" not in html
    for section in ("Equity", "Drawdown from peak", "Positions over time", "Trades on price", "Monthly returns",
                    "Daily returns", "By strategy", "By symbol", "Predicted vs realized", "Open positions",
                    "Closed trades", "Gate refusals", "Safety events"):
        assert section in html, section
    assert "SYNTHETIC" in html  # a generated market is labelled as such
    assert "no expectation recorded" in html  # no strategy registry in this home
    data = json.loads(re.search(r'<script type="application/json" id="chart-data">(.*?)</script>', html, re.S).group(1))
    assert {"eq", "dd", "pos", "daily", "px0"} <= set(data)
    eq = data["eq"]["series"][0]
    assert eq["name"] == "equity" and len(eq["xs"]) == len(eq["ys"]) > 100


def test_report_figures_match_the_database(report, replay_home):
    import sqlite3

    conn = sqlite3.connect(replay_home / "db" / "metrics.db")
    first, last = conn.execute("SELECT MIN(ts), MAX(ts) FROM equity_snapshots").fetchone()
    eq_first = conn.execute("SELECT equity FROM equity_snapshots WHERE ts=?", (first,)).fetchone()[0]
    eq_last = conn.execute("SELECT equity FROM equity_snapshots WHERE ts=?", (last,)).fetchone()[0]
    trades, buys = conn.execute("SELECT (SELECT COUNT(*) FROM closed_trades), "
                                "(SELECT COUNT(*) FROM fills WHERE side='buy')").fetchone()
    conn.close()
    a = report["account"]
    assert a["end_equity"] == pytest.approx(eq_last) and a["start_equity"] == pytest.approx(eq_first)
    assert a["trades"] == trades
    html = Path(report["html"]).read_text(encoding="utf-8")
    # every buy fill is a marker on a price chart, with its tooltip
    assert html.count('<polygon class="mk"') == conn_fills(replay_home)
    assert sum(int(n) for n in re.findall(r"&middot; (\d+) buys", html)) == buys
    assert f"{a['end_equity']:,.2f}" in html


def conn_fills(home) -> int:
    import sqlite3

    conn = sqlite3.connect(home / "db" / "metrics.db")
    n = conn.execute("SELECT COUNT(*) FROM fills").fetchone()[0]
    conn.close()
    return n


def test_report_png(report):
    from PIL import Image

    im = Image.open(report["png"])
    assert im.format == "PNG" and im.width >= 800
    var, colours, _ = pixel_stats(Path(report["png"]).read_bytes())
    assert var > 100 and colours > 5


def test_report_range_and_errors(replay_home, tmp_path):
    out = tmp_path / "day.html"
    r = invoke(["--home", str(replay_home), "report", "--since", "1d", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    a = json.loads(r.output)["account"]
    assert a["days"] == pytest.approx(1.0, abs=0.01)
    r = invoke(["--home", str(replay_home), "report", "--since", "yesterday-ish", "--out", str(out)])
    assert r.exit_code == 2 and "--since" in r.output
    r = invoke(["--home", str(tmp_path / "empty"), "report"])
    assert r.exit_code == 1 and "no database" in r.output


def test_report_of_an_empty_range_still_renders(replay_home, tmp_path):
    out = tmp_path / "none.html"
    r = invoke(["--home", str(replay_home), "report", "--since", "2001-01-01", "--until", "2001-01-02",
                "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "no data in this range" in out.read_text(encoding="utf-8")


# -- in the browser -------------------------------------------------------------------------------------

def test_report_in_headless_chromium(report, browser, tmp_path):
    browser.open(Path(report["html"]).as_uri())
    assert browser.problems() == []
    # offline: the only request is the file itself
    assert [u for u in browser.requests() if not u.startswith("file://")] == []
    assert browser.evaluate("document.querySelectorAll('svg.chart').length") >= 6
    assert browser.evaluate("document.title").startswith("Trading report")
    # the hover read-out works: move over the middle of the equity chart
    box = browser.evaluate("(() => { const r = document.getElementById('eq').getBoundingClientRect();"
                           " return [r.left + r.width / 2, r.top + r.height / 2]; })()")
    browser.call("Input.dispatchMouseEvent", type="mouseMoved", x=box[0], y=box[1])
    tip = browser.evaluate("[document.getElementById('tip').style.display, document.getElementById('tip').textContent]")
    assert tip[0] == "block" and "equity" in tip[1] and "UTC" in tip[1]
    assert browser.problems() == []
    png = browser.screenshot()
    keep = os.environ.get("QTS_REPORT_SCREENSHOT")
    if keep:
        Path(keep).write_bytes(png)
    var, colours, (w, h) = pixel_stats(png)
    assert w == 1280 and h > 2000  # the whole page, not a viewport
    assert var > 200 and colours > 20, (var, colours)


def test_the_browser_checks_can_fail(browser, tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    closed = f"http://127.0.0.1:{s.getsockname()[1]}/cdn/x.js"  # nothing listens: refused at once, offline
    s.close()
    bad = tmp_path / "bad.html"
    bad.write_text(f"<!DOCTYPE html><html><body><h1>x</h1><script src='{closed}'></script>"
                   "<script>console.error('boom'); notDefined();</script></body></html>")
    browser.open(bad.as_uri())
    probs = browser.problems()
    assert any("notDefined" in p for p in probs) and any("boom" in p for p in probs)
    assert closed in browser.requests()
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body style='background:#fff'></body></html>")
    browser.open(blank.as_uri())
    var, colours, _ = pixel_stats(browser.screenshot())
    assert var < 1 and colours <= 2


# -- custom metrics: list and chart (PNG or sparkline) ------------------------------------------------------

@pytest.fixture
def metrics_home(tmp_path):
    home = tmp_path / "m"
    for v, venue in ((12, "binance"), (15, "binance"), (40, "kraken"), (13, "binance"), (35, "kraken")):
        r = invoke(["--home", str(home), "metrics", "write", "api.latency_ms", str(v), "--tag", f"venue={venue}"])
        assert r.exit_code == 0, r.output
    assert invoke(["--home", str(home), "metrics", "write", "--", "pnl-daily", "-3.5"]).exit_code == 0
    return home


def test_metrics_list(metrics_home):
    r = invoke(["--home", str(metrics_home), "metrics", "list", "--json"])
    assert r.exit_code == 0, r.output
    got = {m["name"]: m for m in json.loads(r.output)}
    assert set(got) == {"api.latency_ms", "pnl-daily"}
    assert got["api.latency_ms"]["count"] == 5 and got["api.latency_ms"]["last_value"] == 35
    assert got["api.latency_ms"]["tag_keys"] == ["venue"] and got["pnl-daily"]["last_value"] == -3.5
    got = json.loads(invoke(["--home", str(metrics_home), "metrics", "list", "--json", "--tag", "venue=binance"]).output)
    assert [(m["name"], m["count"], m["last_value"]) for m in got] == [("api.latency_ms", 3, 13)]
    out = invoke(["--home", str(metrics_home), "metrics", "list"]).output
    assert "api.latency_ms" in out and "pnl-daily" in out and "last value" in out


def test_metrics_chart_sparkline_and_tags(metrics_home):
    r = invoke(["--home", str(metrics_home), "metrics", "chart", "api.latency_ms"])
    assert r.exit_code == 0, r.output
    spark = r.output.splitlines()[1].strip()
    assert spark == "▁▁█▁▇"  # 12 15 40 13 35, scaled 12..40
    assert "min 12   last 35   max 40" in r.output
    r = invoke(["--home", str(metrics_home), "metrics", "chart", "api.latency_ms", "--tag", "venue=binance", "--json"])
    assert [p["value"] for p in json.loads(r.output)] == [12, 15, 13]
    r = invoke(["--home", str(metrics_home), "metrics", "chart", "api.latency_ms", "--tag", "venue=binance"])
    assert "min 12   last 13   max 15" in r.output and "{venue=binance}" in r.output


def test_metrics_chart_png(metrics_home, tmp_path):
    out = tmp_path / "lat.png"
    r = invoke(["--home", str(metrics_home), "metrics", "chart", "api.latency_ms", "--out", str(out)])
    assert r.exit_code == 0, r.output
    var, colours, (w, h) = pixel_stats(out.read_bytes())
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and w > 500 and var > 100 and colours > 5


def test_metrics_chart_refuses_bad_input(metrics_home):
    for args, code, needle in ((["chart", "9lives"], 2, "name"), (["chart", "a b"], 2, "name"),
                               (["chart", "api.latency_ms", "--tag", "venue"], 2, "KEY=VALUE"),
                               (["chart", "api.latency_ms", "--tag", "bad key=x"], 2, "key"),
                               (["chart", "never.written"], 1, "no points"),
                               (["chart", "api.latency_ms", "--tag", "venue=nowhere"], 1, "no points"),
                               (["list", "--tag", "=x"], 2, "key")):
        r = invoke(["--home", str(metrics_home), "metrics", *args])
        assert r.exit_code == code and needle in r.output, (args, r.output)


def test_sparkline():
    from qts.reports.charts import sparkline

    assert sparkline([1, 2, 3]) == "▁▄█"
    assert sparkline([5, 5, 5]) == "▄▄▄" and sparkline([]) == ""
    long = sparkline(list(range(1000)), width=40)
    assert len(long) == 40 and long[0] == "▁" and long[-1] == "█"
