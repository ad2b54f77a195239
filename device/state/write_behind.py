"""The store as the advisor writes it: what SQLite refuses is held in memory and written later.

While SQLite refuses writes (locked, disk full, read-only) the device goes on suggesting: an
accepted event, a sent suggestion or a retirement the database refused is kept here, read back
as if it were stored (a repeat is a duplicate, a held answer is the patient's latest), and
written by :meth:`WriteBehind.flush` once the database takes writes again. What the broker is
told meanwhile is :mod:`device.state.storage_recovery`'s job.
"""

from __future__ import annotations

import sqlite3
import threading

from device.contract.messages import Retired, Suggestion
from device.state.store import Added, Store, StoreError
from domain.events import Event, Kind
from domain.features import minutes


class WriteBehind:
    """The device's writes to ``store``, held in memory while SQLite refuses them."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._events: dict[str, Event] = {}  # accepted while SQLite refused writes
        self._records: dict[str, Suggestion] = {}  # suggestions sent while SQLite refused writes, by event id
        self._retirements: dict[str, tuple[str, Retired]] = {}  # (patient, retirement) by suggestion id
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ writes
    def add_event(self, event: Event, durable: bool = False) -> tuple[Added, str | None]:
        """Store an accepted event, or hold it: (what became of it, why it is held or None).

        ``durable``: the caller answers a person only once the event is stored (a page entry), so a
        refusal raises :class:`StoreError` instead of holding the event.
        """
        try:
            return self.store.add_event(event), None
        except StoreError as exc:
            if durable:
                raise
            return self._hold_event(event), str(exc)

    def _hold_event(self, event: Event) -> Added:
        """Keep an event the database refused; a repeat of a held or stored one is a duplicate."""
        try:
            stored = self.store.has_event(event.id)
        except sqlite3.Error:
            stored = False
        with self._lock:
            if stored or event.id in self._events:
                return Added.DUPLICATE
            self._events[event.id] = event
        return Added.NEW

    def record_sent(self, suggestion: Suggestion) -> str | None:
        """Store a sent suggestion, or hold it: why it is held, or None."""
        try:
            self.store.record_sent(suggestion)
        except StoreError as exc:
            with self._lock:
                self._records[suggestion.event_id] = suggestion
            return str(exc)
        return None

    def record_retirement(self, patient: str, retired: Retired) -> str | None:
        """Store why a live answer was retired, or hold it: why it is held, or None."""
        try:
            self.store.record_retirement(patient, retired)
        except StoreError as exc:
            with self._lock:
                self._retirements[retired.suggestion_id] = (patient, retired)
            return str(exc)
        return None

    def flush(self) -> str | None:
        """Write what the database refused earlier; None when everything is stored, else why not."""
        with self._lock:
            try:
                for event_id, event in list(self._events.items()):
                    self.store.add_event(event)
                    del self._events[event_id]
                for event_id, suggestion in list(self._records.items()):
                    self.store.record_sent(suggestion)
                    del self._records[event_id]
                for suggestion_id, (patient, retired) in list(self._retirements.items()):
                    self.store.record_retirement(patient, retired)
                    del self._retirements[suggestion_id]
            except StoreError as exc:
                return str(exc)
        return None

    # ------------------------------------------------------------------- reads
    def is_held(self, event_id: str) -> bool:
        """This accepted event waits in memory for the database."""
        return event_id in self._events

    def has_event(self, event_id: str) -> bool:
        return self.is_held(event_id) or self.store.has_event(event_id)

    def has_suggestion_for(self, event_id: str) -> bool:
        return event_id in self._records or self.store.has_suggestion_for(event_id)

    def events_for(self, patient: str) -> list[Event]:
        """The patient's events in history order, the held ones among the stored (requests left out)."""
        with self._lock:  # not between flush's write and its forgetting
            events = self.store.events_for(patient)
            held = [e for e in self._events.values() if e.patient == patient and e.kind is not Kind.REQUEST]
        if held:
            events = sorted(events + held, key=lambda e: (minutes(e.ts), e.kind is Kind.INSULIN))
        return events

    def held_patients(self) -> set[str]:
        """Patients with events held in memory (not in SQLite yet)."""
        with self._lock:
            return {e.patient for e in self._events.values()}

    def latest_suggestion(self, patient: str) -> Suggestion | None:
        """The patient's latest answer: one held in memory before the stored ones."""
        with self._lock:
            held = [s for s in self._records.values() if s.patient == patient]
            return held[-1] if held else self.store.latest_suggestion(patient)

    def retirement_for(self, suggestion_id: str) -> Retired | None:
        held = self._retirements.get(suggestion_id)
        return held[1] if held else self.store.retirement_for(suggestion_id)

    @property
    def held_events(self) -> int:
        """Accepted events waiting in memory for the database."""
        return len(self._events)

    @property
    def held(self) -> int:
        """Events, suggestion records and retirements waiting in memory for the database."""
        return len(self._events) + len(self._records) + len(self._retirements)
