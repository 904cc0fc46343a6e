"""Tracking URIs: is an MLflow server there, answered in seconds, before MLflow is imported.

MLflow retries a refused connection with back-off for minutes and its errors are pages long; a
TCP connect with a short timeout says at once whether a `http(s)://` server can be reached. A
URI that a configured HTTP proxy serves is left to MLflow (only the proxy knows the way).
SQLite URIs name a local file: a read-only command must not create one.
"""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

CONNECT_TIMEOUT_S = 3.0
SQLITE_PREFIX = "sqlite:///"


def unreachable_reason(uri: str, timeout_s: float = CONNECT_TIMEOUT_S) -> str:
    """Why the tracking server at `uri` cannot be reached ("" when it can, or when only MLflow
    can tell: not http(s), or behind a proxy)."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return ""
    if parts.scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(
            parts.hostname):
        return ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout_s):
            return ""
    except TimeoutError:
        return f"not reachable (no answer in {timeout_s:g} s)"
    except OSError as error:
        return f"not reachable ({error.strerror or type(error).__name__})"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (None for any other URI)."""
    return Path(uri[len(SQLITE_PREFIX):]).expanduser() if uri.startswith(SQLITE_PREFIX) else None
