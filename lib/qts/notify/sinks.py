"""Where notifications go: a chat webhook, Telegram's bot API, email over SMTP, the events table.

Every sink's ``send(event)`` either returns (delivered) or raises :class:`SinkError` whose message is
already masked. Network sinks use short timeouts and never retry by themselves (the caller runs them
on a background thread; a failure is logged and the next notification tries again).
"""

from __future__ import annotations

import ipaddress
import json
import socket
from urllib.parse import urlsplit

from .masking import Masker, mask_url

TELEGRAM_API = "https://api.telegram.org"
TELEGRAM_MAX = 4096
DISCORD_MAX = 2000


class SinkError(RuntimeError):
    """A send failed. ``str()`` is masked: safe to log."""


def _loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def post_json(url: str, body: dict, timeout: float, masker: Masker, what: str) -> bytes:
    """POST JSON; raise SinkError (masked) on anything but a 2xx answer. Loopback URLs skip proxies."""
    import urllib.error
    import urllib.request  # here, not at the top: hooks import this package and must start fast

    data = json.dumps(body).encode("utf-8")
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json", "User-Agent": "qts-notify/1"})
    handlers = [urllib.request.ProxyHandler({})] if _loopback(urlsplit(url).hostname) else []
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(req, timeout=timeout) as resp:
            return resp.read(65536)
    except urllib.error.HTTPError as e:
        try:
            detail = e.read(300).decode("utf-8", "replace")
        except Exception:
            detail = ""
        raise SinkError(masker(f"{what}: HTTP {e.code} {e.reason}: {detail}".strip())) from None
    except (urllib.error.URLError, socket.timeout, TimeoutError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise SinkError(masker(f"{what}: {e.__class__.__name__}: {reason}")) from None


class Sink:
    name = "sink"
    secrets: tuple = ()

    def send(self, event) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> dict:
        return {"name": self.name}


class WebhookSink(Sink):
    """Slack / Discord / Mattermost style: POST {"text": ..., "content": ...}. ``fmt="json"`` also sends
    the structured event under "event" (for generic receivers)."""

    name = "webhook"

    def __init__(self, url: str, timeout: float = 5.0, fmt: str = "chat", masker: Masker | None = None):
        p = urlsplit(url)
        if p.scheme not in ("http", "https") or not p.hostname:
            raise ValueError("QTS_NOTIFY_WEBHOOK_URL: expected an http(s) URL")
        if fmt not in ("chat", "json"):
            raise ValueError("QTS_NOTIFY_WEBHOOK_FORMAT: chat or json")
        self.url, self.timeout, self.fmt = url, timeout, fmt
        path = p.path + ("?" + p.query if p.query else "")
        self.secrets = tuple(s for s in (url, path if len(path) > 1 else None, p.password) if s)
        self.masker = masker or Masker(self.secrets)

    def send(self, event) -> None:
        text = event.message()
        body = {"text": text, "content": text[:DISCORD_MAX]}
        if self.fmt == "json":
            body["event"] = event.to_dict()
        post_json(self.url, body, self.timeout, self.masker, f"webhook {mask_url(self.url)}")

    def describe(self) -> dict:
        return {"name": self.name, "url": mask_url(self.url), "format": self.fmt}


class TelegramSink(Sink):
    """POST {api}/bot<token>/sendMessage. The token is in the URL: it never reaches a log."""

    name = "telegram"

    def __init__(self, token: str, chat_id: str, api: str = TELEGRAM_API, timeout: float = 5.0,
                 masker: Masker | None = None):
        if not token or not chat_id:
            raise ValueError("QTS_TELEGRAM_TOKEN and QTS_TELEGRAM_CHAT_ID: both are needed")
        p = urlsplit(api)
        if p.scheme not in ("http", "https") or not p.hostname:
            raise ValueError("QTS_TELEGRAM_API: expected an http(s) base URL")
        self.token, self.chat_id, self.api, self.timeout = token, str(chat_id), api.rstrip("/"), timeout
        self.secrets = (token,)
        self.masker = masker or Masker(self.secrets)

    def send(self, event) -> None:
        url = f"{self.api}/bot{self.token}/sendMessage"
        raw = post_json(url, {"chat_id": self.chat_id, "text": event.message()[:TELEGRAM_MAX],
                              "disable_web_page_preview": True}, self.timeout, self.masker, "telegram sendMessage")
        try:
            ans = json.loads(raw.decode("utf-8"))
        except ValueError:
            raise SinkError("telegram sendMessage: the answer is not JSON") from None
        if not (isinstance(ans, dict) and ans.get("ok") is True):
            desc = ans.get("description") if isinstance(ans, dict) else None
            raise SinkError(self.masker(f"telegram sendMessage: not ok: {desc}"))

    def describe(self) -> dict:
        return {"name": self.name, "api": self.api, "chat_id": self.chat_id, "token": "set"}


class EmailSink(Sink):
    """Plain-text email over SMTP (STARTTLS on 587 or when asked; implicit TLS on 465)."""

    name = "email"

    def __init__(self, host: str, port: int, sender: str, to: list[str], user: str | None = None,
                 password: str | None = None, starttls: bool | None = None, use_ssl: bool | None = None,
                 timeout: float = 5.0, masker: Masker | None = None):
        if not host or not to or not sender:
            raise ValueError("QTS_SMTP_HOST, QTS_SMTP_FROM and QTS_SMTP_TO: all are needed for email")
        self.host, self.port, self.sender, self.to = host, int(port), sender, list(to)
        self.user, self.password, self.timeout = user, password, timeout
        self.use_ssl = (self.port == 465) if use_ssl is None else use_ssl
        self.starttls = (self.port == 587) if starttls is None else starttls
        self.secrets = tuple(s for s in (password,) if s)
        self.masker = masker or Masker(self.secrets)

    def send(self, event) -> None:
        import smtplib
        import ssl
        from email.message import EmailMessage

        msg = EmailMessage()
        msg["Subject"] = f"[qts] {event.title}"[:200]
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.to)
        msg.set_content(event.message() + "\n\n-- \nquant-trading-system notification\n")
        try:
            if self.use_ssl:
                smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=ssl.create_default_context())
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            with smtp:
                smtp.ehlo()
                if self.starttls and not self.use_ssl:
                    smtp.starttls(context=ssl.create_default_context())
                    smtp.ehlo()
                if self.user:
                    smtp.login(self.user, self.password or "")
                smtp.send_message(msg)
        except (smtplib.SMTPException, OSError, ssl.SSLError, ValueError) as e:
            raise SinkError(self.masker(f"email via {self.host}:{self.port}: {e.__class__.__name__}: {e}")) from None

    def describe(self) -> dict:
        return {"name": self.name, "host": self.host, "port": self.port, "from": self.sender, "to": self.to,
                "user": self.user, "password": "set" if self.password else "unset",
                "tls": "implicit" if self.use_ssl else "starttls" if self.starttls else "none"}


class LogSink(Sink):
    """The events table (kind ``notify``), through a connection of its own (the sender thread's)."""

    name = "log"

    def __init__(self, writer):
        self.writer = writer

    def send(self, event) -> None:
        # severity info: the event itself (breaker, kill switch ...) is already on file with its own severity;
        # this row records what was notified, and must not double-count critical events
        self.writer.write("notify", f"{event.title}" + (f": {event.text}" if event.text else ""), "info",
                          {"event": event.kind, "severity": event.severity, **event.data}, event.ts)

    def describe(self) -> dict:
        return {"name": self.name, "table": "events (kind=notify)"}
