"""The measurement rig shared by ``advisor bench`` and ``advisor load``.

A private Mosquitto, a sensor publishing events, a timer recording when each suggestion
arrives, and a real ``advisor device run`` process; plus the small statistics and process
readings both commands report.
"""

from __future__ import annotations

import getpass
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt

from device.config import BrokerConfig
from device.contract.messages import PageStatus, Suggestion
from device.contract.schema import SchemaError
from device.contract.topics import Topics
from device.mqtt.client import Subscriber
from domain.events import Event, Insulin, Kind
from tools.mqtt_kit.client import EventPublisher
from tools.ward.broker import MosquittoBroker, free_port
from tools.ward.broker_profile import write_profile

DEVICE_ID = "bench"
RELAY_TOPIC = "advisor-bench/relay"


class SuggestionTimer(Subscriber):
    """Records when each suggestion (by event id) and each plain broker relay arrived.

    ``arrived[event_id] = (perf_counter at arrival, the device's own latency_ms)``.
    """

    def __init__(self, broker: BrokerConfig) -> None:
        self.arrived: dict[str, tuple[float, float]] = {}
        self._suggestions = Topics(DEVICE_ID).suggestions
        super().__init__(broker, "advisor-bench-watch", [self._suggestions, RELAY_TOPIC], self._keep)

    def _keep(self, message: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        if message.topic == RELAY_TOPIC:
            self.arrived[bytes(message.payload).decode()] = (now, 0.0)
            return
        try:
            suggestion = Suggestion.from_json(message.payload)
        except SchemaError:
            return
        self.arrived[suggestion.event_id] = (now, suggestion.latency_ms or 0.0)

    def relay(self, relay_id: str) -> None:
        """Send a plain message through the broker to this timer, for scale."""
        self.client.publish(RELAY_TOPIC, relay_id.encode(), qos=1)

    def wait(self, event_ids: set[str], timeout_s: float) -> bool:
        return self.wait_until(lambda: event_ids <= self.arrived.keys(), timeout_s)


def spawn_device(
    broker_url: str, state_dir: Path, log: Path, port: int, extra: tuple[str, ...] = ()
) -> subprocess.Popen:
    """Start ``advisor device run`` as its own process, output appended to ``log``."""
    command = [
        sys.executable,
        "-m",
        "tools.cli.main",
        "device",
        "run",
        "--broker",
        broker_url,
        "--device-id",
        DEVICE_ID,
        "--http",
        f"127.0.0.1:{port}",
        "--state-dir",
        str(state_dir),
        *extra,
    ]
    with open(log, "ab") as handle:
        return subprocess.Popen(
            command, stdout=handle, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[2]
        )


def wait_online(port: int, timeout_s: float) -> bool:
    """Poll the device's page until its status says online."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=1) as response:
                if PageStatus.from_json(response.read()).state == "online":
                    return True
        except (OSError, SchemaError, json.JSONDecodeError):
            pass
        time.sleep(0.05)
    return False


def history_events(patient: str, now: datetime, days: int = 14) -> list[Event]:
    """``days`` days of three meals a day (glucose and a regular dose) before ``now``."""
    out = []
    for day in range(days, 0, -1):
        for hour, units in ((7, 7.0), (12, 5.0), (18, 6.0)):
            ts = (now - timedelta(days=day)).replace(hour=hour, minute=30, second=0, microsecond=0)
            out.append(
                Event(id=f"{patient}-g-{day}-{hour}", patient=patient, ts=ts, kind=Kind.GLUCOSE, mg_dl=140.0 + hour)
            )
            out.append(
                Event(
                    id=f"{patient}-i-{day}-{hour}",
                    patient=patient,
                    ts=ts,
                    kind=Kind.INSULIN,
                    insulin=Insulin.REGULAR,
                    units=units,
                )
            )
    return out


def reading(event_id: str, patient: str, mg_dl: float) -> Event:
    """A glucose reading taken now."""
    return Event(id=event_id, patient=patient, ts=datetime.now(UTC), kind=Kind.GLUCOSE, mg_dl=mg_dl)


def request(event_id: str, patient: str, ts: datetime | None = None) -> Event:
    """A request for a suggestion at ``ts`` (default now)."""
    return Event(id=event_id, patient=patient, ts=ts or datetime.now(UTC), kind=Kind.REQUEST)


@dataclass
class Rig:
    """A private broker, a sensor, a suggestion timer and (once spawned) the device process."""

    workdir: Path
    broker: MosquittoBroker
    publisher: EventPublisher
    timings: SuggestionTimer
    device_url: str
    device_args: tuple[str, ...] = ()
    description: str = "private Mosquitto on loopback, plain TCP, anonymous"
    device: subprocess.Popen | None = None

    @property
    def log(self) -> Path:
        return self.workdir / "device.log"

    def spawn(self, port: int) -> None:
        """Start the device on this rig's broker and state folder."""
        self.device = spawn_device(self.device_url, self.workdir / "state", self.log, port, self.device_args)


def _secure_broker(workdir: Path) -> tuple[MosquittoBroker, dict[str, BrokerConfig], tuple[str, ...]]:
    """The deployment profile (TLS, passwords, ACL) on loopback: the broker, a config per role, device args."""
    port = free_port()
    profile = write_profile(
        workdir / "broker",
        [DEVICE_ID],
        ["localhost"],
        port,
        "127.0.0.1",
        run_as=getpass.getuser(),
        extra_grants={f"monitor-{DEVICE_ID}": [("readwrite", RELAY_TOPIC)]},
    )
    broker = MosquittoBroker(profile.folder, port=port, config_file=profile.conf).start()
    configs = {
        role: BrokerConfig(url=f"mqtts://{cred.username}:{cred.password}@localhost:{port}", ca_file=profile.ca_file)
        for role, cred in profile.roles().items()
    }
    device_config = workdir / "device.toml"
    device_config.write_text(f'[broker]\nca_file = "{profile.ca_file}"\n')
    return broker, configs, ("--config", str(device_config))


@contextmanager
def measurement_rig(prefix: str, sensor_id: str, tls: bool = False) -> Iterator[Rig]:
    """Set up a :class:`Rig`; tear it down after, keeping the work folder (device log) on failure.

    ``tls``: the broker runs the deployment profile (TLS 1.3, passwords, per-role ACL) and every
    client logs in with its role's credentials, as on a ward.
    """
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    if tls:
        broker, configs, device_args = _secure_broker(workdir)
        sensor, watcher, device_url = configs["sensor"], configs["monitor"], configs["device"].url
        description = "private Mosquitto on loopback, TLS with the deployment profile (passwords, ACL)"
    else:
        broker = MosquittoBroker(workdir / "broker").start()
        sensor = watcher = BrokerConfig(url=broker.url)
        device_url, device_args, description = broker.url, (), "private Mosquitto on loopback, plain TCP, anonymous"
    rig = Rig(
        workdir,
        broker,
        EventPublisher(sensor, DEVICE_ID, client_id=sensor_id),
        SuggestionTimer(watcher),
        device_url,
        device_args,
        description,
    )
    succeeded = False
    try:
        rig.publisher.wait_connected()
        rig.timings.wait_subscribed(10)
        yield rig
        succeeded = True
    finally:
        if rig.device is not None and rig.device.poll() is None:
            rig.device.terminate()
            rig.device.wait(20)
        rig.publisher.close()
        rig.timings.close()
        broker.stop()
        if succeeded:
            shutil.rmtree(workdir, ignore_errors=True)
