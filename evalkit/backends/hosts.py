"""Which hosts evalkit may send prompts and keys to.

Suites arrive in pull requests and CI holds secrets, so the allow-list lives outside the suite files: the
``EVALKIT_ALLOWED_HOSTS`` environment variable and the ``evalkit_allowed_hosts`` ini option (both a list of
``host`` or ``host:port`` patterns, ``*`` wildcards allowed). Loopback is always allowed; nothing else is
unless listed.
"""

from __future__ import annotations

import fnmatch
import os
from urllib.parse import urlsplit

from evalkit.errors import ModelError

ENVIRONMENT_VARIABLE = "EVALKIT_ALLOWED_HOSTS"
LOOPBACK = ("localhost", "127.0.0.1", "::1")
_configured: list[str] = []  # from the ini option, set by the plugin at start-up


def _patterns(text: str) -> list[str]:
    """Host patterns from a space- or comma-separated list."""
    return text.replace(",", " ").split()


def allow(text: str) -> None:
    """The hosts an ini file allows, as the ini option writes them (replacing what it allowed before)."""
    _configured[:] = _patterns(text)


def allowed_patterns() -> list[str]:
    return [*LOOPBACK, *_configured, *_patterns(os.environ.get(ENVIRONMENT_VARIABLE, ""))]


def without_credentials(url: str) -> str:
    """``url`` with any user name and password removed (what messages and records may show)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return parts._replace(netloc=netloc).geturl()


def check_allowed(url: str) -> None:
    """ModelError unless ``url``'s host (or host:port) matches an allowed pattern."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ModelError(
            f"base_url '{without_credentials(url)}' is not an http(s) URL", fix="write it as http://HOST:PORT/v1"
        )
    host = parts.hostname.lower()
    names = [host] if parts.port is None else [host, f"{host}:{parts.port}"]
    if any(fnmatch.fnmatchcase(name, pattern.lower()) for pattern in allowed_patterns() for name in names):
        return
    raise ModelError(
        f"host '{host}' of base_url {without_credentials(url)} is not on evalkit's allow-list, so nothing (no "
        "prompt, no key) is sent to it",
        fix=f"if you trust it, allow it outside the suite: {ENVIRONMENT_VARIABLE}={host} in the environment, or "
        f"`evalkit_allowed_hosts = {host}` in the [pytest] ini section",
    )
