"""Notifications: webhook, Telegram bot API and SMTP against real servers on 127.0.0.1, the events
table, rate limits, bounded queues, secret masking, and a failing sink that never blocks.

The servers are written here with the standard library (http.server; a minimal SMTP responder over
socketserver) and stop by themselves: each fixture shuts its server down, and a watchdog timer
shuts it down after 60 s whatever happens.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import socketserver
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from conftest import CONFIG_VARS
from qts.cli import cli

TOKEN = "123456789:AAH-secret_bot_token_value_0123456789"
SMTP_PASSWORD = "smtp-pa55word-do-not-log"
NOTIFY_VARS = ("QTS_NOTIFY_WEBHOOK_URL", "QTS_NOTIFY_WEBHOOK_FORMAT", "QTS_TELEGRAM_TOKEN", "QTS_TELEGRAM_CHAT_ID",
               "QTS_TELEGRAM_API", "QTS_SMTP_HOST", "QTS_SMTP_PORT", "QTS_SMTP_USER", "QTS_SMTP_PASSWORD",
               "QTS_SMTP_FROM", "QTS_SMTP_TO", "QTS_SMTP_STARTTLS", "QTS_SMTP_SSL", "QTS_NOTIFY_LOG", "QTS_NOTIFY_RATE",
               "QTS_NOTIFY_BURST", "QTS_NOTIFY_QUEUE", "QTS_NOTIFY_TIMEOUT", "QTS_NOTIFY_REPLAY",
               "QTS_NOTIFY_LEVEL", "QTS_ALERT_REFUSALS")


@pytest.fixture(autouse=True)
def _clean_notify(monkeypatch):
    from qts import notify

    for k in NOTIFY_VARS:
        monkeypatch.delenv(k, raising=False)
    notify.shutdown(1.0)
    yield
    notify.shutdown(1.0)


# -- a recording HTTP server -------------------------------------------------------------------------------

class Recorder:
    def __init__(self):
        self.requests: list[dict] = []
        self.status = 200
        self.body = b'{"ok": true, "result": {}}'
        self.hold = threading.Event()
        self.hold.set()  # cleared: requests wait until it is set again
        self.received = threading.Event()

    def handler(rec):
        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                rec.requests.append({"path": self.path, "headers": dict(self.headers), "body": raw})
                rec.received.set()
                rec.hold.wait(30)
                self.send_response(rec.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(rec.body)))
                self.end_headers()
                self.wfile.write(rec.body)
        return H

    def json(self, i=-1) -> dict:
        return json.loads(self.requests[i]["body"])


def _serve(server):
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    watchdog = threading.Timer(60, server.shutdown)  # stops by itself whatever the test does
    watchdog.daemon = True
    watchdog.start()
    return t, watchdog


@pytest.fixture
def http():
    rec = Recorder()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), rec.handler())
    srv.daemon_threads = True
    t, wd = _serve(srv)
    rec.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield rec
    rec.hold.set()
    wd.cancel()
    srv.shutdown()
    srv.server_close()
    t.join(5)


# -- a minimal SMTP responder ----------------------------------------------------------------------------

class SMTPState:
    def __init__(self):
        self.messages: list[dict] = []
        self.auth: list[tuple] = []
        self.accept_password = SMTP_PASSWORD
        self.got = threading.Event()


def smtp_handler(state: SMTPState):
    class H(socketserver.StreamRequestHandler):
        timeout = 10

        def reply(self, line: str):
            self.wfile.write((line + "\r\n").encode())

        def handle(self):
            self.reply("220 localhost test SMTP")
            mail_from, rcpt = None, []
            while True:
                raw = self.rfile.readline()
                if not raw:
                    return
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                cmd = line.split(" ", 1)[0].upper()
                if cmd == "EHLO":
                    self.reply("250-localhost")
                    self.reply("250-AUTH PLAIN")
                    self.reply("250 8BITMIME")
                elif cmd == "HELO":
                    self.reply("250 localhost")
                elif cmd == "AUTH":
                    parts = line.split()
                    blob = parts[2] if len(parts) > 2 else ""
                    _, user, pw = base64.b64decode(blob).decode().split("\0")
                    state.auth.append((user, pw))
                    self.reply("235 ok" if pw == state.accept_password else "535 5.7.8 bad credentials")
                elif cmd == "MAIL":
                    mail_from, rcpt = line[10:].strip("<> "), []
                    self.reply("250 ok")
                elif cmd == "RCPT":
                    rcpt.append(line[8:].strip("<> "))
                    self.reply("250 ok")
                elif cmd == "DATA":
                    self.reply("354 end with .")
                    lines = []
                    while True:
                        ln = self.rfile.readline()
                        if not ln or ln in (b".\r\n", b".\n"):
                            break
                        lines.append(ln[1:] if ln.startswith(b"..") else ln)
                    state.messages.append({"from": mail_from, "to": rcpt, "data": b"".join(lines).decode("utf-8", "replace")})
                    state.got.set()
                    self.reply("250 queued")
                elif cmd in ("RSET", "NOOP"):
                    self.reply("250 ok")
                elif cmd == "QUIT":
                    self.reply("221 bye")
                    return
                else:
                    self.reply("502 not implemented")
    return H


@pytest.fixture
def smtp():
    state = SMTPState()
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), smtp_handler(state))
    srv.daemon_threads = True
    t, wd = _serve(srv)
    state.port = srv.server_address[1]
    yield state
    wd.cancel()
    srv.shutdown()
    srv.server_close()
    t.join(5)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def events(home, kind="notify") -> list[dict]:
    conn = sqlite3.connect(home.db_path)
    conn.row_factory = sqlite3.Row
    out = [dict(r) for r in conn.execute("SELECT * FROM events WHERE kind=? ORDER BY id", (kind,))]
    conn.close()
    return out


# -- the sinks against real servers ------------------------------------------------------------------------

def test_webhook_posts_slack_and_discord_fields(http):
    from qts.notify import Event, Notifier, WebhookSink

    n = Notifier([WebhookSink(http.url + "/hooks/T000/B000/XXXX", timeout=5)])
    assert n.notify(Event("trade", "PAPER BUY 0.01 BTC/USDT", "fee 0.61", "info", {"symbol": "BTC/USDT"})) == 1
    assert n.flush(10)
    body = http.json()
    assert body["text"] == body["content"] == "PAPER BUY 0.01 BTC/USDT\nfee 0.61"
    assert set(body) == {"text", "content"}
    assert http.requests[-1]["path"] == "/hooks/T000/B000/XXXX"
    assert http.requests[-1]["headers"]["Content-Type"] == "application/json"
    assert n.stats()["webhook"]["sent"] == 1
    n.close()
    n = Notifier([WebhookSink(http.url + "/x", fmt="json")])
    n.notify(Event("breaker", "Circuit breaker closed \u2192 open", "latency", "warning", {"trips": 2}))
    n.flush(10)
    body = http.json()
    assert body["event"]["kind"] == "breaker" and body["event"]["data"] == {"trips": 2}
    assert body["text"].startswith("\u26a0")  # a warning is marked as one
    n.close()


def test_telegram_send_message(http):
    from qts.notify import Event, Notifier, TelegramSink

    n = Notifier([TelegramSink(TOKEN, "-1001234", api=http.url)])
    n.notify(Event("kill_switch", "KILL SWITCH ENGAGED", "manual", "critical"))
    assert n.flush(10)
    req = http.requests[-1]
    assert req["path"] == f"/bot{TOKEN}/sendMessage"
    body = json.loads(req["body"])
    assert body["chat_id"] == "-1001234" and "KILL SWITCH ENGAGED" in body["text"]
    assert n.stats()["telegram"] == {**n.stats()["telegram"], "sent": 1, "failed": 0}
    n.close()


def test_telegram_failure_never_leaks_the_token(http, home, caplog):
    from qts.notify import Event, EventWriter, Notifier, TelegramSink

    http.status = 401
    http.body = json.dumps({"ok": False, "description": f"Unauthorized for bot{TOKEN}"}).encode()
    caplog.set_level(logging.DEBUG)
    n = Notifier([TelegramSink(TOKEN, "42", api=http.url)], writer=EventWriter(home))
    n.notify(Event("trade", "x"))
    assert n.flush(10)
    st = n.stats()["telegram"]
    assert st["failed"] == 1 and st["sent"] == 0 and "HTTP 401" in st["last_error"]
    n.close()
    rows = events(home)
    assert rows and "notification via telegram failed" in rows[-1]["message"]
    secret_part = TOKEN.split(":")[1]
    for text in [st["last_error"], caplog.text] + [r["message"] + r["data"] for r in rows]:
        assert secret_part not in text and TOKEN not in text


def test_telegram_answer_not_ok(http):
    from qts.notify import Event, Notifier, TelegramSink

    http.body = b'{"ok": false, "description": "chat not found"}'
    n = Notifier([TelegramSink(TOKEN, "42", api=http.url)])
    n.notify(Event("trade", "x"))
    n.flush(10)
    assert n.stats()["telegram"]["failed"] == 1 and "chat not found" in n.stats()["telegram"]["last_error"]
    n.close()


def test_email_over_smtp(smtp):
    from qts.notify import EmailSink, Event, Notifier

    n = Notifier([EmailSink("127.0.0.1", smtp.port, "qts@example.org", ["trader@example.org", "ops@example.org"],
                            user="qts", password=SMTP_PASSWORD, timeout=5)])
    n.notify(Event("breaker", "Circuit breaker closed \u2192 open", "API latency p95 2500 ms > 2000 ms", "warning"))
    assert n.flush(10) and smtp.got.wait(5)
    m = smtp.messages[-1]
    assert m["from"] == "qts@example.org" and m["to"] == ["trader@example.org", "ops@example.org"]
    assert "Subject: [qts] Circuit breaker closed" in m["data"] and "API latency p95" in m["data"]
    assert smtp.auth == [("qts", SMTP_PASSWORD)]
    assert n.stats()["email"]["sent"] == 1
    n.close()


def test_email_failure_masks_the_password(smtp, caplog):
    from qts.notify import EmailSink, Event, Notifier

    smtp.accept_password = "something else"
    caplog.set_level(logging.DEBUG)
    n = Notifier([EmailSink("127.0.0.1", smtp.port, "qts@example.org", ["t@example.org"], user="qts",
                            password=SMTP_PASSWORD, timeout=5)])
    n.notify(Event("trade", "x"))
    n.flush(10)
    st = n.stats()["email"]
    assert st["failed"] == 1 and "SMTPAuthenticationError" in st["last_error"]
    assert SMTP_PASSWORD not in st["last_error"] + caplog.text
    assert not smtp.messages
    n.close()


def test_the_log_sink_writes_the_events_table(home):
    from qts.notify import Event, from_env

    n = from_env(home, environ={})
    assert [s.name for s in n.sinks] == ["log"]
    n.notify(Event("trade", "PAPER SELL 1 ETH/USDT @ 3,000.00 [filled]", "fee 3.00", "info", {"symbol": "ETH/USDT"}))
    assert n.flush(10)
    n.close()
    (row,) = events(home)
    assert row["message"] == "PAPER SELL 1 ETH/USDT @ 3,000.00 [filled]: fee 3.00"
    assert json.loads(row["data"]) == {"event": "trade", "severity": "info", "symbol": "ETH/USDT"}
    assert row["severity"] == "info"
    assert from_env(home, environ={"QTS_NOTIFY_LOG": "0"}).sinks == []


# -- never blocking -------------------------------------------------------------------------------------

def test_notify_returns_while_a_sink_hangs_and_other_sinks_still_deliver(http):
    from qts.notify import Event, Notifier, TelegramSink, WebhookSink

    hanging = Recorder()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), hanging.handler())
    srv.daemon_threads = True
    t, wd = _serve(srv)
    hanging.hold.clear()  # Telegram answers nothing until released
    try:
        n = Notifier([TelegramSink(TOKEN, "1", api=f"http://127.0.0.1:{srv.server_address[1]}", timeout=20),
                      WebhookSink(http.url + "/w")])
        done = threading.Event()
        threading.Thread(target=lambda: (n.notify(Event("trade", "one")), n.notify(Event("trade", "two")),
                                         done.set()), daemon=True).start()
        assert done.wait(10), "notify() blocked on a hanging sink"
        assert hanging.received.wait(10)  # the Telegram request is in flight and unanswered...
        assert not hanging.hold.is_set()
        assert http.received.wait(10)     # ...while the webhook got its messages
        n.lanes[1].q.join()
        assert [json.loads(r["body"])["text"] for r in http.requests] == ["one", "two"]
        assert n.stats()["telegram"]["sent"] == 0
        hanging.hold.set()
        assert n.flush(20) and n.stats()["telegram"]["sent"] == 2
        n.close()
    finally:
        hanging.hold.set()
        wd.cancel()
        srv.shutdown()
        srv.server_close()


def test_unreachable_sink_is_logged_not_raised(home):
    from qts.notify import Event, EventWriter, Notifier, WebhookSink

    n = Notifier([WebhookSink(f"http://127.0.0.1:{free_port()}/secret-path-abc", timeout=2)], writer=EventWriter(home))
    assert n.notify(Event("trade", "x")) == 1
    n.flush(10)
    st = n.stats()["webhook"]
    assert st["failed"] == 1 and "secret-path-abc" not in st["last_error"]
    n.close()
    assert "failed" in events(home)[-1]["message"] and "secret-path-abc" not in json.dumps(events(home))


# -- rate limit and queue ------------------------------------------------------------------------------------

def test_token_bucket():
    from qts.notify import TokenBucket

    now = [0.0]
    b = TokenBucket(rate_per_s=0.5, burst=2, clock=lambda: now[0])
    assert [b.try_take() for _ in range(3)] == [True, True, False]
    now[0] = 1.0
    assert not b.try_take()  # half a token
    now[0] = 2.0
    assert b.try_take() and not b.try_take()
    now[0] = 100.0
    assert [b.try_take() for _ in range(3)] == [True, True, False]  # never more than the burst


def test_rate_limit_drops_are_counted_logged_and_recorded(http, home, caplog):
    from qts.notify import Event, EventWriter, Notifier, WebhookSink

    caplog.set_level(logging.WARNING, logger="qts.notify")
    n = Notifier([WebhookSink(http.url + "/w")], rate_per_min=0.001, burst=3, writer=EventWriter(home))
    accepted = [n.notify(Event("trade", f"t{i}")) for i in range(10)]
    assert accepted == [1, 1, 1] + [0] * 7
    # a critical event (the kill switch) is never rate-limited
    assert n.notify(Event("kill_switch", "KILL SWITCH ENGAGED", severity="critical")) == 1
    assert n.flush(10)
    st = n.stats()["webhook"]
    assert st["sent"] == 4 and st["dropped_rate_limit"] == 7
    assert [json.loads(r["body"])["text"] for r in http.requests][:3] == ["t0", "t1", "t2"]
    assert caplog.text.count("dropped (rate_limit)") == 1  # one log line per burst; the count is recorded below
    n.close()
    rows = [r for r in events(home) if "dropped" in r["message"]]
    assert rows and "7 notification(s) via webhook dropped (rate limit 7, queue full 0)" in rows[-1]["message"]


def test_a_full_queue_drops_instead_of_blocking(http):
    from qts.notify import Event, Notifier, WebhookSink

    http.hold.clear()
    n = Notifier([WebhookSink(http.url + "/w", timeout=20)], rate_per_min=1000, burst=100, queue_size=2)
    first = n.notify(Event("trade", "in flight"))
    assert first == 1 and http.received.wait(10)  # the worker holds this one; the queue is empty again
    got = [n.notify(Event("trade", f"q{i}")) for i in range(5)]
    assert got == [1, 1, 0, 0, 0]
    assert n.stats()["webhook"]["dropped_queue_full"] == 3
    http.hold.set()
    assert n.flush(20) and n.stats()["webhook"]["sent"] == 3
    n.close()


# -- masking and configuration -------------------------------------------------------------------------------

def test_masker():
    from urllib.parse import quote

    from qts.notify import Masker, mask_url

    m = Masker([TOKEN, SMTP_PASSWORD, "abc"])
    text = (f"POST https://api.telegram.org/bot{TOKEN}/sendMessage failed; encoded {quote(TOKEN, safe='')}; "
            f"login {SMTP_PASSWORD}; Authorization: Bearer abc.def; https://u:pw@host/x; password=hunter2")
    out = m(text)
    for secret in (TOKEN, TOKEN.split(":")[1], quote(TOKEN, safe=""), SMTP_PASSWORD, "abc.def", "u:pw", "hunter2"):
        assert secret not in out, secret
    assert m("abc") == "abc"  # too short to be a secret (it would mask half the text): left alone
    assert Masker()("bot987654:ABCDEFGHIJKLMNOPQRSTUV") == "bot***"  # any bot token shape
    assert mask_url("https://hooks.slack.com/services/T0/B0/XYZ") == "https://hooks.slack.com/***"
    assert mask_url("http://127.0.0.1:9000") == "http://127.0.0.1:9000"


def test_configuration_from_the_environment_and_dotenv(home, http, smtp):
    from qts.notify import NotifyConfigError, from_env

    env = {"QTS_NOTIFY_WEBHOOK_URL": http.url + "/hook/SECRET", "QTS_TELEGRAM_TOKEN": TOKEN,
           "QTS_TELEGRAM_CHAT_ID": "7", "QTS_TELEGRAM_API": http.url, "QTS_SMTP_HOST": "127.0.0.1",
           "QTS_SMTP_PORT": str(smtp.port), "QTS_SMTP_FROM": "a@example.org", "QTS_SMTP_TO": "b@example.org, c@example.org",
           "QTS_SMTP_PASSWORD": SMTP_PASSWORD, "QTS_NOTIFY_RATE": "6", "QTS_NOTIFY_BURST": "2"}
    n = from_env(home, environ=env)
    assert [s.name for s in n.sinks] == ["webhook", "telegram", "email", "log"]
    assert n.lanes[0].bucket.rate == pytest.approx(0.1) and n.lanes[0].bucket.capacity == 2
    described = json.dumps(n.describe())
    assert "SECRET" not in described and TOKEN not in described and SMTP_PASSWORD not in described
    assert n.sinks[2].to == ["b@example.org", "c@example.org"]
    n.close(0.5)
    # the state home's .env is read too (the process environment wins)
    home.env_file.write_text(f"QTS_TELEGRAM_TOKEN={TOKEN}\nQTS_TELEGRAM_CHAT_ID=99\nSYMBOLS=BTC/USDT\n")
    n = from_env(home, environ={"QTS_TELEGRAM_CHAT_ID": "11"})
    assert [s.name for s in n.sinks] == ["telegram", "log"] and n.sinks[0].chat_id == "11"
    n.close(0.5)
    for bad, var in (({"QTS_NOTIFY_RATE": "fast"}, "QTS_NOTIFY_RATE"), ({"QTS_SMTP_HOST": "h"}, "QTS_SMTP"),
                     ({"QTS_TELEGRAM_TOKEN": TOKEN}, "QTS_TELEGRAM_CHAT_ID"),
                     ({"QTS_NOTIFY_WEBHOOK_URL": "ftp://x/y"}, "QTS_NOTIFY_WEBHOOK_URL")):
        with pytest.raises(NotifyConfigError) as e:
            from_env(None, environ=bad)
        assert var in str(e.value) and TOKEN not in str(e.value)


# -- the hooks the library calls --------------------------------------------------------------------------

def test_hooks_send_through_the_process_notifier(http, home, monkeypatch):
    from qts import notify
    from qts.broker.models import OrderIntent, OrderResult

    monkeypatch.setenv("QTS_NOTIFY_WEBHOOK_URL", http.url + "/w")
    intent = OrderIntent("BTC/USDT", "buy", 0.01, strategy="sma_cross", reason="entry")
    filled = OrderResult(True, "qtsp1", "filled", 0.01, 61_000.5, 0.61)
    # levels route: a paper fill is info, kept in the events table only by default
    assert notify.on_trade(home, filled, intent, mode="paper", source="ccxt:binance") == 1  # log only
    notify.get_notifier(home).flush(10)
    assert http.requests == []
    notify.shutdown(2)
    monkeypatch.setenv("QTS_NOTIFY_LEVEL", "info")  # the operator asks for every fill
    assert notify.on_trade(home, filled, intent, mode="paper", source="ccxt:binance") == 2  # webhook + log
    # replays and the synthetic market stay quiet unless asked
    assert notify.on_trade(home, filled, intent, source="synthetic(seed=7)") == 0
    assert notify.on_trade(home, filled, intent, source="replay:/data") == 0
    # refusals and unfilled market orders are not trades
    assert notify.on_trade(home, OrderResult(False, "x", "rejected", reason_code="KILL_SWITCH"), intent) == 0
    notify.on_breaker(home, {"from": "closed", "state": "open", "trading_state": "ACTIVE",
                             "reason": "API error rate 40% > 25%", "since_ts": 1, "trips": 1})
    notify.on_kill_switch(home, "engaged", "manual")
    notify.get_notifier(home).flush(10)
    texts = [json.loads(r["body"])["text"] for r in http.requests]
    assert texts[0] == "PAPER BUY 0.01 BTC/USDT @ 61,000.50 [filled]\nfee 0.61 \u00b7 strategy sma_cross \u00b7 entry"
    assert texts[1].startswith("\u26a0\ufe0f Circuit breaker closed \u2192 open\nAPI error rate 40% > 25%")
    assert "Live orders are refused" in texts[1]
    assert texts[2].startswith("\U0001f6a8 KILL SWITCH ENGAGED\nmanual")
    notify.shutdown(2)
    kinds = [json.loads(r["data"])["event"] for r in events(home)]
    assert kinds == ["trade", "trade", "breaker", "kill_switch"]

    monkeypatch.setenv("QTS_NOTIFY_REPLAY", "1")
    assert notify.on_trade(home, filled, intent, source="synthetic(seed=7)") == 2


def test_a_bad_setting_disables_notifications_without_raising(home, monkeypatch, caplog):
    from qts import notify

    monkeypatch.setenv("QTS_NOTIFY_RATE", "-1")
    caplog.set_level(logging.ERROR, logger="qts.notify")
    assert notify.get_notifier(home) is None
    assert notify.on_kill_switch(home, "engaged", "x") == 0
    assert "QTS_NOTIFY_RATE" in caplog.text


def test_cli_notify_test_and_status(http, tmp_path):
    env = {k: None for k in CONFIG_VARS + NOTIFY_VARS}
    home = tmp_path / "h"
    r = CliRunner().invoke(cli, ["--home", str(home), "notify", "test", "--message", "hello"],
                           env={**env, "QTS_NOTIFY_WEBHOOK_URL": http.url + "/hook/SECRET123"})
    assert r.exit_code == 0, r.output
    assert "webhook   sent" in r.output and "log       sent" in r.output
    assert json.loads(http.requests[-1]["body"])["text"].startswith("hello")
    r = CliRunner().invoke(cli, ["--home", str(home), "notify", "status"],
                           env={**env, "QTS_NOTIFY_WEBHOOK_URL": http.url + "/hook/SECRET123",
                                "QTS_TELEGRAM_TOKEN": TOKEN, "QTS_TELEGRAM_CHAT_ID": "5"})
    assert r.exit_code == 0 and "webhook" in r.output and "telegram" in r.output
    assert "SECRET123" not in r.output and TOKEN not in r.output
    # a dead Telegram: exit 1, reason shown, token not
    r = CliRunner().invoke(cli, ["--home", str(home), "notify", "test", "--timeout", "10"],
                           env={**env, "QTS_TELEGRAM_TOKEN": TOKEN, "QTS_TELEGRAM_CHAT_ID": "5",
                                "QTS_TELEGRAM_API": f"http://127.0.0.1:{free_port()}"})
    assert r.exit_code == 1 and "telegram  FAILED" in r.output and TOKEN.split(":")[1] not in r.output
    r = CliRunner().invoke(cli, ["--home", str(home), "notify", "status"], env={**env, "QTS_NOTIFY_BURST": "0"})
    assert r.exit_code == 2 and "QTS_NOTIFY_BURST" in r.output
