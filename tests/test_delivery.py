"""Answers are delivered at least once: a suggestion counts as delivered only on the broker's PUBACK.

The attack that found the loss: 2,000 readings, ``kill -9`` right after the 600th is published,
a restart, and a subscriber at QoS 1 throughout. Suggestions still queued inside the dead
process's MQTT client never reached the broker (93 of 2,000 were lost when "sent" was recorded
before publishing). Now every suggestion the broker did not acknowledge is published again
after the restart under the same id; the figures go to test-artifacts/ for docs/reliability.md.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from device.config import BrokerConfig
from device.state.delivery import DeliveryTracker
from device.state.store import SCHEMA_VERSION, Store
from tools.mqtt_kit.client import DeviceWatcher, EventPublisher

from . import event_factory
from .device_process import DeviceProcess, assert_repeats_identical

DEVICE = "bed-kill"
READINGS = 2000
KILL_AFTER = 600
PATIENTS = 20


def rows(device: DeviceProcess, sql: str) -> list[tuple]:
    with sqlite3.connect(device.state_dir / "advisor.sqlite3") as db:
        return db.execute(sql).fetchall()


@pytest.mark.e2e
def test_kill_9_after_the_600th_of_2000_readings_loses_no_answer(mosquitto, tmp_path, artifacts):
    broker = BrokerConfig(url=mosquitto.url)
    watcher = DeviceWatcher(broker, DEVICE, client_id="kill-watcher", persistent=True)
    watcher.wait_subscribed(5)
    device = DeviceProcess(tmp_path / "state", mosquitto.url, DEVICE).start()
    publisher = EventPublisher(broker, DEVICE, client_id="kill-sensor")
    publisher.wait_connected()
    try:
        now = datetime.now(UTC)
        readings = [
            event_factory.glucose(f"k-{i:05d}", f"p-{i % PATIENTS:02d}", now - timedelta(seconds=READINGS - i), 150)
            for i in range(READINGS)
        ]
        for i, reading in enumerate(readings, start=1):
            publisher.publish(reading)
            if i == KILL_AFTER:
                device.kill()
        publisher.flush(60)
        device.start()
        wanted = {r.id for r in readings}
        watcher.wait_for(lambda w: wanted <= {s.event_id for s in w.suggestions}, 120)
        got = Counter(s.event_id for s in watcher.suggestions if s.event_id in wanted)
        lost = len(wanted - set(got))
        duplicated = sum(n - 1 for n in got.values())
        undelivered = rows(device, "SELECT COUNT(*) FROM suggestions WHERE delivered_at IS NULL")[0][0]
        figures = {
            "readings": READINGS,
            "killed_after": KILL_AFTER,
            "lost": lost,
            "duplicated": duplicated,
            "stored_suggestions": rows(device, "SELECT COUNT(*) FROM suggestions")[0][0],
        }
        (artifacts / "delivery-kill9.json").write_text(json.dumps(figures, indent=2) + "\n")
        assert lost == 0, figures
        assert figures["stored_suggestions"] == READINGS
        assert_repeats_identical(watcher)
        assert undelivered == 0 or device.terminate() == 0  # acknowledgements are written within a second
        if undelivered:
            assert rows(device, "SELECT COUNT(*) FROM suggestions WHERE delivered_at IS NULL")[0][0] == 0
    finally:
        publisher.close()
        watcher.close()
        device.stop()


def test_acknowledgements_are_recorded_whichever_comes_first(tmp_path):
    """The PUBACK may overtake the registration of its packet id; both orders record delivery."""
    store = Store(tmp_path / "s.sqlite3")
    advisor_rows = []
    for event_id in ("a", "b", "c"):
        suggestion = event_factory.suggestion(event_id)
        store.record_sent(suggestion)
        advisor_rows.append(suggestion)
    tracker = DeliveryTracker(store)
    tracker.published(1, "s-a")
    tracker.acknowledged(1)  # the usual order
    tracker.acknowledged(2)  # PUBACK first
    tracker.published(2, "s-b")
    tracker.published(3, None)  # a status message: nothing to record
    tracker.acknowledged(3)
    tracker.published(4, "s-c")  # never acknowledged
    tracker.flush()
    delivered = {r[0] for r in store._read("SELECT id FROM suggestions WHERE delivered_at IS NOT NULL")}
    assert delivered == {"s-a", "s-b"}
    assert [s.id for s, _ in store.undelivered(datetime.now(UTC) - timedelta(minutes=1))] == ["s-c"]


def test_an_acknowledgement_for_a_suggestion_not_stored_yet_waits(tmp_path):
    """Held in memory while SQLite refused writes: the PUBACK is kept until the row exists."""
    store = Store(tmp_path / "s.sqlite3")
    tracker = DeliveryTracker(store)
    tracker.published(7, "s-late")
    tracker.acknowledged(7)
    tracker.flush()
    assert tracker.pending == 1
    store.record_sent(event_factory.suggestion("late"))
    tracker.flush()
    assert tracker.pending == 0
    assert store.undelivered(datetime.now(UTC) - timedelta(minutes=1)) == []


def test_after_a_restart_only_fresh_undelivered_suggestions_are_sent_again(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    for event_id in ("old", "new"):
        store.record_sent(event_factory.suggestion(event_id))
    store._write(
        "UPDATE suggestions SET sent_at = ? WHERE id = 's-old'",
        ((datetime.now(UTC) - timedelta(hours=1)).isoformat(timespec="milliseconds"),),
    )
    resend = DeliveryTracker(store).to_resend(900, datetime.now(UTC))
    assert [(s.id, 850 < left <= 900) for s, left in resend] == [("s-new", True)]
    dropped = store._read("SELECT id FROM suggestions WHERE dropped_at IS NOT NULL")
    assert dropped == [("s-old",)]  # too old to show: never sent again


def test_a_version_1_database_is_migrated(tmp_path):
    path = tmp_path / "v1.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE suggestions (id TEXT PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, patient TEXT NOT NULL,"
            " status TEXT NOT NULL, payload TEXT NOT NULL, sent_at TEXT NOT NULL);"
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "INSERT INTO meta VALUES ('schema_version', '1');"
        )
        db.execute("INSERT INTO suggestions VALUES ('s-x', 'x', 'p', 'suggest', '{}', '2026-01-01T00:00:00.000+00:00')")
    store = Store(path)
    assert store._read("SELECT value FROM meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)]
    assert store._read("SELECT delivered_at FROM suggestions") == [("2026-01-01T00:00:00.000+00:00",)]
