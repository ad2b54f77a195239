"""When the device answers a patient's long-acting dose by itself: at the basal time (pure logic).

A ward gives basal insulin at one time of day (``basal_time`` in ``[checks]``, per patient or for
the ward; docs/bedside.md). From that time on, the device answers the basal dose as if it had been
asked (a ``request`` with ``"insulin": "long"``, stored under :func:`basal_request_id`, so once a
day and once across restarts), as soon as

* a glucose reading fresh enough to dose on has been taken from ``counts_within_min`` before the
  basal time on (the bedtime check counts), and
* the patient's screen is free: the live answer carries no insulin, or was acted on, declined,
  retired or has expired — one answer per patient is live at a time, and a basal answer must never
  push a meal or correction dose off the screen before it is dealt with.

It waits at most :data:`BASAL_WINDOW_MIN` after the basal time; then the day passes without an
answer of its own and the basal dose is asked for on the page or over MQTT as on any day.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta, tzinfo

from device.rules.check_schedule import minute_of_day

BASAL_WINDOW_MIN = 180


def basal_time_on(day_of: datetime, basal_time: str, zone: tzinfo) -> datetime:
    """The basal time (``HH:MM``, ward time) on the ward day of ``day_of``."""
    local = day_of.astimezone(zone)
    minute = minute_of_day(basal_time)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight + timedelta(minutes=minute)).astimezone(zone)


def basal_answer_due(
    basal_time: str | None,
    now: datetime,
    zone: tzinfo,
    reading_at: datetime | None,
    fresh_min: float,
    counts_within_min: int,
    screen_busy: Callable[[], bool],
) -> datetime | None:
    """Today's basal time when the device should answer the basal dose now; None when not (yet).

    ``reading_at``: the patient's newest glucose reading; ``fresh_min``: how old a reading may be to
    dose on; ``screen_busy()``: the live answer still carries insulin nobody has acted on (asked
    last, only inside the basal window: it reads the store).
    """
    if basal_time is None or reading_at is None:
        return None
    due = basal_time_on(now, basal_time, zone)
    if not due <= now <= due + timedelta(minutes=BASAL_WINDOW_MIN):
        return None
    if reading_at < due - timedelta(minutes=counts_within_min) or now - reading_at > timedelta(minutes=fresh_min):
        return None
    return None if screen_busy() else due


def basal_request_id(patient: str, due: datetime) -> str:
    """The id of the day's basal request of ``patient``: a valid event id whatever the patient id's length."""
    digest = hashlib.sha256(patient.encode()).hexdigest()[:16]
    return f"basal-{due:%Y%m%d}-{digest}"
