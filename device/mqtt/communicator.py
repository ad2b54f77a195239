"""The device's MQTT link: two connections, subscriptions, typed publishing, its state in words.

Owns the paho clients of ``advisor device run``; nothing else in the device talks to paho.

* **Inbound** (client id ``advisor-device-<id>``, persistent session, manual acknowledgements,
  the last will): the subscriptions of the contract. Each message goes to one callback (the
  :class:`~device.mqtt.dispatcher.Dispatcher`), which acknowledges it through :meth:`ack` once it is
  safely handled. When the worker falls behind, this connection's network thread waits and
  TCP pushes back on the broker.
* **Outbound** (``advisor-device-<id>-out``): everything the device publishes. Its own network
  thread keeps reading the broker's acknowledgements even while the inbound one waits, so the
  worker can hold new events until enough answers are acknowledged
  (:meth:`DeliveryTracker.wait_for_room`) without ever waiting on itself.

Each connection has a thread of the device's own that connects, lets paho's network loop serve
the connection until it ends, and waits before the next attempt on the device's own schedule
(:func:`~device.mqtt.client.backoff_s`: 1, 2, 4 … s up to ``reconnect_max_s``). A failed attempt
is reported at once, with the reason and when the next attempt comes, in the log and in
:attr:`problem` (the page shows it), instead of retrying in silence.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import paho.mqtt.client as mqtt

from device.config import DeviceConfig
from device.contract.messages import CONTRACT_BY_SCHEMA, MQTT_CONTRACT, DeviceStatus, ErrorMessage, Message, Suggestion
from device.contract.topics import Topics
from device.mqtt.client import (
    RECONNECT_MIN_S,
    backoff_s,
    connect_async,
    describe_connect_failure,
    describe_refusal,
    disable_nagle,
    expiring,
    make_client,
)
from device.state.delivery import DeliveryTracker
from device.state.metrics import DeviceMetrics
from domain.events import Event

log = logging.getLogger("advisor.device")


class Communicator:
    """One device's MQTT connections: subscriptions from the contract, publishing, acknowledgements."""

    def __init__(
        self,
        config: DeviceConfig,
        delivery: DeliveryTracker,
        on_message: Callable[[mqtt.MQTTMessage], None],
        on_ready: Callable[[], None],
        on_change: Callable[[], None],
    ) -> None:
        """``on_ready`` is called each time both connections are up and subscribed, ``on_change`` on
        every other change of the link. Every publish and every PUBACK is reported to ``delivery``.
        """
        self.config = config
        self.topics = Topics(config.device_id)
        self.delivery = delivery
        self.metrics = DeviceMetrics()  # what was published, for GET /metrics
        self.connected = threading.Event()  # both connections up
        self.ready = threading.Event()  # and subscribed
        self.problem: str | None = None
        self._stopping = threading.Event()  # stop() began: a lost connection is no problem to report
        self._closing = threading.Event()  # disconnected: a connection thread stops waiting for paho
        self._failures = {"in": 0, "out": 0}  # failed or lost connections in a row
        self._ended = {"in": threading.Event(), "out": threading.Event()}  # paho's loop has ended
        self._refused: dict[str, str] = {}  # why the broker refused the connection (CONNACK)
        self._threads: list[threading.Thread] = []
        self._up: set[str] = set()  # "in", "out": the connections that are up
        self._subscribed = False
        self._lock = threading.Lock()
        self._on_ready = on_ready
        self._on_change = on_change
        self.client = make_client(config.broker, config.client_id, True, manual_ack=True, reconnect=False)
        self.outbound = make_client(config.broker, f"{config.client_id}-out", True, reconnect=False)
        for name, client in (("in", self.client), ("out", self.outbound)):
            client.on_connect = self._connected_handler(name)
            client.on_disconnect = self._disconnected_handler(name)
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda client, userdata, message: on_message(message)
        self.outbound.on_publish = lambda client, userdata, mid, reason_code, properties: delivery.acknowledged(mid)

    @property
    def inbound(self) -> list[str]:
        """The topics the device subscribes to, from the contract."""
        return [self.topics.of(t.leaf) for t in MQTT_CONTRACT if t.direction == "to device"]

    # ----------------------------------------------------------------- link
    def _connected_handler(self, name: str) -> Callable[..., None]:
        def on_connect(client, userdata, flags, reason_code, properties) -> None:
            if reason_code.is_failure:
                self._refused[name] = describe_refusal(str(reason_code))
                return
            with self._lock:
                self._failures[name] = 0
            disable_nagle(client)
            log.info(
                "%s connection to %s up (session present: %s)",
                name,
                self.config.broker.display_url,
                flags.session_present,
            )
            if name == "in":
                client.subscribe([(topic, 1) for topic in self.inbound])
            self._changed(up=name)

        return on_connect

    def _disconnected_handler(self, name: str) -> Callable[..., None]:
        def on_disconnect(client, userdata, flags, reason_code, properties) -> None:
            was_up = name in self._up
            if was_up and not self._stopping.is_set():
                self.problem = f"lost the broker at {self.config.broker.display_url} ({reason_code}); reconnecting"
                log.warning("%s (%s connection)", self.problem, name)
            self._changed(down=name)
            self._ended[name].set()

        return on_disconnect

    def _keep_connected(self, name: str, client: mqtt.Client) -> None:
        """One connection's life: connect, let paho serve it until it ends, wait, connect again."""
        while True:
            self._ended[name].clear()
            reason = None
            try:
                client.reconnect()  # TCP (and TLS) up and CONNECT sent, or OSError
            except OSError as exc:
                reason = describe_connect_failure(exc)
            else:
                client.loop_start()  # paho's network thread, until the connection ends (no retry of its own)
                while not self._ended[name].wait(1.0) and not self._closing.is_set():
                    pass
                client.loop_stop()
                reason = self._refused.pop(name, None)
            if self._stopping.is_set():
                return
            with self._lock:
                self._failures[name] += 1
                wait = backoff_s(self._failures[name], RECONNECT_MIN_S, self.config.broker.reconnect_max_s)
            if reason is not None:
                self._failed(reason, wait)
            if self._stopping.wait(wait):
                return

    def _failed(self, reason: str, wait: float) -> None:
        """Say at once what failed and when the next attempt comes."""
        self.problem = (
            f"cannot reach the broker at {self.config.broker.display_url}: {reason}; trying again in {wait:g} s"
        )
        log.warning("%s", self.problem)
        self._on_change()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if any(rc.is_failure for rc in reason_codes):
            self.problem = f"the broker refused the subscriptions to {', '.join(self.inbound)} (check the ACL)"
            log.error("%s", self.problem)
            self._on_change()
            return
        self._changed(subscribed=True)

    def _changed(self, up: str | None = None, down: str | None = None, subscribed: bool = False) -> None:
        """Track both connections; announce readiness once both are up and subscribed."""
        with self._lock:
            if up:
                self._up.add(up)
            if down:
                self._up.discard(down)
                if down == "in":
                    self._subscribed = False
            if subscribed:
                self._subscribed = True
            both = self._up == {"in", "out"}
            became_ready = both and self._subscribed and not self.ready.is_set()
            if both:
                self.connected.set()
                self.problem = None
            else:
                self.connected.clear()
            if not (both and self._subscribed):
                self.ready.clear()
            if became_ready:
                self.ready.set()
        if became_ready:
            self._on_ready()
        else:
            self._on_change()

    # ------------------------------------------------------------ messages
    def send(self, message: Message | Event, expires_in_s: int | None = None) -> mqtt.MQTTMessageInfo:
        """Publish a message on its topic with the QoS, retention and expiry of the contract.

        A message whose topic expires (a suggestion) lives ``expires_in_s`` at the broker,
        by default the configured suggestion expiry (MQTT 5 only). An error line gets the
        device's wall-clock time (``at``), from which a reader can tell the clock skew.
        """
        if isinstance(message, ErrorMessage) and message.at is None:
            message = replace(message, at=datetime.now(UTC).isoformat(timespec="milliseconds"))
        contract = CONTRACT_BY_SCHEMA[type(message)]
        expiry = None
        if contract.expires:
            expiry = expiring(self.config.broker, expires_in_s or self.config.suggestion_expiry_s)
        info = self.outbound.publish(
            self.topics.of(contract.leaf),
            json.dumps(message.to_payload()),
            qos=contract.qos,
            retain=contract.retained,
            properties=expiry,
        )
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:  # paho refused it (no free packet id): it was never queued
            log.error("could not queue a %s message: too many unacknowledged publishes", contract.leaf)
            return info
        if isinstance(message, Message):
            self.metrics.observe(message)
        if contract.qos > 0:
            self.delivery.published(info.mid, message.id if isinstance(message, Suggestion) else None)
        return info

    def ack(self, message: mqtt.MQTTMessage) -> None:
        """Acknowledge an inbound message: the broker forgets it."""
        self.client.ack(message.mid, message.qos)

    # ------------------------------------------------------------ lifecycle
    def start(self, will: DeviceStatus) -> None:
        """Start connecting in the background; the broker publishes ``will`` if the device vanishes."""
        self.client.will_set(self.topics.status, will.to_json(), qos=1, retain=True)
        for name, client in (("out", self.outbound), ("in", self.client)):
            connect_async(client, self.config.broker, persistent=True)  # where to connect; no attempt yet
            thread = threading.Thread(
                target=self._keep_connected, args=(name, client), name=f"mqtt-{name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, last: DeviceStatus) -> None:
        """Publish ``last`` as the status if connected, then disconnect."""
        self._stopping.set()
        if self.connected.is_set():
            self.send(last).wait_for_publish(timeout=2.0)
        for client in (self.client, self.outbound):
            client.disconnect()
        self._closing.set()
        for thread in self._threads:
            thread.join(timeout=5.0)
