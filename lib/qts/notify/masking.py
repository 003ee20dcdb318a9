"""Secrets out of every log line and error message.

A :class:`Masker` knows the configured secrets (bot token, SMTP password, webhook URL path) and
replaces them, raw and URL-encoded, with ``***``. It also scrubs shapes that are secret whatever
their value: a Telegram bot token in a URL (``bot123:ABC...``), credentials in a URL
(``//user:pass@``), and ``token=`` / ``password=`` / ``Authorization: Bearer`` values. Standard
library only.
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit

MASK = "***"
_PATTERNS = [
    (re.compile(r"bot\d{3,}:[A-Za-z0-9_-]{10,}"), "bot" + MASK),
    (re.compile(r"(?<=//)[^/@\s:]+:[^/@\s]+@"), MASK + "@"),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+"), r"\1 " + MASK),
    (re.compile(r"(?i)\b(token|password|passwd|secret|api[_-]?key|auth)(\"?\s*[=:]\s*\"?)([^\s&\"',;]+)"), r"\1\2" + MASK),
]


class Masker:
    def __init__(self, secrets=()):
        self._secrets: list[str] = []
        self.add(*secrets)

    def add(self, *secrets) -> "Masker":
        for s in secrets:
            if not s or not isinstance(s, str) or len(s) < 4:
                continue
            for form in {s, quote(s, safe=""), quote(s, safe="/:")}:
                if form not in self._secrets:
                    self._secrets.append(form)
        self._secrets.sort(key=len, reverse=True)
        return self

    def __call__(self, text) -> str:
        out = str(text)
        for s in self._secrets:
            out = out.replace(s, MASK)
        for rx, rep in _PATTERNS:
            out = rx.sub(rep, out)
        return out


def mask_url(url: str) -> str:
    """Scheme and host only: a webhook's path IS its secret (Slack, Discord)."""
    try:
        p = urlsplit(url)
        host = p.hostname or "?"
        port = f":{p.port}" if p.port else ""
        return f"{p.scheme}://{host}{port}/{MASK}" if p.path not in ("", "/") or p.query else f"{p.scheme}://{host}{port}"
    except ValueError:
        return MASK
