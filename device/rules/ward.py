"""The ward at a glance and the alerts it raises (pure logic; the service reads the store).

A patient's row shows the last glucose and its age, the current answer, whether a dose waits to
be given, when the next check is due and whether it is overdue, and the lows of the last 24 h.
An overdue check raises one ``check_overdue`` alert per answer (its id follows from the
answer's), announced once on the ``alerts`` topic.
"""

from __future__ import annotations

from datetime import datetime

from device.contract.messages import Alert, GlucoseNow, PatientRow, Response, Suggestion
from device.rules.check_schedule import is_overdue, overdue_minutes
from device.rules.dose_responses import Actionability


def patient_row(
    patient: str,
    now: datetime,
    glucose: GlucoseNow | None,
    suggestion: Suggestion | None,
    response: Response | None,
    state: Actionability | None,
    lows_24h: int,
    retired: bool = False,
) -> PatientRow:
    """One line of the ward overview; ``retired``: a later event retired the answer."""
    check = _check_time(suggestion)
    return PatientRow(
        patient=patient,
        glucose_mg_dl=None if glucose is None else glucose.mg_dl,
        glucose_age_min=None if glucose is None else glucose.age_min,
        status=None if suggestion is None else suggestion.status,
        units=None if suggestion is None or not suggestion.is_dose else suggestion.units,
        dose_pending=bool(suggestion and suggestion.is_dose and response is None and state and state.actionable),
        response=None if response is None else response.action,
        next_check_at=None if check is None else check.isoformat(),
        check_overdue=is_overdue(check, now),
        lows_24h=lows_24h,
        retired=retired,
        live=bool(state and state.actionable),
    )


def _check_time(suggestion: Suggestion | None) -> datetime | None:
    if suggestion is None or suggestion.next_check_at is None:
        return None
    return datetime.fromisoformat(suggestion.next_check_at)


def check_overdue_alert(suggestion: Suggestion, now: datetime) -> Alert | None:
    """The alert for a patient whose check after ``suggestion`` (their current answer) is past due."""
    check = _check_time(suggestion)
    if check is None or not is_overdue(check, now):
        return None
    late = overdue_minutes(check, now)
    low = "low_glucose" in suggestion.rules
    kind = ("recheck after a low" if low else "glucose recheck") if suggestion.recheck_at else "glucose check"
    return Alert(
        id=f"overdue-{suggestion.id}",
        patient=suggestion.patient,
        kind="check_overdue",
        due_at=check.isoformat(),
        raised_at=now.isoformat(timespec="seconds"),
        message=f"{suggestion.patient}: {kind} was due at {check:%H:%M} ({late} min ago); measure glucose now",
        suggestion_id=suggestion.id,
    )
