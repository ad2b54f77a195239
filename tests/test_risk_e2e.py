"""Companion models on the device, end to end: a visit history on ``patients`` through a real
Mosquitto to a real ``advisor device run`` process, a ``risk`` message back."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime

import pytest

from device.config import BrokerConfig
from device.contract.messages import ApiError, Risk
from device.models import bundle as bundle_mod
from device.models.companion import RiskModel
from domain.validation import decode_visit_history
from tools.mqtt_kit.client import DeviceWatcher, EventPublisher

from . import event_factory
from .device_process import DeviceProcess

DEVICE = "bed-risk"
HISTORY = event_factory.heart_failure_history("p-risk")


@pytest.fixture()
def rig(mosquitto, tmp_path):
    broker = BrokerConfig(url=mosquitto.url)
    watcher = DeviceWatcher(broker, DEVICE, client_id="risk-watcher")
    assert watcher.subscribed.wait(5)
    device = DeviceProcess(tmp_path / "state", mosquitto.url, DEVICE).start()
    publisher = EventPublisher(broker, DEVICE, client_id="risk-sender")
    publisher.wait_connected()
    yield device, publisher, watcher
    publisher.close()
    watcher.close()
    device.stop()


def expected_probabilities() -> dict[str, float]:
    visits = decode_visit_history(HISTORY.to_payload()).visits  # as the device decodes it
    return {
        name: RiskModel(bundle_mod.open_bundle(bundle_mod.default_bundle_path(name))).predict(visits)
        for name in ("mortality", "readmission")
    }


def test_a_visit_history_gets_a_risk_message_and_the_page_shows_it(rig):
    device, publisher, watcher = rig
    publisher.publish_visit_history(HISTORY)
    assert watcher.wait_for(lambda w: w.risk, 10), "no risk message"
    risk = watcher.risk[-1]
    assert risk.patient == "p-risk" and risk.visits == 2
    expected = expected_probabilities()
    assert risk.mortality_1y == pytest.approx(expected["mortality"], abs=1e-4)
    assert risk.readmission_30d == pytest.approx(expected["readmission"], abs=1e-4)
    for name in ("mortality", "readmission"):
        model = risk.models[name]
        assert model.version and model.demo_trained is True and "demo-trained" in model.label
    assert "do not change the dose" in risk.note
    for name in ("mortality", "readmission"):  # each figure names the codes that moved it
        top = risk.contributions[name]
        assert 1 <= len(top) <= 5 and all(isinstance(c.change, float) for c in top)
    assert device.view("p-risk").risk is None, "the patient's own screen shows no companion risk"
    device.add_user("nurse-1", "nurse", "2580")
    view = device.view("p-risk", device.signed_in("nurse-1", "2580"))
    assert view.risk is not None and view.risk.mortality_1y == risk.mortality_1y
    status = device.status()
    assert set(status.risk_models) == {"mortality", "readmission"}


def test_a_bad_history_is_answered_on_errors_and_the_device_keeps_serving(rig):
    _device, publisher, watcher = rig
    publisher.publish_visit_history(b"{not json")
    publisher.publish_visit_history(b'{"patient": "p-risk", "visits": [{"admit": "2131-03-02T08:00:00+00:00"}]}')
    assert watcher.wait_for(lambda w: len(w.errors) >= 2, 10)
    reasons = [e.reason for e in watcher.errors]
    assert all(r.startswith("visit history rejected: ") for r in reasons)
    assert "not valid JSON" in reasons[0] and "'discharge'" in reasons[1]
    assert watcher.risk == []
    publisher.publish_visit_history(HISTORY)
    assert watcher.wait_for(lambda w: w.risk, 10)
    now = datetime.now(UTC)
    for event in event_factory.history("p-dose", now):
        publisher.publish(event)
    assert watcher.wait_for(lambda w: any(s.patient == "p-dose" for s in w.suggestions), 10)


def test_a_case_twin_cannot_enter_through_a_visit_history(rig):
    """'P-RISK' beside the known 'p-risk': refused on patients as on events, so its doses stay refused too."""
    device, publisher, watcher = rig
    publisher.publish(event_factory.glucose("g-known", "p-risk", datetime.now(UTC), 140))
    assert watcher.wait_for(lambda w: w.suggestion_for("g-known"), 10)
    twin = event_factory.visit_history(
        "P-RISK", ("2131-03-02T08:00:00+00:00", "2131-03-09T15:00:00+00:00", ["dx9:4280"])
    )
    publisher.publish_visit_history(twin)
    assert watcher.wait_for(lambda w: any("visit history refused" in e.reason for e in w.errors), 10)
    refused = next(e for e in watcher.errors if "visit history refused" in e.reason)
    assert "'P-RISK' differs from the known patient 'p-risk' only in letter case" in refused.reason
    assert watcher.risk == []
    publisher.publish(event_factory.glucose("g-twin", "P-RISK", datetime.now(UTC), 140))
    assert watcher.wait_for(lambda w: w.error_for_id("g-twin"), 10), "the twin's events stay refused"
    assert "P-RISK" not in device.patients().patients


def test_a_nurse_asks_for_risk_over_http_and_gets_what_the_topic_answers(rig):
    device, _publisher, watcher = rig
    body = json.dumps(HISTORY.to_payload()).encode()
    device.add_user("nurse-2", "nurse", "2581")
    device.add_user("pat-2", "patient", "2582", patient="p-risk")
    status, risk = device.post("api/risk", body, session=device.signed_in("nurse-2", "2581"))
    assert status == 200 and isinstance(risk, Risk), risk
    expected = expected_probabilities()
    assert risk.patient == "p-risk" and risk.mortality_1y == pytest.approx(expected["mortality"], abs=1e-4)
    assert watcher.wait_for(lambda w: any(r.computed_at == risk.computed_at for r in w.risk), 10), "not on risk"
    status, refused = device.post("api/risk", body, session=device.signed_in("pat-2", "2582"))
    assert status == 403 and isinstance(refused, ApiError) and "a nurse signs in to see risk" in refused.error
    status, bad = device.post("api/risk", b'{"patient": "p-risk"}', session=device.signed_in("nurse-2", "2581"))
    assert status == 400 and isinstance(bad, ApiError) and "visit history rejected" in bad.error
    assert watcher.wait_for(lambda w: any("visit history rejected" in e.reason for e in w.errors), 10)
    with sqlite3.connect(device.state_dir / "advisor.sqlite3") as db:
        audited = [json.loads(r[0]) for r in db.execute("SELECT detail FROM audit WHERE action = 'risk_assessed'")]
    assert any(a.get("by") == "nurse-2" for a in audited), audited
