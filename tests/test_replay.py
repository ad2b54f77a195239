"""``advisor replay``: a recorded AIM-94 patient into a real device through Mosquitto, with a report."""

from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

from device.models.bundle import default_bundle_path, open_bundle
from model.evaluation import evaluate
from tools.cli.main import main

from .device_process import DeviceProcess

REPORT_KEYS = {
    "events_sent",
    "events_acked",
    "decision_points",
    "suggestions",
    "not_acknowledged",
    "unanswered",
    "lost",
    "mae",
    "withheld",
    "latency_ms_p50",
    "latency_ms_p99",
}


@pytest.fixture()
def event_device(mosquitto, tmp_path):
    device = DeviceProcess(tmp_path / "state", mosquitto.url, "hil1", clock="event").start()
    yield device
    device.stop()


def test_replay_of_an_aim94_patient_matches_the_evaluation_path(
    event_device, mosquitto, aim94_dir, aim94_logs, tmp_path
):
    report_path = tmp_path / "replay.json"
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
            "hil1",
            "--report",
            str(report_path),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert set(report) >= REPORT_KEYS
    log = next(lg for lg in aim94_logs if lg.number == 3)
    decision_times = {e.ts for e in log.events if e.is_regular_dose}
    assert report["lost"] == 0 and report["events_acked"] == report["events_sent"]
    assert report["events_sent"] == len(log.events) + len(decision_times)
    assert report["decision_points"] == len(decision_times)
    glucose = sum(1 for e in log.events if e.kind.value == "glucose")
    assert report["suggestions"] == glucose + len(decision_times)
    assert 0 < report["latency_ms_p50"] <= report["latency_ms_p99"]

    rows = list(csv.DictReader(report_path.with_suffix(".csv").read_text().splitlines()))
    assert len(rows) == len(decision_times)
    expected = {r.ts: r.model_units for r in evaluate(open_bundle(default_bundle_path("dose")), [log])}
    for row in rows:
        assert float(row["model_units"]) == pytest.approx(expected[row["ts"]], abs=1e-3)
    errors = [abs(float(r["model_units"]) - float(r["actual_units"])) for r in rows]
    assert report["mae"] == pytest.approx(sum(errors) / len(errors), abs=1e-3)
    withheld = [r for r in rows if r["status"] == "withhold"]
    assert sum(report["withheld"].values()) == len(withheld)


def test_replay_of_a_jsonl_log(event_device, mosquitto, aim94_logs, tmp_path):
    log = next(lg for lg in aim94_logs if lg.number == 5)
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(json.dumps(e.to_payload()) for e in log.events) + "\n")
    result = CliRunner().invoke(main, ["replay", "--data", str(path), "--broker", mosquitto.url, "--device", "hil1"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    assert report["lost"] == 0 and report["decision_points"] == len({e.ts for e in log.events if e.is_regular_dose})

    # the same log again: the device rightly answers no repeat, and the report says why
    again = CliRunner().invoke(main, ["replay", "--data", str(path), "--broker", mosquitto.url, "--device", "hil1"])
    assert again.exit_code == 1
    repeat = json.loads(again.output[again.output.index("{") : again.output.rindex("}") + 1])
    assert repeat["not_acknowledged"] == 0 and repeat["unanswered"] > 0 and "--fresh-ids" in repeat["hint"]
    assert "replay with --fresh-ids" in again.output.splitlines()[-1]
    # with a run id the replay is new events of new patients, decided afresh: nothing lost, same answers
    fresh = CliRunner().invoke(
        main, ["replay", "--data", str(path), "--broker", mosquitto.url, "--device", "hil1", "--run-id", "r2"]
    )
    assert fresh.exit_code == 0, fresh.output
    rerun = json.loads(fresh.output[fresh.output.index("{") :])
    assert rerun["lost"] == 0 and rerun["mae"] == report["mae"] and "run r2" in rerun["source"]
    bad = CliRunner().invoke(
        main, ["replay", "--data", str(path), "--broker", mosquitto.url, "--device", "hil1", "--run-id", "a/b"]
    )
    assert bad.exit_code == 1 and "run id 'a/b' must be" in bad.output


def test_replay_refuses_bad_input_and_wall_clock_devices(mosquitto, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "patient": "p", "ts": "1991-01-01T08:00:00+00:00", "kind": "request"}\nnot json\n')
    runner = CliRunner()
    result = runner.invoke(main, ["replay", "--data", str(bad), "--broker", mosquitto.url, "--device", "x"])
    assert result.exit_code == 1 and "bad.jsonl:2: payload is not valid JSON" in result.output
    wall = DeviceProcess(tmp_path / "wall", mosquitto.url, "wall1", clock="wall").start()
    try:
        good = tmp_path / "good.jsonl"
        good.write_text(bad.read_text().splitlines()[0] + "\n")
        result = runner.invoke(main, ["replay", "--data", str(good), "--broker", mosquitto.url, "--device", "wall1"])
        assert result.exit_code == 1 and "start it with --clock event" in result.output
    finally:
        wall.stop()
    nobody = runner.invoke(main, ["replay", "--data", str(good), "--broker", mosquitto.url, "--device", "nobody"])
    assert nobody.exit_code == 1 and "no status" in nobody.output
