"""``import device`` and ``advisor device run`` in an environment with only the ``device`` extra.

``tests/run.sh`` builds that environment (``.venv-device``: the package with ``.[device]``,
nothing else) and exports its interpreter as ``ADVISOR_DEVICE_ONLY_PYTHON``.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime

import pytest

from device.config import BrokerConfig
from tools.mqtt_kit.client import DeviceWatcher, EventPublisher

from . import event_factory
from .conftest import IN_CI, ROOT
from .device_process import DeviceProcess

pytestmark = pytest.mark.e2e  # a separate Python environment and a device process


@pytest.fixture(scope="module")
def device_python() -> str:
    python = os.environ.get("ADVISOR_DEVICE_ONLY_PYTHON")
    if not python:
        message = "ADVISOR_DEVICE_ONLY_PYTHON is not set (run the suite with bash tests/run.sh)"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return python


def run(python: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([python, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_training_stack_is_absent_and_device_imports(device_python):
    probe = run(
        device_python,
        "-c",
        (
            "import importlib.util as u, json, sys\n"
            "absent = [m for m in ('tensorflow', 'pandas', 'sklearn', 'keras') if u.find_spec(m) is None]\n"
            "import device, device.service, device.page.server, device.models.inference, domain.validation\n"
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in {'tensorflow', 'pandas', 'sklearn'})\n"
            "print(json.dumps({'absent': absent, 'loaded': loaded}))"
        ),
    )
    assert probe.returncode == 0, probe.stderr
    result = json.loads(probe.stdout)
    assert result["absent"] == ["tensorflow", "pandas", "sklearn", "keras"]
    assert result["loaded"] == []
    help_text = run(device_python, "-m", "tools.cli.main", "device", "run", "--help")
    assert help_text.returncode == 0 and "--broker" in help_text.stdout
    train = run(device_python, "-m", "tools.cli.main", "train", "dose", "--data", str(ROOT), "--out", "/tmp/never")
    assert train.returncode == 1 and "Traceback" not in train.stderr
    assert train.stderr.strip().splitlines()[-1].startswith("Error: this command needs the 'train' extra (keras")


def test_device_runs_and_suggests_without_training_libraries(device_python, mosquitto, tmp_path):
    broker = BrokerConfig(url=mosquitto.url)
    watcher = DeviceWatcher(broker, "lite1")
    device = DeviceProcess(tmp_path / "state", mosquitto.url, "lite1", python=device_python).start()
    publisher = EventPublisher(broker, "lite1", client_id="lite-sensor")
    try:
        publisher.wait_connected()
        now = datetime.now(UTC)
        for event in event_factory.history("p-1", now):
            publisher.publish(event)
        publisher.publish(event_factory.glucose("lite-g", "p-1", now, 170))
        assert watcher.wait_for(lambda w: w.suggestion_for("lite-g"), 10)
        s = watcher.suggestion_for("lite-g")
        assert s.status == "suggest" and s.units > 0 and s.model.version
    finally:
        publisher.close()
        watcher.close()
        device.stop()
