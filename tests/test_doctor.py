"""``advisor doctor``: verdicts as pure functions, then whole wards against a real TLS Mosquitto.

The e2e tests run the files ``advisor broker-profile`` writes for two beds, one real device
process, and break one thing at a time: a device that never started, a missing CA, a wrong
password, an ACL that lets a sensor flash.
"""

from __future__ import annotations

import getpass
import json
import signal
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from device.contract.messages import DeviceStatus, ModelInfo
from domain.validation import ValidationError, decode_event
from tools.cli.main import main
from tools.ward.broker import MosquittoBroker, free_port, mosquitto_path
from tools.ward.broker_profile import write_profile
from tools.ward.doctor import Finding, certificate_finding, clock_finding, probe_event, status_finding

from .conftest import IN_CI
from .device_process import DeviceProcess

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def _status(**changes) -> DeviceStatus:
    fields = dict(
        state="online",
        device_id="bed1",
        models=[ModelInfo("dose", "2026.11.22.1", "ab" * 32)],
        risk_models={},
        model_problem=None,
        storage_problem=None,
        held_in_memory=0,
        notes=[],
        clock="wall",
        timezone="Europe/Berlin",
        started_at=NOW.isoformat(),
        checks_overdue=[],
        clock_problem=None,
    )
    fields.update(changes)
    return DeviceStatus(**fields)


def test_the_clock_is_judged_from_the_answer_s_time_and_the_round_trip():
    sent, received = NOW, NOW + timedelta(milliseconds=40)
    ok = clock_finding(NOW + timedelta(milliseconds=20, seconds=2), sent, received, "wall")
    assert ok.ok and ok.detail == "the device is 2.0 s ahead of this computer (±20 ms)"
    behind = clock_finding(NOW - timedelta(minutes=7), sent, received, "wall")
    assert behind.ok is False and "7 min 0 s behind" in behind.detail and "'in the future'" in behind.detail
    assert "timedatectl set-ntp true" in (behind.fix or "")
    ahead = clock_finding(NOW + timedelta(minutes=3), sent, received, "wall")
    assert ahead.ok is False and "in the future" not in ahead.detail


def test_the_status_says_what_to_do():
    topic = "advisor/bed1/status"
    never = status_finding(None, topic, "monitor-ward", None)
    assert never.ok is False and "never connected" in never.detail and "systemctl start advisor" in (never.fix or "")
    gone = status_finding(_status(state="offline"), topic, "m", None)
    assert gone.ok is False and "last will" in gone.detail
    no_model = status_finding(_status(models=[], model_problem="no signed bundle found"), topic, "m", None)
    assert no_model.ok is False and "no signed bundle found" in no_model.detail and "advisor flash" in no_model.fix
    old = status_finding(_status(), topic, "m", "2026.12.01.1")
    assert old.ok is False and "runs dose 2026.11.22.1, expected 2026.12.01.1" in old.detail
    good = status_finding(_status(), topic, "m", "2026.11.22.1")
    assert good.ok and good.detail == "online: dose 2026.11.22.1; timezone Europe/Berlin"


def test_a_certificate_near_its_end_is_a_failure():
    cert = {"notAfter": "Dec 10 10:00:00 2026 GMT", "subjectAltName": (("DNS", "broker.ward"),)}
    soon = certificate_finding(cert, "broker.ward", NOW)
    assert soon.ok is False and "valid until 2026-12-10 (18 days)" in soon.detail and "renew" in (soon.fix or "")
    later = certificate_finding({**cert, "notAfter": "Dec 10 10:00:00 2028 GMT"}, "broker.ward", NOW)
    assert later.ok and "certificate for broker.ward" in later.detail


def test_the_probe_is_refused_by_every_device_before_anything_is_stored():
    with pytest.raises(ValidationError, match="in the future") as refused:
        decode_event(probe_event("abc"), datetime.now(UTC))
    assert refused.value.event_id == "doctor-abc"
    assert Finding("x", None, "d").lines() == [f"skip  {'x':<14} d"]


# ----------------------------------------------------------------------------- e2e
@pytest.fixture()
def ward(tmp_path):
    """A two-bed ward profile on a real TLS Mosquitto, bed1's device running with its own user."""
    if mosquitto_path() is None:
        pytest.fail("mosquitto is not installed") if IN_CI else pytest.skip("mosquitto is not installed")
    port = free_port()
    profile = write_profile(
        tmp_path / "broker", ["bed1", "bed2"], ["localhost"], port, "127.0.0.1", run_as=getpass.getuser()
    )
    broker = MosquittoBroker(profile.folder, port=port, config_file=profile.conf).start()
    cred = profile.roles("bed1")["device"]
    config = tmp_path / "device.toml"
    config.write_text(f'[broker]\nca_file = "{profile.ca_file}"\n')
    url = f"mqtts://{cred.username}:{cred.password}@localhost:{port}"
    device = DeviceProcess(tmp_path / "state", url, "bed1", extra=("--config", str(config))).start()
    yield profile, broker, device
    device.stop()
    broker.stop()


def _doctor(profile, device_id: str, *extra: str, credentials=None, ca: bool = True):
    args = ["doctor", "--broker", f"mqtts://localhost:{profile.tls_port}", "--device", device_id, "--timeout", "3"]
    if ca:
        args += ["--ca-file", str(profile.ca_file)]
    args += ["--credentials", str(credentials or profile.folder / "credentials.txt"), *extra]
    return CliRunner().invoke(main, args)


def _lines(output: str) -> dict[str, str]:
    """check name → its verdict line."""
    found = {}
    for line in output.splitlines():
        parts = line.split(maxsplit=1)
        if parts and parts[0] in ("ok", "FAIL", "skip"):
            found[line[8:22].strip()] = line.strip()
    return found


@pytest.mark.e2e
def test_doctor_passes_a_healthy_ward_device_and_leaves_nothing_behind(ward):
    profile, _, device = ward
    result = _doctor(profile, "bed1", "--expect-version", device.status().models[0].version)
    assert result.exit_code == 0, result.output
    lines = _lines(result.output)
    assert list(lines) == [
        "reachable",
        "TLS",
        "credentials",
        "status",
        "answer",
        "clock",
        "access sensor",
        "access monitor",
        "access flasher",
    ]
    assert all(line.startswith("ok") for line in lines.values()), result.output
    assert "accepted: sensor-bed1, monitor-ward, flasher-ward, device-bed1" in lines["credentials"]
    assert "behind" in lines["clock"] or "ahead" in lines["clock"]
    assert result.output.rstrip().endswith("all 9 checks passed")
    as_json = json.loads(_doctor(profile, "bed1", "--json").output)
    assert as_json["ok"] is True and len(as_json["checks"]) == 9
    older = _doctor(profile, "bed1", "--protocol", "3.1.1")
    assert older.exit_code == 0 and "needs MQTT 5" in _lines(older.output)["access"]
    with sqlite3.connect(device.state_dir / "advisor.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0  # the probes were refused
    assert device.patients().patients == []


@pytest.mark.e2e
def test_doctor_names_what_is_wrong_and_the_fix(ward, tmp_path):
    profile, broker, _ = ward
    never = _doctor(profile, "bed2")
    assert never.exit_code == 1
    lines = _lines(never.output)
    assert lines["status"].startswith("FAIL") and "never connected" in lines["status"]
    assert lines["answer"].startswith("FAIL") and "not online" in lines["answer"]
    assert lines["access sensor"].startswith("ok")  # the ward's ACL is right even for a bed not yet running
    assert "checks failed: status, answer" in never.output

    no_ca = _doctor(profile, "bed1", ca=False)
    assert no_ca.exit_code == 1 and "does not trust" in _lines(no_ca.output)["TLS"]
    assert "--ca-file" in no_ca.output and "credentials" not in _lines(no_ca.output)

    text = (profile.folder / "credentials.txt").read_text()
    sensor = profile.roles("bed1")["sensor"]
    wrong = tmp_path / "wrong.txt"
    wrong.write_text(text.replace(sensor.password, "not-it"))
    refused = _doctor(profile, "bed1", credentials=wrong)
    lines = _lines(refused.output)
    assert refused.exit_code == 1 and "sensor-bed1: the broker refused the credentials" in lines["credentials"]
    assert lines["answer"].startswith("skip") and "mosquitto_passwd" in refused.output

    acl = profile.folder / "acl"
    acl.write_text(acl.read_text().replace("user sensor-bed1\n", "user sensor-bed1\ntopic write advisor/bed1/#\n"))
    assert broker.process is not None
    broker.process.send_signal(signal.SIGHUP)  # Mosquitto reloads its ACL
    too_open = _doctor(profile, "bed1")
    lines = _lines(too_open.output)
    assert too_open.exit_code == 1 and lines["access sensor"].startswith("FAIL")
    assert "sensor-bed1 may write advisor/bed1/model (flash bundles): the ACL is too open" in lines["access sensor"]
    assert lines["answer"].startswith("ok")

    bad_file = tmp_path / "bad.txt"
    bad_file.write_text("sensor bed1 only-three\n")
    unreadable = _doctor(profile, "bed1", credentials=bad_file)
    assert unreadable.exit_code == 2 and f"{bad_file}:1: expected 'role device user password'" in unreadable.output


@pytest.mark.e2e
def test_one_bed_s_sensor_cannot_write_another_bed_s_events(ward):
    from device.config import BrokerConfig
    from tools.ward.doctor import Session

    profile, _, _ = ward
    sensor = profile.roles("bed1")["sensor"]
    config = BrokerConfig(
        url=f"mqtts://{sensor.username}:{sensor.password}@localhost:{profile.tls_port}", ca_file=profile.ca_file
    )
    session = Session(config, "cross")
    try:
        assert session.logged_in(5) is None
        assert session.publish("advisor/bed1/events", probe_event("own"), 5) == "Success"
        assert session.publish("advisor/bed2/events", probe_event("other"), 5) == "Not authorized"
    finally:
        session.close()


@pytest.mark.e2e
def test_doctor_on_a_plain_local_broker_says_tls_is_off(mosquitto, tmp_path):
    device = DeviceProcess(tmp_path / "state", mosquitto.url, "bench1").start()
    try:
        result = CliRunner().invoke(main, ["doctor", "--broker", mosquitto.url, "--device", "bench1"])
        assert result.exit_code == 0, result.output
        lines = _lines(result.output)
        assert lines["TLS"].startswith("skip") and "anyone on the network" in lines["TLS"]
        assert lines["answer"].startswith("ok") and "access sensor" not in lines
    finally:
        device.stop()


@pytest.mark.e2e
def test_publish_on_a_ward_sends_as_the_bed_s_sensor_and_reads_as_the_monitor(ward):
    profile, _, _ = ward
    sensor = profile.roles("bed1")["sensor"]
    base = ["publish", "--ca-file", str(profile.ca_file), "--wait", "3"]
    own_url = f"mqtts://{sensor.username}:{sensor.password}@localhost:{profile.tls_port}"
    reading = json.dumps(
        {"id": "w-g1", "patient": "p-w", "ts": datetime.now(UTC).isoformat(), "kind": "glucose", "mg_dl": 55}
    )
    as_sensor = CliRunner().invoke(main, [*base, "--broker", own_url, "--device", "bed1", reading])
    assert as_sensor.exit_code == 1
    assert "w-g1: no answer seen: the device may be offline, or sensor-bed1 may not read the answers" in (
        as_sensor.output
    )
    credentials = ["--credentials", str(profile.folder / "credentials.txt")]
    plain_url = f"mqtts://localhost:{profile.tls_port}"
    answered = CliRunner().invoke(
        main, [*base, *credentials, "--broker", plain_url, "--device", "bed1", reading.replace("w-g1", "w-g2")]
    )
    assert answered.exit_code == 0, answered.output
    assert answered.output.startswith("w-g2: withhold")
    other_bed = CliRunner().invoke(main, [*base, "--broker", own_url, "--device", "bed2", reading])
    assert other_bed.exit_code == 1 and "Traceback" not in other_bed.output
    assert "the broker refused 1 of 1 messages (not authorized): sensor-bed1 may not write advisor/bed2/events" in (
        other_bed.output
    )


def test_an_event_clock_device_s_clock_is_skipped_unless_its_wall_clock_is_off():
    sent, received = NOW, NOW + timedelta(milliseconds=40)
    replaying = clock_finding(NOW, sent, received, "event")
    assert replaying.ok is None and replaying.fix is None
    assert replaying.detail.startswith("the device runs on the event clock (log replay); its time is the events' time")
    assert Finding("clock", None, replaying.detail).lines()[0].startswith("skip  clock")
    off = clock_finding(NOW - timedelta(minutes=7), sent, received, "event")
    assert off.ok is False and "7 min 0 s behind" in off.detail


@pytest.mark.e2e
def test_doctor_passes_a_device_on_the_event_clock(mosquitto, tmp_path):
    device = DeviceProcess(tmp_path / "state", mosquitto.url, "replay1", clock="event").start()
    try:
        result = CliRunner().invoke(main, ["doctor", "--broker", mosquitto.url, "--device", "replay1"])
        assert result.exit_code == 0, result.output
        clock = _lines(result.output)["clock"]
        assert clock.startswith("skip") and "the device runs on the event clock (log replay)" in clock
    finally:
        device.stop()


@pytest.fixture()
def tls_broker(tmp_path):
    """A ward profile's TLS-only Mosquitto, with no device."""
    if mosquitto_path() is None:
        pytest.fail("mosquitto is not installed") if IN_CI else pytest.skip("mosquitto is not installed")
    port = free_port()
    profile = write_profile(tmp_path / "broker", ["bed1"], ["localhost"], port, "127.0.0.1", run_as=getpass.getuser())
    broker = MosquittoBroker(profile.folder, port=port, config_file=profile.conf).start()
    yield profile
    broker.stop()


@pytest.mark.e2e
def test_doctor_says_when_an_mqtt_url_points_at_a_tls_port(tls_broker):
    profile = tls_broker
    credentials = ["--credentials", str(profile.folder / "credentials.txt"), "--timeout", "3"]
    result = CliRunner().invoke(
        main, ["doctor", "--broker", f"mqtt://localhost:{profile.tls_port}", "--device", "bed1", *credentials]
    )
    assert result.exit_code == 1
    lines = _lines(result.output)
    assert lines["TLS"].startswith("FAIL") and (
        f"this port speaks TLS: use mqtts://localhost:{profile.tls_port} with --ca-file" in lines["TLS"]
    )
    assert "credentials" not in lines and "did not answer the login" not in result.output


@pytest.mark.e2e
def test_monitor_reads_a_ward_device_as_the_monitor_user_of_credentials(ward):
    profile, _, _ = ward
    args = ["monitor", "--broker", f"mqtts://localhost:{profile.tls_port}", "--ca-file", str(profile.ca_file)]
    args += ["--device", "bed1", "--count", "1", "--seconds", "10", "--json"]
    result = CliRunner().invoke(main, [*args, "--credentials", str(profile.folder / "credentials.txt")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["topic"] == "status"
