"""GET /metrics and GET /health: the figures an ops team scrapes, read by Prometheus' own parser."""

from __future__ import annotations

import contextlib
import http.client
import json
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from device.config import BrokerConfig
from device.contract.messages import DeviceStatus, ErrorMessage, ModelInfo, PageStatus, RiskModelInfo
from device.state.metrics import MAX_REASONS, DeviceMetrics, reason_label
from tools.mqtt_kit.client import DeviceWatcher, EventPublisher

from . import event_factory
from .device_process import DeviceProcess
from .tcp_proxy import CuttableProxy

STATUS = PageStatus.of(
    DeviceStatus(
        state="online",
        device_id="bed7",
        models=[ModelInfo("dose", "2026.12.1", "ab" * 32)],
        risk_models={"mortality_1y": RiskModelInfo("1.0", "l1", "litert", True, 'he said "no"\nthen')},
        model_problem=None,
        storage_problem="the database refuses writes",
        held_in_memory=3,
        notes=[],
        clock="wall",
        timezone="UTC",
        started_at="2026-12-04T08:00:00+00:00",
        checks_overdue=["p1", "p2"],
    ),
    broker="mqtt://127.0.0.1:1883",
    broker_connected=True,
    broker_problem=None,
    actions_need_pin=False,
)


def families(text: str) -> dict[str, dict]:
    """Metric family → {(sample name, sorted labels): value}, as Prometheus reads the text."""
    read: dict[str, dict] = {}
    for family in text_string_to_metric_families(text):
        read[family.name] = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}
    return read


def test_answers_latency_errors_and_the_device_state_parse_as_prometheus_reads_them():
    metrics = DeviceMetrics()
    for units, status, latency in ((4.0, "suggest", 3.0), (0.0, "withhold", 30.0), (2.0, "suggest", 700.0)):
        answer = replace(event_factory.suggestion("e", units=units), status=status, latency_ms=latency)
        metrics.observe(answer)
    metrics.observe(ErrorMessage("e1", "'mg_dl' 5000 is outside 10–1000 mg/dL"))
    metrics.observe(ErrorMessage("e2", "'mg_dl' 2 is outside 10–1000 mg/dL"))
    metrics.observe(ErrorMessage("e3", "patient id 'P-1' looks like 'p-1'", level="warning"))
    read = families(metrics.exposition(STATUS))
    answers = read["advisor_answers"]
    assert answers[("advisor_answers_total", (("status", "suggest"),))] == 2
    assert answers[("advisor_answers_total", (("status", "withhold"),))] == 1
    latency = read["advisor_answer_latency_seconds"]
    assert latency[("advisor_answer_latency_seconds_count", ())] == 3
    assert latency[("advisor_answer_latency_seconds_sum", ())] == pytest.approx(0.733)
    assert latency[("advisor_answer_latency_seconds_bucket", (("le", "0.005"),))] == 1
    assert latency[("advisor_answer_latency_seconds_bucket", (("le", "0.05"),))] == 2
    assert latency[("advisor_answer_latency_seconds_bucket", (("le", "+Inf"),))] == 3
    errors = read["advisor_errors"]
    assert errors[("advisor_errors_total", (("level", "refused"), ("reason", "… … is outside …–… mg/dL")))] == 2
    assert errors[("advisor_errors_total", (("level", "warning"), ("reason", "patient id … looks like …")))] == 1
    assert read["advisor_store_healthy"][("advisor_store_healthy", ())] == 0
    assert read["advisor_broker_connected"][("advisor_broker_connected", ())] == 1
    assert read["advisor_events_held_in_memory"][("advisor_events_held_in_memory", ())] == 3
    assert read["advisor_checks_overdue"][("advisor_checks_overdue", ())] == 2
    started = read["advisor_started_timestamp_seconds"][("advisor_started_timestamp_seconds", ())]
    assert started == datetime(2026, 12, 4, 8, tzinfo=UTC).timestamp()
    models = {dict(labels)["name"]: dict(labels) for _, labels in read["advisor_model_info"]}
    assert models["dose"]["version"] == "2026.12.1" and models["mortality_1y"]["kind"] == "risk"


def test_error_reasons_are_labels_of_a_kind_not_of_an_event():
    assert reason_label("event 'g-17' at 2026-12-04T10:15 is late") == "event … at …-…-…T… is late"
    metrics = DeviceMetrics()
    for i in range(MAX_REASONS + 5):
        metrics.observe(ErrorMessage(None, f"reason number {'x' * i}"))
    reasons = {reason for _, reason in metrics.errors}
    assert len(reasons) == MAX_REASONS + 1 and "other" in reasons
    assert metrics.errors[("refused", "other")] == 5


def get(device: DeviceProcess, path: str, host: str | None = None) -> tuple[int, str, str]:
    connection = http.client.HTTPConnection("127.0.0.1", device.port, timeout=10)
    try:
        connection.request("GET", path, headers={"Host": host or f"127.0.0.1:{device.port}"})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read().decode()
    finally:
        connection.close()


def health_once(device: DeviceProcess, wanted: int, timeout_s: float = 30.0) -> tuple[int, str, str]:
    """``GET /health`` again after each nudge of the page's event stream (every change of the broker
    link is one) until it answers ``wanted``, or ``timeout_s`` passed."""
    stream = http.client.HTTPConnection("127.0.0.1", device.port, timeout=timeout_s)
    stream.request("GET", "/api/stream", headers={"Host": f"127.0.0.1:{device.port}"})
    response = stream.getresponse()
    deadline = time.monotonic() + timeout_s
    try:
        while (found := get(device, "/health"))[0] != wanted and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                response.fp.readline()
        return found
    finally:
        stream.close()


@pytest.mark.e2e
def test_a_running_device_counts_what_it_answered_and_says_when_it_cannot(mosquitto, tmp_path):
    proxy = CuttableProxy(mosquitto.port)
    broker = BrokerConfig(url=mosquitto.url)
    watcher = DeviceWatcher(broker, "metrics-bed")
    watcher.wait_subscribed()
    device = DeviceProcess(tmp_path / "state", f"mqtt://127.0.0.1:{proxy.port}", "metrics-bed").start()
    publisher = EventPublisher(broker, "metrics-bed", client_id="metrics-sensor")
    publisher.wait_connected()
    try:
        now = datetime.now(UTC)
        for event in event_factory.history("p1", now - timedelta(minutes=10)):
            publisher.publish(event)
        for i, mg_dl in enumerate((150, 60, 240)):
            publisher.publish(event_factory.glucose(f"m{i}", "p1", now - timedelta(minutes=3 - i), mg_dl))
        publisher.publish(b'{"id": "bad-1", "kind": "glucose"}')
        publisher.flush()
        assert watcher.wait_for(lambda w: len(w.suggestions) >= 3 and w.error_for_id("bad-1") is not None, 30)

        status, content_type, text = get(device, "/metrics")
        assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
        read = families(text)
        answered = {dict(labels)["status"]: value for (_, labels), value in read["advisor_answers"].items()}
        seen: dict[str, int] = {}
        for suggestion in watcher.suggestions:
            seen[suggestion.status] = seen.get(suggestion.status, 0) + 1
        assert answered == seen
        assert read["advisor_answer_latency_seconds"][("advisor_answer_latency_seconds_count", ())] == sum(
            seen.values()
        )
        refused = sum(v for (_, labels), v in read["advisor_errors"].items() if ("level", "refused") in labels)
        assert refused == sum(1 for e in watcher.errors if e.level == "refused") >= 1
        assert read["advisor_broker_connected"][("advisor_broker_connected", ())] == 1

        status, _, body = get(device, "/health")
        assert status == 200 and json.loads(body) == {
            "healthy": True,
            "state": "online",
            "device_id": "metrics-bed",
            "problems": [],
        }
        assert get(device, "/metrics", host="scraper.evil.example")[0] == 421, "the page's Host rule applies"

        proxy.cut()  # the broker is gone: the device cannot answer, and says so
        found = health_once(device, 503)
        assert found[0] == 503, found
        health = json.loads(found[2])
        assert health["healthy"] is False and health["problems"], health
        assert families(get(device, "/metrics")[2])["advisor_broker_connected"][("advisor_broker_connected", ())] == 0
    finally:
        publisher.close()
        watcher.close()
        device.stop()
        proxy.close()
