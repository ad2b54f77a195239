"""``advisor demo``: one command brings up broker, device, replay and page, and stops on Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime

import pytest

from device.config import BrokerConfig, DeviceConfig, HttpConfig
from device.contract.messages import PatientView
from device.service import DeviceService
from tools.mqtt_kit.client import DeviceWatcher, EventPublisher
from tools.ward.broker import EmbeddedBroker

from . import event_factory
from .conftest import ROOT

pytestmark = pytest.mark.e2e  # brokers, device processes and the demo command


def demo_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tools.cli.main", "demo", "--http", "127.0.0.1:0", *args]


def synthetic_env() -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1")
    env.pop("ADVISOR_AIM94_DIR", None)
    return env


def test_demo_replays_a_labelled_synthetic_patient(mosquitto):
    done = subprocess.run(
        demo_command("--interval", "0", "--exit-after-replay"),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=synthetic_env(),
    )
    assert done.returncode == 0, done.stderr
    assert "SYNTHETIC patient 'synthetic-demo'" in done.stderr and "not real data" in done.stderr
    assert re.search(r"bedside page: http://127\.0\.0\.1:\d+/\?patient=synthetic-demo", done.stderr)
    assert "not a certified medical device" in done.stderr
    assert "demo stopped" in done.stderr
    assert re.search(r"device state: \S+ \(temporary: deleted when the demo stops", done.stderr), done.stderr
    assert "clock runs on from the log's last event" in done.stderr


LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ [A-Z]+ (\S+): ")


def loggers(stderr: str) -> set[str]:
    """The logger names of the log lines in a command's output."""
    return {m.group(1) for m in map(LOG_LINE.match, stderr.splitlines()) if m}


def test_demo_on_the_embedded_broker_prints_only_its_own_lines():
    """Without --verbose the libraries stay quiet; with it their lines appear too."""
    command = demo_command("--interval", "0", "--exit-after-replay", "--embedded-broker")
    quiet = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT, env=synthetic_env())
    assert quiet.returncode == 0, quiet.stderr
    assert "broker: embedded (amqtt)" in quiet.stderr and "demo stopped" in quiet.stderr
    assert loggers(quiet.stderr) and all(name.startswith("advisor") for name in loggers(quiet.stderr)), quiet.stderr
    verbose = subprocess.run(
        [*command, "-v"], capture_output=True, text=True, timeout=120, cwd=ROOT, env=synthetic_env()
    )
    assert verbose.returncode == 0, verbose.stderr
    assert any(not name.startswith("advisor") for name in loggers(verbose.stderr)), "--verbose shows libraries"


def test_demo_replays_an_aim94_patient(aim94_dir):
    done = subprocess.run(
        demo_command("--interval", "0", "--exit-after-replay", "--data", str(aim94_dir), "--patient", "3"),
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert "AIM-94 patient 3" in done.stderr and "replay finished" in done.stderr


def test_demo_serves_the_page_and_stops_cleanly_on_ctrl_c(browser, artifacts):
    process = subprocess.Popen(
        demo_command("--interval", "0.05"), stderr=subprocess.PIPE, text=True, cwd=ROOT, env=synthetic_env()
    )
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = process.stderr.readline()
            match = re.search(r"bedside page: (http://\S+?)/\?patient=(\S+)", line)
            if match:
                url, patient = match.group(1), match.group(2)
        assert url, "the demo never printed its page URL"
        page = urllib.request.urlopen(url + "/", timeout=5).read().decode()
        assert "Insulin advisor" in page and "not a certified medical device" in page
        token = json.loads(urllib.request.urlopen(url + "/api/session", timeout=5).read())["token"]
        sign_in = urllib.request.Request(
            url + "/api/sign-in",
            json.dumps({"user": "nurse", "pin": "2468"}).encode(),
            {"Content-Type": "application/json", "X-Advisor-Session": token},
        )
        assert json.loads(urllib.request.urlopen(sign_in, timeout=5).read())["role"] == "nurse"
        view = None
        while time.monotonic() < deadline:
            try:
                request = urllib.request.Request(f"{url}/api/patients/{patient}", headers={"X-Advisor-Session": token})
                view = PatientView.from_json(urllib.request.urlopen(request, timeout=5).read())
            except urllib.error.HTTPError:  # 404 until the patient's first event is stored
                view = None
            if view and view.suggestion and view.risk:
                break
            time.sleep(0.2)
        assert view and view.suggestion.status in ("suggest", "withhold", "insufficient_data", "no_dose_due")
        assert 0 <= view.risk.mortality_1y <= 1 and 0 <= view.risk.readmission_30d <= 1

        # the synthetic demo on the 800×480 bedside display, a nurse signed in: one header line, all on screen
        page = browser.new_page(viewport={"width": 800, "height": 480})
        page.goto(f"{url}/?patient={patient}")
        page.wait_for_function("() => !document.getElementById('synthetic').hidden")
        page.get_by_role("button", name="Sign in").click()
        page.get_by_label("User or badge").fill("nurse")
        page.get_by_label("PIN").fill("2468")
        page.get_by_role("button", name="Sign in", exact=True).last.click()
        page.wait_for_function("() => !document.getElementById('risk').hidden")
        assert page.eval_on_selector("header", "h => h.getBoundingClientRect().height") < 48
        for selector in ("#user-button", "#unit-toggle", "#synthetic", "#day-toggle"):
            assert page.eval_on_selector(selector, "e => e.getBoundingClientRect().right") <= 800, selector
        page.screenshot(path=str(artifacts / "demo-800x480-nurse.png"))
        assert page.eval_on_selector("footer", "f => f.getBoundingClientRect().bottom") <= 480
        page.close()
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(20)
        except subprocess.TimeoutExpired:  # PYTHONFAULTHANDLER: SIGABRT prints every thread's stack
            process.send_signal(signal.SIGABRT)
            stacks = process.communicate(timeout=10)[1][-8000:]
            raise AssertionError(f"the demo did not stop within 20 s of Ctrl-C:\n{stacks}") from None
        assert code == 0
        assert "demo stopped" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()


def test_ctrl_c_during_the_replay_stops_the_demo_at_once():
    """A demo stopped while it replays does not wait for the device to work through what was sent."""
    process = subprocess.Popen(
        demo_command("--interval", "5"), stderr=subprocess.PIPE, text=True, cwd=ROOT, env=synthetic_env()
    )
    try:
        for line in process.stderr:
            if "Press Ctrl-C to stop" in line:
                break
        process.send_signal(signal.SIGINT)
        code = process.wait(20)
        said = process.stderr.read()
        assert code == 0 and "demo stopped" in said
        assert re.search(r"replay stopped: \d+ of \d+ events sent", said), said
    finally:
        if process.poll() is None:
            process.kill()


def test_device_works_on_the_embedded_broker(tmp_path):
    pytest.importorskip("amqtt")
    broker = EmbeddedBroker().start()
    config = DeviceConfig(
        device_id="emb1",
        broker=BrokerConfig(url=broker.url, protocol="3.1.1"),
        http=HttpConfig(port=0),
        state_dir=tmp_path / "state",
    )
    service = DeviceService(config)
    client_config = BrokerConfig(url=broker.url, protocol="3.1.1")
    watcher = DeviceWatcher(client_config, "emb1")
    publisher = EventPublisher(client_config, "emb1", client_id="emb-sensor")
    try:
        service.start()
        assert service.ready.wait(10)
        publisher.wait_connected()
        assert watcher.subscribed.wait(5)
        now = datetime.now(UTC)
        for event in event_factory.history("p-1", now):
            publisher.publish(event)
        publisher.publish(event_factory.glucose("emb-g", "p-1", now, 170))
        assert watcher.wait_for(lambda w: w.suggestion_for("emb-g"), 10)
        assert watcher.suggestion_for("emb-g").status == "suggest"
    finally:
        publisher.close()
        watcher.close()
        service.stop()
        broker.stop()
