"""The bedside page exposed on a network: actions need the device PIN; guessing is locked out."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from device.config import BrokerConfig
from device.contract.messages import ConfirmDose
from device.page.auth import ActionGuard
from tools.mqtt_kit.client import DeviceWatcher, EventPublisher

from . import event_factory
from .conftest import ROOT
from .device_process import DeviceProcess

DEVICE = "bed-pin"
PIN = "ward-pin-4821"


def test_guard_allows_everything_without_a_token():
    assert ActionGuard(None).check(None).allowed and not ActionGuard(None).required


def test_guard_needs_the_token_and_locks_out_guessing():
    now = [100.0]
    guard = ActionGuard(PIN, clock=lambda: now[0], max_failures=5, lockout_s=60)
    assert guard.required
    assert (guard.check(None).status, guard.check(PIN).allowed) == (401, True)
    for _ in range(4):
        assert guard.check("000000").status == 401
    locked = guard.check("111111")
    assert locked.status == 429 and "locked for 60 s" in locked.reason
    assert guard.check(PIN).status == 429  # even the right PIN waits out the lock
    now[0] += 61
    assert guard.check(PIN).allowed
    assert guard.check("000000").status == 401  # the count started again after the success


@pytest.fixture()
def exposed(mosquitto, tmp_path):
    """A device whose page listens on every address with a PIN, and a suggestion waiting on it."""
    device = DeviceProcess(
        tmp_path / "state", mosquitto.url, DEVICE, extra=("--http", "0.0.0.0:0"), env={"ADVISOR_PAGE_TOKEN": PIN}
    )
    device.start()
    broker = BrokerConfig(url=mosquitto.url)
    watcher = DeviceWatcher(broker, DEVICE)
    publisher = EventPublisher(broker, DEVICE)
    try:
        publisher.wait_connected()
        assert watcher.subscribed.wait(5)
        now = datetime.now(UTC)
        for event in event_factory.history("p-pin", now):
            publisher.publish(event)
        publisher.publish(event_factory.glucose("pin-g", "p-pin", now, 180))
        assert watcher.wait_for(lambda w: w.suggestion_for("pin-g"), 10)
        yield device, watcher.suggestion_for("pin-g")
    finally:
        publisher.close()
        watcher.close()
        device.stop()


def test_an_exposed_device_records_doses_only_with_its_pin(exposed):
    device, suggestion = exposed
    assert device.status().actions_need_pin is True
    body = ConfirmDose(suggestion.id, suggestion.units, eating=True)
    assert device.post("api/patients/p-pin/confirm", body)[0] == 401
    status, answer = device.post("api/patients/p-pin/confirm", body, "wrong-pin")
    assert status == 401 and answer.error == "wrong PIN"
    status, answer = device.post("api/patients/p-pin/confirm", body, PIN)
    assert status == 200 and answer.ok is True
    assert PIN not in device.log.read_text()


@pytest.mark.e2e
def test_exposing_the_page_without_a_pin_is_refused_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "ADVISOR_PAGE_TOKEN"}
    proc = subprocess.run(
        [sys.executable, "-m", "tools.cli.main", "device", "run", "--http", "0.0.0.0:0", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "reachable from the network: set http.token" in proc.stderr and "Traceback" not in proc.stderr


def test_the_page_asks_for_the_pin_and_records_with_it(browser, exposed):
    device, _ = exposed
    page = browser.new_page(viewport={"width": 800, "height": 480})
    prompts: list[str] = []

    def answer(dialog):
        prompts.append(dialog.message)
        dialog.accept("wrong-pin" if len(prompts) == 1 else PIN)

    page.on("dialog", answer)
    page.goto(device.url + "?patient=p-pin")
    page.wait_for_function("() => document.getElementById('status-word').textContent === 'Suggested dose'")
    page.get_by_role("button", name="Dose given").click()
    page.wait_for_function("() => document.getElementById('message').textContent.startsWith('Not recorded')")
    assert "wrong PIN" in page.inner_text("#message") and len(prompts) == 1
    page.get_by_role("button", name="Dose given").click()
    page.wait_for_function("() => document.getElementById('message').textContent.startsWith('Recorded')")
    assert len(prompts) == 2 and "device PIN" in prompts[1]
    page.close()
