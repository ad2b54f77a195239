"""Who may use the bedside page, and from where (pure logic; the clock is injected).

* **Host**: a request must name this server by an IP address, ``localhost`` or a configured
  host name (``http.allowed_hosts``), on this server's port. A web page elsewhere whose name is
  rebound to the device's address (DNS rebinding) carries its own name and is refused.
* **Origin**: a state-changing request sent by a browser must come from the page itself.
* **Page session**: every action needs the token the page received from ``/api/session``
  (other sites cannot read it), on loopback too.
* **PIN**: with a configured token (a page reachable from the network) the request must also
  present it, compared in constant time; too many wrong tries in a row lock that page for a while.
* **Sign-in tries** are limited per page, per client address and per account
  (:class:`SignInGuard`); a lock never reaches beyond the page, address or user that failed.
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

from device.page.users import Identity

MAX_FAILURES = 5  # wrong PINs in a row from one page
MAX_FAILURES_PER_ADDRESS = 20  # from one client address, over all its pages
MAX_FAILURES_PER_ACCOUNT = 10  # for one user, from anywhere
MAX_LIMITER_KEYS = 1024
LOCKOUT_S = 60.0
SESSION_TTL_S = 24 * 3600.0
MAX_SESSIONS = 256  # open pages remembered; the oldest session goes first


def host_problem(host_header: str | None, port: int, allowed_names: Iterable[str]) -> str | None:
    """Why a request's ``Host`` does not name this server, or None when it does."""
    if not host_header:
        return "the request names no host"
    if "@" in host_header or any(c.isspace() for c in host_header):
        return f"the request names an invalid host {host_header[:80]!r}"
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


@dataclass
class _Count:
    failures: int = 0
    locked_until: float = 0.0


class FailureLimiter:
    """Wrong PINs counted per key (a page, an address, an account): ``max_failures`` in a row lock that key.

    Only the key that failed is locked, never the whole device: one browser's wrong tries do not
    keep a nurse on another page out.
    """

    def __init__(
        self,
        what: str,
        clock: Callable[[], float] = time.monotonic,
        max_failures: int = MAX_FAILURES,
        lockout_s: float = LOCKOUT_S,
        max_keys: int = MAX_LIMITER_KEYS,
    ) -> None:
        self.what = what  # "this page", "this address", "user ann": said in the 429 reason
        self._clock = clock
        self._max_failures = max_failures
        self._lockout_s = lockout_s
        self._max_keys = max_keys
        self._counts: OrderedDict[str, _Count] = OrderedDict()
        self._lock = threading.Lock()

    def _reason(self, key: str, seconds: float) -> str:
        whom = self.what.format(key=key)
        return f"too many wrong PINs from {whom}: locked for {int(seconds)} s"

    def locked(self, key: str) -> Decision | None:
        """A 429 decision while ``key`` is locked out, else None."""
        with self._lock:
            count = self._counts.get(key)
            now = self._clock()
            if count is None or now >= count.locked_until:
                return None
            return Decision(False, 429, self._reason(key, count.locked_until - now + 1))

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._counts.pop(key, None)

    def failed(self, key: str, reason: str) -> Decision:
        """Count a wrong PIN for ``key``; the decision says whether it is now locked."""
        with self._lock:
            count = self._counts.setdefault(key, _Count())
            self._counts.move_to_end(key)
            while len(self._counts) > self._max_keys:
                self._counts.popitem(last=False)
            count.failures += 1
            if count.failures >= self._max_failures:
                count.failures = 0
                count.locked_until = self._clock() + self._lockout_s
                return Decision(False, 429, self._reason(key, self._lockout_s))
            return Decision(False, 401, reason)


class SignInGuard:
    """Sign-in tries, limited per page session, per client address and per account.

    Five wrong PINs lock the page they came from; more from one address (a page reloaded for
    fresh sessions) lock that address; more for one account from anywhere lock that account.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, lockout_s: float = LOCKOUT_S) -> None:
        self._limits = (
            FailureLimiter("this page", clock, MAX_FAILURES, lockout_s),
            FailureLimiter("this address ({key})", clock, MAX_FAILURES_PER_ADDRESS, lockout_s),
            FailureLimiter("anywhere for user {key}", clock, MAX_FAILURES_PER_ACCOUNT, lockout_s),
        )

    def locked(self, page: str, address: str, account: str) -> Decision | None:
        """The first lock that holds for this try, or None."""
        for limiter, key in zip(self._limits, (page, address, account), strict=True):
            decision = limiter.locked(key)
            if decision is not None:
                return decision
        return None

    def failed(self, page: str, address: str, account: str, reason: str) -> Decision:
        decisions = [
            limiter.failed(key, reason) for limiter, key in zip(self._limits, (page, address, account), strict=True)
        ]
        return next((d for d in decisions if d.status == 429), decisions[0])

    def succeeded(self, page: str, address: str, account: str) -> None:
        for limiter, key in zip(self._limits, (page, address, account), strict=True):
            limiter.succeeded(key)


class ActionGuard:
    """The shared page PIN (``http.token``) of a page without users; wrong tries lock the page they came from."""

    def __init__(
        self,
        token: str | None,
        clock: Callable[[], float] = time.monotonic,
        max_failures: int = MAX_FAILURES,
        lockout_s: float = LOCKOUT_S,
    ) -> None:
        self._token = token.encode() if token else None
        self.limiter = FailureLimiter("this page", clock, max_failures, lockout_s)

    @property
    def required(self) -> bool:
        return self._token is not None

    def check(self, presented: str | None, page: str = "") -> Decision:
        """Whether a request from page session ``page`` presenting ``presented`` may record an action."""
        if self._token is None:
            return Decision(True)
        locked = self.limiter.locked(page)
        if locked is not None:
            return locked
        if presented is not None and hmac.compare_digest(presented.encode(), self._token):
            self.limiter.succeeded(page)
            return Decision(True)
        if presented is None:
            return Decision(False, 401, "this page needs the device PIN to record actions")
        return self.limiter.failed(page, "wrong PIN")
