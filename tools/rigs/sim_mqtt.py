"""``advisor simulate --via-mqtt``: the trial's advisor arm answered by a real device over Mosquitto.

A private Mosquitto on loopback and, per seed, a fresh ``advisor device run --clock event``
process (its own state directory); every event of the advisor arm is published to the device's
``events`` topic in time order, and each reading waits for its suggestion on ``suggestions``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from device.config import BrokerConfig
from device.contract.messages import Suggestion
from domain.events import Event, Kind
from tools.mqtt_kit.client import DeviceWatcher, EventPublisher
from tools.rigs.measure import wait_online
from tools.ward.broker import MosquittoBroker, free_port

DEVICE_ID = "sim"
ANSWER_TIMEOUT_S = 20.0


class MqttDevice:
    """One device process behind the broker, reached only through MQTT."""

    def __init__(self, broker: MosquittoBroker, workdir: Path, bundle: Path | None, name: str) -> None:
        self.workdir = workdir / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.device_id = f"{DEVICE_ID}-{name}"
        config = BrokerConfig(url=broker.url)
        self.watcher = DeviceWatcher(config, self.device_id, client_id=f"{self.device_id}-watch")
        if not self.watcher.subscribed.wait(10):
            raise RuntimeError("the trial could not subscribe to the device's answers")
        port = free_port()
        command = [
            sys.executable, "-m", "tools.cli.main", "device", "run", "--broker", broker.url,
            "--device-id", self.device_id, "--http", f"127.0.0.1:{port}", "--state-dir", str(self.workdir / "state"),
            "--clock", "event",
        ]  # fmt: skip
        if bundle is not None:
            command += ["--bundle", str(bundle)]
        self.log = self.workdir / "device.log"
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[2]
            )
        if not wait_online(port, 60):
            self.close()
            raise RuntimeError(f"the device did not come online; see {self.log}")
        self.publisher = EventPublisher(config, self.device_id, client_id=f"{self.device_id}-sensor")
        self.publisher.wait_connected()
        self._seen: dict[str, Suggestion] = {}
        self._read = 0
        self.messages = 0

    def _answer(self, event_id: str) -> Suggestion | None:
        arrived = self.watcher.suggestions
        while self._read < len(arrived):
            suggestion = arrived[self._read]
            self._seen[suggestion.event_id] = suggestion
            self._read += 1
        return self._seen.get(event_id)

    def handle(self, event: Event) -> Suggestion | None:
        self.publisher.publish(event)
        self.messages += 1
        if event.kind not in (Kind.GLUCOSE, Kind.REQUEST):
            return None
        if not self.watcher.wait_for(lambda _w: self._answer(event.id) is not None, ANSWER_TIMEOUT_S):
            error = self.watcher.error_for_id(event.id)
            raise RuntimeError(f"no answer to {event.id} over MQTT" + (f": {error.reason}" if error else ""))
        return self._answer(event.id)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        for client in (getattr(self, "publisher", None), self.watcher):
            if client is not None:
                client.close()


class MqttDevices:
    """A private broker and one device per seed; ``close`` stops them all."""

    def __init__(self, workdir: Path, bundle: Path | None) -> None:
        self.workdir = workdir
        self.bundle = bundle
        self.broker = MosquittoBroker(workdir / "broker").start()
        self.devices: list[MqttDevice] = []

    def for_seed(self, seed: int) -> MqttDevice:
        device = MqttDevice(self.broker, self.workdir, self.bundle, f"seed{seed}")
        self.devices.append(device)
        return device

    def close(self) -> None:
        for device in self.devices:
            device.close()
        self.broker.stop()
