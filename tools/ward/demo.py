"""``advisor demo``: a broker, the device and a replayed patient on one machine, one command.

The device runs with the packaged bundle on the event clock (the replayed log's timestamps
are "now", and after the last event its clock runs on with the wall clock). The patient's
history goes in at full speed; the last day is replayed one event every few seconds so the
bedside page can be watched updating. Ctrl-C stops everything.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from device.config import BrokerConfig, DeviceConfig, HttpConfig
from device.page.users import hash_pin
from device.service import DeviceService
from domain.events import Event, within_timestamp_rank
from preprocessing.synthetic import synthetic_visit_history
from tools.mqtt_kit.client import DeviceWatcher, EventPublisher
from tools.ward.broker import EmbeddedBroker, start_local_broker

DEMO_DEVICE_ID = "demo"
DEMO_NURSE, DEMO_NURSE_PIN = "nurse", "2468"  # a demo user, printed at start; a real ward adds its own


@dataclass(frozen=True)
class DemoOptions:
    data_dir: Path | None = None
    patient: int = 1
    http: HttpConfig = field(default_factory=HttpConfig)
    broker_url: str | None = None
    embedded_broker: bool = False
    state_dir: Path | None = None
    interval_s: float = 2.0
    exit_after_replay: bool = False


def demo_events(options: DemoOptions) -> tuple[list[Event], str]:
    """The events to replay and a plain description of where they come from."""
    if options.data_dir is not None:
        from preprocessing import aim94

        logs = aim94.read_folder(options.data_dir, patients=(options.patient,))
        if not logs:
            raise FileNotFoundError(f"AIM-94 patient {options.patient} not found in {options.data_dir}")
        events = sorted(logs[0].events, key=lambda e: (e.ts, within_timestamp_rank(e)))
        return events, f"AIM-94 patient {options.patient} ({len(events)} events) from {options.data_dir}"
    from preprocessing.synthetic import PATIENT_ID, synthetic_patient

    events = synthetic_patient(end=datetime.now(UTC))
    return events, (
        f"SYNTHETIC patient '{PATIENT_ID}' ({len(events)} generated events; "
        "not real data — give --data or set ADVISOR_AIM94_DIR for AIM-94)"
    )


def replay_outcome(sent: int, total: int) -> str:
    """What the replay got to, in one line (Ctrl-C stops it early)."""
    if sent < total:
        return f"replay stopped: {sent} of {total} events sent"
    return f"replay finished: {sent} events sent"


def _refusals(service: DeviceService, watcher: DeviceWatcher, last: Event, done: threading.Event) -> str | None:
    """Once the device has handled the last event sent (it handles them in order): what it refused, in one line.

    Waits at most 30 s, in short steps so that Ctrl-C (``done``) ends the wait at once: a signal
    does not wake a thread waiting for the device's messages, so the flag is looked at between steps.
    """
    deadline = time.monotonic() + 30
    while not done.is_set() and time.monotonic() < deadline:
        if watcher.wait_for(lambda w: service.store.has_event(last.id) or w.error_for_id(last.id) is not None, 0.25):
            break
    if done.is_set():
        return None
    refused = [e for e in watcher.errors if e.level == "refused"]
    if not refused:
        return None
    first = refused[0]
    return f"the device refused {len(refused)} event(s); the first, {first.event_id}: {first.reason}"


def run_demo(options: DemoOptions, echo: Callable[[str], None]) -> None:
    """Run until Ctrl-C (or the end of the replay with ``exit_after_replay``)."""
    events, description = demo_events(options)
    workdir = Path(tempfile.mkdtemp(prefix="advisor-demo-"))
    broker = None
    if options.broker_url is None:
        broker = EmbeddedBroker().start() if options.embedded_broker else start_local_broker(workdir / "broker")
        echo(f"broker: {'Mosquitto' if broker.protocol == '5' else 'embedded (amqtt)'} at {broker.url}")
        broker_config = BrokerConfig(url=broker.url, protocol=broker.protocol)
    else:
        broker_config = BrokerConfig(url=options.broker_url)
    config = DeviceConfig(
        device_id=DEMO_DEVICE_ID,
        broker=broker_config,
        http=options.http,
        state_dir=options.state_dir or workdir / "state",
        clock="event",
    )
    service = DeviceService(config)
    if service.store.user(DEMO_NURSE) is None:
        service.store.add_user(DEMO_NURSE, "nurse", hash_pin(DEMO_NURSE_PIN))
    publisher: EventPublisher | None = None
    watcher: DeviceWatcher | None = None
    done = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: done.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        service.start()
        if not service.ready.wait(15):
            raise ConnectionError(f"the device could not reach the broker at {broker_config.display_url}")
        patient = events[0].patient
        echo(f"replaying: {description}")
        echo(f"bedside page: {service.web.url}?patient={patient}")
        kept = "" if options.state_dir else " (temporary: deleted when the demo stops; keep one with --state-dir DIR)"
        echo(f"device state: {config.state_dir}{kept}")
        echo(f"sign in on the page as '{DEMO_NURSE}' with PIN {DEMO_NURSE_PIN} (a demo nurse: records, sees risk)")
        echo("risk context: a made-up visit history is sent to the demo-trained companion models")
        echo("Decision support only, not a certified medical device. Press Ctrl-C to stop.")
        watcher = DeviceWatcher(broker_config, DEMO_DEVICE_ID)
        publisher = EventPublisher(broker_config, DEMO_DEVICE_ID)
        publisher.wait_connected()
        watcher.wait_subscribed()
        live_from = events[-1].ts - timedelta(days=1)
        publisher.publish_visit_history(synthetic_visit_history(patient, events[-1].ts))

        def pause(event: Event) -> float:
            return options.interval_s if event.ts >= live_from else 0.0

        sent = publisher.publish_events(events, pause, stop=done)
        publisher.flush()
        echo(replay_outcome(sent, len(events)))
        if sent and not done.is_set():  # Ctrl-C does not wait for the device to catch up
            refusals = _refusals(service, watcher, events[sent - 1], done)
            if refusals:
                echo(refusals)
        if sent == len(events):
            echo(
                f"the device's clock runs on from the log's last event ({events[-1].ts:%Y-%m-%d %H:%M}) with the wall "
                "clock, as a ward's would: ages, countdowns and expiries keep moving"
            )
        if not options.exit_after_replay:
            done.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for client in (publisher, watcher):
            if client is not None:
                client.close()
        service.stop()
        if broker is not None:
            broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        echo("demo stopped")
