"""The ward's week on the device (device/rules/outcomes.py): lows among the readings, adherence, the
doses given against the model's numbers — case by case, from a real store, and in a running
device's status and /metrics."""

from __future__ import annotations

import urllib.request
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from device.config import BrokerConfig
from device.contract.messages import Response
from device.rules.daily_summary import DoseAnswer
from device.rules.outcomes import ward_outcomes
from device.state.store import Store
from domain.events import Event, Kind
from tools.mqtt_kit.client import DeviceWatcher

from . import event_factory
from .device_process import DeviceProcess

NOW = datetime(2026, 12, 4, 12, tzinfo=UTC)
WEEK = NOW - timedelta(days=7)


def outcomes(readings, doses=(), given=(), min_readings=50):
    return ward_outcomes(WEEK, NOW, readings, list(doses), list(given), 0.04, 0.01, min_readings)


def test_lows_over_their_line_raise_an_alert_and_under_it_do_not():
    calm = outcomes([120.0] * 97 + [65.0] * 3)  # 3 % below 70, none below 54
    assert (calm.readings, calm.below_70_share, calm.below_54_share, calm.alerts) == (100, 0.03, 0.0, [])
    lows = outcomes([120.0] * 93 + [65.0] * 5 + [50.0] * 2)  # 7 % below 70, 2 % below 54
    assert lows.below_70_share == 0.07 and lows.below_54_share == 0.02
    assert len(lows.alerts) == 2 and "7.0% of this week's readings were below 70 mg/dL" in lows.alerts[0]
    few = outcomes([50.0] * 10)  # all low, but too few readings to call the ward's week
    assert few.below_54_share == 1.0 and few.alerts == []
    assert outcomes([]).below_70_share is None


def test_adherence_and_the_doses_given_against_the_model():
    ts = NOW.isoformat()
    doses = [
        (DoseAnswer("s1", "a", ts, 4.0), Response("given", ts, "ann", "nurse", units=4.0)),
        (DoseAnswer("s2", "a", ts, 6.0), Response("given", ts, "ann", "nurse", units=5.0, reason="clinicians_order")),
        (DoseAnswer("s3", "b", ts, 2.0), None),
    ]
    week = outcomes([120.0] * 60, doses, given=[(4.2, 4.0), (6.5, 5.0)])
    assert week.suggested == 3 and week.followed_share == 0.333
    assert week.given_with_model == 2
    assert week.given_minus_model_mean_units == pytest.approx(-0.85)
    assert week.given_minus_model_mae_units == pytest.approx(0.85)


def test_the_store_reads_the_period_of_every_patient(tmp_path):
    store = Store(tmp_path / "advisor.sqlite3")
    for i, (days_ago, mg_dl) in enumerate([(1, 60.0), (3, 140.0), (8, 40.0)]):
        patient = "a" if i % 2 else "b"
        store.add_event(Event(f"g{i}", patient, NOW - timedelta(days=days_ago), Kind.GLUCOSE, mg_dl=mg_dl))
    assert sorted(store.glucose_between(WEEK, NOW)) == [60.0, 140.0], "the reading of 8 days ago is outside"
    answered = replace(event_factory.suggestion("g1", patient="a", units=4.0), model_units=4.6)
    store.record_sent(answered)
    store.record_response(answered, Response("given", NOW.isoformat(), "ann", "nurse", units=4.0))
    assert store.given_against_model(WEEK, NOW) == [(4.6, 4.0)]
    store.close()


@pytest.mark.e2e
def test_a_device_with_a_week_of_lows_says_so_in_its_status_and_metrics(mosquitto, tmp_path):
    state = tmp_path / "state"
    now = datetime.now(UTC)
    store = Store(Path(state) / "advisor.sqlite3")
    for i in range(100):  # a week of a ward's readings, 8 of them below 70 and 2 below 54
        mg_dl = 50.0 if i < 2 else 65.0 if i < 8 else 130.0
        ts = now - timedelta(hours=1 + i * 1.5)
        store.add_event(Event(f"w{i}", f"p{i % 5}", ts, Kind.GLUCOSE, mg_dl=mg_dl, context="pre_lunch"))
    store.close()
    watcher = DeviceWatcher(BrokerConfig(url=mosquitto.url), "week-bed")
    watcher.wait_subscribed()
    device = DeviceProcess(state, mosquitto.url, "week-bed").start()
    try:
        assert watcher.wait_for(lambda w: any(s.outcomes is not None for s in w.status), 30), "no outcomes in status"
        week = next(s.outcomes for s in reversed(watcher.status) if s.outcomes is not None)
        assert week is not None and week.readings == 100
        assert (week.below_70_share, week.below_54_share) == (0.08, 0.02)
        assert len(week.alerts) == 2 and "below 54 mg/dL" in week.alerts[1]
        with urllib.request.urlopen(device.url + "metrics", timeout=10) as response:
            text = response.read().decode()
        values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
        assert values["advisor_ward_below_70_share"] == 0.08 and values["advisor_ward_outcome_alerts"] == 2
        assert device.status().outcomes == week
    finally:
        watcher.close()
        device.stop()
