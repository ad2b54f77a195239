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
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from device.config import BrokerConfig
from device.contract.messages import Alert, DeviceStatus, ErrorMessage, Message, Risk, ShadowAnswer, Suggestion
from device.contract.schema import SchemaError
from device.contract.topics import Topics
from device.mqtt.client import PersistentPublisher, Subscriber
from domain.events import Event
from domain.validation import VisitHistory

MARKER_TS = "2999-01-01T00:00:00+00:00"  # refused by every device's validation: nothing is stored

MAX_UNCONFIRMED = 30000


class EventPublisher(PersistentPublisher):
    """A QoS 1 publisher of events to ``advisor/<device>/events``."""

    def __init__(self, broker: BrokerConfig, device_id: str, client_id: str | None = None) -> None:
        self.topics = Topics(device_id)
        self._issued: set[int] = set()
        super().__init__(broker, client_id or f"advisor-replay-{device_id}")

    def publish(self, event: Event | bytes | str) -> int:
        """Queue one event (or raw bytes, for hostile-input tests); returns its packet id."""
        body = json.dumps(event.to_payload()) if isinstance(event, Event) else event
        return self._publish(self.topics.events, body)

    def publish_visit_history(self, history: VisitHistory | bytes | str) -> int:
        """Queue one ``patients`` message (a visit history for the companion models)."""
        body = json.dumps(history.to_payload()) if isinstance(history, VisitHistory) else history
        return self._publish(self.topics.patients, body)

    def _publish(self, topic: str, body: bytes | str) -> int:
        if len(self._issued) > MAX_UNCONFIRMED:
            self.flush()  # packet ids wrap at 65535: settle before reusing them
        mid = self.tracker.publish(topic, body)
        self._issued.add(mid)
        return mid

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until the broker has confirmed everything published so far.

        Raises :class:`PermissionError` when the broker refused some (its ACL: MQTT 5 only).
        """
        if not self.tracker.wait(self._issued, timeout_s):
            raise TimeoutError(f"the broker did not confirm every event within {timeout_s:g} s")
        refused = [self.tracker.refused.pop(mid) for mid in self._issued if mid in self.tracker.refused]
        issued, self._issued = len(self._issued), set()
        if refused:
            user = self.broker.credentials[0] or "an anonymous client"
            raise PermissionError(
                f"the broker refused {len(refused)} of {issued} messages ({refused[0].lower()}): {user} may not "
                f"write {self.topics.events} — check the user and the broker's ACL (docs/deployment.md)"
            )

    def publish_events(
        self,
        events: Iterable[Event],
        pause: Callable[[Event], float] = lambda e: 0.0,
        stop: threading.Event | None = None,
    ) -> int:
        """Publish events in order, sleeping ``pause(event)`` seconds before each; returns the count."""
        sent = 0
        for event in events:
            delay = pause(event)
            if delay > 0 and stop is not None and stop.wait(delay):
                break
            if stop is not None and stop.is_set():
                break
            self.publish(event)
            sent += 1
        return sent


@dataclass(frozen=True)
class EndMarker:
    """An event every device refuses at validation (dated 2999, so nothing is stored), sent after a
    batch: a device handles its events in order, so once the marker's refusal is back, every event
    sent before it has been handled and answered, if it is answered at all."""

    nonce: str
    what: str

    @classmethod
    def new(cls, what: str) -> EndMarker:
        return cls(f"{time.time_ns():x}", what)

    @property
    def event_id(self) -> str:
        return f"{self.what}-end-{self.nonce}"

    @property
    def payload(self) -> bytes:
        return json.dumps(
            {"id": self.event_id, "patient": f"{self.what}-end", "kind": "glucose", "ts": MARKER_TS, "mg_dl": 100}
        ).encode()

    def seen(self, watcher: DeviceWatcher) -> bool:
        """Whether the device's refusal of the marker has arrived."""
        return watcher.error_for_id(self.event_id) is not None


class DeviceWatcher(Subscriber):
    """Subscribes to a device's suggestions, errors, status and risk and keeps every message, typed.

    A message that does not fit its schema is kept in ``undecodable`` with the reason, so a
    test or report sees it instead of losing it.
    """

    def __init__(
        self, broker: BrokerConfig, device_id: str, client_id: str | None = None, persistent: bool = False
    ) -> None:
        """With ``persistent`` and a stable ``client_id`` nothing is missed across a broker restart."""
        self.device_topics = Topics(device_id)
        self.suggestions: list[Suggestion] = []
        self.errors: list[ErrorMessage] = []
        self.status: list[DeviceStatus] = []
        self.risk: list[Risk] = []
        self.alerts: list[Alert] = []
        self.shadow: list[ShadowAnswer] = []
        self.undecodable: list[str] = []
        self.suggestion_flags: list[tuple[bool, int | None]] = []  # (retained, MQTT 5 expiry seconds)
        self.arrival: dict[str, float] = {}  # event id -> perf_counter() when its suggestion arrived
        t = self.device_topics
        self._targets: dict[str, tuple[type[Message], list]] = {
            t.suggestions: (Suggestion, self.suggestions),
            t.errors: (ErrorMessage, self.errors),
            t.status: (DeviceStatus, self.status),
            t.risk: (Risk, self.risk),
            t.alerts: (Alert, self.alerts),
            t.shadow: (ShadowAnswer, self.shadow),
        }
        super().__init__(
            broker,
            client_id or f"advisor-watch-{device_id}-{id(self):x}",
            list(self._targets),
            self._keep,
            persistent=persistent,
        )

    def _keep(self, message: mqtt.MQTTMessage) -> None:
        schema_cls, target = self._targets[message.topic]
        try:
            decoded = schema_cls.from_json(message.payload)
        except SchemaError as exc:
            self.undecodable.append(f"{message.topic}: {exc}")
            return
        if isinstance(decoded, Suggestion):
            self.arrival.setdefault(decoded.event_id, time.perf_counter())
            expiry = getattr(message.properties, "MessageExpiryInterval", None) if message.properties else None
            self.suggestion_flags.append((bool(message.retain), expiry))
        target.append(decoded)

    def wait_for(self, predicate: Callable[[DeviceWatcher], bool], timeout_s: float = 5.0) -> bool:
        """Block until ``predicate(self)`` holds or the timeout passes; returns whether it held."""
        return self.wait_until(lambda: predicate(self), timeout_s)

    def suggestion_for(self, event_id: str) -> Suggestion | None:
        return next((s for s in self.suggestions if s.event_id == event_id), None)

    def error_for_id(self, event_id: str) -> ErrorMessage | None:
        """The first message on ``errors`` about ``event_id``."""
        return next((e for e in self.errors if e.event_id == event_id), None)
