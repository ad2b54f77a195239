"""What a person does on the bedside page: give or decline a suggested dose, acknowledge an answer, enter data.

Every action names the person (:class:`device.page.users.Identity`) and is audited. A suggestion is
acted on at most once, only while it is the patient's current, unexpired answer and nothing that
bears on it was recorded since (:mod:`device.rules.dose_responses`, :mod:`device.rules.retirement`). The
check and the record happen under the advisor's lock, so no event slips in between; a
confirmation also looks for regular insulin stored since the suggestion before it records.

**"ok" means stored.** An entry (a reading, a meal, symptoms, exercise, a dose) is decided by the
advisor in this process, exactly as a sensor's event is, and committed to SQLite before the page
is answered; a dose given is committed with its response in one transaction. Only then is the
event published on the device's own ``events`` topic (for the station and monitors; the device
recognises its own copy by id) and the answer on ``suggestions``. An entry the device refuses
(a case twin of a known patient, a reused id, a date before the floor) is answered 400 with the
reason; a database that refuses writes is answered 503: nothing was recorded.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime

from device.advisor import Advisor
from device.contract.messages import ConfirmDose, Decline, ErrorMessage, Message, Response, Suggestion
from device.page.users import Identity
from device.rules.dose_responses import (
    Actionability,
    ActionConflict,
    actionability,
    check_current,
    check_eating,
    check_no_dose_since,
    check_reason,
    check_units_given,
)
from device.state.store import Added, Store
from domain.events import Event, Insulin, Kind


class LinkDown(RuntimeError):
    """The device cannot publish now (no broker link): HTTP 503."""


class NotAllowed(PermissionError):
    """This person may not record this (another patient's record, an entry that needs a nurse): HTTP 403."""


class EntryRefused(ValueError):
    """The device refused an entry as it would a sensor's event (the reason says why): HTTP 400."""


BACKDATE_LIMIT_MIN = 15.0  # a non-nurse's entry is about now


def _check_may(who: Identity, patient: str) -> None:
    why = who.refusal_for(patient)
    if why is not None:
        raise NotAllowed(why)


class PageActions:
    """The page's state-changing actions, checked against the stored suggestion."""

    def __init__(
        self,
        device_id: str,
        store: Store,
        advisor: Advisor,
        send: Callable[[Message | Event], object],
        expiry_s: float,
        broker_problem: Callable[[], str | None],
    ) -> None:
        self.device_id = device_id
        self.store = store
        self.advisor = advisor
        self._send = send
        self.expiry_s = expiry_s
        self._broker_problem = broker_problem

    def _check_entry(self, event: Event, who: Identity, reason: str | None) -> None:
        """What happens now, within the patient's limits, anyone may record; the rest needs a nurse and a reason.

        A back-dated entry or a dose above the single-dose limit would change what the device
        learns from the history (the limits it fits, the insulin on board).
        """
        if event.kind is Kind.PROFILE and who.role != "nurse":
            raise NotAllowed(f"a profile sets the patient's dosing plan: a nurse records it, not a {who.role}")
        age_min = (self.advisor.now() - event.ts).total_seconds() / 60.0
        safety = self.advisor.safety.for_patient(event.patient)
        basal = event.insulin is not None and not event.insulin.for_meals
        limit = safety.max_basal_units if basal else safety.max_single_units
        unusual = None
        if age_min > BACKDATE_LIMIT_MIN:
            unusual = f"an entry dated {age_min:.0f} min ago (more than {BACKDATE_LIMIT_MIN:.0f})"
        elif event.is_insulin and event.dose > limit:
            unusual = (
                f"{event.dose:g} U, above this patient's {'basal' if basal else 'single-dose'} limit of {limit:g} U,"
            )
        if unusual is None:
            return
        if who.role != "nurse":
            raise NotAllowed(f"{unusual} needs a nurse: a {who.role} records what happens now, within the limits")
        if not (reason or "").strip():
            raise ValueError(f"{unusual} needs a reason: give one (the 'reason' field)")
        check_reason("other", reason)

    def state(self, suggestion: Suggestion, response: Response | None) -> Actionability:
        """Whether ``suggestion`` can still be acted on now."""
        profile = self.advisor.safety.for_patient(suggestion.patient)
        return actionability(
            suggestion,
            self.advisor.now(),
            response,
            self.expiry_s,
            profile,
            self._broker_problem(),
            self.advisor.retired(suggestion.id),
            self.advisor.age_s(suggestion.id),
        )

    def _current(self, patient: str, suggestion_id: str) -> Suggestion:
        """The suggestion, checked to be this patient's current and actionable one (call under the lock)."""
        suggestion = self.store.suggestion(suggestion_id)
        if suggestion is None or suggestion.patient != patient:
            raise ValueError("unknown suggestion for this patient")
        response = self.store.response_for(suggestion_id)
        latest = self.advisor.latest_suggestion(patient)
        check_current(suggestion, latest, self.state(suggestion, response), self.advisor.retired(suggestion_id))
        return suggestion

    def _respond(self, suggestion: Suggestion, response: Response) -> None:
        earlier = self.store.record_response(suggestion, response)
        if earlier is not None:  # another page was quicker
            raise ActionConflict(f"already {earlier.action} by {earlier.user} at {earlier.at[11:16]}")

    def _now(self, suggestion: Suggestion) -> datetime:
        """Now, in the suggestion's zone; never before the suggestion itself (a clock set back)."""
        made = datetime.fromisoformat(suggestion.ts)
        return max(self.advisor.now().astimezone(made.tzinfo), made).replace(microsecond=0)

    def confirm_dose(self, patient: str, request: ConfirmDose, who: Identity) -> tuple[Event, list[ErrorMessage]]:
        """A person gave a dose for the current suggestion: store it once, with its insulin event, then
        publish the event; returns the event and the warnings about it (a second dose close by)."""
        check_reason(request.reason, request.note)
        _check_may(who, patient)
        with self.advisor.locked():
            event, warnings = self._record_given(patient, request, who)
        self._send(event)
        for warning in warnings:
            self._send(warning)
        return event, warnings

    def _record_given(self, patient: str, request: ConfirmDose, who: Identity) -> tuple[Event, list[ErrorMessage]]:
        suggestion = self._current(patient, request.suggestion_id)
        if not suggestion.is_dose:
            raise ValueError("this answer is not a dose; nothing to confirm")
        check_units_given(request.units, suggestion, request.reason, self.advisor.safety.for_patient(patient))
        check_eating(suggestion, request.eating)
        check_no_dose_since(self.store.doses_since(patient, suggestion.event_id), self.advisor.zone, suggestion)
        now = self._now(suggestion)
        event = Event(
            id=f"{self.device_id}-given-{uuid.uuid4().hex[:12]}",
            patient=patient,
            ts=now,
            kind=Kind.INSULIN,
            insulin=Insulin(suggestion.insulin),
            units=request.units,
        )
        meal = None
        if suggestion.meal_first:  # the person asked: the patient is eating the meal the dose is for
            meal = Event(f"{self.device_id}-meal-{uuid.uuid4().hex[:12]}", patient, now, Kind.MEAL, size="typical")
        differs = abs(request.units - suggestion.units) > 1e-9
        response = Response(
            "given",
            now.isoformat(),
            who.user,
            who.role,
            units=request.units,
            reason=request.reason if differs else None,
            note=request.note if differs else None,
            event_id=event.id,
        )
        earlier, warnings = self.advisor.record_given(suggestion, response, event, meal)
        if earlier is not None:  # another page was quicker
            raise ActionConflict(f"already {earlier.action} by {earlier.user} at {earlier.at[11:16]}")
        return event, warnings

    def decline(self, patient: str, request: Decline, who: Identity) -> None:
        """The suggested dose was not given: record why."""
        check_reason(request.reason, request.note)
        _check_may(who, patient)
        with self.advisor.locked():
            suggestion = self._current(patient, request.suggestion_id)
            if not suggestion.is_dose:
                raise ValueError("this answer is not a dose; acknowledge it instead")
            now = self._now(suggestion)
            self._respond(
                suggestion,
                Response("declined", now.isoformat(), who.user, who.role, reason=request.reason, note=request.note),
            )
        self.advisor.touch(patient)

    def acknowledge(self, patient: str, suggestion_id: str, who: Identity) -> None:
        """A person saw an answer that is not a dose (withhold, no dose due, not enough data)."""
        _check_may(who, patient)
        with self.advisor.locked():
            suggestion = self._current(patient, suggestion_id)
            if suggestion.is_dose:
                raise ValueError("this answer is a dose: record it as given or declined")
            self._respond(suggestion, Response("acknowledged", self._now(suggestion).isoformat(), who.user, who.role))
        self.advisor.touch(patient)

    def enter(self, event: Event, who: Identity, reason: str | None = None) -> list[ErrorMessage]:
        """A reading, meal, symptoms, exercise or dose entered at the bedside: decided and stored as a
        sensor's event would be, audited, then published with its answer; returns the warnings.

        ``reason``: why a nurse records something unusual (back-dated, above the dose limit)."""
        if event.kind is Kind.REQUEST:
            raise ValueError("a dose request is not entered on the page; enter a glucose reading instead")
        _check_may(who, event.patient)
        self._check_entry(event, who, reason)
        problem = self._broker_problem()
        if problem is not None:
            raise LinkDown(f"not recorded: the device is not linked to its broker ({problem}); record on paper")
        outcome = self.advisor.handle(json.dumps(event.to_payload()).encode(), durable=True)
        refused = next((m for m in outcome.errors if m.level == "refused"), None)
        if refused is not None:
            raise EntryRefused(f"not recorded: {refused.reason}")
        if outcome.added is Added.NEW:
            detail = {"user": who.user, "role": who.role, "event": event.to_payload(), "reason": reason}
            self.store.audit("entered", detail, event.patient, event.id)
        self._send(event)
        for message in outcome.messages:
            self._send(message)
        return outcome.errors
