"""Who may use the bedside page, and from where (pure logic; the clock is injected).

* **Host**: a request must name this server by an IP address, ``localhost`` or a configured
  host name (``http.allowed_hosts``), on this server's port. A web page elsewhere whose name is
  rebound to the device's address (DNS rebinding) carries its own name and is refused.
* **Origin**: a state-changing request sent by a browser must come from the page itself.
* **Page session**: every action needs the token the page received from ``/api/session``
  (other sites cannot read it), on loopback too.
* **PIN**: with a configured token (a page reachable from the network) the request must also
  present it, compared in constant time; too many wrong tries in a row lock actions for a while.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_FAILURES = 5
LOCKOUT_S = 60.0
SESSION_TTL_S = 24 * 3600.0
MAX_SESSIONS = 256  # open pages remembered; the oldest session goes first


def host_problem(host_header: str | None, port: int, allowed_names: Iterable[str]) -> str | None:
    """Why a request's ``Host`` does not name this server, or None when it does."""
    if not host_header:
        return "the request names no host"
    parts = urlsplit(f"//{host_header}")
    try:
        named_port = parts.port or 80
    except ValueError:
        return f"the request names an invalid host {host_header[:80]!r}"
    name = (parts.hostname or "").lower()
    if named_port != port:
        return f"the request is for port {named_port}, this page is on port {port}"
    if name == "localhost" or name in {n.lower() for n in allowed_names}:
        return None
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return (
            f"the request is for the host name {name[:80]!r}, which this device does not answer to "
            "(open the page by its address, or add the name to http.allowed_hosts)"
        )
    return None


def origin_problem(origin: str | None, host_header: str | None) -> str | None:
    """Why a browser's ``Origin`` is not this page, or None (no Origin: not a browser request)."""
    if origin is None:
        return None
    if origin != f"http://{host_header}":
        return f"actions are taken only on this device's own page, not from {origin[:80]!r}"
    return None


class PageSessions:
    """Tokens handed to each loaded page; every action must carry one."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        ttl_s: float = SESSION_TTL_S,
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        self._clock = clock
        self._ttl_s = ttl_s
        self._max = max_sessions
        self._issued: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def issue(self) -> str:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._issued[token] = self._clock() + self._ttl_s
            while len(self._issued) > self._max:
                self._issued.popitem(last=False)
        return token

    def valid(self, token: str | None) -> bool:
        if not token:
            return False
        with self._lock:
            expires = self._issued.get(token)
            if expires is None:
                return False
            if self._clock() > expires:
                del self._issued[token]
                return False
            return True


@dataclass(frozen=True)
class Decision:
    allowed: bool
    status: int = 200  # 401 missing or wrong token, 429 locked out
    reason: str = ""


class ActionGuard:
    def __init__(
        self,
        token: str | None,
        clock: Callable[[], float] = time.monotonic,
        max_failures: int = MAX_FAILURES,
        lockout_s: float = LOCKOUT_S,
    ) -> None:
        self._token = token.encode() if token else None
        self._clock = clock
        self._max_failures = max_failures
        self._lockout_s = lockout_s
        self._failures = 0
        self._locked_until = 0.0
        self._lock = threading.Lock()

    @property
    def required(self) -> bool:
        return self._token is not None

    def check(self, presented: str | None) -> Decision:
        """Whether a request presenting ``presented`` may record an action."""
        if self._token is None:
            return Decision(True)
        with self._lock:
            now = self._clock()
            if now < self._locked_until:
                wait = int(self._locked_until - now) + 1
                return Decision(False, 429, f"too many wrong PINs: actions are locked for {wait} s")
            if presented is not None and hmac.compare_digest(presented.encode(), self._token):
                self._failures = 0
                return Decision(True)
            if presented is None:
                return Decision(False, 401, "this page needs the device PIN to record actions")
            self._failures += 1
            if self._failures >= self._max_failures:
                self._failures = 0
                self._locked_until = now + self._lockout_s
                return Decision(False, 429, f"too many wrong PINs: actions are locked for {int(self._lockout_s)} s")
            return Decision(False, 401, "wrong PIN")
