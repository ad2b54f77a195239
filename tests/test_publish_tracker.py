"""The PUBACK bookkeeping the HL7 bridge's ``AA`` rests on (device/mqtt/client.py), on a real broker.

A message the bridge gave up on (no PUBACK in time: the engine is told ``AR`` and sends again)
may still be confirmed later. Packet ids wrap at 65535, so that late confirmation must never
count for a later message that gets the same id: that would be an ``AA`` for a reading the broker
never took.
"""

from __future__ import annotations

import pytest

from device.config import BrokerConfig
from device.mqtt.client import PublishTracker, connect_async, make_client

from .tcp_proxy import CuttableProxy

TOPIC = "advisor/tracker-test/events"


@pytest.mark.e2e
def test_a_late_confirmation_of_an_abandoned_message_is_not_taken_for_a_reused_packet_id(mosquitto):
    proxy = CuttableProxy(mosquitto.port)
    broker = BrokerConfig(url=f"mqtt://127.0.0.1:{proxy.port}")
    client = make_client(broker, "tracker-test", persistent=False)
    tracker = PublishTracker(client)
    connect_async(client, broker, persistent=False)
    client.loop_start()
    try:
        assert tracker.wait({tracker.publish(TOPIC, "warm-up")}, 10), "the broker confirms when the link is up"
        proxy.cut()  # the link drops: paho keeps the message and sends it again once reconnected
        first = tracker.publish(TOPIC, "first")
        assert not tracker.wait({first}, 0.3)
        tracker.abandon({first})
        proxy.restore()
        # the broker's PUBACKs come in order: once a later message is confirmed, so was the first
        assert tracker.wait({tracker.publish(TOPIC, "after")}, 30)

        client._last_mid = first - 1  # stands in for 65,535 publishes: the next message gets the same id
        proxy.cut()
        reused = tracker.publish(TOPIC, "reused")
        assert reused == first
        assert not tracker.wait({reused}, 0.3), "the first message's late PUBACK confirmed another message"
        proxy.restore()
        assert tracker.wait({reused}, 30), "its own PUBACK confirms it"
    finally:
        proxy.close()
        client.disconnect()
        client.loop_stop()
