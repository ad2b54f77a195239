"""The device answers the long-acting dose by itself at the patient's basal time ([checks] basal_time)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from device.advisor import Advisor
from device.config import ChecksConfig, ConfigError, DeviceConfig, SafetyConfig, load_config
from device.models.bundle import default_bundle_path, open_bundle
from device.models.choice import ModelSlot
from device.models.inference import DoseModel
from device.rules.basal_time import BASAL_WINDOW_MIN, basal_answer_due, basal_request_id, basal_time_on
from device.rules.check_schedule import CheckSchedule
from device.state.store import Store
from domain.events import Event, Kind, PatientProfile
from domain.validation import is_identifier

from . import event_factory
from .device_process import configured_device

WARD = ZoneInfo("Europe/Vienna")
TEN_PM = datetime(2026, 12, 3, 22, 0, tzinfo=WARD)


def due(now: datetime, reading: datetime | None, busy: bool = False, basal: str | None = "22:00"):
    return basal_answer_due(basal, now, WARD, reading, 15.0, 30, lambda: busy)


@pytest.mark.parametrize(
    ("now", "reading", "busy", "expected"),
    [
        (TEN_PM + timedelta(minutes=5), TEN_PM + timedelta(minutes=2), False, TEN_PM),  # the bedtime reading
        (TEN_PM + timedelta(minutes=5), TEN_PM - timedelta(minutes=8), False, TEN_PM),  # just before counts
        (TEN_PM - timedelta(minutes=5), TEN_PM - timedelta(minutes=6), False, None),  # not yet time
        (TEN_PM + timedelta(minutes=5), TEN_PM - timedelta(minutes=40), False, None),  # the reading is too old
        (TEN_PM + timedelta(minutes=50), TEN_PM + timedelta(minutes=30), False, None),  # stale now: wait for one
        (TEN_PM + timedelta(minutes=5), TEN_PM + timedelta(minutes=2), True, None),  # a dose on screen first
        (TEN_PM + timedelta(minutes=BASAL_WINDOW_MIN + 1), TEN_PM + timedelta(minutes=BASAL_WINDOW_MIN), False, None),
        (TEN_PM + timedelta(minutes=5), None, False, None),  # no reading at all
    ],
)
def test_when_the_basal_answer_is_due(now, reading, busy, expected):
    assert due(now, reading, busy) == expected


def test_no_basal_time_no_answer_and_the_day_is_the_ward_s():
    assert due(TEN_PM + timedelta(minutes=5), TEN_PM, basal=None) is None
    morning = datetime(2026, 3, 29, 8, 0, tzinfo=WARD)  # the day clocks go forward: still 08:00 ward time
    assert basal_time_on(datetime(2026, 3, 29, 12, 0, tzinfo=UTC), "08:00", WARD) == morning
    long_patient = "p" * 64
    request_id = basal_request_id(long_patient, TEN_PM)
    assert is_identifier(request_id) and request_id.startswith("basal-20261203-")
    assert request_id != basal_request_id("p" * 63, TEN_PM) and request_id != basal_request_id(long_patient, morning)


def test_the_config_takes_a_ward_and_a_patient_basal_time(tmp_path):
    path = tmp_path / "device.toml"
    path.write_text('[checks]\nbasal_time = "21:30"\n[checks.patients."bed-2"]\nbasal_time = "08:00"\n')
    checks = load_config(path).checks
    assert checks.for_patient("bed-1").basal_time == "21:30" and checks.for_patient("bed-2").basal_time == "08:00"
    assert DeviceConfig().checks.default.basal_time is None, "off unless the ward sets it"
    path.write_text('[checks]\nbasal_time = "25:00"\n')
    with pytest.raises(ConfigError, match=r"checks: time '25:00' must be HH:MM"):
        load_config(path)
    path.write_text('[checks.patients."bed-2"]\nbasal_time = 8\n')
    with pytest.raises(ConfigError, match=r"checks.patients.bed-2.basal_time must be a time as HH:MM"):
        load_config(path)


@pytest.fixture(scope="module")
def dose_model() -> DoseModel:
    return DoseModel(open_bundle(default_bundle_path("dose")))


class Ward:
    """An advisor on the ward's clock, whose time the test moves."""

    def __init__(self, model: DoseModel, basal_time: str | None = "22:00") -> None:
        self.now = TEN_PM - timedelta(hours=4)
        checks = ChecksConfig(CheckSchedule(basal_time=basal_time))
        self.advisor = Advisor(
            Store(Path(":memory:")),
            ModelSlot(model),
            SafetyConfig(),
            "wall",
            lambda: self.now,
            zone=WARD,
            checks=checks,
        )

    def send(self, event_id: str, kind: str, patient: str = "bed-1", **fields):
        payload = {"id": event_id, "patient": patient, "ts": self.now.isoformat(), "kind": kind, **fields}
        return self.advisor.handle(json.dumps(payload).encode())


def test_the_long_acting_dose_is_answered_at_basal_time_once_a_day(dose_model):
    ward = Ward(dose_model)
    ward.send("prof", "profile", weight_kg=80)
    ward.send("prof-2", "profile", patient="bed-2", weight_kg=60)
    ward.now = TEN_PM - timedelta(minutes=20)
    ward.send("g-early", "glucose", mg_dl=150)
    assert ward.advisor.answer_basal_times() == [], "not 22:00 yet"
    ward.now = TEN_PM + timedelta(minutes=3)
    ward.send("g-bed", "glucose", mg_dl=140)
    answers = ward.advisor.answer_basal_times()
    assert [a.patient for a in answers] == ["bed-1"], "bed-2 has no fresh reading"
    basal = answers[0]
    assert basal.insulin == "long" and basal.status == "suggest" and basal.units == pytest.approx(20.0)
    assert basal.event_id == basal_request_id("bed-1", TEN_PM)
    assert ward.advisor.answer_basal_times() == [], "once a day"
    ward.now += timedelta(minutes=10)
    ward.send("g-bed-2", "glucose", patient="bed-2", mg_dl=130)
    assert [a.patient for a in ward.advisor.answer_basal_times()] == ["bed-2"]
    ward.now = TEN_PM + timedelta(days=1, minutes=1)
    ward.send("g-next", "glucose", mg_dl=140)
    assert [a.patient for a in ward.advisor.answer_basal_times()] == ["bed-1"], "the next day, again"


def test_a_dose_on_the_screen_is_dealt_with_before_the_basal_answer(dose_model):
    ward = Ward(dose_model)
    ward.send("prof", "profile", weight_kg=80)
    ward.now = TEN_PM + timedelta(minutes=1)
    correction = ward.send("g-high", "glucose", mg_dl=320).suggestion
    assert correction is not None and correction.is_dose and correction.insulin != "long"
    assert ward.advisor.answer_basal_times() == [], "the correction stays on screen"
    ward.now += timedelta(minutes=4)
    ward.send("given", "insulin", insulin="rapid", units=correction.units)
    answers = ward.advisor.answer_basal_times()
    assert len(answers) == 1 and answers[0].insulin == "long", "given: the screen is free for the basal dose"


def test_no_basal_time_configured_no_answer_of_its_own(dose_model):
    ward = Ward(dose_model, basal_time=None)
    ward.send("prof", "profile", weight_kg=80)
    ward.now = TEN_PM + timedelta(minutes=1)
    ward.send("g-bed", "glucose", mg_dl=140)
    assert ward.advisor.answer_basal_times() == []


@pytest.mark.e2e
def test_a_device_publishes_the_basal_answer_at_basal_time(mosquitto, tmp_path):
    """A real device over a real broker: the bedtime reading comes, then the long-acting dose, unasked."""
    config = 'alert_check_s = 1\n[checks]\nbasal_time = "22:00"\n'
    with configured_device(mosquitto.url, tmp_path, "ward1", config) as (_device, publisher, watcher):
        bedtime = datetime(2026, 11, 20, 22, 4, tzinfo=UTC)
        profile = PatientProfile(72.0, diabetes_type="type2")
        publisher.publish(Event("prof-1", "bed-9", bedtime - timedelta(hours=3), Kind.PROFILE, profile=profile))
        publisher.publish(event_factory.glucose("bed-g", "bed-9", bedtime, 150, context="unspecified"))
        assert watcher.wait_for(lambda w: any(s.insulin == "long" for s in w.suggestions), 10), "no basal answer"
        basal = next(s for s in watcher.suggestions if s.insulin == "long")
        assert basal.patient == "bed-9" and basal.status == "suggest" and basal.units == pytest.approx(18.0)
        assert basal.event_id == basal_request_id("bed-9", bedtime.replace(minute=0))
        assert watcher.suggestion_for("bed-g") is not None, "the reading was answered first"
