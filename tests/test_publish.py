"""``advisor publish``: one event or a file, checked as the device checks it, answered in one line each."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from tools.cli import main

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
        meal = event_factory.raw(event_factory.meal("pub-m1", "p-pub", now)).decode()
        old = event_factory.raw(
            event_factory.glucose("pub-old", "p-pub", datetime(1999, 1, 1, tzinfo=UTC), 120)
        ).decode()
        log.write_text(f"{meal}\n{old}\n")
        many = CliRunner().invoke(main, [*base, "--file", str(log)])
        assert many.exit_code == 1
        lines = many.output.splitlines()
        assert lines[0] == "pub-m1: sent (meal; no answer expected)"
        assert lines[1].startswith("pub-old: refused: 'ts' 1999-01-01") and "1 of 2 events refused" in lines[-1]

        bad = tmp_path / "bad.jsonl"
        bad.write_text(f'{meal}\n{{"id": "x", "patient": "p", "kind": "glucose"}}\n')
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
    from tools.monitor import follow, render
    from tools.replay import EventPublisher

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
