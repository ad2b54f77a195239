"""Faults of the device's own machine, on the real core and SQLite: the wall clock jumping
forward and back, and the database locked or the disk full. No accepted event is lost and no
suggestion is repeated; every refusal says why."""

from __future__ import annotations

import sqlite3
import subprocess
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from device.advisor import Advisor
from device.config import SafetyConfig
from device.models.bundle import default_bundle_path, open_bundle
from device.models.choice import ModelSlot
from device.models.inference import DoseModel
from device.state.store import Store

from . import event_factory
from .conftest import IN_CI

REAL = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def dose_model() -> DoseModel:
    return DoseModel(open_bundle(default_bundle_path("dose")))


def glucose(event_id: str, ts: datetime, mg_dl: float = 170) -> bytes:
    return event_factory.raw(event_factory.glucose(event_id, "p-1", ts, mg_dl))


def test_wall_clock_jumping_forward_and_back(tmp_path, dose_model):
    offset = [timedelta(0)]
    store = Store(tmp_path / "state.sqlite3")
    advisor = Advisor(store, ModelSlot(dose_model), SafetyConfig(), "wall", wall_clock=lambda: REAL + offset[0])
    for event in event_factory.history("p-1", REAL):
        advisor.handle(event_factory.raw(event), 0.0)
    accepted, outcomes = [], {}

    def send(event_id: str, minutes: float) -> None:
        outcome = advisor.handle(glucose(event_id, REAL + timedelta(minutes=minutes)), 0.0)
        outcomes[event_id] = outcome
        if outcome.event is not None:
            accepted.append(event_id)

    send("before", 0)
    assert outcomes["before"].suggestion.status == "suggest"
    offset[0] = timedelta(hours=6)  # the device's clock jumps 6 h ahead of the sensors
    send("ahead", 1)
    ahead = outcomes["ahead"].suggestion
    assert ahead.status == "insufficient_data" and "stale_glucose" in ahead.rules
    offset[0] = timedelta(days=-1)  # then a day behind: new readings look like the future
    send("behind", 2)
    errors = outcomes["behind"].errors
    assert outcomes["behind"].event is None and "in the future" in errors[0].reason
    offset[0] = timedelta(0)  # clock fixed (NTP): the sensor's retry and new readings go through
    send("behind", 2)
    send("after", 3)
    assert outcomes["after"].suggestion.status == "suggest"
    stored = {r[0] for r in sqlite3.connect(tmp_path / "state.sqlite3").execute("SELECT id FROM events")}
    assert set(accepted) <= stored and {"before", "ahead", "behind", "after"} <= stored
    ids = [r[0] for r in sqlite3.connect(tmp_path / "state.sqlite3").execute("SELECT id FROM suggestions")]
    assert len(ids) == len(set(ids)) and Counter(ids)["s-ahead"] == 1


def rows(path, sql: str) -> list[tuple]:
    with sqlite3.connect(path, timeout=0.1) as db:
        return db.execute(sql).fetchall()


@pytest.fixture()
def small_disk(tmp_path):
    """A 1 MiB tmpfs for the state folder, so the disk can really fill up (needs root, as in CI)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if done.returncode != 0:
        message = f"cannot mount a small tmpfs ({done.stderr.strip()}); run as root"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill_disk(folder) -> object:
    """Write a file until the disk has no room left; returns its path."""
    filler = folder / "filler.bin"
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


@pytest.mark.parametrize("fault", ["locked", pytest.param("full", marks=pytest.mark.e2e)])  # full mounts a tmpfs
def test_database_locked_or_full_keeps_suggesting_from_memory_and_recovers(tmp_path, dose_model, fault, request):
    folder = request.getfixturevalue("small_disk") if fault == "full" else tmp_path
    path = folder / "state.sqlite3"
    store = Store(path, busy_timeout_s=0.1)
    advisor = Advisor(store, ModelSlot(dose_model), SafetyConfig(), "wall", wall_clock=lambda: REAL)
    for event in event_factory.history("p-1", REAL - timedelta(minutes=10)):
        advisor.handle(event_factory.raw(event), 0.0)
    blocker = filler = None
    if fault == "locked":  # another process holds the write lock (a backup, a sqlite3 shell)
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
    else:  # the SD card is full
        filler = fill_disk(folder)
    outcomes = [advisor.handle(glucose(f"held-{i}", REAL - timedelta(minutes=3 - i)), 0.0) for i in range(3)]
    for outcome in outcomes:
        assert outcome.unstored and ("locked" in outcome.unstored or "full" in outcome.unstored)
        assert outcome.suggestion is not None and outcome.suggestion.status == "suggest"  # from memory
    assert advisor.writes.held == 6  # three events, three suggestion records
    again = advisor.handle(glucose("held-1", REAL - timedelta(minutes=2)), 0.0)  # a redelivery meanwhile
    assert again.suggestion is None and again.unstored
    assert advisor.writes.flush() is not None  # still refused
    if blocker is not None:
        blocker.execute("ROLLBACK")
        blocker.close()
    else:
        filler.unlink()
    assert advisor.writes.flush() is None and advisor.writes.held == 0
    stored = {r[0] for r in rows(path, "SELECT id FROM events")}
    assert {"held-0", "held-1", "held-2"} <= stored
    assert sorted(r[0] for r in rows(path, "SELECT event_id FROM suggestions WHERE event_id LIKE 'held-%'")) == [
        "held-0",
        "held-1",
        "held-2",
    ]
    after = advisor.handle(glucose("held-1", REAL - timedelta(minutes=2)), 0.0)  # the broker's redelivery
    assert after.unstored is None and after.suggestion is None
    fresh = advisor.handle(glucose("fresh", REAL), 0.0)
    assert fresh.unstored is None and fresh.suggestion.status == "suggest"


@pytest.mark.e2e  # mounts a tmpfs
def test_a_full_disk_is_said_on_the_page_and_never_answered_500(small_disk, tmp_path, mosquitto):
    """Sign-in and confirmation answer 503 'not recorded', status names the problem, and a patient first
    seen during the outage is on the page with the answer that went out."""
    from device.config import BrokerConfig, DeviceConfig, HttpConfig
    from device.contract.messages import ConfirmDose, SignIn
    from device.page.users import hash_pin
    from device.service import DeviceService
    from tools.mqtt_kit.client import DeviceWatcher, EventPublisher

    from .page_kit import dose_waiting

    broker = BrokerConfig(url=mosquitto.url)
    config = DeviceConfig(device_id="bed-full", broker=broker, http=HttpConfig(port=0), state_dir=small_disk / "state")
    service = DeviceService(config)
    service.store.add_user("ann", "nurse", hash_pin("4711"))
    service.start()
    publisher, watcher = EventPublisher(broker, "bed-full"), DeviceWatcher(broker, "bed-full")
    filler = None
    try:
        assert service.ready.wait(10)
        watcher.wait_subscribed(5)
        publisher.wait_connected()
        page = _Page(service)
        token = page.session()
        assert page.post("/api/sign-in", SignIn("ann", "4711"), token)[0] == 200
        suggestion = dose_waiting(None, publisher, watcher, "p-full", "g-full")
        filler = fill_disk(small_disk)
        status, body = page.post(
            "/api/patients/p-full/confirm", ConfirmDose(suggestion.id, suggestion.units, eating=True), token
        )
        assert status == 503 and "not recorded" in body and "record on paper" in body, body
        status, body = page.post("/api/sign-in", SignIn("ann", "0000"), page.session())
        assert status in (401, 503), body  # a wrong PIN is still refused; its audit row cannot be written
        assert service.page.status().storage_problem is not None, "the page's footer says the database is unavailable"
        publisher.publish(event_factory.glucose("g-new", "p-new", datetime.now(UTC), 150))
        assert watcher.wait_for(lambda w: w.suggestion_for("g-new"), 10)
        assert service.page.has_patient("p-new"), "first seen during the outage: on the page, not 404"
        assert service.page.patient_view("p-new").suggestion is not None
    finally:
        if filler is not None:
            filler.unlink()
        publisher.close()
        watcher.close()
        service.stop()


class _Page:
    """The bedside page's HTTP API as a browser uses it (a session token, JSON in and out)."""

    def __init__(self, service) -> None:
        import http.client

        self._connect = lambda: http.client.HTTPConnection("127.0.0.1", service.web.address[1], timeout=10)
        self.host = f"127.0.0.1:{service.web.address[1]}"

    def session(self) -> str:
        connection = self._connect()
        connection.request("GET", "/api/session", headers={"Host": self.host})
        token = connection.getresponse().read().decode().split('"token": "')[1].split('"')[0]
        connection.close()
        return token

    def post(self, path: str, message, token: str) -> tuple[int, str]:
        connection = self._connect()
        headers = {"Host": self.host, "Content-Type": "application/json", "X-Advisor-Session": token}
        connection.request("POST", path, body=message.to_json(), headers=headers)
        response = connection.getresponse()
        answer = response.status, response.read().decode()
        connection.close()
        return answer
