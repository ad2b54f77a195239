"""``advisor bridge hl7`` between an independent MLLP client (python-hl7's) and a real device on Mosquitto."""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import sys

import pytest
from hl7.client import MLLPClient
from hl7apy.parser import parse_message

from device.config import BrokerConfig
from tools.mqtt_kit.client import DeviceWatcher, EndMarker, EventPublisher

from .conftest import ROOT
from .device_process import DeviceProcess
from .hl7_kit import adt, event_id, oru

DEVICE = "hl7bed"
LISTENING = re.compile(r"listening for HL7 \(MLLP\) on 127\.0\.0\.1:(\d+)")


class Rig:
    def __init__(self, device: DeviceProcess, bridge: subprocess.Popen, port: int, watcher: DeviceWatcher) -> None:
        self.device, self.bridge, self.port, self.watcher = device, bridge, port, watcher

    def send(self, text: str):
        """Send one message with python-hl7's client; the ACK as hl7apy reads it."""
        with MLLPClient("127.0.0.1", self.port) as client:
            raw = client.send_message(text)
        return parse_message(raw.strip(b"\x0b\x1c\r").decode(), find_groups=False)

    def stored(self) -> list[str]:
        """Every event id the device stored, once its handling of all sent so far is proven."""
        marker = EndMarker.new("hl7")
        publisher = EventPublisher(BrokerConfig(url=self.device.broker_url), DEVICE, client_id="hl7-marker")
        publisher.wait_connected()
        publisher.publish(marker.payload)
        publisher.flush()
        publisher.close()
        assert self.watcher.wait_for(marker.seen, 30)
        with sqlite3.connect(self.device.state_dir / "advisor.sqlite3") as db:
            return sorted(r[0] for r in db.execute("SELECT id FROM events"))


@pytest.fixture()
def rig(mosquitto, tmp_path):
    device = DeviceProcess(tmp_path / "state", mosquitto.url, DEVICE, clock="event").start()
    watcher = DeviceWatcher(BrokerConfig(url=mosquitto.url), DEVICE)
    watcher.wait_subscribed()
    command = [sys.executable, "-m", "tools.cli.main", "bridge", "hl7", "--listen", "127.0.0.1:0"]
    bridge = subprocess.Popen(
        [*command, "--device", DEVICE, "--broker", mosquitto.url],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert bridge.stdout is not None
    line = bridge.stdout.readline()
    found = LISTENING.search(line)
    assert found, line + bridge.stdout.read()
    yield Rig(device, bridge, int(found.group(1)), watcher)
    if bridge.poll() is None:
        bridge.kill()
    bridge.wait(30)
    watcher.close()
    device.stop()


def test_a_result_is_acknowledged_and_the_device_answers_it(rig):
    ack = rig.send(oru("MSG1001"))
    assert (ack.msa.msa_1.value, ack.msa.msa_2.value) == ("AA", "MSG1001")
    assert ack.msh.msh_9.value == "ACK^R01^ACK"
    assert rig.watcher.wait_for(lambda w: w.suggestion_for(event_id("MSG1001")) is not None, 30)
    answer = rig.watcher.suggestion_for(event_id("MSG1001"))
    assert answer is not None and answer.patient == "MRN123" and answer.glucose_mg_dl == 182.0


def test_refusals_lose_nothing_and_a_resend_is_one_reading(rig):
    bad = rig.send(oru("MSG2001", unit=""))
    assert bad.msa.msa_1.value == "AE" and "without a unit is not used" in bad.err.err_8.value
    assert bad.err.err_2.value == "OBX^1^6"
    rejected = rig.send(oru("MSG2002").replace("ORU^R01^ORU_R01", "ORM^O01^ORM_O01"))
    assert rejected.msa.msa_1.value == "AR" and rejected.err.err_3.value.startswith("200^")
    first = rig.send(oru("MSG2003", value="7.5", unit="mmol/L", code="14743-9^Glucose^LN"))
    again = rig.send(oru("MSG2003", value="7.5", unit="mmol/L", code="14743-9^Glucose^LN"))
    assert first.msa.msa_1.value == again.msa.msa_1.value == "AA"
    reused = rig.send(oru("MSG2003", value="9.5", unit="mmol/L", code="14743-9^Glucose^LN"))
    assert reused.msa.msa_1.value == "AE" and "already used for a different message" in reused.err.err_8.value
    admitted = rig.send(adt("ADM2004"))
    updated = rig.send(adt("ADM2005", trigger="A08", weight="78", height=("172", "cm")))
    assert admitted.msa.msa_1.value == updated.msa.msa_1.value == "AA"
    assert rig.stored() == [event_id("ADM2004"), event_id("ADM2005"), event_id("MSG2003")]
    answers = [s for s in rig.watcher.suggestions if s.event_id == event_id("MSG2003")]
    assert len(answers) == 1 and answers[0].glucose_mg_dl == pytest.approx(135.1, abs=0.1)
    rig.bridge.send_signal(signal.SIGINT)
    out, _ = rig.bridge.communicate(timeout=30)
    assert rig.bridge.returncode == 0
    assert "stopped: 3 messages accepted (3 events), 1 resends, refused 2 AE, 1 AR" in out


def test_a_broken_stream_gets_a_reject_and_the_next_connection_works(rig):
    import socket

    with socket.create_connection(("127.0.0.1", rig.port), timeout=30) as raw:
        raw.sendall(b"\x0bMSH" + b"x" * (1024 * 1024 + 10))
        answer = raw.recv(4096)
    assert b"MSA|AR" in answer and b"longer than" in answer
    assert rig.send(oru("MSG3001")).msa.msa_1.value == "AA"
    header = "MSH|^~\\&|GLUCOMETER|WARD7|ADVISOR|HOSP|20261204101500+0100||ORU^R01|MSG3002|P|2.5.1"
    broken = header + "\rPID|||MRN123^^^HOSP^MR\rOBX"
    answer = rig.send(broken)  # python-hl7 fails on the bare OBX: still answered
    assert answer.msa.msa_1.value == "AR" and "could not be read" in answer.msa.msa_3.value
    assert rig.send(oru("MSG3003")).msa.msa_1.value == "AA"
