"""The device's MQTT link: connects, subscribes, publishes typed messages, reports its state.

Owns the paho client of ``advisor device run``; nothing else in the device talks to paho.
Inbound messages go to one callback (the :class:`~device.dispatcher.Dispatcher`), which
acknowledges each one through :meth:`Communicator.ack` when it is safely handled (manual
acknowledgements, QoS 1, persistent session). A failed connection attempt is reported at once,
with the reason and when the next attempt comes, in the log and in :attr:`problem` (the page
shows it), instead of retrying in silence.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable

import paho.mqtt.client as mqtt

from preprocessing.events import Event

from .config import DeviceConfig
from .delivery import DeliveryTracker
from .messages import CONTRACT_BY_SCHEMA, MQTT_CONTRACT, DeviceStatus, Message, Suggestion
from .mqtt_client import (
    RECONNECT_MIN_S,
    connect_async,
    describe_connect_failure,
    disable_nagle,
    expiring,
    make_client,
    reconnect_wait_s,
)
from .topics import Topics

log = logging.getLogger("advisor.device")


class Communicator:
    """One device's MQTT client: subscriptions from the contract, publishing, acknowledgements."""

    def __init__(
        self,
        config: DeviceConfig,
        delivery: DeliveryTracker,
        on_message: Callable[[mqtt.MQTTMessage], None],
        on_ready: Callable[[], None],
        on_change: Callable[[], None],
    ) -> None:
        """``on_ready`` is called once subscribed (each time), ``on_change`` on every other change of the link.

        Every publish and every PUBACK is reported to ``delivery``.
        """
        self.config = config
        self.topics = Topics(config.device_id)
        self.connected = threading.Event()
        self.ready = threading.Event()
        self.problem: str | None = None
        self._stopping = threading.Event()
        self._failures = 0  # failed connection attempts in a row
        self._on_ready = on_ready
        self._on_change = on_change
        self.delivery = delivery
        self.client = make_client(config.broker, config.client_id, persistent=True, manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = lambda client, userdata, message: on_message(message)
        self.client.on_publish = lambda client, userdata, mid, reason_code, properties: delivery.acknowledged(mid)

    @property
    def inbound(self) -> list[str]:
        """The topics the device subscribes to, from the contract."""
        return [self.topics.of(t.leaf) for t in MQTT_CONTRACT if t.direction == "to device"]

    # ----------------------------------------------------------------- link
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._failed(f"the broker refused the connection: {reason_code}")
            return
        disable_nagle(client)
        self.connected.set()
        self.problem = None
        self._failures = 0
        log.info("connected to %s (session present: %s)", self.config.broker.display_url, flags.session_present)
        client.subscribe([(topic, 1) for topic in self.inbound])
        self._on_change()

    def _on_connect_fail(self, client, userdata) -> None:
        self._failed(describe_connect_failure(sys.exc_info()[1]))

    def _failed(self, reason: str) -> None:
        """Say at once what failed and when the next attempt comes."""
        self._failures += 1
        retry = reconnect_wait_s(self._failures, RECONNECT_MIN_S, self.config.broker.reconnect_max_s)
        self.problem = (
            f"cannot reach the broker at {self.config.broker.display_url}: {reason}; trying again in {retry:g} s"
        )
        log.warning("%s", self.problem)
        self._on_change()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if any(rc.is_failure for rc in reason_codes):
            self.problem = f"the broker refused the subscriptions to {', '.join(self.inbound)} (check the ACL)"
            log.error("%s", self.problem)
            self._on_change()
            return
        self.ready.set()
        self._on_ready()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        self.ready.clear()
        if not self._stopping.is_set():
            self.problem = f"lost the broker at {self.config.broker.display_url} ({reason_code}); reconnecting"
            log.warning("%s", self.problem)
        self._on_change()

    # ------------------------------------------------------------ messages
    def send(self, message: Message | Event, expires_in_s: int | None = None) -> mqtt.MQTTMessageInfo:
        """Publish a message on its topic with the QoS, retention and expiry of the contract.

        A message whose topic expires (a suggestion) lives ``expires_in_s`` at the broker,
        by default the configured suggestion expiry (MQTT 5 only).
        """
        contract = CONTRACT_BY_SCHEMA[type(message)]
        expiry = None
        if contract.expires:
            expiry = expiring(self.config.broker, expires_in_s or self.config.suggestion_expiry_s)
        info = self.client.publish(
            self.topics.of(contract.leaf),
            json.dumps(message.to_payload()),
            qos=contract.qos,
            retain=contract.retained,
            properties=expiry,
        )
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
        connect_async(self.client, self.config.broker, persistent=True)
        self.client.loop_start()

    def stop(self, last: DeviceStatus) -> None:
        """Publish ``last`` as the status if connected, then disconnect."""
        self._stopping.set()
        if self.connected.is_set():
            self.send(last).wait_for_publish(timeout=2.0)
        self.client.disconnect()
        self.client.loop_stop()
