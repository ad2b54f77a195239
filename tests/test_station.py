"""The nurses' station board (pure) and its command's option checks."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from click.testing import CliRunner

from device.contract.messages import DeviceStatus, ModelInfo
from domain.events import Event, Insulin, Kind
from tools.cli.main import main
from tools.ward.station_board import StationBoard

from . import event_factory

NOW = datetime(2026, 11, 22, 11, 30, tzinfo=UTC)


def answer(event_id, patient, at, units=4.0, glucose=180.0, status="suggest", check_in_h=6.0):
    return replace(
        event_factory.suggestion(event_id, patient, units),
        ts=at.isoformat(),
        status=status,
        glucose_mg_dl=glucose,
        glucose_age_min=0.0,
        next_check_at=(at + timedelta(hours=check_in_h)).isoformat(),
    )


def test_the_board_keeps_the_latest_answer_and_marks_doses_recorded_and_overdue_checks():
    board = StationBoard(["bed1", "bed2"])
    board.update("bed1", "suggestions", answer("a1", "p-a", NOW).to_json())
    board.update("bed1", "suggestions", answer("a1", "p-a", NOW).to_json())  # a repeat changes nothing
    board.update(
        "bed1", "suggestions", answer("b1", "p-b", NOW - timedelta(hours=7), glucose=60, status="withhold").to_json()
    )
    board.update(
        "bed2",
        "status",
        DeviceStatus(
            "online", "bed2", [ModelInfo("dose", "v", "x")], {}, None, None, 0, [], "wall", "UTC", NOW.isoformat(), []
        ).to_json(),
    )
    board.update("bed2", "suggestions", b"{not json")
    rows = {r.patient: r for r in board.overview(NOW + timedelta(minutes=2)).devices[0].rows}
    assert rows["p-a"].dose_pending and rows["p-a"].units == 4.0 and not rows["p-a"].check_overdue
    assert rows["p-b"].check_overdue and rows["p-b"].lows_24h == 1 and not rows["p-b"].dose_pending
    overview = board.overview(NOW + timedelta(minutes=2))
    assert [r.patient for r in overview.devices[0].rows] == ["p-b", "p-a"], "overdue checks first"
    assert overview.devices[1].state == "online" and overview.undecodable == 1
    dose = event_factory.raw(event_factory.glucose("x", "p-a", NOW, 100))
    board.update("bed1", "events", dose)  # a reading is not a dose
    given = Event("g1", "p-a", NOW + timedelta(minutes=1), Kind.INSULIN, insulin=Insulin.REGULAR, units=4.0)
    board.update("bed1", "events", event_factory.raw(given))
    row = next(r for r in board.overview(NOW + timedelta(minutes=2)).devices[0].rows if r.patient == "p-a")
    assert not row.dose_pending and row.response == "given"
    later = next(
        r for r in board.overview(NOW + timedelta(minutes=20), linked=False).devices[0].rows if r.patient == "p-a"
    )
    assert later.glucose_age_min == 20.0
    assert "not connected" in board.overview(NOW, linked=False).devices[0].state


def test_station_options_are_checked():
    bad = CliRunner().invoke(main, ["station", "--broker", "mqtt://127.0.0.1:1", "--device", "a/b"])
    assert bad.exit_code == 2 and "--device" in bad.output
    bad = CliRunner().invoke(main, ["station", "--broker", "mqtt://127.0.0.1:1", "--device", "a", "--http", "x"])
    assert bad.exit_code == 2 and "--http" in bad.output


def test_the_station_says_from_when_it_counts_lows_and_in_which_zone():
    board = StationBoard(["bed1"], started=NOW)
    board.update(
        "bed1",
        "status",
        DeviceStatus(
            "online",
            "bed1",
            [ModelInfo("dose", "v", "x")],
            {},
            None,
            None,
            0,
            [],
            "wall",
            "Europe/Berlin",
            NOW.isoformat(),
            [],
        ).to_json(),
    )
    early = board.overview(NOW + timedelta(hours=3))
    assert early.lows_since == NOW.isoformat(timespec="seconds"), "less than a day of listening: lows since then"
    assert early.timezone == "Europe/Berlin" and early.devices[0].timezone == "Europe/Berlin"
    assert board.overview(NOW + timedelta(hours=25)).lows_since is None
