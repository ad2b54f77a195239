"""What the page calls recorded is recorded: through a silent link outage and a kill -9.

The device reaches the broker through a proxy that can stall: connections stay open, no byte goes
through either way (a switch dropping packets). A dose confirmed on the page in that moment must
be in the device's SQLite before the page hears "ok", so a kill -9 before the link returns loses
nothing; and the device must notice the dead link within seconds, so the page stops accepting.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from device.config import BrokerConfig
from device.contract.messages import ConfirmDose
from tools.mqtt_kit.client import DeviceWatcher, EventPublisher

from . import event_factory
from .device_process import DeviceProcess
from .page_kit import dose_waiting, rows
from .tcp_proxy import CuttableProxy

pytestmark = pytest.mark.e2e
DEVICE = "bed-s"


def test_a_dose_confirmed_in_a_silent_outage_survives_kill_9(mosquitto, tmp_path):
    proxy = CuttableProxy(mosquitto.port)
    broker = BrokerConfig(url=mosquitto.url)
    state = tmp_path / "state"
    device = DeviceProcess(state, f"mqtt://127.0.0.1:{proxy.port}", DEVICE).start()
    publisher, watcher = EventPublisher(broker, DEVICE), DeviceWatcher(broker, DEVICE)
    try:
        publisher.wait_connected()
        assert watcher.subscribed.wait(5)
        suggestion = dose_waiting(device, publisher, watcher, "p-s", "g-s")
        proxy.stall()  # the link dies silently: the device still believes it is connected
        status, done = device.post(
            "api/patients/p-s/confirm", ConfirmDose(suggestion.id, suggestion.units, eating=True)
        )
        assert status == 200 and done.ok, done
        device.kill()  # before the link returns: nothing the broker would have carried is there
        proxy.restore()
        given = rows(device, "SELECT id, payload FROM events WHERE id = ?", done.event["id"])
        assert len(given) == 1 and json.loads(given[0][1])["units"] == suggestion.units
        assert rows(device, "SELECT action FROM responses WHERE suggestion_id = ?", suggestion.id) == [("given",)]

        again = DeviceProcess(state, f"mqtt://127.0.0.1:{proxy.port}", DEVICE).start()
        device = again
        publisher.publish(event_factory.glucose("g-s2", "p-s", datetime.now(UTC) + timedelta(seconds=1), 190))
        assert watcher.wait_for(lambda w: w.suggestion_for("g-s2"), 10)
        after = watcher.suggestion_for("g-s2")
        assert after.status != "suggest" or after.units < suggestion.units, "the next answer knows the dose"
        assert after.iob_units >= suggestion.units * 0.9, after
    finally:
        publisher.close()
        watcher.close()
        device.stop()
        proxy.close()


def test_a_dead_link_is_noticed_within_seconds_and_the_page_stops_recording(mosquitto, tmp_path):
    proxy = CuttableProxy(mosquitto.port)
    device = DeviceProcess(tmp_path / "state", f"mqtt://127.0.0.1:{proxy.port}", DEVICE).start()
    try:
        assert device.status().broker_connected
        proxy.stall()
        stalled = time.monotonic()
        deadline = stalled + 30
        while device.status().broker_connected and time.monotonic() < deadline:
            time.sleep(0.2)
        noticed_s = time.monotonic() - stalled
        assert not device.status().broker_connected, "the device never noticed the dead link"
        assert noticed_s < 15, f"noticed after {noticed_s:.1f} s (keepalive 5 s: at most about 10 s)"
        status, refused = device.post(
            "api/events", event_factory.raw(event_factory.glucose("e1", "p", datetime.now(UTC), 120))
        )
        assert status == 503 and "record on paper" in refused.error
        assert rows(device, "SELECT count(*) FROM events")[0][0] == 0
    finally:
        device.stop()
        proxy.close()
