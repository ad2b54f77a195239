"""End to end through a real Mosquitto on loopback and a real ``advisor device run`` process."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections import Counter
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest

from device.config import BrokerConfig
from domain.events import Event
from tools.mqtt_kit.client import DeviceWatcher, EndMarker, EventPublisher
from tools.ward.broker import MosquittoBroker, free_port

from . import event_factory
from .device_process import DeviceProcess, assert_repeats_identical
from .tcp_proxy import CuttableProxy

DEVICE = "bed1"


@pytest.fixture()
def rig(mosquitto, tmp_path):
    """Broker, device process, a publisher and a watcher of the device's answers."""
    broker = BrokerConfig(url=mosquitto.url)
    watcher = DeviceWatcher(broker, DEVICE, client_id="test-watcher", persistent=True)
    assert watcher.subscribed.wait(5)
    device = DeviceProcess(tmp_path / "state", mosquitto.url, DEVICE).start()
    publisher = EventPublisher(broker, DEVICE, client_id="test-sensor")
    publisher.wait_connected()
    yield device, publisher, watcher, mosquitto
    publisher.close()
    watcher.close()
    device.stop()


def send_history(publisher, watcher, patient="p-1", now=None):
    now = now or datetime.now(UTC)
    events = event_factory.history(patient, now)
    for event in events:
        publisher.publish(event)
    assert watcher.wait_for(lambda w: len([s for s in w.suggestions if s.patient == patient]) >= 5, 10)
    return now


def db_rows(device, sql):
    with sqlite3.connect(device.state_dir / "advisor.sqlite3") as db:
        return db.execute(sql).fetchall()


def test_status_is_retained_online_then_offline_on_sigterm(rig):
    device, _publisher, watcher, broker = rig
    assert watcher.wait_for(lambda w: any(s.state == "online" for s in w.status), 5)
    online = [s for s in watcher.status if s.state == "online"][-1]
    assert online.models[0].name == "dose" and online.models[0].version
    late = DeviceWatcher(BrokerConfig(url=broker.url), DEVICE)  # connects later: gets the retained status
    assert late.wait_for(lambda w: w.status and w.status[-1].state == "online", 5)
    assert device.terminate() == 0
    assert late.wait_for(lambda w: w.status[-1].state == "offline", 5)
    late.close()


def test_fresh_glucose_gets_a_suggestion_within_one_second(rig):
    _device, publisher, watcher, _ = rig
    now = send_history(publisher, watcher)
    start = time.monotonic()
    publisher.publish(event_factory.glucose("fresh-1", "p-1", now, 180))
    assert watcher.wait_for(lambda w: w.suggestion_for("fresh-1"), 1.0), "no suggestion within 1 s"
    elapsed = time.monotonic() - start
    s = watcher.suggestion_for("fresh-1")
    assert s.status == "suggest" and s.units > 0 and s.usual_units == 7.0
    assert 0 < s.latency_ms < 1000 and elapsed < 1.0
    assert s.reasons and s.model.version
    assert all(flags == (False, 900) for flags in watcher.suggestion_flags), "not retained, 15 min expiry"
    late = DeviceWatcher(BrokerConfig(url=rig[3].url), DEVICE)
    assert late.subscribed.wait(5) and late.wait_for(lambda w: w.status, 5)
    publisher.publish(event_factory.glucose("fresh-2", "p-1", now + timedelta(minutes=1), 170))
    assert late.wait_for(lambda w: w.suggestion_for("fresh-2"), 5)  # a retained old one would have come first
    old = [s.event_id for s in late.suggestions if s.event_id != "fresh-2"]
    assert old == [], "a subscriber that connects later must not get an old dose"
    late.close()


def test_low_glucose_withholds_with_a_reason(rig):
    _device, publisher, watcher, _ = rig
    now = send_history(publisher, watcher)
    publisher.publish(event_factory.glucose("low-1", "p-1", now, 55))
    assert watcher.wait_for(lambda w: w.suggestion_for("low-1"), 2)
    s = watcher.suggestion_for("low-1")
    assert s.status == "withhold" and s.units == 0
    assert "55 mg/dL is below 70" in s.reasons[0]


def test_stale_reading_is_insufficient_data(rig):
    _device, publisher, watcher, _ = rig
    now = send_history(publisher, watcher)
    publisher.publish(event_factory.glucose("stale-1", "p-1", now - timedelta(minutes=40), 150))
    assert watcher.wait_for(lambda w: w.suggestion_for("stale-1"), 2)
    s = watcher.suggestion_for("stale-1")
    assert s.status == "insufficient_data" and s.units == 0 and "40 minutes old" in s.reasons[0]


def hostile_payloads(now: datetime) -> list[tuple[str, bytes, str | None]]:
    ts = now.isoformat()
    good = {"patient": "p-1", "ts": ts, "kind": "glucose", "mg_dl": 120}
    return [
        ("malformed JSON", b'{"id": "h1", "kind": ', None),
        ("not an object", b"[1, 2, 3]", None),
        ("wrong type", json.dumps(good | {"id": "h2", "mg_dl": "lots"}).encode(), "h2"),
        ("NaN", json.dumps(good | {"id": "h3", "mg_dl": float("nan")}).encode(), "h3"),
        (
            "Infinity",
            b'{"id": "h4", "patient": "p-1", "ts": "%s", "kind": "glucose", "mg_dl": Infinity}' % ts.encode(),
            "h4",
        ),
        ("absurd glucose", json.dumps(good | {"id": "h5", "mg_dl": 99999}).encode(), "h5"),
        (
            "absurd insulin",
            json.dumps(
                {"id": "h6", "patient": "p-1", "ts": ts, "kind": "insulin", "insulin": "regular", "units": 5000}
            ).encode(),
            "h6",
        ),
        ("far future", json.dumps(good | {"id": "h7", "ts": "2999-01-01T00:00:00+00:00"}).encode(), "h7"),
        ("ancient", json.dumps(good | {"id": "h8", "ts": "0001-01-01T00:00:00+00:00"}).encode(), "h8"),
        ("path-like patient", json.dumps(good | {"id": "h9", "patient": "../../etc/passwd"}).encode(), "h9"),
        ("path-like id", json.dumps(good | {"id": "../x"}).encode(), None),
        ("huge", json.dumps(good | {"id": "h10", "note": "x" * 70000}).encode(), None),
        ("deeply nested", b'{"id": "h11", "a": ' + b"[" * 5000 + b"]" * 5000 + b"}", None),
        ("unknown kind", json.dumps(good | {"id": "h12", "kind": "teleport"}).encode(), "h12"),
        ("binary", bytes(range(256)), None),
        ("empty", b"", None),
    ]


def test_hostile_payloads_are_answered_and_the_device_keeps_serving(rig):
    device, publisher, watcher, _ = rig
    now = send_history(publisher, watcher)
    cases = hostile_payloads(now)
    for _, raw, _ in cases:
        publisher.publish(raw)
    assert watcher.wait_for(lambda w: len(w.errors) >= len(cases), 5), watcher.errors
    assert len(watcher.errors) == len(cases)
    for (name, _, event_id), error in zip(cases, watcher.errors, strict=False):
        assert error.event_id == event_id, name
        assert error.reason, name
    publisher.publish(event_factory.glucose("after-1", "p-1", now, 160))
    assert watcher.wait_for(lambda w: w.suggestion_for("after-1"), 2)
    assert db_rows(device, "SELECT COUNT(*) FROM events")[0][0] == 11  # nothing hostile was stored
    assert device.status().state == "online"


def test_duplicate_id_is_counted_once(rig):
    device, publisher, watcher, _ = rig
    now = send_history(publisher, watcher)
    event = event_factory.glucose("dup-1", "p-1", now, 150)
    for _ in range(3):
        publisher.publish(event)
    publisher.publish(event_factory.glucose("dup-2", "p-1", now, 151))
    assert watcher.wait_for(lambda w: w.suggestion_for("dup-2"), 3)
    assert [s.event_id for s in watcher.suggestions].count("dup-1") == 1
    assert db_rows(device, "SELECT COUNT(*) FROM events WHERE id = 'dup-1'")[0][0] == 1


STREAM = 60


def stream_events(now: datetime) -> list[Event]:
    """Fresh glucose readings of three patients, a few seconds apart, plus meals."""
    out = []
    for i in range(STREAM):
        patient = f"p-{i % 3 + 1}"
        ts = now - timedelta(seconds=STREAM - i)
        out.append(event_factory.glucose(f"s-{i:03d}", patient, ts, 120 + i))
        if i % 10 == 0:
            out.append(event_factory.meal(f"m-{i:03d}", patient, ts))
    return out


def assert_nothing_lost(device, watcher, accepted: list[Event]) -> int:
    """Every accepted event stored, every decision answered; returns how many answers came twice.

    Answers are delivered at least once (QoS 1): after a restart of the device or the broker,
    or a cut link, an answer may come twice, and then it must be the same answer, same id.
    """
    decisions = {e.id for e in accepted if e.kind == "glucose"}
    watcher.wait_for(lambda w: {s.event_id for s in w.suggestions} >= decisions, 20)
    stored = {r[0] for r in db_rows(device, "SELECT id FROM events")}
    assert {e.id for e in accepted} - stored == set(), "accepted events were lost"
    assert decisions - {s.event_id for s in watcher.suggestions} == set(), "decisions without a suggestion"
    counts = Counter(s.id for s in watcher.suggestions)
    repeated = {k: v for k, v in counts.items() if v > 1}
    assert_repeats_identical(watcher)
    assert len(db_rows(device, "SELECT id FROM suggestions")) == len(counts)
    return sum(v - 1 for v in repeated.values())


def stream_with_fault(publisher, at: float, fault, before_publish: bool) -> list[Event]:
    """Three patients' history, then a stream of readings with ``fault()`` part-way; returns all events."""
    now = datetime.now(UTC)
    accepted = [e for p in ("p-1", "p-2", "p-3") for e in event_factory.history(p, now)]
    for event in accepted:
        publisher.publish(event)
    stream = stream_events(now)
    for i, event in enumerate(stream):
        if before_publish and i == int(len(stream) * at):
            fault()
        publisher.publish(event)
        if not before_publish and i == int(len(stream) * at):
            time.sleep(0.05)
            fault()
        time.sleep(0.005)
    return accepted + stream


def test_kill_9_mid_stream_then_restart_loses_nothing(rig):
    device, publisher, watcher, _ = rig
    # mid-stream, no clean-up; the rest waits at the broker
    accepted = stream_with_fault(publisher, 1 / 3, device.kill, before_publish=False)
    publisher.flush()
    device.start()
    assert_nothing_lost(device, watcher, accepted)
    assert db_rows(device, "SELECT COUNT(*) FROM events")[0][0] == len(accepted)


def test_broker_restart_mid_stream_loses_nothing(rig):
    device, publisher, watcher, broker = rig
    # clean stop: Mosquitto saves its queue; clients reconnect with backoff
    accepted = stream_with_fault(publisher, 1 / 2, broker.restart, before_publish=True)
    assert publisher.connected.wait(15), "the sensor did not reconnect"
    publisher.flush()
    assert_nothing_lost(device, watcher, accepted)
    assert device.status().broker_connected


def test_network_cut_mid_stream_loses_nothing(mosquitto, tmp_path):
    """The device's link to the broker goes through a proxy that drops every connection for 2 s."""
    proxy = CuttableProxy(mosquitto.port)
    broker = BrokerConfig(url=mosquitto.url)
    watcher = DeviceWatcher(broker, DEVICE, client_id="test-watcher-net", persistent=True)
    assert watcher.subscribed.wait(5)
    device = DeviceProcess(tmp_path / "state", f"mqtt://127.0.0.1:{proxy.port}", DEVICE).start()
    publisher = EventPublisher(broker, DEVICE, client_id="test-sensor-net")
    publisher.wait_connected()
    try:

        def cable_pulled() -> None:
            proxy.cut()
            threading.Timer(2.0, proxy.restore).start()

        accepted = stream_with_fault(publisher, 1 / 3, cable_pulled, before_publish=False)
        publisher.flush()
        assert_nothing_lost(device, watcher, accepted)
        assert proxy.connections >= 2, "the device never reconnected through the proxy"
        assert db_rows(device, "SELECT COUNT(*) FROM events")[0][0] == len(accepted)
    finally:
        publisher.close()
        watcher.close()
        device.stop()
        proxy.close()


@contextmanager
def locked_database_rig(mosquitto, tmp_path, name: str, config_text: str):
    """A device with ``config_text``, a watcher, a sensor and a connection that can lock the device's SQLite."""
    broker = BrokerConfig(url=mosquitto.url)
    watcher = DeviceWatcher(broker, DEVICE, client_id=f"test-watcher-{name}", persistent=True)
    assert watcher.subscribed.wait(5)
    config = tmp_path / "device.toml"
    config.write_text(config_text)
    device = DeviceProcess(tmp_path / "state", mosquitto.url, DEVICE, extra=("--config", str(config))).start()
    publisher = EventPublisher(broker, DEVICE, client_id=f"test-sensor-{name}")
    publisher.wait_connected()
    blocker = sqlite3.connect(device.state_dir / "advisor.sqlite3", isolation_level=None)
    try:
        yield device, publisher, watcher, blocker
    finally:
        blocker.close()
        publisher.close()
        watcher.close()
        device.stop()


def test_locked_database_suggests_from_memory_then_stores_everything(mosquitto, tmp_path):
    """Another process holds SQLite's write lock mid-stream; the device keeps suggesting and catches up."""
    with locked_database_rig(mosquitto, tmp_path, "db", "db_busy_timeout_s = 0.2\n") as rig:
        device, publisher, watcher, blocker = rig
        now = datetime.now(UTC)
        history = event_factory.history("p-db", now - timedelta(minutes=30))
        for event in history:
            publisher.publish(event)
        assert watcher.wait_for(lambda w: len([s for s in w.suggestions if s.patient == "p-db"]) >= 5, 60)
        blocker.execute("BEGIN EXCLUSIVE")
        held = [event_factory.glucose(f"db-{i}", "p-db", now - timedelta(minutes=5 - i), 160) for i in range(4)]
        for event in held:
            publisher.publish(event)
        assert watcher.wait_for(lambda w: all(w.suggestion_for(e.id) for e in held), 60), "no suggestion from memory"
        assert watcher.wait_for(lambda w: any("suggesting from memory" in e.reason for e in w.errors), 60)
        assert "locked" in device.status().storage_problem
        blocker.execute("ROLLBACK")
        deadline = time.monotonic() + 15
        while device.status().storage_problem and time.monotonic() < deadline:
            time.sleep(0.2)
        assert device.status().storage_problem is None, "the device did not recover"
        stored = {r[0] for r in db_rows(device, "SELECT id FROM events")}
        assert {e.id for e in history + held} <= stored
        device.kill()  # whatever the broker still holds comes back; an answer may come twice, never differ
        device.start()
        after = event_factory.glucose("db-after", "p-db", datetime.now(UTC), 150)
        publisher.publish(after)
        assert watcher.wait_for(lambda w: w.suggestion_for("db-after"), 10)
        assert_repeats_identical(watcher)
        assert len(db_rows(device, "SELECT id FROM suggestions WHERE event_id LIKE 'db-%'")) == 5


def test_memory_holds_at_most_max_held_events_then_the_broker_keeps_the_rest(mosquitto, tmp_path):
    with locked_database_rig(mosquitto, tmp_path, "cap", "db_busy_timeout_s = 0.1\nmax_held_events = 10\n") as rig:
        device, publisher, watcher, blocker = rig
        now = datetime.now(UTC)
        for event in event_factory.history("p-cap", now - timedelta(minutes=60)):
            publisher.publish(event)
        marker = EndMarker.new("history")  # handled in order: once refused, the whole history is stored
        publisher.publish(marker.payload)
        assert watcher.wait_for(marker.seen, 60)  # else a last dose still in flight would take a held slot
        blocker.execute("BEGIN EXCLUSIVE")
        readings = [
            event_factory.glucose(f"cap-{i:02d}", "p-cap", now - timedelta(seconds=300 - i), 150) for i in range(40)
        ]
        for event in readings:
            publisher.publish(event)
        publisher.flush()
        # each held event first waits out the 0.1 s busy timeout: on a loaded machine that takes a while
        assert watcher.wait_for(lambda w: sum(1 for e in readings if w.suggestion_for(e.id)) >= 10, 60)
        peak = 0
        for _ in range(10):
            peak = max(peak, device.status().held_in_memory)
            time.sleep(0.1)
        assert peak == 10, "memory should hold exactly the configured number of events"
        assert sum(1 for e in readings if watcher.suggestion_for(e.id)) == 10  # the rest wait at the broker
        blocker.execute("ROLLBACK")
        assert watcher.wait_for(lambda w: all(w.suggestion_for(e.id) for e in readings), 60)
        stored = {r[0] for r in db_rows(device, "SELECT id FROM events WHERE id LIKE 'cap-%'")}
        assert stored == {e.id for e in readings}
        counts = Counter(s.id for s in watcher.suggestions)
        assert not {k: v for k, v in counts.items() if v > 1}, "suggestions repeated"
        assert device.status().held_in_memory == 0 and device.status().storage_problem is None


def wait_until(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.e2e
def test_an_unreachable_broker_is_reported_at_once_then_the_device_connects(tmp_path):
    """No silent retrying: the console and the page say what failed and when the next try comes."""
    port = free_port()
    device = DeviceProcess(tmp_path / "state", f"mqtt://127.0.0.1:{port}", "bed-lost").launch()
    broker = MosquittoBroker(tmp_path / "mosquitto", port=port)
    try:
        said = f"cannot reach the broker at mqtt://127.0.0.1:{port}: connection refused"
        assert wait_until(lambda: said in device.log.read_text(), 3.0), device.log.read_text()
        assert re.search(r"trying again in \d+ s", device.log.read_text())
        assert wait_until(lambda: _page_status(device) is not None, 5.0)
        status = _page_status(device)
        assert status.state == "starting" and not status.broker_connected
        assert status.broker_problem is not None and said in status.broker_problem
        broker.start()
        assert wait_until(lambda: (s := _page_status(device)) is not None and s.state == "online", 15.0)
        assert _page_status(device).broker_problem is None
    finally:
        device.stop()
        broker.stop()


def _page_status(device: DeviceProcess):
    try:
        return device.status()
    except OSError:
        return None
