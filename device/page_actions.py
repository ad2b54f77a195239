"""What a person does on the bedside page: confirm a dose given, acknowledge an answer.

Both are audited. A confirmed dose is published as an insulin event on the device's own
``events`` topic, so it takes the same path as a dose a sensor or pen reports.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime

from preprocessing.events import Event, Insulin, Kind

from .advisor import Advisor
from .messages import Suggestion
from .store import Store


class PageActions:
    """The page's state-changing actions, checked against the stored suggestion."""

    def __init__(
        self, device_id: str, store: Store, advisor: Advisor, publish_event: Callable[[Event], object]
    ) -> None:
        self.device_id = device_id
        self.store = store
        self.advisor = advisor
        self._publish_event = publish_event

    def _suggestion(self, patient: str, suggestion_id: str) -> Suggestion:
        suggestion = self.store.suggestion(suggestion_id)
        if suggestion is None or suggestion.patient != patient:
            raise ValueError("unknown suggestion for this patient")
        return suggestion

    def confirm_dose(self, patient: str, suggestion_id: str, units: float) -> Event:
        """A person gave a dose: audit it and publish it as an insulin event."""
        suggestion = self._suggestion(patient, suggestion_id)
        if not suggestion.is_dose:
            raise ValueError("this suggestion is not a dose; nothing to confirm")
        now = self.advisor.now().astimezone(datetime.fromisoformat(suggestion.ts).tzinfo)
        event = Event(
            id=f"{self.device_id}-given-{uuid.uuid4().hex[:12]}",
            patient=patient,
            ts=now.replace(microsecond=0),
            kind=Kind.INSULIN,
            insulin=Insulin.REGULAR,
            units=units,
        )
        self.store.audit(
            "dose_confirmed",
            {"units": units, "suggested_units": suggestion.units, "differs_from_suggestion": units != suggestion.units},
            patient=patient,
            event_id=event.id,
            suggestion_id=suggestion_id,
        )
        self._publish_event(event)
        return event

    def acknowledge(self, patient: str, suggestion_id: str) -> None:
        """A person saw a withhold or insufficient-data answer: audit it."""
        suggestion = self._suggestion(patient, suggestion_id)
        self.store.audit(
            "acknowledged",
            {"status": suggestion.status, "reasons": suggestion.reasons},
            patient=patient,
            suggestion_id=suggestion_id,
        )
        self.advisor.touch(patient)
