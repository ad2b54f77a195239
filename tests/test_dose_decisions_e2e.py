"""The decisions of docs/safety.md end to end: Mosquitto on loopback, a real device process, LiteRT.

Each patient has five days of a three-meal routine (pre-meal readings, counted meals, a regular
dose at each, a bedtime reading and a daily long-acting dose), so their insulin terms are known:
30 U a day (sensitivity 1500/30 = 50 mg/dL per U) and 10 g of carbohydrate per unit. The device
runs on the event clock so the time of day of each scenario is fixed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from device.config import BrokerConfig
from domain.events import Event, Insulin, Kind
from tools.mqtt_kit.client import DeviceWatcher, EventPublisher

from .device_process import DeviceProcess

DEVICE = "bed5"
DAY = datetime(2026, 3, 10, tzinfo=UTC)  # the scenarios' day; the routine fills the five days before
MEALS = ((7, "pre_breakfast", 50.0, 5.0), (12, "pre_lunch", 60.0, 6.0), (18, "pre_supper", 70.0, 7.0))


def at(day: datetime, hour: int, minute: int = 0) -> datetime:
    return day + timedelta(hours=hour, minutes=minute)


def glucose(event_id: str, patient: str, ts: datetime, mg_dl: float, context: str) -> Event:
    return Event(event_id, patient, ts, Kind.GLUCOSE, mg_dl=mg_dl, context=context)


def meal(event_id: str, patient: str, ts: datetime, carbs: float, size: str = "typical") -> Event:
    return Event(event_id, patient, ts, Kind.MEAL, size=size, carbs_g=carbs)


def regular(event_id: str, patient: str, ts: datetime, units: float) -> Event:
    return Event(event_id, patient, ts, Kind.INSULIN, insulin=Insulin.REGULAR, units=units)


def routine(patient: str) -> list[Event]:
    """Five days of the routine before :data:`DAY`, in time order."""
    events = []
    for d in range(5, 0, -1):
        day = DAY - timedelta(days=d)
        events.append(
            Event(f"{patient}-ul{d}", patient, at(day, 6), Kind.INSULIN, insulin=Insulin.ULTRALENTE, units=12.0)
        )
        for hour, context, carbs, units in MEALS:
            ts = at(day, hour)
            events += [
                meal(f"{patient}-m{d}-{hour}", patient, ts, carbs),
                glucose(f"{patient}-g{d}-{hour}", patient, ts, 140.0, context),
                regular(f"{patient}-r{d}-{hour}", patient, ts + timedelta(minutes=5), units),
            ]
        events.append(glucose(f"{patient}-g{d}-22", patient, at(day, 22), 150.0, "unspecified"))
    return events


@pytest.fixture()
def ward(mosquitto, tmp_path):
    broker = BrokerConfig(url=mosquitto.url)
    watcher = DeviceWatcher(broker, DEVICE, client_id="decisions-watcher", persistent=True)
    assert watcher.subscribed.wait(5)
    device = DeviceProcess(tmp_path / "state", mosquitto.url, DEVICE, clock="event").start()
    publisher = EventPublisher(broker, DEVICE, client_id="decisions-sensor")
    publisher.wait_connected()
    yield publisher, watcher
    publisher.close()
    watcher.close()
    device.stop()


def answer(publisher, watcher, events: list[Event]):
    """Publish ``events`` (a routine and a scenario) in order; the answer to the last one."""
    for event in events:
        publisher.publish(event)
    last = events[-1].id
    assert watcher.wait_for(lambda w: w.suggestion_for(last), 10), f"no answer to {last}"
    return watcher.suggestion_for(last)


def test_bedtime_reading_with_no_meal_is_no_dose_due(ward):
    s = answer(*ward, [*routine("p-bed"), glucose("bed", "p-bed", at(DAY, 22), 80.0, "unspecified")])
    assert s.status == "no_dose_due" and s.units == 0.0 and s.due is None
    assert s.rules == ["no_dose_due", "bedtime_snack"] and s.carbs_g is not None and 10 <= s.carbs_g <= 30
    assert "No dose is due at bedtime" in s.reasons[0] and "80 mg/dL is in range" in s.reasons[0]
    assert s.reasons[1].startswith(f"Offer a bedtime snack of {s.carbs_g:.0f} g of carbohydrate")


def test_daytime_reading_with_no_meal_is_no_dose_due(ward):
    s = answer(*ward, [*routine("p-day"), glucose("day", "p-day", at(DAY, 15), 190.0, "unspecified")])
    assert s.status == "no_dose_due" and s.units == 0.0
    assert "190 mg/dL is high" in s.reasons[0] and "only above 250 mg/dL" in s.reasons[1]


def test_high_reading_soon_after_a_meal_dose_gets_no_stacked_correction(ward):
    scenario = [
        meal("lunch", "p-high", at(DAY, 12), 60.0),
        glucose("pre-lunch", "p-high", at(DAY, 12), 150.0, "pre_lunch"),
        regular("lunch-dose", "p-high", at(DAY, 12, 5), 6.0),
        glucose("after", "p-high", at(DAY, 13), 320.0, "post_lunch"),
    ]
    publisher, watcher = ward
    s = answer(publisher, watcher, [*routine("p-high"), *scenario])
    assert watcher.suggestion_for("pre-lunch").status == "suggest"
    assert s.status == "no_dose_due" and s.units == 0.0
    assert s.rules == ["no_dose_due", "insulin_on_board"] and s.iob_units > 4.0
    assert "no correction on top" in s.reasons[1]


def test_meal_announced_with_carbs_moves_the_dose_by_the_carb_ratio(ward):
    publisher, watcher = ward
    big = answer(
        publisher,
        watcher,
        [
            *routine("p-big"),
            meal("big-meal", "p-big", at(DAY, 18), 100.0, "more"),
            glucose("big", "p-big", at(DAY, 18), 150.0, "pre_supper"),
        ],
    )
    small = answer(
        publisher,
        watcher,
        [
            *routine("p-small"),
            meal("small-meal", "p-small", at(DAY, 18), 35.0, "less"),
            glucose("small", "p-small", at(DAY, 18), 150.0, "pre_supper"),
        ],
    )
    for s in (big, small):
        assert s.status == "suggest" and s.due == "meal" and s.usual_units == 7.0
        assert "meal_carbs" in s.rules
    assert "Meal of 100 g against the usual 70 g" in " ".join(big.reasons) and "+3.0 U at 10 g per U" in " ".join(
        big.reasons
    )
    assert big.units >= 9.0, "30 g more at 10 g per U: about 3 U more than the usual 7 U"
    assert small.units <= 4.5, "35 g less at 10 g per U: about 3.5 U less than the usual 7 U"


def test_low_is_withheld_with_treatment_and_a_recheck_time(ward):
    publisher, watcher = ward
    low = answer(publisher, watcher, [*routine("p-low"), glucose("low", "p-low", at(DAY, 12), 55.0, "pre_lunch")])
    assert low.status == "withhold" and low.units == 0.0 and low.rules == ["low_glucose"]
    assert "15 g of fast-acting carbohydrate" in low.reasons[1]
    assert datetime.fromisoformat(low.recheck_at) == at(DAY, 12, 15)
    recheck = answer(publisher, watcher, [glucose("recheck", "p-low", at(DAY, 12, 15), 96.0, "unspecified")])
    # the lunch is still due (its pre-meal reading was 15 min ago), at half the dose after the low
    assert recheck.status == "suggest" and recheck.due == "pre_meal" and recheck.recheck_at is None
    assert "after_low" in recheck.rules and "glucose was 55 mg/dL, below 70" in " ".join(recheck.reasons)
