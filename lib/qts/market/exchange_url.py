"""Point a ccxt exchange at another base URL (``EXCHANGE_URL``): a test exchange, a proxy, a mirror.

Standard library only at import time; ccxt is never imported here (the functions take an exchange
instance that the caller built).

* :func:`validate_exchange_url` checks the setting: ``http://`` or ``https://``, a host, an optional port,
  nothing else (no ``user:password@``, no path, query or fragment; one trailing slash is dropped).
* :func:`apply_exchange_url` rewrites the scheme, host and port of every URL in ``exchange.urls['api']``
  (a string or a nested dict / list of strings) to those of the base URL and keeps each URL's path, so
  every REST call goes to the base URL and nowhere else. For a loopback host the HTTP session stops
  reading proxy settings from the environment. Exchanges that pick their error-code table by the URL
  (the Binance family: ``get_exceptions_by_url``) keep that mapping for the rewritten URLs.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

__all__ = ["apply_exchange_url", "is_loopback_host", "validate_exchange_url"]


def validate_exchange_url(url: str) -> str:
    """``url`` normalised (lower-case scheme, no trailing slash), or ValueError saying what is wrong."""
    if not isinstance(url, str):
        raise ValueError(f"EXCHANGE_URL must be a string like 'https://host:port', not {type(url).__name__}")
    raw = url.strip()
    shown = raw if len(raw) <= 200 else raw[:200] + "..."
    if not raw:
        raise ValueError("EXCHANGE_URL is empty; expected 'http://host[:port]' or 'https://host[:port]'")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in raw):
        raise ValueError(f"EXCHANGE_URL {shown!r} contains whitespace or control characters")
    try:
        parts = urlsplit(raw)
    except ValueError as e:  # e.g. a malformed [IPv6] host
        raise ValueError(f"EXCHANGE_URL {shown!r} has an invalid host: {e}") from None
    if parts.path == "/" and raw.endswith("/"):  # one trailing slash is fine
        raw = raw[:-1]
        parts = parts._replace(path="")
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"EXCHANGE_URL {shown!r} must start with http:// or https://")
    if not raw.lower().startswith(scheme + "://"):
        raise ValueError(f"EXCHANGE_URL {shown!r} must start with http:// or https://")
    if "?" in raw or "#" in raw:
        raise ValueError(f"EXCHANGE_URL {shown!r} must not have a query ('?...') or a fragment ('#...')")
    if "@" in parts.netloc:
        raise ValueError(f"EXCHANGE_URL {shown!r} must not contain a user name or password ('user:pass@'); "
                         "give the exchange's API key through its own settings")
    if parts.path:
        raise ValueError(f"EXCHANGE_URL {shown!r} must not have a path ({parts.path!r}): give only "
                         "scheme://host[:port]; each API's own path is kept")
    if not parts.hostname:
        raise ValueError(f"EXCHANGE_URL {shown!r} has no host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"EXCHANGE_URL {shown!r} has an invalid port (expected a number 1-65535)") from None
    if port == 0 or (parts.netloc.endswith(":") and port is None):
        raise ValueError(f"EXCHANGE_URL {shown!r} has an invalid port (expected a number 1-65535)")
    host = parts.hostname
    if ":" in host:  # IPv6 literal: must be a real address inside brackets
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise ValueError(f"EXCHANGE_URL {shown!r} has an invalid host (IPv6 address expected)") from None
    elif not all(c.isalnum() or c in "-._" for c in host):
        raise ValueError(f"EXCHANGE_URL {shown!r} has an invalid host name {host!r}")
    return f"{scheme}://{parts.netloc}"


def is_loopback_host(host: str | None) -> bool:
    """127.0.0.0/8, ::1 or ``localhost`` (also ``*.localhost``)."""
    if not host:
        return False
    h = host.strip("[]").lower().rstrip(".")
    if h == "localhost" or h.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(h.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _rewrite_tree(node: Any, scheme: str, netloc: str, pairs: list[tuple[str, str]]) -> Any:
    if isinstance(node, str):
        parts = urlsplit(node)
        if not parts.scheme or not parts.netloc:
            return node  # not an absolute URL (ccxt keeps none of those here, but leave them be)
        new = urlunsplit((scheme, netloc, parts.path, parts.query, parts.fragment))
        pairs.append((new, node))
        return new
    if isinstance(node, dict):
        return {k: _rewrite_tree(v, scheme, netloc, pairs) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return type(node)(_rewrite_tree(v, scheme, netloc, pairs) for v in node)
    return node


def _is_binance_family(exchange: Any) -> bool:
    return any(c.__name__ == "binance" for c in type(exchange).__mro__)


def apply_exchange_url(exchange: Any, url: str) -> Any:
    """Point ``exchange`` (any ccxt instance) at ``url``; returns the same instance.

    Every URL string in ``exchange.urls['api']`` gets the scheme, host and port of ``url`` and keeps its
    own path (``https://api.binance.com/api/v3`` -> ``http://127.0.0.1:8080/api/v3``)."""
    base = validate_exchange_url(url)
    target = urlsplit(base)
    urls = getattr(exchange, "urls", None)
    if not isinstance(urls, dict) or "api" not in urls:
        raise ValueError(f"{getattr(exchange, 'id', exchange)!r} has no urls['api'] to point at {base}")
    pairs: list[tuple[str, str]] = []  # (rewritten URL, ccxt's URL)
    new_urls = dict(urls)
    new_urls["api"] = _rewrite_tree(urls["api"], target.scheme, target.netloc, pairs)
    exchange.urls = new_urls

    if is_loopback_host(target.hostname):
        session = getattr(exchange, "session", None)
        if session is not None and hasattr(session, "trust_env"):
            session.trust_env = False  # never route a loopback exchange through an environment proxy
        if hasattr(exchange, "aiohttp_trust_env"):
            exchange.aiohttp_trust_env = False

    original = getattr(exchange, "get_exceptions_by_url", None)
    if callable(original) and pairs and _is_binance_family(exchange):
        exchange.get_exceptions_by_url = _exceptions_by_url(original, pairs)
    return exchange


def _exceptions_by_url(original: Callable[[Any, str], dict], pairs: list[tuple[str, str]]) -> Callable:
    """ccxt's Binance picks the error table (spot, linear, inverse, ...) by the URL's host: hand it the
    URL it would have called, so ``-2010`` still means InvalidOrder at ``http://127.0.0.1:PORT/api/v3``."""
    table = sorted(pairs, key=lambda p: len(p[0]), reverse=True)  # longest rewritten prefix first

    def get_exceptions_by_url(url, exactOrBroad):  # noqa: N803 - ccxt's signature
        if isinstance(url, str):
            for new, old in table:
                if url == new or url.startswith(new + "/") or url.startswith(new + "?"):
                    return original(old + url[len(new):], exactOrBroad)
        return original(url, exactOrBroad)

    return get_exceptions_by_url
