"""Persistent device state in SQLite (WAL): accepted events, suggestions and the audit trail.

An event is committed here before the broker is told it was received, so a ``kill -9`` or
power cut loses nothing that was acknowledged. Suggestions are stored before they are sent
and recorded as sent in the same commit, just before they are handed to the broker, so a
restart never sends one twice (at most once; the window for a loss is the few microseconds
between that commit and the socket write). The audit table
is append-only: triggers refuse updates and deletes.
"""

from __future__ import annotations

import enum
import hashlib
import json
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

from preprocessing.events import Event, Kind
from preprocessing.features import minutes
from preprocessing.validation import event_from_mapping

from .messages import Suggestion

SCHEMA_VERSION = 1
_STORED_NOW = datetime(9000, 1, 1, tzinfo=UTC)  # stored events were checked on arrival

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
CREATE TABLE IF NOT EXISTS suggestions (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    patient TEXT NOT NULL,
    status TEXT NOT NULL,
    payload TEXT NOT NULL,
    sent_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS suggestions_patient ON suggestions (patient, sent_at);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    action TEXT NOT NULL,
    patient TEXT,
    event_id TEXT,
    suggestion_id TEXT,
    detail TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
"""


class StoreError(Exception):
    """The state database cannot be opened or written; the message says why."""


class Added(enum.Enum):
    """What :meth:`Store.add_event` did with an event."""

    NEW = "new"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


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
            self._db.executescript(SCHEMA)
            self._db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the state database {path}: {exc}") from None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, sql: str, params: tuple) -> sqlite3.Cursor:
        try:
            with self._lock:
                return self._db.execute(sql, params)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to the state database: {exc}") from None

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # ------------------------------------------------------------------ events
    def add_event(self, event: Event) -> Added:
        """Commit an accepted event; a repeated id is a duplicate (same content) or a conflict."""
        payload = event.to_payload()
        digest = event_digest(payload)
        cursor = self._write(
            "INSERT OR IGNORE INTO events (id, patient, ts, ts_min, kind, payload, digest, received_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event.id,
                event.patient,
                event.ts.isoformat(),
                minutes(event.ts),
                event.kind.value,
                json.dumps(payload),
                digest,
                _now_iso(),
            ),
        )
        if cursor.rowcount == 1:
            return Added.NEW
        rows = self._read("SELECT digest FROM events WHERE id = ?", (event.id,))
        return Added.DUPLICATE if rows and rows[0][0] == digest else Added.CONFLICT

    def events_for(self, patient: str) -> list[Event]:
        """A patient's stored events (requests excluded) in replay order: time, insulin last, arrival."""
        rows = self._read(
            "SELECT payload FROM events WHERE patient = ? AND kind != ? ORDER BY ts_min, kind = 'insulin', seq",
            (patient, Kind.REQUEST.value),
        )
        return [event_from_mapping(json.loads(r[0]), _STORED_NOW) for r in rows]

    def patients(self) -> list[str]:
        return [r[0] for r in self._read("SELECT DISTINCT patient FROM events ORDER BY patient")]

    def count_events(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM events")[0][0])

    # ------------------------------------------------------------- suggestions
    def record_sent(self, suggestion: Suggestion) -> None:
        """Commit a suggestion as sent, immediately before it is published (one per triggering event)."""
        self._write(
            "INSERT OR IGNORE INTO suggestions (id, event_id, patient, status, payload, sent_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                suggestion.id,
                suggestion.event_id,
                suggestion.patient,
                suggestion.status,
                json.dumps(suggestion.to_payload()),
                _now_iso(),
            ),
        )

    def has_event(self, event_id: str) -> bool:
        return bool(self._read("SELECT 1 FROM events WHERE id = ?", (event_id,)))

    def has_suggestion_for(self, event_id: str) -> bool:
        return bool(self._read("SELECT 1 FROM suggestions WHERE event_id = ?", (event_id,)))

    def latest_suggestion(self, patient: str) -> Suggestion | None:
        rows = self._read("SELECT payload FROM suggestions WHERE patient = ? ORDER BY rowid DESC LIMIT 1", (patient,))
        return Suggestion.from_json(rows[0][0]) if rows else None

    def suggestion(self, suggestion_id: str) -> Suggestion | None:
        rows = self._read("SELECT payload FROM suggestions WHERE id = ?", (suggestion_id,))
        return Suggestion.from_json(rows[0][0]) if rows else None

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

    def audit_rows(self, action: str | None = None) -> list[dict]:
        sql = "SELECT seq, at, action, patient, event_id, suggestion_id, detail FROM audit"
        rows = self._read(
            sql + (" WHERE action = ? ORDER BY seq" if action else " ORDER BY seq"), (action,) if action else ()
        )
        keys = ("seq", "at", "action", "patient", "event_id", "suggestion_id")
        return [{**dict(zip(keys, r[:6], strict=False)), "detail": json.loads(r[6])} for r in rows]
