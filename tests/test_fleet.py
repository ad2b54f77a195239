"""``advisor fleet``: a ward of devices from their retained statuses — rows case by case, then three
real devices on one Mosquitto (one of them killed)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from device.config import BrokerConfig
from device.contract.messages import Activity, DeviceStatus, DriftStatus, ModelInfo
from device.state.metrics import DeviceMetrics
from tools.mqtt_kit.client import DeviceWatcher
from tools.ward.fleet_board import fleet_row, fleet_rows, fleet_table, ward_drift, ward_drift_lines

from . import event_factory
from .conftest import ROOT
from .device_process import DeviceProcess

NOW = datetime(2026, 12, 4, 12, tzinfo=UTC)
ONLINE = DeviceStatus(
    state="online",
    device_id="bed7",
    models=[ModelInfo("dose", "2026.11.22.053959", None)],
    risk_models={},
    model_problem=None,
    storage_problem=None,
    held_in_memory=0,
    notes=[],
    clock="wall",
    timezone="UTC",
    started_at=(NOW - timedelta(hours=5)).isoformat(),
    checks_overdue=["p1"],
    activity=Activity(3600, {"suggest": 7, "withhold": 2}, 1, 3),
    ward="ward3",
    published_at=(NOW - timedelta(seconds=30)).isoformat(),
)


def test_a_device_s_row_says_what_runs_since_when_and_what_is_wrong():
    row = fleet_row(ONLINE, NOW)
    assert (row.state, row.since, row.dose_model, row.ward) == (
        "online",
        ONLINE.started_at,
        "2026.11.22.053959",
        "ward3",
    )
    assert (row.answers_1h, row.lowered_1h, row.errors_1h, row.checks_overdue) == (9, 1, 3, 1)
    quiet = replace(ONLINE, published_at=(NOW - timedelta(minutes=4)).isoformat())
    assert fleet_row(quiet, NOW).state == "silent", "no heartbeat for three minutes"
    gone = replace(ONLINE, state="offline", activity=None, published_at=(NOW - timedelta(hours=2)).isoformat())
    assert (fleet_row(gone, NOW).state, fleet_row(gone, NOW).since) == ("offline", gone.published_at)
    drift = DriftStatus(500, 12, 500, 0.5, ["glucose_mean_24h"], {"glucose_mean_24h": 2.1}, ["glucose_mean_24h"], "…")
    troubled = replace(ONLINE, device_id="bed8", ward="ward4", storage_problem="disk full", drift=drift)
    rows = fleet_rows({"bed8": troubled, "bed7": ONLINE}, NOW)
    assert [r.device_id for r in rows] == ["bed7", "bed8"]
    assert [r.device_id for r in fleet_rows({"bed8": troubled, "bed7": ONLINE}, NOW, ward="ward4")] == ["bed8"]
    table = fleet_table(rows)
    assert "disk full; drift: glucose_mean_24h" in table and table.splitlines()[0].startswith("device")


def _bed(device_id: str, patients: int, counts: list[int], ward: str = "ward3", state: str = "online"):
    drift = DriftStatus(
        sum(counts), patients, 500, 0.5, ["g"], {"g": 0.0}, [], "…", 5, 100, {"g": counts}, {"g": [0.5, 0.5]}
    )
    return replace(ONLINE, device_id=device_id, ward=ward, state=state, drift=drift)


def test_the_ward_s_beds_are_read_together_for_drift():
    skewed = {f"bed{i}": _bed(f"bed{i}", 2, [90, 10]) for i in range(1, 4)}
    readings = ward_drift(skewed)
    assert len(readings) == 1
    ward = readings[0]
    assert (ward.ward, ward.devices, ward.patients, ward.decisions) == ("ward3", ["bed1", "bed2", "bed3"], 6, 300)
    assert ward.drifted == ["g"] and "no longer look like" in ward.note
    assert all(not s.drift.drifted for s in skewed.values()), "no bed alerted alone"
    two = ward_drift({k: v for k, v in skewed.items() if k != "bed3"})[0]
    assert two.drifted == [] and "judged on 5 or more" in two.note, "4 patients are too few"
    mixed = {
        **skewed,
        "bed4": _bed("bed4", 2, [10, 90], ward="ward5"),
        "bed5": _bed("bed5", 9, [10, 90], state="offline"),
    }
    by_ward = {r.ward: r for r in ward_drift(mixed)}
    assert by_ward["ward3"].devices == ["bed1", "bed2", "bed3"], "offline devices and other wards stay out"
    assert by_ward["ward5"].patients == 2
    assert [r.ward for r in ward_drift(mixed, ward="ward5")] == ["ward5"]
    assert "ward ward3, dose model 2026.11.22.053959: DRIFT" in ward_drift_lines(list(by_ward.values()))
    starting = {f"bed{i}": _bed(f"bed{i}", 2, [9, 1]) for i in range(1, 4)}  # 30 decisions of 6 patients
    early = ward_drift(starting)[0]
    assert early.drifted == [] and early.note == "measuring: 30 of the first 100 decisions counted on 3 device(s)"
    other_model = replace(skewed["bed3"], models=[ModelInfo("dose", "2027.01.01.000000", None)])
    assert len(ward_drift({**skewed, "bed3": other_model})) == 2, "two models are two references"


def test_the_last_hour_counts_answers_lowered_doses_and_refusals():
    clock = [0.0]
    metrics = DeviceMetrics(clock=lambda: clock[0])
    lowered = replace(event_factory.suggestion("e1", units=2.0), model_units=4.0)
    metrics.observe(lowered)
    metrics.observe(replace(event_factory.suggestion("e2", units=4.0), model_units=4.4))  # rounding, not lowering
    clock[0] = 3000.0
    metrics.observe(replace(event_factory.suggestion("e3"), status="withhold", units=0.0, model_units=None))
    assert metrics.activity() == Activity(3600, {"suggest": 2, "withhold": 1}, 1, 0)
    clock[0] = 3700.0
    assert metrics.activity() == Activity(3600, {"withhold": 1}, 0, 0), "the first two are more than an hour old"


def fleet(broker_url: str, *options: str) -> list[dict]:
    done = subprocess.run(
        [sys.executable, "-m", "tools.cli.main", "fleet", "--broker", broker_url, "--json", *options],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.e2e
def test_three_devices_one_killed_as_the_fleet_sees_them(mosquitto, tmp_path):
    devices = []
    try:
        for name, ward in (("fleet-a", "ward3"), ("fleet-b", "ward3"), ("fleet-c", "ward4")):
            config = tmp_path / f"{name}.toml"
            config.write_text(f'ward = "{ward}"\n')
            device = DeviceProcess(tmp_path / name, mosquitto.url, name, extra=("--config", str(config))).start()
            devices.append(device)
        watcher = DeviceWatcher(BrokerConfig(url=mosquitto.url), "fleet-c")
        watcher.wait_subscribed()
        devices[2].kill()
        assert watcher.wait_for(lambda w: any(s.state == "offline" for s in w.status), 30), "no last will"
        watcher.close()
        rows = {r["device_id"]: r for r in fleet(mosquitto.url)}
        assert set(rows) == {"fleet-a", "fleet-b", "fleet-c"}
        assert rows["fleet-a"]["state"] == rows["fleet-b"]["state"] == "online"
        assert rows["fleet-c"]["state"] == "offline" and rows["fleet-c"]["since"]
        assert rows["fleet-a"]["dose_model"] and set(rows["fleet-a"]["companion_models"]) == {
            "mortality",
            "readmission",
        }
        assert [r["device_id"] for r in fleet(mosquitto.url, "--ward", "ward3")] == ["fleet-a", "fleet-b"]
        ward = fleet(mosquitto.url, "--drift")  # the living devices of ward3, read together; fleet-c is offline
        assert [(r["ward"], r["devices"]) for r in ward] == [("ward3", ["fleet-a", "fleet-b"])]
        assert ward[0]["patients"] == 0 and ward[0]["note"].startswith("measuring: 0 of the first 100 decisions")
    finally:
        for device in devices:
            device.stop()


def test_the_station_shows_each_device_s_row():
    from tools.ward.station_board import StationBoard

    board = StationBoard(["bed7", "bed9"], started=NOW)
    board.update("bed7", "status", ONLINE.to_json())
    overview = board.overview(NOW)
    seen = {d.device_id: d.fleet for d in overview.devices}
    assert seen["bed9"] is None, "no status heard yet"
    assert seen["bed7"] is not None and seen["bed7"].answers_1h == 9 and seen["bed7"].state == "online"
