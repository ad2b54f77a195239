"""Nightscout in and out: API v1 responses of the real shape (tests/data/nightscout) mapped to events,
and ``advisor nightscout pull`` against a site that serves them, into a real device.

No Nightscout site can run here (it needs Node and MongoDB), so the e2e test serves the recorded
responses over real HTTP, answering ``find`` and ``count`` as Nightscout does, newest first.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner

from device.config import BrokerConfig
from domain.events import MG_DL_PER_MMOL_L, Event, Insulin, Kind
from interop.nightscout import client as client_mod
from interop.nightscout.mapping import read_pulled, record_to_nightscout
from tools.cli.main import main
from tools.mqtt_kit.client import DeviceWatcher

from .conftest import ROOT
from .device_process import DeviceProcess

DATA = Path(__file__).parent / "data" / "nightscout"
ENTRIES = json.loads((DATA / "entries.json").read_text())
TREATMENTS = json.loads((DATA / "treatments.json").read_text())
NOW = datetime(2026, 12, 4, tzinfo=UTC)
SECRET = "correct horse battery"


def pulled():
    return read_pulled(ENTRIES, TREATMENTS, "ns-p1", Insulin.RAPID, NOW)


def test_cgm_and_meter_entries_are_readings_in_their_wall_clock():
    readings = [e for e in pulled().events if e.kind is Kind.GLUCOSE and e.id.startswith("ns-6570a1")]
    assert len(readings) == 13  # twelve sgv and one mbg; the calibration is not a reading
    first = min(readings, key=lambda e: e.ts)
    assert (first.id, first.mg_dl) == ("ns-6570a1c2e4b0000000000000", 142.0)
    assert first.ts == datetime(2026, 12, 3, 8, 0, tzinfo=timezone(timedelta(hours=1)))  # utcOffset 60


def test_treatments_become_meals_doses_and_checks_and_the_rest_is_counted():
    out = pulled()
    by_id = {e.id: e for e in out.events}
    meal, bolus = by_id["ns-6570b0010000000000000001-meal"], by_id["ns-6570b0010000000000000001-insulin"]
    assert (meal.kind, meal.carbs_g, bolus.insulin, bolus.units) == (Kind.MEAL, 45, Insulin.RAPID, 4.5)
    assert by_id["ns-6570b0010000000000000002"].units == 1.5
    assert by_id["ns-6570b0010000000000000003"].mg_dl == pytest.approx(9.4 * MG_DL_PER_MMOL_L)
    assert by_id["ns-6570b0010000000000000006"].carbs_g == 15
    assert out.refused == [
        "treatment 6570b0010000000000000004 (BG Check): a BG Check without units (mg/dl or mmol) is not used"
    ]
    assert out.skipped == {
        "entry cal": 1,
        "treatment Temp Basal": 1,
        "treatment Note": 1,
        "treatment Temporary Target": 1,
    }
    assert [e.ts for e in out.events] == sorted(e.ts for e in out.events)


def test_the_export_reads_back_as_the_same_readings_and_doses():
    at = datetime(2026, 12, 3, 8, 0, tzinfo=timezone(timedelta(hours=1)))
    events = [
        Event("g1", "p", at, Kind.GLUCOSE, mg_dl=182.0, context="unspecified"),
        Event("m1", "p", at + timedelta(minutes=1), Kind.MEAL, size="typical", carbs_g=50),
        Event("i1", "p", at + timedelta(minutes=2), Kind.INSULIN, insulin=Insulin.RAPID, units=5.0),
        Event("i2", "p", at + timedelta(hours=3), Kind.INSULIN, insulin=Insulin.RAPID, units=2.0),
        Event("b1", "p", at + timedelta(hours=14), Kind.INSULIN, insulin=Insulin.LONG, units=18.0),
    ]
    data = record_to_nightscout(events, "bed7")
    assert [e["mbg"] for e in data["entries"]] == [182]
    kinds = [(t["eventType"], t.get("insulin"), t.get("carbs")) for t in data["treatments"]]
    assert kinds == [("Meal Bolus", 5.0, 50), ("Correction Bolus", 2.0, None), ("Note", None, None)]
    back = read_pulled(
        data["entries"], [{**t, "_id": f"x{n}"} for n, t in enumerate(data["treatments"])], "p", Insulin.RAPID, NOW
    )
    assert [(e.id, e.ts, e.mg_dl) for e in back.events if e.kind is Kind.GLUCOSE] == [("g1", at, 182.0)]
    doses = sorted((e.ts, e.units) for e in back.events if e.kind is Kind.INSULIN)
    assert doses == [(at + timedelta(minutes=2), 5.0), (at + timedelta(hours=3), 2.0)]  # the basal is a note
    assert sorted(e.id for e in back.events) == ["g1", "i1", "i2", "m1"]  # the Meal Bolus is one dose, not two


def test_times_are_never_guessed_and_a_wrong_clock_does_not_move_the_cursor():
    bare = {"_id": "a1", "type": "sgv", "sgv": 120, "date": 1796284500000}
    refused = read_pulled([bare], [], "p", Insulin.RAPID, NOW)
    assert refused.events == [] and "no utcOffset" in refused.refused[0]
    [event] = read_pulled([bare], [], "p", Insulin.RAPID, NOW, zone=timezone(timedelta(hours=-5))).events
    assert event.ts.utcoffset() == timedelta(hours=-5)
    absurd = {**bare, "_id": "a2", "date": 10**16, "utcOffset": 0}
    assert "is not a time" in read_pulled([absurd], [], "p", Insulin.RAPID, NOW).refused[0]
    future = {**bare, "_id": "a3", "date": int((NOW + timedelta(days=300)).timestamp() * 1000)}
    assert client_mod.newest([bare, future, absurd], "date", NOW) == NOW


# ----------------------------------------------------------------------------- over HTTP
class RecordedSite(BaseHTTPRequestHandler):
    """Answers API v1 as Nightscout does: the api-secret header (SHA-1), find[...] bounds, count, newest first."""

    entries: ClassVar[list[dict]] = ENTRIES
    treatments: ClassVar[list[dict]] = TREATMENTS

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if self.headers.get("api-secret") != hashlib.sha1(SECRET.encode()).hexdigest():
            self.send_response(401)
            self.end_headers()
            return
        items, field = {
            "/api/v1/entries.json": (self.entries, "date"),
            "/api/v1/treatments.json": (self.treatments, "created_at"),
        }[parts.path]
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}

        def value(item):
            return item.get(field) if field == "created_at" else item.get(field, 0)

        def bound(key):
            raw = query.get(f"find[{field}][{key}]")
            return None if raw is None else (raw if field == "created_at" else int(raw))

        low, high = bound("$gt"), bound("$lte")
        kept = [i for i in items if (low is None or value(i) > low) and (high is None or value(i) <= high)]
        kept.sort(key=value, reverse=True)
        body = json.dumps(kept[: int(query.get("count", 10))]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture()
def site():
    server = ThreadingHTTPServer(("127.0.0.1", 0), RecordedSite)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_pull_pages_through_the_site_into_a_device(site, mosquitto, tmp_path, monkeypatch):
    monkeypatch.setattr(client_mod, "PAGE", 4)  # several pages, boundaries read twice and kept once
    device = DeviceProcess(tmp_path / "state", mosquitto.url, "nsbed", clock="event").start()
    args = ["nightscout", "pull", "--url", site, "--patient", "ns-p1", "--device", "nsbed", "--broker", mosquitto.url]
    since = ["--since", "2026-12-03T00:00+00:00"]
    try:
        wrong = CliRunner().invoke(main, [*args, *since, "--api-secret", "guess"])
        result = CliRunner().invoke(main, [*args, *since, "--api-secret", SECRET])
    finally:
        device.stop()
    assert wrong.exit_code == 1 and "refused the request (401): check --api-secret" in wrong.output
    expected = pulled().events
    assert f"14 entries, 8 treatments: {len(expected)} events sent, {len(expected)} taken" in result.output
    assert "refused treatment 6570b0010000000000000004 (BG Check)" in result.output and result.exit_code == 1
    with sqlite3.connect(device.state_dir / "advisor.sqlite3") as db:
        stored = sorted(r[0] for r in db.execute("SELECT id FROM events"))
    assert stored == sorted(e.id for e in expected)


def test_follow_takes_what_is_new_until_stopped(site, mosquitto, tmp_path, monkeypatch):
    monkeypatch.setattr(RecordedSite, "entries", list(ENTRIES))
    device = DeviceProcess(tmp_path / "state", mosquitto.url, "nsfollow", clock="event").start()
    watcher = DeviceWatcher(BrokerConfig(url=mosquitto.url), "nsfollow")
    watcher.wait_subscribed()
    command = [sys.executable, "-m", "tools.cli.main", "nightscout", "pull", "--url", site, "--patient", "ns-p2"]
    options = ["--device", "nsfollow", "--broker", mosquitto.url, "--since", "2026-12-03T00:00+00:00"]
    follow = subprocess.Popen(
        [*command, *options, "--follow", "--interval", "5"],
        cwd=ROOT,
        env={**os.environ, "NIGHTSCOUT_API_SECRET": SECRET},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        first = watcher.wait_for(lambda w: w.suggestion_for("ns-6570a1c2e4b000000000000b") is not None, 60)
        assert first, [s.event_id for s in watcher.suggestions]
        newest = max(ENTRIES, key=lambda e: e["date"])
        RecordedSite.entries.append(
            {**newest, "_id": "6570a1c2e4b0ffffffffffff", "date": newest["date"] + 300_000, "sgv": 133}
        )
        second = watcher.wait_for(lambda w: w.suggestion_for("ns-6570a1c2e4b0ffffffffffff") is not None, 60)
        late = {**newest, "_id": "6570a1c2e4b0eeeeeeeeeeee", "date": newest["date"] - 120_000, "sgv": 140}
        RecordedSite.entries.append(late)  # entered late, older than the newest seen: the overlap finds it
        # the device stores a late reading and says why it does not answer it (a warning on errors)
        third = watcher.wait_for(lambda w: w.error_for_id("ns-6570a1c2e4b0eeeeeeeeeeee") is not None, 60)
    finally:
        follow.send_signal(signal.SIGINT)
        out, _ = follow.communicate(timeout=60)
        watcher.close()
        device.stop()
    assert second and third, out
    assert "18 events sent, 18 taken" in out, out and "1 events sent, 1 taken" in out
    assert out.count("refused treatment 6570b0010000000000000004") == 1  # reported once, not at every poll
    assert follow.returncode == 1 and "some items were refused" in out
