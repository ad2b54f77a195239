"""``advisor flash``: deliver a signed bundle to a device over MQTT, or install it on an SD card."""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt

from device.config import BrokerConfig
from device.contract.messages import DeviceStatus, ModelAck
from device.contract.schema import SchemaError
from device.contract.topics import Topics
from device.models import signing
from device.models.bundle import BundleError, open_bundle, pack_archive, read_archive_bytes, sign_bundle_dir
from device.models.install import check_archive, install_archive, installed_path
from device.models.ota import TransferMessage, encode_transfer
from device.mqtt.client import Subscriber

BUSY_RETRY_S = 2.0


class FlashError(Exception):
    """The device rejected the bundle, or did not answer; the message says which."""


def bundle_archive(path: Path, key: Path | None = None) -> bytes:
    """The bundle as ``.tar.gz`` bytes, re-signed with ``key`` when one is given."""
    if key is None:
        return pack_archive(path)
    signing.load_private(key)  # a bad key fails here, before anything is copied
    with tempfile.TemporaryDirectory(prefix="advisor-flash-") as tmp:
        staged = Path(tmp) / "bundle"
        if Path(path).is_dir():
            shutil.copytree(path, staged)
        else:
            staged.mkdir()
            for name, data in read_archive_bytes(Path(path).read_bytes(), str(path)).items():
                (staged / name).write_bytes(data)
        sign_bundle_dir(staged, key)
        return pack_archive(staged)


def _settled(answers: dict[str, ModelAck], transfer: str, went_offline: Callable[[], bool]) -> Callable[[], bool]:
    """Whether the device answered this transfer, or went offline: the wait is over."""
    return lambda: transfer in answers or went_offline()


def flash_over_mqtt(
    archive: bytes,
    broker: BrokerConfig,
    device_id: str,
    timeout_s: float = 60.0,
    messages: list[TransferMessage] | None = None,
    progress: Callable[[str], None] = lambda _m: None,
) -> ModelAck:
    """Send the archive in chunks and wait for the device's answer on ``model/ack``.

    A device busy with another transfer is asked again, with a new transfer, until the
    timeout (an earlier transfer cut off by a restart gives way after a few seconds of
    silence). ``messages`` overrides the encoded transfer (tests use it to corrupt or drop
    chunks; it is sent once).
    """
    topics = Topics(device_id)
    answers: dict[str, ModelAck] = {}
    states: list[str] = []  # the device's status, as it comes (retained: the current one first)

    def keep(message: mqtt.MQTTMessage) -> None:
        try:
            if message.topic == topics.status:
                states.append(DeviceStatus.from_json(message.payload).state)
                return
            ack = ModelAck.from_json(message.payload)
        except SchemaError:
            return
        if ack.transfer is not None:
            answers.setdefault(ack.transfer, ack)

    def went_offline() -> bool:  # online while we flashed, then its last will (or a clean stop)
        return "online" in states and states[-1] == "offline"

    client = Subscriber(broker, f"advisor-flash-{uuid.uuid4().hex[:12]}", [topics.model_ack, topics.status], keep)
    deadline = time.monotonic() + timeout_s
    try:
        try:
            client.wait_subscribed(min(timeout_s, 15.0))
        except TimeoutError as exc:
            raise FlashError(str(exc)) from None
        while True:
            attempt = messages if messages is not None else encode_transfer(archive)
            transfer = attempt[0].transfer
            for message in attempt:
                client.client.publish(topics.model, message.to_json(), qos=1)
            client.wait_until(_settled(answers, transfer, went_offline), max(0.0, deadline - time.monotonic()))
            if transfer not in answers and went_offline():
                raise FlashError(
                    f"device {device_id} went offline before it answered (its status on {topics.status}); "
                    "start it, check which bundle it runs (advisor doctor), and flash again"
                )
            if transfer not in answers:
                raise FlashError(
                    f"device {device_id} did not answer within {timeout_s:g} s "
                    "(is it running and subscribed to this broker?)"
                )
            answer = answers[transfer]
            busy = not answer.accepted and "is in progress" in (answer.reason or "")
            if not busy or messages is not None or time.monotonic() + BUSY_RETRY_S > deadline:
                break
            progress(f"device {device_id} is busy with another transfer; trying again in {BUSY_RETRY_S:g} s")
            time.sleep(BUSY_RETRY_S)
    finally:
        client.close()
    if not answer.accepted:
        raise FlashError(f"device {device_id} rejected the bundle: {answer.reason or 'no reason given'}")
    return answer


def flash_to_directory(
    archive: bytes, state_dir: Path, keys: list[signing.PublicKey], allow_downgrade: bool = False
) -> str:
    """Install into a device's state directory (an SD card) with the device's own checks."""
    current = None
    if installed_path(state_dir).exists():
        try:
            current = open_bundle(installed_path(state_dir), keys).version
        except BundleError:
            current = None  # a broken installed bundle may be replaced
    model = check_archive(archive, keys, current, allow_downgrade, "bundle")
    install_archive(state_dir, archive)
    return model.bundle.version
