"""Faults of the device's own machine, on the real core and SQLite: the wall clock jumping
forward and back, and the database locked or the disk full. No accepted event is lost and no
suggestion is repeated; every refusal says why."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from device.advisor import ERROR, Advisor, ModelSlot
from device.bundle import default_bundle_path, open_bundle
from device.config import SafetyConfig
from device.inference import DoseModel
from device.store import Store

from . import event_factory

REAL = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def dose_model() -> DoseModel:
    return DoseModel(open_bundle(default_bundle_path("dose")))


def glucose(event_id: str, ts: datetime, mg_dl: float = 170) -> bytes:
    return json.dumps(event_factory.glucose(event_id, "p-1", ts, mg_dl)).encode()


def test_wall_clock_jumping_forward_and_back(tmp_path, dose_model):
    offset = [timedelta(0)]
    store = Store(tmp_path / "state.sqlite3")
    advisor = Advisor(store, ModelSlot(dose_model), SafetyConfig(), "wall",
                      wall_clock=lambda: REAL + offset[0])
    for raw in event_factory.history("p-1", REAL):
        advisor.handle(json.dumps(raw).encode(), 0.0)
    accepted, outcomes = [], {}

    def send(event_id: str, minutes: float) -> None:
        outcome = advisor.handle(glucose(event_id, REAL + timedelta(minutes=minutes)), 0.0)
        outcomes[event_id] = outcome
        if outcome.event is not None:
            accepted.append(event_id)

    send("before", 0)
    assert outcomes["before"].suggestion["status"] == "suggest"
    offset[0] = timedelta(hours=6)  # the device's clock jumps 6 h ahead of the sensors
    send("ahead", 1)
    ahead = outcomes["ahead"].suggestion
    assert ahead["status"] == "insufficient_data" and "stale_glucose" in ahead["rules"]
    offset[0] = timedelta(days=-1)  # then a day behind: new readings look like the future
    send("behind", 2)
    errors = [m.payload for m in outcomes["behind"].messages if m.kind == ERROR]
    assert outcomes["behind"].event is None and "in the future" in errors[0]["reason"]
    offset[0] = timedelta(0)  # clock fixed (NTP): the sensor's retry and new readings go through
    send("behind", 2)
    send("after", 3)
    assert outcomes["after"].suggestion["status"] == "suggest"
    stored = {r[0] for r in sqlite3.connect(tmp_path / "state.sqlite3").execute("SELECT id FROM events")}
    assert set(accepted) <= stored and {"before", "ahead", "behind", "after"} <= stored
    ids = [r[0] for r in sqlite3.connect(tmp_path / "state.sqlite3").execute("SELECT id FROM suggestions")]
    assert len(ids) == len(set(ids)) and Counter(ids)["s-ahead"] == 1
