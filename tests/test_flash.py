"""Signed over-the-air flashing through a real Mosquitto to a real device process.

The device trusts a test key (``--trust``); variants of the packaged bundle are re-signed with
it (newer, older, another model, a failing self-test) or with an untrusted key. Every
rejection names its reason and the device keeps serving the bundle it had; an accepted bundle
is used from the next suggestion on, without a restart; a ``kill -9`` at any step of an
install leaves the device starting on a complete bundle.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from device.config import BrokerConfig
from device.contract.messages import TransferChunk
from device.contract.topics import Topics
from device.models import signing
from device.models.bundle import default_bundle_path, open_bundle, pack_archive, sign_bundle_dir
from device.models.ota import TransferMessage, encode_transfer
from tools.cli.main import main
from tools.mqtt_kit.client import DeviceWatcher, EventPublisher
from tools.mqtt_kit.flash import FlashError, flash_over_mqtt

from . import event_factory
from .device_process import DeviceProcess

DEVICE = "flash1"
PACKAGED_VERSION = open_bundle(default_bundle_path("dose")).version


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    trusted = tmp_path_factory.mktemp("trusted")
    stranger = tmp_path_factory.mktemp("stranger")
    t_private, t_public = signing.generate(trusted)
    s_private, _ = signing.generate(stranger)
    return {"private": t_private, "public": t_public, "stranger": s_private}


def variant(
    tmp_path: Path, key: Path, version: str = "2099.01.01.000000", name: str | None = None, golden_shift: float = 0.0
) -> Path:
    """A copy of the packaged bundle with a changed manifest, re-signed with ``key``."""
    target = tmp_path / f"bundle-{version}-{name}-{golden_shift}-{key.parent.name}"
    shutil.copytree(default_bundle_path("dose"), target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["version"] = version
    if name:
        manifest["name"] = name
    for pair in manifest["golden"]:
        for role in pair["outputs"]:
            pair["outputs"][role] += golden_shift
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2))
    sign_bundle_dir(target, key)
    return target


@pytest.fixture()
def rig(mosquitto, tmp_path, keys):
    broker = BrokerConfig(url=mosquitto.url)
    watcher = DeviceWatcher(broker, DEVICE)
    assert watcher.subscribed.wait(5)
    devices: list[DeviceProcess] = []

    def start(launcher: tuple[str, ...] = ("-m", "tools.cli.main")) -> DeviceProcess:
        device = DeviceProcess(
            tmp_path / "state", mosquitto.url, DEVICE, extra=("--trust", str(keys["public"])), launcher=launcher
        )
        devices.append(device)
        return device.start()

    publisher = EventPublisher(broker, DEVICE, client_id="flash-sensor")
    yield start, broker, watcher, publisher
    publisher.close()
    watcher.close()
    for device in devices:
        device.stop()


def suggestion_version(publisher, watcher, event_id: str) -> str:
    now = datetime.now(UTC)
    for event in event_factory.history("p-1", now):
        publisher.publish(event)
    publisher.publish(event_factory.glucose(event_id, "p-1", now, 170))
    assert watcher.wait_for(lambda w: w.suggestion_for(event_id), 5)
    return watcher.suggestion_for(event_id).model.version


def test_accepted_bundle_is_used_without_restart(rig, keys, tmp_path):
    start, broker, watcher, publisher = rig
    device = start()
    assert suggestion_version(publisher, watcher, "before") == PACKAGED_VERSION
    newer = variant(tmp_path, keys["private"])
    answer = flash_over_mqtt(pack_archive(newer), broker, DEVICE, timeout_s=30)
    assert answer.accepted and answer.version == "2099.01.01.000000"
    assert suggestion_version(publisher, watcher, "after") == "2099.01.01.000000"
    assert device.status().models[0].version == "2099.01.01.000000"
    assert watcher.wait_for(lambda w: w.status[-1].models[0].version == "2099.01.01.000000", 5)
    assert (device.state_dir / "bundles" / "dose.tar.gz").is_file()
    device.terminate()
    assert start().status().models[0].version == "2099.01.01.000000"  # and after a restart


def corrupt_chunk(messages: list[TransferMessage]) -> list[TransferMessage]:
    chunk = messages[2]
    assert isinstance(chunk, TransferChunk)
    data = chunk.data[:-8] + ("A" * 8 if not chunk.data.endswith("A" * 8) else "B" * 8)
    return [*messages[:2], replace(chunk, data=data), *messages[3:]]


REJECTIONS = [
    ("untrusted key", dict(key="stranger"), None, "unknown key"),
    ("older version", dict(version="2000.01.01.000000"), None, "older than the running"),
    ("another model", dict(name="mortality"), None, "'mortality' model"),
    ("failed self-test", dict(golden_shift=1.0), None, "self-test failed"),
    ("corrupted chunk", {}, corrupt_chunk, "corrupted"),
    ("missing chunk", {}, lambda m: m[:3] + m[4:], "missing chunk(s) 2"),
    ("hash mismatch", {}, lambda m: [replace(m[0], sha256="0" * 64)] + m[1:], "does not match its announced sha256"),
]


@pytest.mark.parametrize("name, change, tamper, reason", REJECTIONS, ids=[r[0] for r in REJECTIONS])
def test_rejected_bundles_keep_the_old_one(rig, keys, tmp_path, name, change, tamper, reason):
    start, broker, watcher, publisher = rig
    device = start()
    change = dict(change)
    key = keys[change.pop("key", "private")]
    bundle = variant(tmp_path, key, **change)
    archive = pack_archive(bundle)
    messages = encode_transfer(archive, chunk_bytes=16 * 1024)
    if tamper is not None:
        messages = tamper(messages)
    with pytest.raises(FlashError) as caught:
        flash_over_mqtt(archive, broker, DEVICE, timeout_s=30, messages=messages)
    assert "rejected" in str(caught.value) and reason in str(caught.value)
    assert device.status().models[0].version == PACKAGED_VERSION
    assert suggestion_version(publisher, watcher, f"after-{len(name)}") == PACKAGED_VERSION
    assert not (device.state_dir / "bundles" / "dose.tar.gz").exists()


def test_flash_command_reports_rejection_and_acceptance(rig, keys, tmp_path, mosquitto):
    start, _broker, _watcher, _publisher = rig
    start()
    runner = CliRunner()
    older = variant(tmp_path, keys["private"], version="2000.01.01.000000")
    bad = runner.invoke(main, ["flash", str(older), "--broker", mosquitto.url, "--device", DEVICE, "--timeout", "30"])
    assert bad.exit_code == 1 and "rejected the bundle" in bad.output and "older" in bad.output
    unsigned = variant(tmp_path, keys["stranger"])
    good = runner.invoke(
        main,
        [
            "flash",
            str(unsigned),
            "--broker",
            mosquitto.url,
            "--device",
            DEVICE,
            "--key",
            str(keys["private"]),
            "--timeout",
            "30",
        ],
    )  # re-signed on the way
    assert good.exit_code == 0, good.output
    assert "accepted" in good.output and "2099.01.01.000000" in good.output
    silent = runner.invoke(
        main, ["flash", str(unsigned), "--broker", mosquitto.url, "--device", "nobody", "--timeout", "2"]
    )
    assert silent.exit_code == 1 and "did not answer" in silent.output
    usage = runner.invoke(main, ["flash", str(unsigned)])
    assert usage.exit_code == 2 and "--to DIR" in usage.output


@pytest.mark.parametrize(
    "point, expected",
    [
        ("before-write", PACKAGED_VERSION),
        ("mid-write", PACKAGED_VERSION),
        ("before-rename", PACKAGED_VERSION),
        ("after-rename", "2099.01.01.000000"),
    ],
)
def test_kill_9_during_install_leaves_a_complete_bundle(rig, keys, tmp_path, point, expected):
    start, broker, watcher, publisher = rig
    device = start(launcher=("-m", "tests.faulty_device", point))
    with pytest.raises(FlashError, match=f"device {DEVICE} went offline before it answered"):
        flash_over_mqtt(pack_archive(variant(tmp_path, keys["private"])), broker, DEVICE, timeout_s=60)
    device.process.wait(10)
    assert device.process.returncode == -9
    restarted = start()
    assert restarted.status().models[0].version == expected
    assert restarted.status().model_problem is None
    assert suggestion_version(publisher, watcher, f"after-{point}") == expected


def test_kill_9_mid_transfer_then_flash_again(rig, keys, tmp_path):
    start, broker, _watcher, publisher = rig
    device = start()
    archive = pack_archive(variant(tmp_path, keys["private"]))
    messages = encode_transfer(archive, chunk_bytes=16 * 1024)
    for message in messages[: len(messages) // 2]:
        publisher.client.publish(Topics(DEVICE).model, message.to_json(), qos=1)
    publisher.flush()
    device.kill()
    restarted = start()
    assert restarted.status().models[0].version == PACKAGED_VERSION
    assert flash_over_mqtt(archive, broker, DEVICE, timeout_s=30).accepted
    assert restarted.status().models[0].version == "2099.01.01.000000"


def test_flash_to_a_state_directory(tmp_path, keys):
    runner = CliRunner()
    newer = variant(tmp_path, keys["private"])
    card = tmp_path / "sdcard"
    untrusted = runner.invoke(main, ["flash", str(newer), "--to", str(card)])
    assert untrusted.exit_code == 1 and "unknown key" in untrusted.output
    ok = runner.invoke(main, ["flash", str(newer), "--to", str(card), "--trust", str(keys["public"])])
    assert ok.exit_code == 0 and "2099.01.01.000000" in ok.output
    older = variant(tmp_path, keys["private"], version="2000.01.01.000000")
    down = runner.invoke(main, ["flash", str(older), "--to", str(card), "--trust", str(keys["public"])])
    assert down.exit_code == 1 and "older" in down.output
    forced = runner.invoke(
        main, ["flash", str(older), "--to", str(card), "--trust", str(keys["public"]), "--allow-downgrade"]
    )
    assert forced.exit_code == 0
    assert (
        open_bundle(card / "bundles" / "dose.tar.gz", [signing.load_public(keys["public"])]).version
        == "2000.01.01.000000"
    )


@pytest.mark.parametrize("damage", ["garbage", "truncated", "bad-signature"])
def test_malformed_bundle_on_disk_at_start_falls_back_to_the_packaged_one(rig, keys, tmp_path, damage):
    start, _broker, watcher, publisher = rig
    target = tmp_path / "state" / "bundles" / "dose.tar.gz"
    target.parent.mkdir(parents=True)
    archive = pack_archive(default_bundle_path("dose"))
    if damage == "garbage":
        target.write_bytes(b"\x00not a bundle at all" * 50)
    elif damage == "truncated":
        target.write_bytes(archive[: len(archive) // 2])
    else:  # a complete archive whose manifest no longer matches its signature
        staged = tmp_path / "tampered"
        shutil.copytree(default_bundle_path("dose"), staged)
        manifest = json.loads((staged / "manifest.json").read_text())
        manifest["version"] = "9999.01.01.000000"
        (staged / "manifest.json").write_text(json.dumps(manifest))
        target.write_bytes(pack_archive(staged))
    device = start()
    status = device.status()
    packaged = open_bundle(default_bundle_path("dose")).version
    assert status.models[0].version == packaged and status.model_problem is None
    assert any(str(target) in note and "was not used" in note for note in status.notes)
    assert any(f"running bundle {default_bundle_path('dose')}" in note for note in status.notes)
    assert suggestion_version(publisher, watcher, f"after-{damage}") == packaged
