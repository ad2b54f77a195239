"""Persistent device state in SQLite (WAL): accepted events, suggestions and the audit trail.

An event is committed here before the broker is told it was received, so a ``kill -9`` or
power cut loses nothing that was acknowledged. A suggestion is committed before it is
published and counts as delivered only once the broker has acknowledged it (``delivered_at``,
set from the PUBACK): after a restart the device publishes every undelivered suggestion again
under the same id, so answers are delivered at least once and a subscriber drops repeats by
id. One that is older than the suggestion expiry is not sent again but marked ``dropped_at``:
a stale dose must not reach anyone. The audit table is append-only: triggers refuse updates
and deletes.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from device.contract.messages import Alert, Response, Retired, ShadowAnswer, Suggestion
from device.rules.daily_summary import DoseAnswer
from device.rules.dose_responses import replacement
from device.rules.patient_ids import folded, skeleton
from domain.events import Event, Kind
from domain.features import minutes
from domain.validation import ValidationError, event_from_mapping

SCHEMA_VERSION = 5
_STORED_NOW = datetime(9000, 1, 1, tzinfo=UTC)  # stored events were checked on arrival

DATABASE_NAME = "advisor.sqlite3"  # the store's file in a device's state folder

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    patient TEXT NOT NULL,
    ts TEXT NOT NULL,
    ts_min REAL NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    digest TEXT NOT NULL,
    received_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_patient_time ON events (patient, ts_min);
CREATE INDEX IF NOT EXISTS events_kind_time ON events (kind, ts_min);
CREATE TABLE IF NOT EXISTS shadow (
    live_id TEXT PRIMARY KEY,
    patient TEXT NOT NULL,
    payload TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS suggestions (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    patient TEXT NOT NULL,
    status TEXT NOT NULL,
    payload TEXT NOT NULL,
    sent_at TEXT NOT NULL,
    delivered_at TEXT,
    dropped_at TEXT
);
CREATE INDEX IF NOT EXISTS suggestions_patient ON suggestions (patient, sent_at);
CREATE TABLE IF NOT EXISTS patients (
    id TEXT PRIMARY KEY,
    folded TEXT NOT NULL,
    skeleton TEXT NOT NULL,
    first_seen TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS patients_folded ON patients (folded);
CREATE INDEX IF NOT EXISTS patients_skeleton ON patients (skeleton);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    action TEXT NOT NULL,
    patient TEXT,
    event_id TEXT,
    suggestion_id TEXT,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_patient ON audit (patient, seq);
CREATE TABLE IF NOT EXISTS responses (
    suggestion_id TEXT PRIMARY KEY,
    patient TEXT NOT NULL,
    action TEXT NOT NULL,
    payload TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_patient ON responses (patient, at);
CREATE TABLE IF NOT EXISTS retirements (
    suggestion_id TEXT PRIMARY KEY,
    patient TEXT NOT NULL,
    event_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY,
    patient TEXT NOT NULL,
    payload TEXT NOT NULL,
    raised_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    pin_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    patient TEXT
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
"""


class UserRecord(NamedTuple):
    """A page user as stored: role, PIN hash, and the one patient a patient user may record for."""

    role: str
    pin_hash: str
    patient: str | None


class StoreError(Exception):
    """The state database cannot be opened or written; the message says why."""


class Added(enum.Enum):
    """What :meth:`Store.add_event` did with an event."""

    NEW = "new"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _patient_row(patient: str) -> tuple[str, str, str, str]:
    return patient, folded(patient), skeleton(patient), _now_iso()


def _insert_event(db: sqlite3.Connection, event: Event) -> bool:
    """Insert an event (and its patient) inside a transaction; False when its id is taken."""
    payload = event.to_payload()
    cursor = db.execute(
        "INSERT OR IGNORE INTO events (id, patient, ts, ts_min, kind, payload, digest, received_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            event.id,
            event.patient,
            event.ts.isoformat(),
            minutes(event.ts),
            event.kind.value,
            json.dumps(payload),
            event_digest(payload),
            _now_iso(),
        ),
    )
    if cursor.rowcount != 1:
        return False
    db.execute("INSERT OR IGNORE INTO patients VALUES (?, ?, ?, ?)", _patient_row(event.patient))
    return True


def _stored_event(payload: str) -> Event:
    """An event row read back; a row that no longer decodes is corruption, said in one line."""
    try:
        return event_from_mapping(json.loads(payload), _STORED_NOW)
    except (ValueError, ValidationError) as exc:
        raise StoreError(f"the state database holds a corrupt event row ({exc}): restore it from a backup") from None


def event_digest(payload: dict) -> str:
    """Content hash of a canonical event payload, to tell a true repeat from a reused id."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class Store:
    """The device's SQLite database; safe to call from several threads."""

    def __init__(self, path: Path, busy_timeout_s: float = 5.0) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=busy_timeout_s)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            damage = self._db.execute("PRAGMA quick_check").fetchone()[0]
            if damage != "ok":
                raise sqlite3.DatabaseError(f"it is damaged ({damage}); restore it from a backup")
            self._db.executescript(SCHEMA)
            self._migrate()
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the state database {path}: {exc}") from None
        self._lock = threading.Lock()

    def _migrate(self) -> None:
        """Bring a database of an earlier version up to :data:`SCHEMA_VERSION`."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(suggestions)")}
        if "delivered_at" not in columns:  # version 1: suggestions were "sent"; old ones count as delivered
            self._db.executescript(
                "BEGIN; ALTER TABLE suggestions ADD COLUMN delivered_at TEXT;"
                " ALTER TABLE suggestions ADD COLUMN dropped_at TEXT;"
                " UPDATE suggestions SET delivered_at = sent_at; COMMIT;"
            )
        self._db.execute(
            "CREATE INDEX IF NOT EXISTS suggestions_undelivered ON suggestions (sent_at)"
            " WHERE delivered_at IS NULL AND dropped_at IS NULL"
        )
        if "patient" not in {row[1] for row in self._db.execute("PRAGMA table_info(users)")}:  # version 3
            self._db.execute("ALTER TABLE users ADD COLUMN patient TEXT")
        known = {r[0] for r in self._db.execute("SELECT id FROM patients")}
        for (patient,) in self._db.execute("SELECT DISTINCT patient FROM events").fetchall():
            if patient not in known:  # version 1 kept no patient list
                self._db.execute("INSERT INTO patients VALUES (?, ?, ?, ?)", _patient_row(patient))
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?) ON CONFLICT(key) DO UPDATE SET value = ?",
            (str(SCHEMA_VERSION), str(SCHEMA_VERSION)),
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def probe(self) -> None:
        """One small committed write; raises :class:`StoreError` while the database refuses writes."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('probed_at', ?) ON CONFLICT(key) DO UPDATE SET value = ?",
                (_now_iso(), _now_iso()),
            )

    def _write(self, sql: str, params: tuple) -> sqlite3.Cursor:
        try:
            with self._lock:
                return self._db.execute(sql, params)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to the state database: {exc}") from None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """Several writes, one commit (one fsync); any failure rolls all of them back."""
        with self._lock:
            try:
                self._db.execute("BEGIN")
                yield self._db
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise StoreError(f"cannot write to the state database: {exc}") from None
            except BaseException:  # the caller gave up part-way (StoreError, a bug): nothing is written
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # ------------------------------------------------------------------ events
    def add_event(self, event: Event) -> Added:
        """Commit an accepted event; a repeated id is a duplicate (same content) or a conflict."""
        with self._transaction() as db:
            inserted = _insert_event(db, event)
        if inserted:
            return Added.NEW
        rows = self._read("SELECT digest FROM events WHERE id = ?", (event.id,))
        return Added.DUPLICATE if rows and rows[0][0] == event_digest(event.to_payload()) else Added.CONFLICT

    def events_for(self, patient: str) -> list[Event]:
        """A patient's stored events (requests excluded) in replay order: time, insulin last, arrival."""
        rows = self._read(
            "SELECT payload FROM events WHERE patient = ? AND kind != ? ORDER BY ts_min, kind = 'insulin', seq",
            (patient, Kind.REQUEST.value),
        )
        return [_stored_event(r[0]) for r in rows]

    def doses_near(self, patient: str, ts: datetime, within_min: float) -> list[Event]:
        """The patient's insulin events within ``within_min`` minutes of ``ts``, either side."""
        t = minutes(ts)
        rows = self._read(
            "SELECT payload FROM events WHERE patient = ? AND ts_min BETWEEN ? AND ? AND kind = ? ORDER BY seq",
            (patient, t - within_min, t + within_min, Kind.INSULIN.value),
        )
        return [_stored_event(r[0]) for r in rows]

    def last_glucose(self, patient: str) -> Event | None:
        """The patient's latest glucose reading."""
        rows = self._read(
            "SELECT payload FROM events WHERE patient = ? AND kind = ? ORDER BY ts_min DESC, seq DESC LIMIT 1",
            (patient, Kind.GLUCOSE.value),
        )
        return _stored_event(rows[0][0]) if rows else None

    def count_lows(self, patient: str, since: datetime, below_mg_dl: float) -> int:
        """Glucose readings of the patient under ``below_mg_dl`` since ``since``."""
        rows = self._read(
            "SELECT COUNT(*) FROM events WHERE patient = ? AND kind = ? AND ts_min >= ?"
            " AND json_extract(payload, '$.mg_dl') < ?",
            (patient, Kind.GLUCOSE.value, minutes(since), below_mg_dl),
        )
        return int(rows[0][0])

    def patients(self, offset: int = 0, limit: int = -1, starting: str = "") -> list[str]:
        """Known patient ids in order, a page at a time, optionally those starting with ``starting``."""
        return [
            r[0]
            for r in self._read(
                "SELECT id FROM patients WHERE id >= ? AND substr(id, 1, ?) = ? ORDER BY id LIMIT ? OFFSET ?",
                (starting, len(starting), starting, limit, offset),
            )
        ]

    def patients_with_profile(self) -> list[str]:
        """Patients with a ``profile`` event (a dosing plan), in order."""
        rows = self._read("SELECT DISTINCT patient FROM events WHERE kind = ? ORDER BY patient", (Kind.PROFILE.value,))
        return [r[0] for r in rows]

    def note_patient(self, patient: str) -> None:
        """Know a patient without an event (a visit history arrived first)."""
        self._write("INSERT OR IGNORE INTO patients VALUES (?, ?, ?, ?)", _patient_row(patient))

    def count_patients(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM patients")[0][0])

    def has_patient(self, patient: str) -> bool:
        return bool(self._read("SELECT 1 FROM patients WHERE id = ?", (patient,)))

    def patients_like(self, patient: str) -> list[str]:
        """Known ids equal to ``patient`` but for case, or with the same skeleton (device/rules/patient_ids.py)."""
        return [
            r[0]
            for r in self._read(
                "SELECT id FROM patients WHERE (folded = ? OR skeleton = ?) AND id != ? ORDER BY id LIMIT 10",
                (folded(patient), skeleton(patient), patient),
            )
        ]

    def count_events(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM events")[0][0])

    # ------------------------------------------------------------- suggestions
    def record_sent(self, suggestion: Suggestion) -> None:
        """Commit a suggestion before it is published (one per triggering event), with its audit row.

        One transaction, one fsync; it counts as undelivered until the broker's PUBACK.
        """
        now = _now_iso()
        detail = {"units": suggestion.units, "reasons": suggestion.reasons, "model_units": suggestion.model_units}
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO suggestions (id, event_id, patient, status, payload, sent_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    suggestion.id,
                    suggestion.event_id,
                    suggestion.patient,
                    suggestion.status,
                    json.dumps(suggestion.to_payload()),
                    now,
                ),
            )
            if cursor.rowcount == 1:
                db.execute(
                    "INSERT INTO audit (at, action, patient, event_id, suggestion_id, detail)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        now,
                        suggestion.status,
                        suggestion.patient,
                        suggestion.event_id,
                        suggestion.id,
                        json.dumps(detail),
                    ),
                )

    def has_event(self, event_id: str) -> bool:
        return bool(self._read("SELECT 1 FROM events WHERE id = ?", (event_id,)))

    def mark_delivered(self, suggestion_ids: list[str]) -> list[str]:
        """Record the broker's acknowledgement of these suggestions; returns the ids not stored (yet)."""
        now = _now_iso()
        missing = []
        with self._transaction() as db:
            for suggestion_id in suggestion_ids:
                cursor = db.execute(
                    "UPDATE suggestions SET delivered_at = COALESCE(delivered_at, ?) WHERE id = ?", (now, suggestion_id)
                )
                if cursor.rowcount == 0:
                    missing.append(suggestion_id)
        return missing

    def undelivered(self, sent_since: datetime) -> list[tuple[Suggestion, datetime]]:
        """Suggestions the broker never acknowledged, recorded since ``sent_since``, oldest first."""
        rows = self._read(
            "SELECT payload, sent_at FROM suggestions WHERE delivered_at IS NULL AND dropped_at IS NULL"
            " AND sent_at >= ? ORDER BY rowid",
            (sent_since.astimezone(UTC).isoformat(timespec="milliseconds"),),
        )
        return [(Suggestion.from_json(payload), datetime.fromisoformat(sent)) for payload, sent in rows]

    def drop_undelivered(self, sent_before: datetime) -> int:
        """Give up on undelivered suggestions recorded before ``sent_before`` (too old to show); returns how many."""
        cursor = self._write(
            "UPDATE suggestions SET dropped_at = ? WHERE delivered_at IS NULL AND dropped_at IS NULL AND sent_at < ?",
            (_now_iso(), sent_before.astimezone(UTC).isoformat(timespec="milliseconds")),
        )
        return cursor.rowcount

    def has_suggestion_for(self, event_id: str) -> bool:
        return bool(self._read("SELECT 1 FROM suggestions WHERE event_id = ?", (event_id,)))

    def latest_suggestion(self, patient: str) -> Suggestion | None:
        rows = self._read("SELECT payload FROM suggestions WHERE patient = ? ORDER BY rowid DESC LIMIT 1", (patient,))
        return Suggestion.from_json(rows[0][0]) if rows else None

    def suggestion(self, suggestion_id: str) -> Suggestion | None:
        rows = self._read("SELECT payload FROM suggestions WHERE id = ?", (suggestion_id,))
        return Suggestion.from_json(rows[0][0]) if rows else None

    def latest_suggestions(self) -> list[Suggestion]:
        """Every patient's current (latest) suggestion."""
        rows = self._read(
            "SELECT payload FROM suggestions WHERE rowid IN (SELECT MAX(rowid) FROM suggestions GROUP BY patient)"
        )
        return [Suggestion.from_json(r[0]) for r in rows]

    # --------------------------------------------------------------- responses
    def record_response(
        self, suggestion: Suggestion, response: Response, given: Event | None = None, meal: Event | None = None
    ) -> Response | None:
        """Record what a person did with ``suggestion``, with its audit row; at most one per suggestion.

        ``given``: the insulin event of a dose given, and ``meal`` the meal it is for (a pre-meal
        dose), stored in the same transaction (one commit: the response and the dose are durable
        together, or neither is). Returns None when recorded, else the response recorded before
        (nothing is written).
        """
        payload = json.dumps(response.to_payload())
        detail = {**response.to_payload(), "suggested_units": suggestion.units, "status": suggestion.status}
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO responses (suggestion_id, patient, action, payload, at) VALUES (?, ?, ?, ?, ?)",
                (suggestion.id, suggestion.patient, response.action, payload, response.at),
            )
            if cursor.rowcount == 1:
                db.execute(
                    "INSERT INTO audit (at, action, patient, event_id, suggestion_id, detail)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        _now_iso(),
                        f"dose_{response.action}" if response.action != "acknowledged" else "acknowledged",
                        suggestion.patient,
                        response.event_id,
                        suggestion.id,
                        json.dumps(detail),
                    ),
                )
                if meal is not None and not _insert_event(db, meal):
                    raise StoreError(f"the meal's event id {meal.id} is taken")  # rolls the response back too
                if given is not None and not _insert_event(db, given):
                    raise StoreError(f"the dose's event id {given.id} is taken")
                return None
        return self.response_for(suggestion.id)

    # ------------------------------------------------------------- retirements
    def record_retirement(self, patient: str, retired: Retired) -> bool:
        """Record that an event retired a live suggestion, with its audit row; False if it was retired before."""
        now = _now_iso()
        payload = json.dumps(retired.to_payload())
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO retirements (suggestion_id, patient, event_id, payload, at)"
                " VALUES (?, ?, ?, ?, ?)",
                (retired.suggestion_id, patient, retired.event_id, payload, now),
            )
            if cursor.rowcount == 1:
                db.execute(
                    "INSERT INTO audit (at, action, patient, event_id, suggestion_id, detail)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (now, "retired", patient, retired.event_id, retired.suggestion_id, payload),
                )
        return cursor.rowcount == 1

    def retirement_for(self, suggestion_id: str) -> Retired | None:
        """Why a suggestion was retired by a later event, or None."""
        rows = self._read("SELECT payload FROM retirements WHERE suggestion_id = ?", (suggestion_id,))
        return Retired.from_json(rows[0][0]) if rows else None

    def doses_since(self, patient: str, event_id: str) -> list[Event]:
        """The patient's insulin events stored after the event ``event_id`` (by arrival, whatever their time)."""
        rows = self._read(
            "SELECT payload FROM events WHERE patient = ? AND kind = ? AND seq > (SELECT seq FROM events WHERE id = ?)"
            " ORDER BY seq",
            (patient, Kind.INSULIN.value, event_id),
        )
        return [_stored_event(r[0]) for r in rows]

    def events_between(self, patient: str, start: datetime, end: datetime) -> list[Event]:
        """The patient's events (requests excluded) in ``[start, end)``, in time order."""
        rows = self._read(
            "SELECT payload FROM events WHERE patient = ? AND kind != ? AND ts_min >= ? AND ts_min < ?"
            " ORDER BY ts_min, kind = 'insulin', seq",
            (patient, Kind.REQUEST.value, minutes(start), minutes(end)),
        )
        return [_stored_event(r[0]) for r in rows]

    def suggestions_between(self, patient: str, start: datetime, end: datetime) -> list[Suggestion]:
        """The patient's answers decided in ``[start, end)``, in order (by the decision time, not the send time)."""
        rows = self._read(
            "SELECT s.payload FROM suggestions s JOIN events e ON e.id = s.event_id"
            " WHERE s.patient = ? AND e.ts_min >= ? AND e.ts_min < ? ORDER BY s.rowid",
            (patient, minutes(start) - 24 * 60, minutes(end) + 24 * 60),
        )
        found = [Suggestion.from_json(r[0]) for r in rows]
        return [x for x in found if start <= datetime.fromisoformat(x.ts) < end]

    def doses_between(
        self, start: datetime, end: datetime, expiry_s: float = 900.0
    ) -> list[tuple[DoseAnswer, Response | None]]:
        """Every patient's dose answers decided in ``[start, end)`` with what was done with each, and
        whether a later event or answer replaced it before anyone acted (``expiry_s``: its life).

        Reads only the fields adherence needs (a day of CGM answers is thousands of rows).
        """
        rows = self._read(
            "SELECT s.id, s.patient, json_extract(s.payload, '$.ts'), json_extract(s.payload, '$.units'), r.payload,"
            " t.payload, (SELECT json_extract(n.payload, '$.ts') FROM suggestions n"
            "  WHERE n.patient = s.patient AND n.rowid > s.rowid ORDER BY n.rowid LIMIT 1)"
            " FROM suggestions s JOIN events e ON e.id = s.event_id LEFT JOIN responses r ON r.suggestion_id = s.id"
            " LEFT JOIN retirements t ON t.suggestion_id = s.id"
            " WHERE s.status = 'suggest' AND e.ts_min >= ? AND e.ts_min < ? ORDER BY s.rowid",
            (minutes(start) - 24 * 60, minutes(end) + 24 * 60),
        )
        found = []
        for sid, patient, ts, units, response, retired, next_ts in rows:
            if start <= datetime.fromisoformat(ts) < end:
                why = None
                if response is None:
                    why = replacement(ts, next_ts, None if retired is None else Retired.from_json(retired), expiry_s)
                answer = DoseAnswer(sid, patient, ts, float(units), why)
                found.append((answer, None if response is None else Response.from_json(response)))
        return found

    def record_shadow(self, answer: ShadowAnswer) -> None:
        """Keep a candidate bundle's answer beside the live one (at most one per live answer)."""
        self._write(
            "INSERT OR IGNORE INTO shadow (live_id, patient, payload, at) VALUES (?, ?, ?, ?)",
            (answer.live_id, answer.patient, json.dumps(answer.to_payload()), _now_iso()),
        )

    def shadow_answers(self) -> list[ShadowAnswer]:
        """Every candidate answer kept, in the order they were made."""
        return [ShadowAnswer.from_json(r[0]) for r in self._read("SELECT payload FROM shadow ORDER BY rowid")]

    def glucose_between(self, start: datetime, end: datetime) -> list[float]:
        """Every patient's glucose readings (mg/dL) dated in ``[start, end)``."""
        rows = self._read(
            "SELECT json_extract(payload, '$.mg_dl') FROM events WHERE kind = 'glucose' AND ts_min >= ? AND ts_min < ?",
            (minutes(start), minutes(end)),
        )
        return [float(r[0]) for r in rows if r[0] is not None]

    def given_against_model(self, start: datetime, end: datetime) -> list[tuple[float, float]]:
        """(model units, units given) of every dose given for an answer decided in ``[start, end)``
        that carried a model number."""
        rows = self._read(
            "SELECT json_extract(s.payload, '$.model_units'), json_extract(r.payload, '$.units')"
            " FROM responses r JOIN suggestions s ON s.id = r.suggestion_id JOIN events e ON e.id = s.event_id"
            " WHERE r.action = 'given' AND e.ts_min >= ? AND e.ts_min < ?",
            (minutes(start), minutes(end)),
        )
        return [(float(m), float(g)) for m, g in rows if m is not None and g is not None]

    def retirements_for(self, suggestion_ids: list[str]) -> dict[str, Retired]:
        """The retirements of these suggestions, by suggestion id."""
        return {sid: Retired.from_json(p) for sid, p in self._payloads("retirements", suggestion_ids).items()}

    def responses_to(self, suggestion_ids: list[str]) -> dict[str, Response]:
        """The responses recorded to these suggestions, by suggestion id."""
        return {sid: Response.from_json(p) for sid, p in self._payloads("responses", suggestion_ids).items()}

    def _payloads(self, table: str, suggestion_ids: list[str]) -> dict[str, str]:
        """The payloads of ``table`` (responses, retirements) for these suggestions, by suggestion id."""
        found: dict[str, str] = {}
        for i in range(0, len(suggestion_ids), 500):
            chunk = suggestion_ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for sid, payload in self._read(
                f"SELECT suggestion_id, payload FROM {table} WHERE suggestion_id IN ({marks})", tuple(chunk)
            ):
                found[sid] = payload
        return found

    def response_for(self, suggestion_id: str) -> Response | None:
        rows = self._read("SELECT payload FROM responses WHERE suggestion_id = ?", (suggestion_id,))
        return Response.from_json(rows[0][0]) if rows else None

    # ------------------------------------------------------------------ alerts
    def record_alert(self, alert: Alert) -> bool:
        """Keep an alert once (by id), with its audit row; False when it was raised before."""
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO alerts (id, patient, payload, raised_at) VALUES (?, ?, ?, ?)",
                (alert.id, alert.patient, json.dumps(alert.to_payload()), alert.raised_at),
            )
            if cursor.rowcount == 1:
                db.execute(
                    "INSERT INTO audit (at, action, patient, event_id, suggestion_id, detail)"
                    " VALUES (?, ?, ?, NULL, ?, ?)",
                    (
                        _now_iso(),
                        f"alert_{alert.kind}",
                        alert.patient,
                        alert.suggestion_id,
                        json.dumps(alert.to_payload()),
                    ),
                )
        return cursor.rowcount == 1

    # ------------------------------------------------------------------- users
    def add_user(self, name: str, role: str, pin_hash: str, patient: str | None = None) -> bool:
        """Add a user (a patient user with their patient); False when the name is taken, ignoring case."""
        with self._transaction() as db:
            taken = db.execute("SELECT 1 FROM users WHERE lower(name) = lower(?)", (name,)).fetchone()
            if taken is None:
                db.execute(
                    "INSERT INTO users (name, role, pin_hash, created_at, patient) VALUES (?, ?, ?, ?, ?)",
                    (name, role, pin_hash, _now_iso(), patient),
                )
        if taken is None:
            self.audit("user_added", {"user": name, "role": role, "patient": patient})
        return taken is None

    def set_user_pin(self, name: str, pin_hash: str) -> bool:
        cursor = self._write("UPDATE users SET pin_hash = ? WHERE name = ?", (pin_hash, name))
        if cursor.rowcount == 1:
            self.audit("user_pin_changed", {"user": name})
        return cursor.rowcount == 1

    def remove_user(self, name: str) -> bool:
        cursor = self._write("DELETE FROM users WHERE name = ?", (name,))
        if cursor.rowcount == 1:
            self.audit("user_removed", {"user": name})
        return cursor.rowcount == 1

    def users(self) -> list[tuple[str, str, str, str | None]]:
        """(name, role, created_at) of every user, by name."""
        rows = self._read("SELECT name, role, created_at, patient FROM users ORDER BY name")
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    def user(self, name: str) -> UserRecord | None:
        """A user's role, PIN hash and (a patient user's) patient, or None."""
        rows = self._read("SELECT role, pin_hash, patient FROM users WHERE name = ?", (name,))
        return UserRecord(rows[0][0], rows[0][1], rows[0][2]) if rows else None

    def count_users(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM users")[0][0])

    # ------------------------------------------------------------------- audit
    def audit(
        self,
        action: str,
        detail: dict,
        patient: str | None = None,
        event_id: str | None = None,
        suggestion_id: str | None = None,
    ) -> None:
        """Append one row to the audit trail."""
        self._write(
            "INSERT INTO audit (at, action, patient, event_id, suggestion_id, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (_now_iso(), action, patient, event_id, suggestion_id, json.dumps(detail)),
        )

    def notices(self, patient: str, limit: int = 5) -> list[str]:
        """The latest warnings about a patient's data (look-alike id, likely duplicate dose), newest first."""
        rows = self._read(
            "SELECT detail FROM audit WHERE patient = ? AND action LIKE '%\\_warning' ESCAPE '\\'"
            " ORDER BY seq DESC LIMIT ?",
            (patient, limit),
        )
        return [str(json.loads(r[0]).get("notice", "")) for r in rows]

    def audit_rows(self, action: str | None = None) -> list[dict]:
        sql = "SELECT seq, at, action, patient, event_id, suggestion_id, detail FROM audit"
        rows = self._read(
            sql + (" WHERE action = ? ORDER BY seq" if action else " ORDER BY seq"), (action,) if action else ()
        )
        keys = ("seq", "at", "action", "patient", "event_id", "suggestion_id")
        return [{**dict(zip(keys, r[:6], strict=False)), "detail": json.loads(r[6])} for r in rows]
