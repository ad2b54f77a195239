"""The deployment profile against a real Mosquitto: TLS only, passwords, an ACL per role.

The broker runs the files ``advisor broker-profile`` writes (certificates generated here); a
real device process connects with its own credentials. Intruders and over-reaching roles
are refused, and the device sees nothing from them.
"""

from __future__ import annotations

import getpass
import sqlite3
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from device.config import BrokerConfig
from device.contract.messages import TransferBegin
from device.mqtt.client import make_client
from tools.mqtt_kit.client import DeviceWatcher, EndMarker, EventPublisher
from tools.ward.broker import MosquittoBroker, free_port, mosquitto_path
from tools.ward.broker_profile import Credential, acl_text, make_certificates, read_credentials, write_profile

from . import event_factory
from .conftest import IN_CI
from .device_process import DeviceProcess

DEVICE = "bed-sec"


@pytest.fixture()
def secure_broker(tmp_path):
    if mosquitto_path() is None:
        message = "mosquitto is not installed (apt-get install mosquitto)"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    port = free_port()
    profile = write_profile(
        tmp_path / "broker", [DEVICE], ["localhost", "127.0.0.1"], port, "127.0.0.1", run_as=getpass.getuser()
    )
    broker = MosquittoBroker(profile.folder, port=port, config_file=profile.conf).start()
    yield profile
    broker.stop()


def config_for(
    profile, role: str | None, password: str | None = None, scheme: str = "mqtts", ca_file=None
) -> BrokerConfig:
    if role is None:
        url = f"{scheme}://localhost:{profile.tls_port}"
    else:
        cred = profile.roles()[role]
        url = f"{scheme}://{cred.username}:{password or cred.password}@localhost:{profile.tls_port}"
    return BrokerConfig(url=url, ca_file=ca_file or profile.ca_file)


def try_connect(config: BrokerConfig, publish: tuple[str, str] | None = None) -> dict:
    """Connect once (no retries); optionally publish at QoS 1. Returns what the broker answered."""
    client = make_client(config, f"probe-{time.monotonic_ns()}", persistent=False)
    answers: dict = {}
    done = threading.Event()
    client.on_connect = lambda c, u, flags, rc, props: (answers.update(connect=str(rc)), done.set())
    client.on_publish = lambda c, u, mid, rc, props: (answers.update(publish=str(rc)), done.set())
    client.on_disconnect = lambda *_: done.set()  # closed without an answer (plain TCP on the TLS port)
    try:
        client.connect(config.host, config.port, 10)
    except OSError as exc:  # TLS handshake refused before MQTT starts
        return {"error": type(exc).__name__}
    client.loop_start()
    done.wait(5)
    if publish and answers.get("connect") == "Success":
        done.clear()
        client.publish(publish[0], publish[1], qos=1)
        done.wait(5)
    client.loop_stop()
    client.disconnect()
    return answers


@pytest.fixture()
def device_rig(secure_broker, tmp_path):
    profile = secure_broker
    device_config = config_for(profile, "device")
    config_file = tmp_path / "device.toml"
    config_file.write_text(f'[broker]\nca_file = "{profile.ca_file}"\n')
    device = DeviceProcess(tmp_path / "state", device_config.url, DEVICE, extra=("--config", str(config_file))).start()
    monitor = DeviceWatcher(config_for(profile, "monitor"), DEVICE, client_id="ward-monitor")
    assert monitor.subscribed.wait(10)
    yield profile, device, monitor
    monitor.close()
    device.stop()


def _acl_blocks(text: str) -> dict[str, list[str]]:
    blocks: dict[str, list[str]] = {}
    user = None
    for line in text.splitlines():
        if line.startswith("user "):
            user = line.split()[1]
            blocks[user] = []
        elif line.startswith("topic ") and user:
            blocks[user].append(line)
    return blocks


def test_acl_gives_each_role_only_its_topics():
    creds = [Credential("sensor", "s", "x", "bed9"), Credential("device", "d", "x", "bed9")]
    creds += [Credential("flasher", "f", "x"), Credential("monitor", "m", "x")]
    blocks = _acl_blocks(acl_text(creds, ["bed9"]))
    assert blocks["s"] == ["topic write advisor/bed9/events"]
    assert all(line.startswith("topic read") for line in blocks["m"] if line)
    assert "topic write advisor/bed9/model" in blocks["f"] and not any("events" in x for x in blocks["f"])
    assert "topic read advisor/bed9/events" in blocks["d"] and "topic write advisor/bed9/suggestions" in blocks["d"]


def test_a_ward_gives_each_bed_its_own_device_and_sensor_and_the_station_every_bed():
    creds = [Credential(r, f"{r}-{d}", "x", d) for d in ("bed1", "bed2") for r in ("device", "sensor")]
    creds += [Credential("flasher", "flasher-ward", "x"), Credential("monitor", "monitor-ward", "x")]
    blocks = _acl_blocks(acl_text(creds, ["bed1", "bed2"]))
    assert blocks["sensor-bed1"] == ["topic write advisor/bed1/events"]
    assert not any("bed1" in line for line in blocks["device-bed2"])
    assert blocks["monitor-ward"] == ["topic read advisor/bed1/#", "topic read advisor/bed2/#"]
    assert (
        "topic write advisor/bed2/model" in blocks["flasher-ward"]
        and "topic write advisor/bed1/model" in blocks["flasher-ward"]
    )


def test_credentials_round_trip_and_pick_a_bed_s_own_before_the_ward_s():
    from tools.ward.broker_profile import credentials_for, credentials_text, ward_credentials

    creds = ward_credentials(["bed1", "bed2"], "w3")
    again = read_credentials(credentials_text(creds))
    assert again == creds and all(c.password for c in again)
    picked = credentials_for(again, "bed2")
    assert {r: c.username for r, c in picked.items()} == {
        "device": "device-bed2",
        "sensor": "sensor-bed2",
        "flasher": "flasher-w3",
        "monitor": "monitor-w3",
    }
    with pytest.raises(ValueError, match="credentials:2: expected 'role device user password'"):
        read_credentials("# header\nsensor bed1 only-three\n")


@pytest.mark.e2e
def test_intruders_are_refused_and_the_device_sees_nothing_from_them(device_rig):
    profile, device, monitor = device_rig
    events = f"advisor/{DEVICE}/events"
    injected = event_factory.raw(event_factory.glucose("intruder-1", "p-sec", datetime.now(UTC), 300))
    assert try_connect(config_for(profile, None), (events, injected)) == {"connect": "Not authorized"}
    assert try_connect(config_for(profile, "sensor", password="guess"), (events, injected)) == {
        "connect": "Not authorized"
    }
    # a legitimate sensor may not flash; the monitor may not inject readings
    begin = TransferBegin("t-evil", size=10, sha256="0" * 64, chunks=1).to_json()
    assert try_connect(config_for(profile, "sensor"), (f"advisor/{DEVICE}/model", begin)) == {
        "connect": "Success",
        "publish": "Not authorized",
    }
    monitor_event = event_factory.raw(event_factory.glucose("intruder-2", "p-sec", datetime.now(UTC), 300))
    assert try_connect(config_for(profile, "monitor"), (events, monitor_event)) == {
        "connect": "Success",
        "publish": "Not authorized",
    }
    # the real sensor still gets through, and only its event reached the device
    sensor = EventPublisher(config_for(profile, "sensor"), DEVICE, client_id="ward-sensor")
    sensor.wait_connected()
    for event in event_factory.history("p-sec", datetime.now(UTC)):
        sensor.publish(event)
    sensor.flush()
    assert monitor.wait_for(lambda w: any(s.patient == "p-sec" for s in w.suggestions), 10)
    marker = EndMarker.new("security")  # the device handles events in order: after its refusal, all are in
    sensor.publish(marker.payload)
    sensor.flush()
    assert monitor.wait_for(marker.seen, 10)
    sensor.close()
    assert monitor.suggestion_for("intruder-1") is None and monitor.suggestion_for("intruder-2") is None
    assert not any((e.event_id or "").startswith("intruder") for e in monitor.errors)
    with sqlite3.connect(device.state_dir / "advisor.sqlite3") as db:
        stored = [r[0] for r in db.execute("SELECT id FROM events")]
    assert stored and not any(i.startswith("intruder") for i in stored)
    assert not (device.state_dir / "bundles").exists() or not any((device.state_dir / "bundles").iterdir())
    log = device.log.read_text()
    assert log and not any(cred.password in log for cred in profile.credentials), "a password was logged"
    assert profile.roles()["device"].password not in device.status().to_json().decode()


@pytest.mark.e2e
def test_plain_tcp_and_an_unknown_ca_are_refused(secure_broker, tmp_path):
    profile = secure_broker
    assert try_connect(config_for(profile, "sensor", scheme="mqtt")).get("connect") is None  # no MQTT over plain TCP
    make_certificates(tmp_path / "other", ["localhost"])
    answer = try_connect(config_for(profile, "sensor", ca_file=tmp_path / "other" / "ca.crt"))
    assert answer.get("error") in ("SSLCertVerificationError", "SSLError")
    assert try_connect(config_for(profile, "sensor")) == {"connect": "Success"}


@pytest.mark.e2e
def test_broker_profile_command_writes_a_private_profile(tmp_path):
    from click.testing import CliRunner

    from tools.cli.main import main

    result = CliRunner().invoke(main, ["broker-profile", "--device-id", "bed3", "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "p"
    for name in ("ca.key", "server.key", "passwd", "credentials.txt"):
        assert (folder / name).stat().st_mode & 0o077 == 0, name
    conf = (folder / "mosquitto.conf").read_text()
    assert "allow_anonymous false" in conf and "listener 8883 0.0.0.0" in conf and "\nlistener" in conf
    assert conf.count("listener ") == 1  # TLS only: no plain listener
    passwords = [c.password for c in read_credentials((folder / "credentials.txt").read_text())]
    assert len(passwords) == 4 and not any(p in (folder / "passwd").read_text() for p in passwords)
    bad = CliRunner().invoke(main, ["broker-profile", "--device-id", "../x", "--out", str(tmp_path / "q")])
    assert bad.exit_code != 0 and "device" in bad.output.lower()
    assert "autosave_interval 300" in conf and "autosave_on_changes false" in conf  # not every second on an SD card


@pytest.mark.e2e
def test_the_profile_command_s_broker_starts_as_root_and_takes_its_clients(tmp_path):
    """As root, Mosquitto drops to its own user: the profile hands it the files it must read."""
    import os
    import pwd

    from click.testing import CliRunner

    from tools.cli.main import main

    if mosquitto_path() is None:
        pytest.fail("mosquitto is not installed") if IN_CI else pytest.skip("mosquitto is not installed")
    port = free_port()
    out = tmp_path / "ward"
    result = CliRunner().invoke(
        main, ["broker-profile", "--device-id", "bed4", "--out", str(out), "--port", str(port), "--bind", "127.0.0.1"]
    )
    assert result.exit_code == 0, result.output
    root_with_mosquitto_user = os.geteuid() == 0 and "mosquitto" in {p.pw_name for p in pwd.getpwall()}
    if root_with_mosquitto_user:
        assert "belong to mosquitto" in result.output
        assert (out / "passwd").stat().st_uid == pwd.getpwnam("mosquitto").pw_uid
    else:
        assert "sudo chown -R mosquitto:" in result.output
    if not root_with_mosquitto_user:
        return  # the broker could not drop privileges here; the printed step is what the ward runs
    for parent in (tmp_path, *tmp_path.parents):  # pytest's private folders (a worker's too): let it pass
        if parent == Path(tempfile.gettempdir()):
            break
        parent.chmod(0o711)
    broker = MosquittoBroker(out, port=port, config_file=out / "mosquitto.conf").start()
    try:
        device = next(c for c in read_credentials((out / "credentials.txt").read_text()) if c.role == "device")
        user, password = device.username, device.password
        config = BrokerConfig(url=f"mqtts://{user}:{password}@localhost:{port}", ca_file=out / "ca.crt")
        assert try_connect(config) == {"connect": "Success"}
    finally:
        broker.stop()


@pytest.mark.e2e
def test_client_commands_take_the_ward_ca_and_say_what_is_wrong(secure_broker, tmp_path):
    """``advisor replay`` against the profile's TLS broker: unknown CA, refused credentials, then through."""
    from click.testing import CliRunner

    from tools.cli.main import main

    log = tmp_path / "log.jsonl"
    log.write_text(event_factory.raw(event_factory.glucose("tls-1", "p-tls", datetime.now(UTC), 120)).decode() + "\n")
    cred = secure_broker.roles()["device"]
    base = ["replay", "--data", str(log), "--device", DEVICE, "--timeout", "2"]
    url = f"mqtts://{cred.username}:{cred.password}@localhost:{secure_broker.tls_port}"

    unknown_ca = CliRunner().invoke(main, [*base, "--broker", url])
    assert unknown_ca.exit_code == 1
    assert "signed by a CA this machine does not trust" in unknown_ca.output and "--ca-file" in unknown_ca.output
    assert "Traceback" not in unknown_ca.output

    wrong = f"mqtts://{cred.username}:not-the-password@localhost:{secure_broker.tls_port}"
    refused = CliRunner().invoke(main, [*base, "--broker", wrong, "--ca-file", str(secure_broker.ca_file)])
    assert refused.exit_code == 1 and "the broker refused the credentials" in refused.output

    through = CliRunner().invoke(main, [*base, "--broker", url, "--ca-file", str(secure_broker.ca_file)])
    assert (
        through.exit_code == 1 and f"device {DEVICE} has published no status" in through.output
    )  # TLS and login passed

    plain = CliRunner().invoke(
        main, [*base, "--broker", url.replace("mqtts", "mqtt"), "--ca-file", str(secure_broker.ca_file)]
    )
    assert plain.exit_code == 2 and "--ca-file" in plain.output and "mqtts://" in plain.output
