"""Bundle transfers from a hostile sender, through Mosquitto into a running device (in this process).

The attack: ``begin`` announcing 64 MiB in 67 million chunks, then 2,500 different 40 KiB chunks
and no ``end``: the device held them all (RSS 181 → 280 MB), forever. Now the ``begin`` is
refused once, the chunks are ignored, a quiet transfer is abandoned, and a second ``begin``
cannot push out the transfer in progress.
"""

from __future__ import annotations

import base64
import hashlib
import os

import pytest

from device.config import BrokerConfig, DeviceConfig, HttpConfig
from device.contract.messages import ModelAck, TransferBegin, TransferChunk
from device.contract.topics import Topics
from device.models.ota import encode_transfer
from device.mqtt.client import Subscriber
from device.service import DeviceService

DEVICE = "bed-ota"


@pytest.fixture()
def rig(mosquitto, tmp_path):
    broker = BrokerConfig(url=mosquitto.url)
    service = DeviceService(
        DeviceConfig(device_id=DEVICE, broker=broker, http=HttpConfig(port=0), state_dir=tmp_path / "state")
    )
    service.ota.receiver._idle_s = 1.0  # abandon quiet transfers after 1 s instead of 60
    service.start()
    acks: list[ModelAck] = []
    sender = Subscriber(
        broker, "ota-attacker", [Topics(DEVICE).model_ack], lambda m: acks.append(ModelAck.from_json(m.payload))
    )
    try:
        assert service.ready.wait(10)
        sender.wait_subscribed(5)
        yield service, sender, acks
    finally:
        sender.close()
        service.stop()


def send(sender: Subscriber, *messages) -> None:
    for message in messages:
        sender.client.publish(Topics(DEVICE).model, message.to_json(), qos=1).wait_for_publish(5)


def settle(sender: Subscriber, acks: list[ModelAck]) -> list[ModelAck]:
    """Send a begin the device refuses and wait for its answer: the device handles one sender's messages in
    order, so everything sent before it has been handled. The answers before it."""
    send(sender, TransferBegin("probe", 64 * 1024 * 1024, "0" * 64, 67_108_864))
    assert sender.wait_until(lambda: any(a.transfer == "probe" for a in acks), 10)
    return [a for a in acks if a.transfer != "probe"]


def chunk(transfer: str, index: int, data: bytes) -> TransferChunk:
    return TransferChunk(transfer, index, hashlib.sha256(data).hexdigest(), base64.b64encode(data).decode())


def test_a_huge_begin_is_refused_once_and_its_chunks_are_ignored(rig):
    service, sender, acks = rig
    send(sender, TransferBegin("huge", 64 * 1024 * 1024, "0" * 64, 67_108_864))
    for i in range(300):
        send(sender, chunk("huge", i, os.urandom(40 * 1024)))
    assert [(a.transfer, a.accepted) for a in settle(sender, acks)] == [("huge", False)]
    assert "bundle size must be" in acks[0].reason
    assert service.ota.receiver.current is None


def test_a_quiet_transfer_is_abandoned_and_a_second_begin_waits_its_turn(rig):
    service, sender, acks = rig
    archive = os.urandom(200_000)
    first = encode_transfer(archive, "slow", chunk_bytes=40_000)
    send(sender, *first[:3])
    send(sender, *encode_transfer(archive, "pushy", chunk_bytes=40_000)[:1])
    assert sender.wait_until(lambda: any(a.transfer == "pushy" for a in acks), 5)
    pushy = next(a for a in acks if a.transfer == "pushy")
    assert not pushy.accepted and "another transfer (slow) is in progress" in pushy.reason
    assert service.ota.receiver.current is not None and service.ota.receiver.current.transfer == "slow"
    assert sender.wait_until(lambda: any(a.transfer == "slow" for a in acks), 5)  # then silence: abandoned
    slow = next(a for a in acks if a.transfer == "slow")
    assert not slow.accepted and "nothing heard for 1 s" in slow.reason and "80000 of 200000 bytes" in slow.reason
    assert service.ota.receiver.current is None
    send(sender, *first[3:])  # the rest comes too late: ignored, not answered again
    assert [a.transfer for a in settle(sender, acks)].count("slow") == 1


def test_more_data_than_announced_is_refused(rig):
    _service, sender, acks = rig
    send(
        sender,
        TransferBegin("sly", 50_000, "0" * 64, 2),
        chunk("sly", 0, os.urandom(40_000)),
        chunk("sly", 1, os.urandom(40_000)),
    )
    assert sender.wait_until(lambda: bool(acks), 5)
    assert acks[0].transfer == "sly" and "more data than the 50000 bytes" in acks[0].reason
