"""Who may record actions on the bedside page: the per-device token, with a lockout on guessing.

Pure logic (the clock is injected). Without a configured token (the page bound to this
machine only) every action is allowed; with one, the request must present it, compared in
constant time, and too many wrong tries in a row lock actions for a while.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_FAILURES = 5
LOCKOUT_S = 60.0


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
