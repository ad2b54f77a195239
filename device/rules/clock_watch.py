"""Whether the device's wall clock was set back (pure logic; the caller reads the clock).

Answer ages and expiries are read on the wall clock, and a clock set back would make an old
answer look young. The watch keeps the latest time it has seen; a reading more than
:data:`SLACK` behind it means the clock went back, which the device reports as a problem until
the clock has caught up again (page actions on answers made "in the future" are refused meanwhile,
device/rules/dose_responses.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta

SLACK = timedelta(minutes=1)


class ClockWatch:
    """The highest wall time seen, and whether the clock now reads well behind it."""

    def __init__(self) -> None:
        self._high: datetime | None = None

    def check(self, now: datetime) -> str | None:
        """A one-line problem while ``now`` is more than :data:`SLACK` behind the latest time seen, else None."""
        if self._high is None or now > self._high:
            self._high = now
            return None
        behind = self._high - now
        if behind <= SLACK:
            return None
        minutes = int(behind.total_seconds() // 60)
        return (
            f"the wall clock was set back by {minutes // 60} h {minutes % 60} min (it had reached "
            f"{self._high:%Y-%m-%d %H:%M} UTC): answers made meanwhile cannot be acted on until it is right"
        )
