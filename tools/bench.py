"""``advisor bench``: the device figures measured on this machine, side by side in one run.

* cold start: a real ``advisor device run`` process is spawned while a glucose reading waits
  for it at the broker; the time from spawn to that reading's suggestion;
* event-to-suggestion latency through Mosquitto: seen by a client (publish → suggestion
  received, two broker hops included) and as reported by the device (``latency_ms``:
  arrival → suggestion ready, including the SQLite commit and inference);
* peak RSS of the device process (``VmHWM``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from device.config import BrokerConfig
from device.mqtt_client import connect_async, disable_nagle, make_client
from device.topics import Topics

from .broker import MosquittoBroker, free_port
from .replay import EventPublisher

DEVICE_ID = "bench"
RELAY_TOPIC = "advisor-bench/relay"
PHASES = (("steady", 0.01), ("idle", 0.2))  # (name, seconds between readings)


@dataclass(frozen=True)
class LatencyPhase:
    """Latencies at one rate: through the device, inside it, and a plain broker relay for scale."""

    name: str
    gap_ms: float
    events: int
    client_ms_p50: float
    client_ms_p99: float
    device_ms_p50: float
    device_ms_p99: float
    relay_ms_p50: float
    relay_ms_p99: float
    lost: int


@dataclass(frozen=True)
class Throughput:
    """Events sent back to back; every one must get its suggestion."""

    events: int
    patients: int
    seconds: float
    events_per_s: float
    lost: int


@dataclass(frozen=True)
class DeviceFigures:
    patients: int
    phases: list[LatencyPhase]
    throughput: Throughput
    cold_start_s: float
    peak_rss_mb: float
    machine: str


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class _Timings:
    """Receives suggestions and records when each arrived."""

    def __init__(self, broker: BrokerConfig) -> None:
        self.arrived: dict[str, tuple[float, float]] = {}
        self.changed = threading.Condition()
        self.ready = threading.Event()
        topics = Topics(DEVICE_ID)
        self.client = make_client(broker, "advisor-bench-watch", persistent=False)
        self.client.on_connect = lambda c, u, f, rc, p: (
            disable_nagle(c), c.subscribe([(topics.suggestions, 1), (RELAY_TOPIC, 1)]))
        self.client.on_subscribe = lambda *a: self.ready.set()
        self.client.on_message = self._on_message
        connect_async(self.client, broker, persistent=False)
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        now = time.perf_counter()
        payload = json.loads(message.payload)
        with self.changed:
            self.arrived[payload["event_id"]] = (now, float(payload.get("latency_ms", 0.0)))
            self.changed.notify_all()

    def wait(self, event_ids: set[str], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self.changed:
            while not event_ids <= self.arrived.keys():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.changed.wait(remaining)
        return True

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _spawn_device(broker_url: str, state_dir: Path, log: Path, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "tools.cli", "device", "run", "--broker", broker_url, "--device-id",
               DEVICE_ID, "--http", f"127.0.0.1:{port}", "--state-dir", str(state_dir)]
    with open(log, "ab") as handle:
        return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT,
                                cwd=Path(__file__).resolve().parents[1])


def _wait_online(port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=1) as response:
                if json.loads(response.read()).get("state") == "online":
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def machine_description() -> str:
    return f"{os.uname().machine}, {os.cpu_count()} cores, Python {sys.version.split()[0]}"


@dataclass
class Rig:
    """A private broker, a sensor, a suggestion timer and (once spawned) the device process."""

    workdir: Path
    broker: MosquittoBroker
    publisher: EventPublisher
    timings: "_Timings"
    device: subprocess.Popen | None = None


@contextmanager
def measurement_rig(prefix: str, sensor_id: str) -> Iterator[Rig]:
    """Set up a :class:`Rig`; tear it down after, keeping the work folder (device log) on failure."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    broker = MosquittoBroker(workdir / "broker").start()
    config = BrokerConfig(url=broker.url)
    rig = Rig(workdir, broker, EventPublisher(config, DEVICE_ID, client_id=sensor_id), _Timings(config))
    succeeded = False
    try:
        rig.publisher.wait_connected()
        rig.timings.ready.wait(10)
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


def _history(patient: str, now: datetime) -> list[dict]:
    out = []
    for day in range(14, 0, -1):
        for hour, units in ((7, 7.0), (12, 5.0), (18, 6.0)):
            ts = (now - timedelta(days=day)).replace(hour=hour, minute=30).isoformat()
            out.append({"id": f"{patient}-g-{day}-{hour}", "patient": patient, "ts": ts, "kind": "glucose",
                        "mg_dl": 140 + hour})
            out.append({"id": f"{patient}-i-{day}-{hour}", "patient": patient, "ts": ts, "kind": "insulin",
                        "insulin": "regular", "units": units})
    return out


def _latency_phase(name: str, gap: float, count: int, patients: list[str], publisher: EventPublisher,
                   timings: _Timings) -> LatencyPhase:
    """Alternate device readings and plain relays at one rate; return the percentiles."""
    sent: dict[str, float] = {}
    relayed: dict[str, float] = {}
    for i in range(count):
        event_id = f"{name}-{i:05d}"
        payload = {"id": event_id, "patient": patients[i % len(patients)], "kind": "glucose",
                   "mg_dl": 100 + i % 150, "ts": datetime.now(timezone.utc).isoformat()}
        sent[event_id] = time.perf_counter()
        publisher.publish(payload)
        time.sleep(gap / 2)
        relay_id = f"relay-{event_id}"
        relayed[relay_id] = time.perf_counter()
        publisher.client.publish(RELAY_TOPIC, json.dumps({"event_id": relay_id}), qos=1)
        time.sleep(gap / 2)
    publisher.flush()
    timings.wait(set(sent) | set(relayed), 60)
    got = {k: v for k, v in timings.arrived.items() if k in sent}
    client_ms = [(got[k][0] - sent[k]) * 1000.0 for k in got]
    device_ms = [got[k][1] for k in got]
    relay_ms = [(timings.arrived[k][0] - relayed[k]) * 1000.0 for k in relayed if k in timings.arrived]

    def p(values: list[float], q: float) -> float:
        return round(percentile(values, q), 2) if values else float("nan")

    return LatencyPhase(name, gap * 1000.0, count, p(client_ms, 50), p(client_ms, 99), p(device_ms, 50),
                        p(device_ms, 99), p(relay_ms, 50), p(relay_ms, 99), len(sent) - len(got))


def _throughput(count: int, patients: list[str], publisher: EventPublisher, timings: _Timings) -> Throughput:
    ids = {f"load-{i:06d}" for i in range(count)}
    start = time.perf_counter()
    for i in range(count):
        publisher.publish({"id": f"load-{i:06d}", "patient": patients[i % len(patients)], "kind": "glucose",
                           "mg_dl": 90 + i % 200, "ts": datetime.now(timezone.utc).isoformat()})
    publisher.flush(120)
    timings.wait(ids, 600)
    got = [timings.arrived[k][0] for k in ids if k in timings.arrived]
    seconds = (max(got) - start) if got else float("nan")
    return Throughput(count, len(patients), round(seconds, 2), round(len(got) / seconds, 1) if got else 0.0,
                      count - len(got))


def measure_device(events: int = 1000, patients: int = 20, idle_events: int = 100, sustained_events: int = 10000,
                   progress: Callable[[str], None] = lambda _m: None) -> DeviceFigures:
    """Run the device benchmark on a private Mosquitto; returns the measured figures."""
    with measurement_rig("advisor-bench-", "advisor-bench-sensor") as rig:
        publisher, timings, broker = rig.publisher, rig.timings, rig.broker
        state, log = rig.workdir / "state", rig.workdir / "device.log"
        progress("creating the device's broker session")
        port = free_port()
        rig.device = _spawn_device(broker.url, state, log, port)
        if not _wait_online(port, 60):
            raise RuntimeError(f"the device did not come online; see {log}")
        publisher.publish({"id": "warm-0", "patient": "warm", "ts": datetime.now(timezone.utc).isoformat(),
                           "kind": "request"})
        if not timings.wait({"warm-0"}, 60):
            raise RuntimeError(f"the device did not answer; see {log}")
        rig.device.terminate()
        rig.device.wait(20)

        progress("cold start: spawning the device with a reading waiting at the broker")
        now = datetime.now(timezone.utc)
        publisher.publish({"id": "cold-0", "patient": "warm", "ts": now.isoformat(), "kind": "glucose",
                           "mg_dl": 120})
        publisher.flush()
        started = time.perf_counter()
        rig.device = _spawn_device(broker.url, state, log, port)
        if not timings.wait({"cold-0"}, 60):
            raise RuntimeError(f"no suggestion after the cold start; see {log}")
        cold_start = timings.arrived["cold-0"][0] - started

        progress(f"history for {patients} patients")
        names = [f"bench-{i:02d}" for i in range(patients)]
        for name in names:
            for event in _history(name, now):
                publisher.publish(event)
        publisher.publish({"id": "history-done", "patient": names[-1], "kind": "request",
                           "ts": datetime.now(timezone.utc).isoformat()})
        if not timings.wait({"history-done"}, 120):  # the device has worked through the backlog
            raise RuntimeError(f"the device did not finish the history; see {log}")
        phases = []
        for name, gap in PHASES:
            count = events if name == "steady" else idle_events
            progress(f"{name}: {count} fresh readings, one every {gap * 1000:g} ms, and as many broker relays")
            phases.append(_latency_phase(name, gap, count, names, publisher, timings))
        progress(f"sustained: {sustained_events} readings over {len(names)} patients, back to back")
        throughput = _throughput(sustained_events, names, publisher, timings)
        return DeviceFigures(
            patients=patients, phases=phases, throughput=throughput, cold_start_s=round(cold_start, 3),
            peak_rss_mb=round(_peak_rss_mb(rig.device.pid), 1), machine=machine_description(),
        )


def device_table(figures: DeviceFigures) -> str:
    """The README's table of device figures."""
    rows = []
    for ph in figures.phases:
        rate = f"{ph.name}, 1 reading per {ph.gap_ms:g} ms, {ph.events} readings"
        rows += [
            (f"event → suggestion seen by a client, p50 / p99 ({rate})",
             f"{ph.client_ms_p50:.2f} / {ph.client_ms_p99:.2f} ms", "p99 < 20 ms"),
            ("  of which inside the device (arrival → suggestion committed), p50 / p99",
             f"{ph.device_ms_p50:.2f} / {ph.device_ms_p99:.2f} ms", ""),
            ("  for scale: one plain broker relay, same clients, p50 / p99",
             f"{ph.relay_ms_p50:.2f} / {ph.relay_ms_p99:.2f} ms", ""),
            ("  suggestions lost", str(ph.lost), "0"),
        ]
    t = figures.throughput
    rows += [
        (f"sustained: {t.events} readings back to back over {t.patients} patients",
         f"{t.events_per_s:.0f} events/s, {t.lost} lost", "lost = 0"),
        ("cold start: process spawn → first suggestion", f"{figures.cold_start_s:.2f} s", "< 2 s"),
        ("device peak RSS (VmHWM)", f"{figures.peak_rss_mb:.0f} MB", "< 120 MB"),
    ]
    lines = ["| measure | result | target |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines.append(f"\n{figures.patients} patients with 14 days of history; {figures.machine}.")
    return "\n".join(lines)


def to_json(figures: DeviceFigures) -> str:
    return json.dumps({"device": asdict(figures)}, indent=2)
