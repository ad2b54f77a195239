"""The device attacked from outside, through its MQTT topics and its page (issue 12's findings).

A real device (in this process, so its page's socket timeout can be shortened) on a real
Mosquitto; a hostile sender on the broker, raw sockets and ``http.client`` play the attacker:
DNS rebinding and cross-site actions, slow and idle sockets, malformed requests, look-alike
patient ids, offsets and dates that shift or fake time, duplicate doses. (Lost suggestions:
test_delivery.py; bundle transfers: test_ota_attack.py.)"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

from device.config import BrokerConfig, DeviceConfig, HttpConfig
from device.contract.messages import Acknowledge, ActionDone, ApiError, PatientList, PatientView
from device.page import server as web
from device.service import DeviceService
from domain.events import Event, Insulin, Kind
from tools.mqtt_kit.client import DeviceWatcher, EventPublisher

from . import event_factory

DEVICE = "bed-page"


@pytest.fixture()
def served(mosquitto, tmp_path, monkeypatch):
    """A running device whose page drops a silent client after 1 s; a reading already answered."""
    monkeypatch.setattr(web._Handler, "timeout", 1.0)
    broker = BrokerConfig(url=mosquitto.url)
    service = DeviceService(
        DeviceConfig(device_id=DEVICE, broker=broker, http=HttpConfig(port=0), state_dir=tmp_path / "state")
    )
    service.start()
    watcher = DeviceWatcher(broker, DEVICE)
    publisher = EventPublisher(broker, DEVICE)
    try:
        assert service.ready.wait(10)
        watcher.wait_subscribed(5)
        publisher.wait_connected()
        publisher.publish(event_factory.glucose("g-1", "p-1", datetime.now(UTC), 150))
        assert watcher.wait_for(lambda w: w.suggestion_for("g-1"), 10)
        yield service
    finally:
        publisher.close()
        watcher.close()
        service.stop()


def request(
    service: DeviceService, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    port = service.web.address[1]
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def session(service: DeviceService) -> str:
    status, _, body = request(service, "GET", "/api/session")
    assert status == 200
    return body.decode().split('"token": "')[1].split('"')[0]


ACK = Acknowledge("s-g-1").to_json()


def test_a_page_rebound_to_the_device_address_cannot_act_or_read(served):
    """The finding: Host and Origin of another site, no PIN on loopback → a dose was recorded."""
    port = served.web.address[1]
    attacker = {
        "Host": f"attacker.example:{port}",
        "Origin": f"http://attacker.example:{port}",
        "Content-Type": "application/json",
    }
    for path in ("/api/patients/p-1/acknowledge", "/api/patients/p-1/confirm"):
        status, _, body = request(served, "POST", path, ACK, attacker)
        assert status == 421 and b"attacker.example" in body, body
    assert request(served, "GET", "/api/status", headers={"Host": f"attacker.example:{port}"})[0] == 421
    assert request(served, "GET", "/api/status", headers={"Host": f"127.0.0.1:{port + 1}"})[0] == 421
    assert served.store.audit_rows("acknowledged") == []


def test_actions_need_the_pages_origin_and_session(served):
    port = served.web.address[1]
    own = {"Host": f"127.0.0.1:{port}", "Content-Type": "application/json"}
    status, _, body = request(served, "POST", "/api/patients/p-1/acknowledge", ACK, own)
    assert status == 403 and "session" in ApiError.from_json(body).error  # curl on loopback, no session
    token = session(served)
    cross = {**own, "X-Advisor-Session": token, "Origin": "http://evil.example"}
    assert request(served, "POST", "/api/patients/p-1/acknowledge", ACK, cross)[0] == 403
    ok = {**own, "X-Advisor-Session": token, "Origin": f"http://127.0.0.1:{port}"}
    status, _, body = request(served, "POST", "/api/patients/p-1/acknowledge", ACK, ok)
    assert status == 200 and ActionDone.from_json(body).ok
    assert len(served.store.audit_rows("acknowledged")) == 1
    localhost = {"Host": f"localhost:{port}", "X-Advisor-Session": token, "Content-Type": "application/json"}
    status, _, body = request(served, "POST", "/api/patients/p-1/acknowledge", ACK, localhost)
    assert status == 409 and "already acknowledged" in ApiError.from_json(body).error  # let in; acted on once


def test_malformed_requests_get_a_clear_answer(served):
    port = served.web.address[1]
    base = {"Host": f"127.0.0.1:{port}", "Content-Type": "application/json", "X-Advisor-Session": session(served)}
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(
            b"POST /api/patients/p-1/acknowledge HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
            b"Content-Type: application/json\r\nContent-Length: abc\r\n\r\n" % port
        )
        answer = raw.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400") and b"Content-Length" in answer
    status, headers, body = request(served, "HEAD", "/", headers={"Host": f"127.0.0.1:{port}"})
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 1000
    status, headers, _ = request(served, "OPTIONS", "/api/status", headers={"Host": f"127.0.0.1:{port}"})
    assert status == 204 and "POST" in headers["Allow"] and "Access-Control-Allow-Origin" not in headers
    status, headers, _ = request(served, "GET", "/api/status", headers={"Host": f"127.0.0.1:{port}"})
    assert headers["Server"].startswith("advisor-bedside") and "Python" not in headers["Server"]
    assert request(served, "POST", "/api/patients/p-1/acknowledge", b"{}", {**base, "Content-Length": "0"})[0] == 400
    with socket.create_connection(("127.0.0.1", port), timeout=5) as stream:
        stream.sendall(b"GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port)
        head = stream.recv(4096)
    assert b"text/event-stream" in head and b"X-Content-Type-Options: nosniff" in head


def test_a_body_shorter_than_announced_does_not_hold_a_thread(served):
    port = served.web.address[1]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(
            b"POST /api/patients/p-1/acknowledge HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"sugg' % port
        )
        started = time.monotonic()
        assert raw.recv(4096) == b""  # the server gives up on the body and closes
        assert time.monotonic() - started < 4


def test_idle_sockets_are_capped_and_dropped(served):
    port = served.web.address[1]
    before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(web.MAX_CONNECTIONS + 36)]
    try:
        time.sleep(0.3)
        assert threading.active_count() <= before + web.MAX_CONNECTIONS + 2  # no thread per extra socket
        busy = idle[-1].recv(4096)
        assert busy.startswith(b"HTTP/1.1 503")  # over the cap: answered at once, not queued
        time.sleep(1.5)  # the idle ones time out
        status, _, _ = request(served, "GET", "/api/status", headers={"Host": f"127.0.0.1:{port}"})
        assert status == 200
    finally:
        for s in idle:
            s.close()


def test_lookalike_patients_through_the_broker(served, mosquitto):
    """``p1\\n`` is no id; ``P1`` beside ``p1`` is refused; ``pl`` is accepted with a warning the page shows."""
    broker = BrokerConfig(url=mosquitto.url)
    watcher = DeviceWatcher(broker, DEVICE)
    publisher = EventPublisher(broker, DEVICE, client_id="lookalike-sender")
    try:
        watcher.wait_subscribed(5)
        publisher.wait_connected()
        now = datetime.now(UTC).isoformat()
        publisher.publish(b'{"id": "nl-1", "patient": "p-1\\n", "ts": "%s", "kind": "request"}' % now.encode())
        publisher.publish(event_factory.glucose("case-1", "P-1", datetime.now(UTC), 150))
        publisher.publish(event_factory.glucose("look-1", "p-l", datetime.now(UTC), 150))
        assert watcher.wait_for(lambda w: len(w.errors) >= 3 and w.suggestion_for("look-1"), 10), watcher.errors
        by_id = {e.event_id: e for e in watcher.errors}
        assert by_id["nl-1"].level == "refused" and "'patient' must be" in by_id["nl-1"].reason
        assert by_id["case-1"].level == "refused" and "only in letter case" in by_id["case-1"].reason
        assert by_id["look-1"].level == "warning" and "looks like the known patient 'p-1'" in by_id["look-1"].reason
        assert watcher.suggestion_for("case-1") is None
        port = served.web.address[1]
        status, _, body = request(served, "GET", "/api/patients", headers={"Host": f"127.0.0.1:{port}"})
        listed = PatientList.from_json(body)
        assert status == 200 and (listed.patients, listed.total) == (["p-1", "p-l"], 2)
        status, _, body = request(served, "GET", "/api/patients/p-l", headers={"Host": f"127.0.0.1:{port}"})
        assert status == 200
        assert "looks like the known patient 'p-1'" in PatientView.from_json(body).notices[0]
    finally:
        publisher.close()
        watcher.close()


def test_the_patient_list_comes_a_page_at_a_time(served):
    for i in range(30):
        served.store.note_patient(f"w-{i:03d}")
    port = served.web.address[1]
    host = {"Host": f"127.0.0.1:{port}"}
    first = PatientList.from_json(request(served, "GET", "/api/patients?limit=10", headers=host)[2])
    assert first.total == 31 and first.patients == ["p-1", *[f"w-{i:03d}" for i in range(9)]]
    found = PatientList.from_json(request(served, "GET", "/api/patients?starting=w-02&limit=5", headers=host)[2])
    assert found.patients == [f"w-02{i}" for i in range(5)]
    assert request(served, "GET", "/api/patients?limit=100000", headers=host)[0] == 400
    assert request(served, "GET", "/api/patients?offset=x", headers=host)[0] == 400


def sender_and_watcher(mosquitto, client_id: str) -> tuple[EventPublisher, DeviceWatcher]:
    broker = BrokerConfig(url=mosquitto.url)
    watcher = DeviceWatcher(broker, DEVICE)
    publisher = EventPublisher(broker, DEVICE, client_id=client_id)
    watcher.wait_subscribed(5)
    publisher.wait_connected()
    return publisher, watcher


def test_the_same_instant_gives_the_same_dose_whatever_offset_the_sender_uses(served, mosquitto):
    """Before: +00:00 → 6.85 U, +14:00 → 7.06, −12:00 → 7.20 for one instant; +23:59 accepted."""
    publisher, watcher = sender_and_watcher(mosquitto, "offset-sender")
    try:
        now = datetime.now(UTC).replace(microsecond=0)
        offsets = {"utc": timedelta(0), "east": timedelta(hours=14), "west": timedelta(hours=-12)}
        for name in offsets:
            for event in event_factory.history(f"z-{name}", now):
                publisher.publish(event)
        for name, offset in offsets.items():
            at = now.astimezone(timezone(offset))
            publisher.publish(event_factory.glucose(f"z-{name}-now", f"z-{name}", at, 180))
        publisher.publish(
            b'{"id": "z-bad", "patient": "z-utc", "ts": "%s", "kind": "request"}'
            % now.isoformat().replace("+00:00", "+23:59").encode()
        )
        ids = [f"z-{name}-now" for name in offsets]
        assert watcher.wait_for(lambda w: all(w.suggestion_for(i) for i in ids) and w.error_for_id("z-bad"), 10)
        answers = [watcher.suggestion_for(i) for i in ids]
        assert len({(s.model_units, s.units, s.status) for s in answers}) == 1, answers
        assert all(s.ts.endswith("+00:00") for s in answers)  # decided in ward time (UTC here)
        flagged = {e.event_id for e in watcher.errors if e.level == "warning" and "ward's" in e.reason}
        assert flagged == {"z-east-now", "z-west-now"}
        assert "no time zone uses" in watcher.error_for_id("z-bad").reason
    finally:
        publisher.close()
        watcher.close()


def test_readings_from_an_unset_clock_are_refused(served, mosquitto):
    publisher, watcher = sender_and_watcher(mosquitto, "epoch-sender")
    try:
        for event_id, ts in (("e-1900", "1900-01-01T00:00:00+00:00"), ("e-1970", "1970-01-01T00:00:00+00:00")):
            publisher.publish(
                b'{"id": "%s", "patient": "p-1", "ts": "%s", "kind": "glucose", "mg_dl": 120}'
                % (event_id.encode(), ts.encode())
            )
        assert watcher.wait_for(lambda w: w.error_for_id("e-1900") and w.error_for_id("e-1970"), 10)
        assert all("earliest date this device accepts" in watcher.error_for_id(i).reason for i in ("e-1900", "e-1970"))
        assert watcher.suggestion_for("e-1970") is None
        assert not served.store.has_event("e-1970")
    finally:
        publisher.close()
        watcher.close()


def test_a_likely_duplicate_dose_is_flagged_on_errors_and_the_page(served, mosquitto):
    """Before: two insulin events, different ids, same time and units: both counted without a word."""
    publisher, watcher = sender_and_watcher(mosquitto, "dose-sender")
    try:
        at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
        for event_id in ("pen-1", "pump-1"):
            publisher.publish(
                Event(id=event_id, patient="p-1", ts=at, kind=Kind.INSULIN, insulin=Insulin.REGULAR, units=4.0)
            )
        publisher.publish(event_factory.glucose("after-doses", "p-1", datetime.now(UTC), 160))
        assert watcher.wait_for(lambda w: w.suggestion_for("after-doses") and w.error_for_id("pump-1"), 10)
        warning = watcher.error_for_id("pump-1")
        assert warning.level == "warning" and "likely duplicate dose" in warning.reason and "'pen-1'" in warning.reason
        assert watcher.error_for_id("pen-1") is None
        assert watcher.suggestion_for("after-doses").iob_units > 4.0  # both are counted: no telling which is real
        port = served.web.address[1]
        _, _, body = request(served, "GET", "/api/patients/p-1", headers={"Host": f"127.0.0.1:{port}"})
        assert any("likely duplicate dose" in n for n in PatientView.from_json(body).notices)
    finally:
        publisher.close()
        watcher.close()


def test_seventy_open_event_streams_leave_room_for_a_nurse(served):
    """70 streams held open (and reopened when refused) once let 1 of 114 nurse requests through."""
    port = served.web.address[1]
    streams, refused = [], 0
    try:
        for _ in range(70):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port)
            head = s.recv(4096)
            if head.startswith(b"HTTP/1.1 503"):
                refused += 1
                s.close()
            else:
                assert b"text/event-stream" in head
                streams.append(s)
        assert len(streams) == web.MAX_STREAMS and refused == 70 - web.MAX_STREAMS
        answers = [request(served, "GET", "/api/status", headers={"Host": f"127.0.0.1:{port}"})[0] for _ in range(40)]
        assert answers == [200] * 40, "every nurse request is served while the streams are open"
    finally:
        for s in streams:
            s.close()


def test_a_corrupt_row_is_said_in_one_line_not_a_traceback(served, caplog):
    """A payload damaged on disk: the page answers 503 naming the corruption; the log has one line, no traceback."""
    port = served.web.address[1]
    served.store._db.execute("UPDATE events SET payload = '{broken' WHERE patient = 'p-1'")
    served.advisor._histories.clear()  # the next view reads the patient back from SQLite
    with caplog.at_level("ERROR", logger="advisor.web"):
        status, _, body = request(served, "GET", "/api/patients/p-1", headers={"Host": f"127.0.0.1:{port}"})
    assert status == 503 and "corrupt event row" in ApiError.from_json(body).error
    assert not any(r.exc_info for r in caplog.records), "logged in one line, without a traceback"
    assert served.page.status().storage_problem is not None
