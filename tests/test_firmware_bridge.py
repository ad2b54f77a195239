"""The firmware line protocol (pure, with hypothesis) and the serial bridge over a real PTY pair."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from device.config import BrokerConfig
from firmware_bridge.bridge import SerialBridge
from firmware_bridge.emulator import FirmwareEmulator, Noise
from firmware_bridge.links import SerialLink, open_pty
from firmware_bridge.protocol import (
    Delivery,
    Frame,
    FrameError,
    FrameParser,
    SequenceTracker,
    crc16,
    decode_body,
    encode_frame,
    event_frame,
    frame_event,
)
from tools.cli.main import main

from .conftest import ROOT
from .device_process import DeviceProcess

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


# ------------------------------------------------------------------ protocol (pure)
def test_crc_is_ccitt_false():
    assert crc16(b"123456789") == 0x29B1


def test_frame_round_trip():
    frame = encode_frame(42, "G", ("1991-04-21T09:09:00+00:00", "p-21", "100", "pre_lunch"))
    assert frame.startswith(b"$42,G,") and frame.endswith(b"\n")
    [parsed] = FrameParser().feed(frame)
    assert parsed == Frame(42, "G", ("1991-04-21T09:09:00+00:00", "p-21", "100", "pre_lunch"))


def test_event_frames_map_to_spec_events(aim94_logs):
    """Every event of a real patient survives event → frame → bytes → frame → payload → event."""
    log = next(lg for lg in aim94_logs if lg.number == 3)
    parser = FrameParser()
    for seq, event in enumerate(log.events):
        [frame] = parser.feed(event_frame(event, seq % 65536))
        back = frame_event(frame, "fw", NOW)
        assert (back.kind, back.patient, back.ts, back.mg_dl, back.insulin, back.units, back.size) == (
            event.kind,
            event.patient,
            event.ts,
            event.mg_dl,
            event.insulin,
            event.units,
            event.size,
        )


def test_resynchronises_after_noise_and_reports_damage():
    good = encode_frame(7, "H", ("1991-04-21T09:09:00+00:00", "p-1"))
    bad_crc = good[:-3] + b"00\n"
    items = FrameParser().feed(b"\x00\xffnoise" + good[:10] + good + b"junk\n" + bad_crc + b"$" + b"x" * 300 + good)
    kinds = [i.reason if isinstance(i, FrameError) else i.seq for i in items]
    assert kinds == ["truncated", 7, "bad_checksum", "too_long", 7]
    assert items[2].seq == 7  # a damaged frame's seq is still read, so the bridge can ask for it again


@pytest.mark.parametrize(
    "frame, reason",
    [
        (encode_frame(1, "Z", ("1991-04-21T09:09:00+00:00", "p")), "unknown_type"),
        (encode_frame(1, "G", ("1991-04-21T09:09:00+00:00",)), "missing_field"),
        (encode_frame(1, "G", ("1991-04-21T09:09:00+00:00", "p")), "missing_field"),
        (encode_frame(1, "G", ("1991-04-21T09:09:00+00:00", "p", "lots")), "bad_number"),
        (encode_frame(1, "I", ("1991-04-21T09:09:00+00:00", "p", "x", "4")), "bad_field"),
    ],
)
def test_bad_event_frames(frame, reason):
    [parsed] = FrameParser().feed(frame)
    with pytest.raises(FrameError) as caught:
        frame_event(parsed, "fw", NOW)
    assert caught.value.reason == reason and caught.value.seq == 1


def test_fields_that_cannot_be_framed_are_refused():
    for bad in ("a,b", "a*b", "$", "line\n", "é"):
        with pytest.raises(ValueError):
            encode_frame(1, "S", ("1991-04-21T09:09:00+00:00", "p", bad))


def test_sequence_tracker_duplicates_gaps_and_wrap():
    tracker = SequenceTracker()
    assert tracker.observe(65534) == (Delivery.NEW, 0)
    assert tracker.observe(65534) == (Delivery.DUPLICATE, 0)
    assert tracker.observe(65535) == (Delivery.NEW, 0)
    assert tracker.observe(0) == (Delivery.NEW, 0)  # wraps
    assert tracker.observe(3) == (Delivery.NEW, 2)
    assert (tracker.duplicates, tracker.gaps, tracker.missing) == (1, 1, 2)


field_text = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=126, blacklist_characters="$*,"), max_size=20
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_parser_never_crashes(data):
    for item in FrameParser().feed(data):
        assert isinstance(item, (Frame, FrameError))
        if isinstance(item, FrameError):
            assert item.reason


@settings(max_examples=300, deadline=None)
@given(
    seq=st.integers(0, 65535),
    type_=st.sampled_from("GIMEHSRAND"),
    fields=st.lists(field_text, max_size=5),
    noise=st.binary(max_size=50),
    split=st.integers(0, 400),
)
def test_any_frame_is_recovered_from_noise_and_any_split(seq, type_, fields, noise, split):
    frame = encode_frame(seq, type_, tuple(fields))
    stream = noise.replace(b"$", b"#") + b"\n" + frame
    parser = FrameParser()
    items = parser.feed(stream[:split]) + parser.feed(stream[split:])
    frames = [i for i in items if isinstance(i, Frame)]
    assert frames == [Frame(seq, type_, tuple(fields))]


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=80))
def test_decode_body_never_crashes(body):
    try:
        decode_body(b"$" + body)
    except FrameError as exc:
        assert exc.reason in {"malformed", "bad_checksum", "not_ascii"}


# ------------------------------------------------------------ bridge over a PTY pair
@pytest.fixture()
def serial_rig(mosquitto, tmp_path):
    device = DeviceProcess(tmp_path / "state", mosquitto.url, "ser1", clock="event").start()
    link, path = open_pty()
    bridge = SerialBridge(link, BrokerConfig(url=mosquitto.url), "ser1", "fw1")
    assert bridge.connected.wait(5)
    stop = threading.Event()
    thread = threading.Thread(target=bridge.run, args=(stop,), daemon=True)
    thread.start()
    yield device, bridge, path
    stop.set()
    thread.join(5)
    link.close()
    device.stop()


def stored_ids(device) -> list[str]:
    with sqlite3.connect(device.state_dir / "advisor.sqlite3") as db:
        return [r[0] for r in db.execute("SELECT id FROM events")]


def test_a_noisy_line_delivers_every_event_once(serial_rig, aim94_logs):
    device, bridge, path = serial_rig
    events = next(lg for lg in aim94_logs if lg.number == 3).events[:150]
    emulator = FirmwareEmulator(
        SerialLink(path), Noise(garbage=0.3, truncated=0.2, bad_checksum=0.2, seed=3), answer_timeout_s=2
    )
    try:
        results = [emulator.send_event(e) for e in events]
    finally:
        emulator.close()
    assert all(r is not None for r in results), emulator.naks
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(stored_ids(device)) < len(events):
        time.sleep(0.1)
    ids = stored_ids(device)
    assert len(ids) == len(set(ids)) == len(events)  # each once, none lost
    errors = bridge.stats.frame_errors
    assert errors.get("truncated", 0) > 10 and errors.get("bad_checksum", 0) > 10
    assert bridge.stats.delivered == len(events) and bridge.stats.refused == 0


def test_refusals_duplicates_and_gaps(serial_rig):
    device, bridge, path = serial_rig
    link = SerialLink(path)
    emulator = FirmwareEmulator(link, answer_timeout_s=2, first_seq=100)
    try:
        glucose = encode_frame(100, "G", ("2026-11-21T08:00:00+00:00", "p-9", "140"))
        assert emulator.send_frame(glucose, 100)
        assert emulator.send_frame(glucose, 100)  # a resend: answered again, not published twice
        absurd = encode_frame(101, "G", ("2026-11-21T08:05:00+00:00", "p-9", "5000"))
        assert not emulator.send_frame(absurd, 101)
        assert emulator.naks[-1][0] == 101 and "outside the plausible range" in emulator.naks[-1][1]
        later = encode_frame(105, "R", ("2026-11-21T08:10:00+00:00", "p-9"))
        assert emulator.send_frame(later, 105)
    finally:
        emulator.close()
    assert bridge.stats.duplicates == 1 and bridge.stats.gaps == 1 and bridge.stats.missing == 3
    time.sleep(0.5)
    assert sorted(stored_ids(device)) == ["fw1-20261121080000-100", "fw1-20261121081000-105"]


def test_replay_via_serial_through_the_bridge_command(mosquitto, tmp_path, aim94_dir):
    device = DeviceProcess(tmp_path / "state", mosquitto.url, "ser2", clock="event").start()
    bridge = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tools.cli.main",
            "bridge",
            "serial",
            "--port",
            "pty",
            "--broker",
            mosquitto.url,
            "--device",
            "ser2",
            "--source",
            "fw2",
        ],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        line = bridge.stderr.readline()
        path = re.search(r"serial port: (\S+)", line).group(1)
        report_path = tmp_path / "serial.json"
        result = CliRunner().invoke(
            main,
            [
                "replay",
                "--data",
                str(aim94_dir),
                "--patient",
                "3",
                "--broker",
                mosquitto.url,
                "--device",
                "ser2",
                "--via-serial",
                path,
                "--report",
                str(report_path),
            ],
        )
        assert result.exit_code == 0, result.output
        report = json.loads(report_path.read_text())
        assert report["lost"] == 0 and report["events_acked"] == report["events_sent"] > 300
        assert report["decision_points"] > 50 and report["mae"] is not None
        bridge.send_signal(signal.SIGINT)
        assert bridge.wait(10) == 0
        assert "delivered" in bridge.stderr.read()
    finally:
        if bridge.poll() is None:
            bridge.kill()
        device.stop()
