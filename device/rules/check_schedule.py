"""When the next glucose check is due (pure logic; docs/safety.md, "Next check").

* After a low (an answer with a recheck time): the recheck, 15 min by default.
* Otherwise: the next time on the patient's check schedule (pre-meal and bedtime by default),
  in the ward's time zone. A reading taken up to ``counts_within_min`` before a scheduled time
  counts as that check, so the next one is the time after it.

A check is overdue once its time has passed and no newer reading has come.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo

DEFAULT_CHECK_TIMES = ("07:30", "11:30", "17:30", "22:00")  # before each meal and at bedtime
DEFAULT_COUNTS_WITHIN_MIN = 30


class ScheduleError(ValueError):
    """A check schedule value is not usable; the message says which."""


def minute_of_day(text: str) -> int:
    """``"HH:MM"`` → minutes after midnight; raises :class:`ScheduleError` naming the value."""
    hours, sep, mins = text.partition(":")
    if not (sep and hours.isdigit() and mins.isdigit() and len(mins) == 2 and int(hours) < 24 and int(mins) < 60):
        raise ScheduleError(f"time {text!r} must be HH:MM (00:00–23:59)")
    return int(hours) * 60 + int(mins)


@dataclass(frozen=True)
class CheckSchedule:
    """The daily check times of one patient (``HH:MM``, ward time), checked on creation."""

    times: tuple[str, ...] = DEFAULT_CHECK_TIMES
    counts_within_min: int = DEFAULT_COUNTS_WITHIN_MIN
    basal_time: str | None = (
        None  # HH:MM: the device answers the long-acting dose by itself (device/rules/basal_time.py)
    )
    _minutes: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.times:
            raise ScheduleError("a check schedule needs at least one time")
        minutes = sorted({minute_of_day(t) for t in self.times})
        if self.basal_time is not None:
            minute_of_day(self.basal_time)
        if not 0 <= self.counts_within_min <= 120:
            raise ScheduleError("counts_within_min must be in [0, 120] minutes")
        object.__setattr__(self, "_minutes", tuple(minutes))

    def next_after(self, at: datetime, zone: tzinfo) -> datetime:
        """The first scheduled check after a reading at ``at`` (that reading counts for a check it is close to)."""
        local = at.astimezone(zone)
        counted = local + timedelta(minutes=self.counts_within_min)
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        for day in range(2):
            for minute in self._minutes:
                candidate = (midnight + timedelta(days=day, minutes=minute)).astimezone(zone)
                if candidate > counted:
                    return candidate
        return midnight + timedelta(days=2, minutes=self._minutes[0])  # unreachable: a day always has a next time


def next_check(at: datetime, recheck_at: datetime | None, schedule: CheckSchedule, zone: tzinfo) -> datetime:
    """When glucose must next be measured after an answer at ``at``: a low's recheck, else the schedule."""
    if recheck_at is not None:
        return recheck_at
    return schedule.next_after(at, zone)


def is_overdue(next_check_at: datetime | None, now: datetime) -> bool:
    """Whether a check is past due at ``now``."""
    return next_check_at is not None and now > next_check_at


def overdue_minutes(next_check_at: datetime, now: datetime) -> int:
    """Whole minutes a check is past due (0 when it is not)."""
    return max(0, int((now - next_check_at).total_seconds() // 60))


def parse_times(values: Sequence[object], where: str) -> tuple[str, ...]:
    """A list of ``HH:MM`` strings from a config file, checked; raises :class:`ScheduleError`."""
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
        raise ScheduleError(f"{where} must be a list of HH:MM times")
    for value in values:
        minute_of_day(str(value))
    return tuple(str(v) for v in values)
