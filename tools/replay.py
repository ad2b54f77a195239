"""Publishing event logs into a device and collecting what it answers (demo, tests, replay).

:class:`EventPublisher` sends events at QoS 1 on a persistent session, so nothing is lost
across a broker restart; :class:`DeviceWatcher` records every suggestion, error and status
message of one device for inspection.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable

from device.config import BrokerConfig
from device.mqtt_client import PersistentPublisher, connect_async, disable_nagle, make_client
from device.topics import Topics
from preprocessing.events import Event

MAX_UNCONFIRMED = 30000


class EventPublisher(PersistentPublisher):
    """A QoS 1 publisher of events to ``advisor/<device>/events``."""

    def __init__(self, broker: BrokerConfig, device_id: str, client_id: str | None = None) -> None:
        self.topics = Topics(device_id)
        self._issued: set[int] = set()
        super().__init__(broker, client_id or f"advisor-replay-{device_id}")

    def publish(self, payload: dict | bytes | str) -> int:
        """Queue one payload (an event dict, or raw bytes for hostile-input tests); returns its packet id."""
        if len(self._issued) > MAX_UNCONFIRMED:
            self.flush()  # packet ids wrap at 65535: settle before reusing them
        body = json.dumps(payload) if isinstance(payload, dict) else payload
        mid = self.tracker.publish(self.topics.events, body)
        self._issued.add(mid)
        return mid

    def publish_visit_history(self, payload: dict | bytes) -> int:
        """Queue one ``patients`` message (a visit history for the companion models)."""
        body = json.dumps(payload) if isinstance(payload, dict) else payload
        mid = self.tracker.publish(self.topics.patients, body)
        self._issued.add(mid)
        return mid

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until the broker has confirmed everything published so far."""
        if not self.tracker.wait(self._issued, timeout_s):
            raise TimeoutError(f"the broker did not confirm every event within {timeout_s:g} s")
        self._issued = set()

    def publish_events(self, events: Iterable[Event], pause: Callable[[Event], float] = lambda e: 0.0,
                       stop: threading.Event | None = None) -> int:
        """Publish events in order, sleeping ``pause(event)`` seconds before each; returns the count."""
        sent = 0
        for event in events:
            delay = pause(event)
            if delay > 0 and stop is not None and stop.wait(delay):
                break
            if stop is not None and stop.is_set():
                break
            self.publish(event.to_payload())
            sent += 1
        return sent


class DeviceWatcher:
    """Subscribes to a device's suggestions, errors, status and risk and keeps every message."""

    def __init__(self, broker: BrokerConfig, device_id: str, client_id: str | None = None,
                 persistent: bool = False) -> None:
        """With ``persistent`` and a stable ``client_id`` nothing is missed across a broker restart."""
        self.topics = Topics(device_id)
        self.suggestions: list[dict] = []
        self.errors: list[dict] = []
        self.status: list[dict] = []
        self.risk: list[dict] = []
        self.suggestion_flags: list[tuple[bool, int | None]] = []  # (retained, MQTT 5 expiry seconds)
        self.arrival: dict[str, float] = {}  # event id -> perf_counter() when its suggestion arrived
        self._changed = threading.Condition()
        self.subscribed = threading.Event()
        self.client = make_client(broker, client_id or f"advisor-watch-{device_id}-{id(self):x}",
                                  persistent=persistent)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        connect_async(self.client, broker, persistent=persistent)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            disable_nagle(client)
            client.subscribe([(self.topics.suggestions, 1), (self.topics.errors, 1), (self.topics.status, 1),
                              (self.topics.risk, 1)])

    def _on_message(self, client, userdata, message) -> None:
        try:
            payload = json.loads(message.payload)
        except ValueError:
            payload = {"undecodable": message.payload[:200].decode("utf-8", "replace")}
        target = {self.topics.suggestions: self.suggestions, self.topics.errors: self.errors,
                  self.topics.status: self.status, self.topics.risk: self.risk}.get(message.topic)
        if target is None:
            return
        with self._changed:
            if target is self.suggestions:
                self.arrival.setdefault(str(payload.get("event_id")), time.perf_counter())
                expiry = getattr(message.properties, "MessageExpiryInterval", None) if message.properties else None
                self.suggestion_flags.append((bool(message.retain), expiry))
            target.append(payload)
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[["DeviceWatcher"], bool], timeout_s: float = 5.0) -> bool:
        """Block until ``predicate(self)`` holds or the timeout passes; returns whether it held."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return True

    def suggestion_for(self, event_id: str) -> dict | None:
        return next((s for s in self.suggestions if s.get("event_id") == event_id), None)

    def error_for(self, event_id: str | None) -> dict | None:
        return next((e for e in self.errors if e.get("event_id") == event_id), None)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
