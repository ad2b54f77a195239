"""Shadow mode: a candidate bundle answers beside the live one — stored and published on ``shadow``,
never on ``suggestions``, never on the page; ``advisor shadow report`` compares them answer by answer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from device.advisor import Advisor
from device.config import BrokerConfig, SafetyConfig
from device.contract.messages import ShadowAnswer, Suggestion
from device.models.bundle import default_bundle_path, open_bundle
from device.models.choice import ModelSlot
from device.models.inference import DoseModel
from device.state.store import Store
from domain.events import within_timestamp_rank
from tools.mqtt_kit.client import DeviceWatcher, EventPublisher
from tools.rigs.shadow_report import compare, table

from . import event_factory
from .conftest import ROOT
from .device_process import DeviceProcess
from .event_factory import raw
from .test_flash import variant


def replay(aim94_logs, shadow: ModelSlot | None) -> tuple[Advisor, list[Suggestion], list[ShadowAnswer]]:
    bundle = open_bundle(default_bundle_path("dose"))
    advisor = Advisor(Store(Path(":memory:")), ModelSlot(DoseModel(bundle)), SafetyConfig(), "event", shadow=shadow)
    live, candidate = [], []
    log = next(lg for lg in aim94_logs if lg.number == 3)
    for event in sorted(log.events, key=lambda e: (e.ts, within_timestamp_rank(e))):
        for message in advisor.handle(raw(event)).messages:
            if isinstance(message, Suggestion):
                live.append(message)
            elif isinstance(message, ShadowAnswer):
                candidate.append(message)
    return advisor, live, candidate


def test_the_candidate_answers_every_live_answer_and_changes_none(aim94_logs):
    float_model = DoseModel(open_bundle(default_bundle_path("dose")), role="float")  # a real second model
    advisor, live, candidate = replay(aim94_logs, ModelSlot(float_model))
    _, alone, none = replay(aim94_logs, None)
    assert none == [] and len(live) == len(alone) > 50
    assert [(s.id, s.status, s.units, s.model_units) for s in live] == [
        (s.id, s.status, s.units, s.model_units) for s in alone
    ], "the live answers are the same with or without a candidate beside them"
    assert [c.live_id for c in candidate] == [s.id for s in live]
    assert advisor.store.shadow_answers() == candidate
    differs = [c for c, s in zip(candidate, live, strict=True) if c.model_units != s.model_units]
    assert differs, "the float model's numbers differ from the int8 model's somewhere"
    report = compare(zip(live, candidate, strict=True))
    assert report.total.answers == len(live) and 0 < report.total.same_status <= 1
    assert report.by_status and report.by_rule
    assert "| all answers |" in table(report)


@pytest.mark.e2e
def test_a_device_in_shadow_mode_publishes_the_candidate_only_on_shadow(mosquitto, tmp_path):
    from device.models import signing

    private, public = signing.generate(tmp_path / "key")
    candidate = variant(tmp_path, private, version="2099.02.02.000000")
    watcher = DeviceWatcher(BrokerConfig(url=mosquitto.url), "shadow-bed")
    watcher.wait_subscribed()
    extra = ("--shadow-bundle", str(candidate), "--trust", str(public))
    device = DeviceProcess(tmp_path / "state", mosquitto.url, "shadow-bed", extra=extra).start()
    sensor = EventPublisher(BrokerConfig(url=mosquitto.url), "shadow-bed", client_id="shadow-sensor")
    sensor.wait_connected()
    try:
        from datetime import UTC, datetime, timedelta

        now = datetime.now(UTC)
        for event in event_factory.history("p1", now - timedelta(minutes=5)):
            sensor.publish(event)
        sensor.publish(event_factory.glucose("g-now", "p1", now - timedelta(minutes=1), 180))
        sensor.flush()
        assert watcher.wait_for(
            lambda w: any(s.event_id == "g-now" for s in w.shadow) and w.suggestion_for("g-now") is not None, 30
        )
        live = watcher.suggestion_for("g-now")
        shadow = next(s for s in watcher.shadow if s.event_id == "g-now")
        assert live is not None and shadow.live_id == live.id and shadow.model.version == "2099.02.02.000000"
        assert all(s.model.version != "2099.02.02.000000" for s in watcher.suggestions), "never on suggestions"
        view = device.view("p1")
        assert "2099.02.02" not in view.to_json().decode(), "never on the page"
        assert any("shadow mode: bundle 2099.02.02.000000" in note for note in device.status().notes)
    finally:
        sensor.close()
        watcher.close()
        device.stop()
    report = subprocess.run(
        [sys.executable, "-m", "tools.cli.main", "shadow", "report", "--state-dir", str(tmp_path / "state")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert report.returncode == 0, report.stderr
    assert "Candidate 2099.02.02.000000 against live" in report.stdout and "| all answers |" in report.stdout
