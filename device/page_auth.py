"""Who may use the bedside page, and from where (pure logic; the clock is injected).

* **Host**: a request must name this server by an IP address, ``localhost`` or a configured
  host name (``http.allowed_hosts``), on this server's port. A web page elsewhere whose name is
  rebound to the device's address (DNS rebinding) carries its own name and is refused.
* **Origin**: a state-changing request sent by a browser must come from the page itself.
* **Page session**: every action needs the token the page received from ``/api/session``
  (other sites cannot read it), on loopback too.
* **PIN**: with a configured token (a page reachable from the network) the request must also
  present it, compared in constant time; too many wrong tries in a row lock actions for a while.
* **Users**: when users are configured (``advisor users``), a session acts only after a user
  signs in with their own PIN, and locks again after ``idle_lock_s`` without use.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .users import Identity

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


@dataclass
class _Session:
    expires: float
    identity: Identity | None = None
    last_used: float = field(default=0.0)


class PageSessions:
    """Tokens handed to each loaded page; every action must carry one. A user may sign in to one."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        ttl_s: float = SESSION_TTL_S,
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        self._clock = clock
        self._ttl_s = ttl_s
        self._max = max_sessions
        self._issued: OrderedDict[str, _Session] = OrderedDict()
        self._lock = threading.Lock()

    def issue(self) -> str:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._issued[token] = _Session(self._clock() + self._ttl_s)
            while len(self._issued) > self._max:
                self._issued.popitem(last=False)
        return token

    def _get(self, token: str | None) -> _Session | None:
        if not token:
            return None
        session = self._issued.get(token)
        if session is not None and self._clock() > session.expires:
            del self._issued[token]
            return None
        return session

    def valid(self, token: str | None) -> bool:
        with self._lock:
            return self._get(token) is not None

    def sign_in(self, token: str | None, identity: Identity) -> bool:
        """Let ``identity`` act through this session; False when the session is not valid."""
        with self._lock:
            session = self._get(token)
            if session is None:
                return False
            session.identity, session.last_used = identity, self._clock()
            return True

    def sign_out(self, token: str | None) -> None:
        with self._lock:
            session = self._get(token)
            if session is not None:
                session.identity = None

    def identity(self, token: str | None, idle_lock_s: float, touch: bool = True) -> Identity | None:
        """Who is signed in to this session, or None (nobody, or locked after ``idle_lock_s`` unused)."""
        with self._lock:
            session = self._get(token)
            if session is None or session.identity is None:
                return None
            now = self._clock()
            if now - session.last_used > idle_lock_s:
                session.identity = None
                return None
            if touch:
                session.last_used = now
            return session.identity


@dataclass(frozen=True)
class Decision:
    allowed: bool
    status: int = 200  # 401 missing or wrong token, 429 locked out
    reason: str = ""


class FailureLimiter:
    """Too many wrong PINs in a row lock further tries for a while (shared PIN and user sign-in)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        max_failures: int = MAX_FAILURES,
        lockout_s: float = LOCKOUT_S,
    ) -> None:
        self._clock = clock
        self._max_failures = max_failures
        self._lockout_s = lockout_s
        self._failures = 0
        self._locked_until = 0.0
        self._lock = threading.Lock()

    def locked(self) -> Decision | None:
        """A 429 decision while locked out, else None."""
        with self._lock:
            now = self._clock()
            if now < self._locked_until:
                wait = int(self._locked_until - now) + 1
                return Decision(False, 429, f"too many wrong PINs: locked for {wait} s")
            return None

    def succeeded(self) -> None:
        with self._lock:
            self._failures = 0

    def failed(self, reason: str) -> Decision:
        """Count a wrong PIN; the decision says whether tries are now locked."""
        with self._lock:
            self._failures += 1
            if self._failures >= self._max_failures:
                self._failures = 0
                self._locked_until = self._clock() + self._lockout_s
                return Decision(False, 429, f"too many wrong PINs: locked for {int(self._lockout_s)} s")
            return Decision(False, 401, reason)


class ActionGuard:
    """The shared page PIN (``http.token``) of a page without users."""

    def __init__(
        self,
        token: str | None,
        clock: Callable[[], float] = time.monotonic,
        max_failures: int = MAX_FAILURES,
        lockout_s: float = LOCKOUT_S,
    ) -> None:
        self._token = token.encode() if token else None
        self.limiter = FailureLimiter(clock, max_failures, lockout_s)

    @property
    def required(self) -> bool:
        return self._token is not None

    def check(self, presented: str | None) -> Decision:
        """Whether a request presenting ``presented`` may record an action."""
        if self._token is None:
            return Decision(True)
        locked = self.limiter.locked()
        if locked is not None:
            return locked
        if presented is not None and hmac.compare_digest(presented.encode(), self._token):
            self.limiter.succeeded()
            return Decision(True)
        if presented is None:
            return Decision(False, 401, "this page needs the device PIN to record actions")
        return self.limiter.failed("wrong PIN")
