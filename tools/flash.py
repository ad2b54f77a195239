"""``advisor flash``: deliver a signed bundle to a device over MQTT, or install it on an SD card."""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from pathlib import Path

from device import signing
from device.bundle import BundleError, open_bundle, pack_archive, read_archive_bytes, sign_bundle_dir
from device.config import BrokerConfig
from device.install import check_archive, install_archive, installed_path
from device.mqtt_client import connect_async, disable_nagle, make_client
from device.ota import encode_transfer
from device.topics import Topics


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


def flash_over_mqtt(archive: bytes, broker: BrokerConfig, device_id: str, timeout_s: float = 60.0,
                    messages: list[dict] | None = None) -> dict:
    """Send the archive in chunks and wait for the device's answer on ``model/ack``.

    ``messages`` overrides the encoded transfer (tests use it to corrupt or drop chunks).
    """
    topics = Topics(device_id)
    messages = messages if messages is not None else encode_transfer(archive)
    transfer = messages[0]["transfer"]
    answer: dict = {}
    answered = threading.Event()
    subscribed = threading.Event()
    client = make_client(broker, f"advisor-flash-{transfer[:12]}", persistent=False)

    def on_connect(c, userdata, flags, reason_code, properties):
        if not reason_code.is_failure:
            disable_nagle(c)
            c.subscribe(topics.model_ack, qos=1)

    def on_message(c, userdata, message):
        try:
            payload = json.loads(message.payload)
        except ValueError:
            return
        if payload.get("transfer") == transfer:
            answer.update(payload)
            answered.set()

    client.on_connect = on_connect
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_message = on_message
    connect_async(client, broker, persistent=False)
    client.loop_start()
    try:
        if not subscribed.wait(min(timeout_s, 15.0)):
            raise FlashError(f"could not reach the broker at {broker.display_url}")
        for message in messages:
            client.publish(topics.model, json.dumps(message), qos=1)
        if not answered.wait(timeout_s):
            raise FlashError(f"device {device_id} did not answer within {timeout_s:g} s "
                             "(is it running and subscribed to this broker?)")
    finally:
        client.disconnect()
        client.loop_stop()
    if not answer.get("accepted"):
        raise FlashError(f"device {device_id} rejected the bundle: {answer.get('reason', 'no reason given')}")
    return answer


def flash_to_directory(archive: bytes, state_dir: Path, keys: list[signing.PublicKey],
                       allow_downgrade: bool = False) -> str:
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
