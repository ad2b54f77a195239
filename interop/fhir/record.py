"""One device's state folder read as per-patient records for the FHIR export (read only)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from device.contract.messages import Response, Retired, Suggestion
from device.state.store import DATABASE_NAME, Store, StoreError
from interop.fhir.resources import PatientRecord

START = datetime(1900, 1, 1, tzinfo=UTC)
END = datetime(9999, 1, 1, tzinfo=UTC)


class RecordError(Exception):
    """The state folder cannot be read; the message says why."""


def read_records(state_dir: Path, patient: str | None = None, since: datetime | None = None) -> list[PatientRecord]:
    """Every patient's record (or ``patient``'s), from ``since`` on, in patient order."""
    return list(iter_records(state_dir, patient, since))


def iter_records(state_dir: Path, patient: str | None = None, since: datetime | None = None) -> Iterator[PatientRecord]:
    """As :func:`read_records`, one patient at a time (a ward's CGM record does not fit in memory at once)."""
    path = state_dir / DATABASE_NAME
    if not path.is_file():
        raise RecordError(
            f"{state_dir} holds no device record ({DATABASE_NAME} is missing): give the --state-dir of a device"
        )
    try:
        store = Store(path)
    except StoreError as exc:
        raise RecordError(str(exc)) from None
    try:
        patients = store.patients()
        if patient is not None:
            if patient not in patients:
                raise RecordError(f"patient {patient!r} is not in the record of {state_dir} (ids are compared exactly)")
            patients = [patient]
        for name in patients:
            yield _record(store, name, since or START)
    except sqlite3.Error as exc:
        raise RecordError(f"cannot read {path}: {exc}") from None
    finally:
        store.close()


def _record(store: Store, patient: str, since: datetime) -> PatientRecord:
    suggestions: list[Suggestion] = store.suggestions_between(patient, since, END)
    ids = [s.id for s in suggestions]
    responses: dict[str, Response] = store.responses_to(ids)
    retirements: dict[str, Retired] = store.retirements_for(ids)
    return PatientRecord(patient, store.events_between(patient, since, END), suggestions, responses, retirements)
