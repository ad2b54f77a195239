"""``advisor publish``: one event or a file, checked as the device checks it, answered in one line each."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from click.testing import CliRunner

from domain.events import Event, Insulin, Kind
from tools.cli.main import main

from . import event_factory
from .device_process import DeviceProcess

pytestmark = pytest.mark.e2e


def test_publish_prints_each_answer_and_refusal(mosquitto, tmp_path):
    device = DeviceProcess(tmp_path / "state", mosquitto.url, "pub1").start()
    try:
        base = ["publish", "--broker", mosquitto.url, "--device", "pub1"]
        now = datetime.now(UTC)
        reading = event_factory.raw(event_factory.glucose("pub-g1", "p-pub", now, 55)).decode()
        one = CliRunner().invoke(main, [*base, reading])
        assert one.exit_code == 0, one.output
        assert one.output.startswith("pub-g1: withhold") and "next check" in one.output

        log = tmp_path / "events.jsonl"
        given = Event(id="pub-i1", patient="p-pub", ts=now, kind=Kind.INSULIN, insulin=Insulin.REGULAR, units=2.0)
        dose = event_factory.raw(given).decode()
        old = event_factory.raw(
            event_factory.glucose("pub-old", "p-pub", datetime(1999, 1, 1, tzinfo=UTC), 120)
        ).decode()
        log.write_text(f"{dose}\n{old}\n")
        many = CliRunner().invoke(main, [*base, "--file", str(log)])
        assert many.exit_code == 1
        lines = many.output.splitlines()
        assert lines[0] == "pub-i1: sent (insulin; no answer expected)"
        assert lines[1].startswith("pub-old: refused: 'ts' 1999-01-01") and "1 of 2 events were refused" in lines[-1]

        bad = tmp_path / "bad.jsonl"
        bad.write_text(f'{dose}\n{{"id": "x", "patient": "p", "kind": "glucose", "ts": "yesterday"}}\n')
        local = CliRunner().invoke(main, [*base, "--file", str(bad)])
        assert local.exit_code == 1 and f"{bad}:2: " in local.output and "'ts'" in local.output

        as_json = CliRunner().invoke(main, [*base, "--json", reading.replace("pub-g1", "pub-g2")])
        assert json.loads(as_json.output)["answer"]["status"] == "withhold"
        neither = CliRunner().invoke(main, base)
        assert neither.exit_code == 1 and "give one event as JSON, or --file" in neither.output
    finally:
        device.stop()


def test_monitor_follows_answers_errors_and_status_as_lines(mosquitto, tmp_path):
    import threading

    from device.config import BrokerConfig
    from tools.mqtt_kit.client import EventPublisher
    from tools.mqtt_kit.monitor import follow, render

    device = DeviceProcess(tmp_path / "state", mosquitto.url, "mon1").start()
    publisher = EventPublisher(BrokerConfig(url=mosquitto.url), "mon1")
    try:
        publisher.wait_connected()
        ready = threading.Event()
        lines: list[str] = []

        def run() -> None:
            for item in follow(BrokerConfig(url=mosquitto.url), ["mon1"], 15, 3, ready.set):
                lines.append(render(*item, as_json=False))

        thread = threading.Thread(target=run)
        thread.start()
        assert ready.wait(10)
        publisher.publish(event_factory.glucose("mon-g", "p-mon", datetime.now(UTC), 55))
        publisher.publish(b"{not json")
        thread.join(20)
        assert any(line.startswith("mon1 status online (dose ") for line in lines), lines  # the retained status
        assert "mon1 p-mon answer to mon-g: withhold" in lines
        assert any(line.startswith("mon1 refused -: ") for line in lines)
        cli = CliRunner().invoke(
            main, ["monitor", "--broker", mosquitto.url, "--device", "mon1", "--count", "1", "--json"]
        )
        assert cli.exit_code == 0 and json.loads(cli.stdout)["topic"] == "status" and "following mon1" in cli.stderr
    finally:
        publisher.close()
        device.stop()


def _readme_publish_example() -> list[str]:
    """The README's `advisor publish` example, split as a shell would."""
    import shlex
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    line = next(x for x in readme.splitlines() if x.startswith("advisor publish --broker mqtt://broker:1883"))
    return shlex.split(line, comments=True)[1:]


def test_publish_runs_the_readme_example_and_names_repeats_and_warnings(mosquitto, tmp_path):
    device = DeviceProcess(tmp_path / "state", mosquitto.url, "bed7").start()
    try:
        example = [mosquitto.url if arg == "mqtt://broker:1883" else arg for arg in _readme_publish_example()]
        first = CliRunner().invoke(main, example)
        assert first.exit_code == 0, first.output
        assert first.output.startswith("g1: withhold, next check ") and "Glucose 55 mg/dL is below 70" in first.output

        rerun = CliRunner().invoke(main, example)  # stamped anew: the same id with other content
        assert rerun.exit_code == 1 and "g1: refused: an event with this id was already accepted" in rerun.output

        base = ["publish", "--broker", mosquitto.url, "--device", "bed7"]
        reading = event_factory.raw(event_factory.glucose("g3", "p-21", datetime.now(UTC), 60)).decode()
        assert CliRunner().invoke(main, [*base, reading]).exit_code == 0
        again = CliRunner().invoke(main, [*base, reading])
        assert again.exit_code == 1
        assert again.output.startswith("g3: a repeat: the device already holds event g3 and answers an event once")
        assert "1 of 1 events were repeats of events the device already holds" in again.output
        as_json = CliRunner().invoke(main, [*base, reading, "--json"])
        assert json.loads(as_json.stdout) == {"event_id": "g3", "answer": None, "warnings": [], "repeat": True}

        east = datetime.now(UTC).astimezone(timezone(timedelta(hours=5))).isoformat(timespec="seconds")
        lookalike = json.dumps({"id": "g2", "patient": "p-2l", "ts": east, "kind": "glucose", "mg_dl": 55})
        warned = CliRunner().invoke(main, [*base, lookalike])
        assert warned.exit_code == 0, warned.output
        lines = warned.output.splitlines()
        assert lines[0].startswith("g2: withhold"), lines
        assert any(x.startswith("g2: warning: the offset of 'ts' (+05:00) is not the ward's") for x in lines[1:]), lines
        assert any(
            x.startswith("g2: warning: new patient id 'p-2l' looks like the known patient 'p-21'") for x in lines
        )
    finally:
        device.stop()
