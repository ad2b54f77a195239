"""FHIR R4 out and in: a device's record of real AIM-94 days, every resource validated by fhir.resources."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from click.testing import CliRunner
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle

from device.advisor import Advisor
from device.config import SafetyConfig
from device.contract.messages import Response, Suggestion
from device.models.bundle import default_bundle_path, open_bundle
from device.models.choice import ModelSlot
from device.models.inference import DoseModel
from device.state.store import DATABASE_NAME, Store
from domain.events import Event, Insulin, Kind
from interop.fhir.bundle_file import write_transaction
from interop.fhir.record import RecordError, read_records
from interop.fhir.resources import conditional_entries, read_resources, record_resources, transaction
from interop.fhir.source import SourceError, read_source
from tools.cli.main import main

from .device_process import DeviceProcess

DEVICE = "bed7"


@pytest.fixture(scope="module")
def state_dir(aim94_logs, tmp_path_factory):
    """The first 150 events of AIM-94 patients 3 and 5 through the device's own core, with what nurses did."""
    folder = tmp_path_factory.mktemp("fhir-state")
    store = Store(folder / DATABASE_NAME)
    model = DoseModel(open_bundle(default_bundle_path("dose")))
    advisor = Advisor(store, ModelSlot(model), SafetyConfig(), "event", wall_clock=lambda: datetime.now(UTC))
    answers: list[Suggestion] = []
    for number in (3, 5):
        log = next(lg for lg in aim94_logs if lg.number == number)
        for event in log.events[:150]:
            outcome = advisor.handle(json.dumps(event.to_payload()).encode())
            answers += [m for m in outcome.messages if isinstance(m, Suggestion)]
    doses = [s for s in answers if s.status == "suggest" and s.units > 0]
    assert len(doses) >= 3, "the record needs three dose answers to act on"
    given, override, declined = doses[0], doses[1], doses[2]
    for suggestion, units, reason in ((given, given.units, None), (override, override.units + 1, "clinicians_order")):
        at = datetime.fromisoformat(suggestion.ts) + timedelta(minutes=3)
        dose = Event(
            f"given-{suggestion.id}", suggestion.patient, at, Kind.INSULIN, insulin=Insulin.REGULAR, units=units
        )
        response = Response("given", at.isoformat(), "ann", "nurse", units, reason, None, dose.id)
        assert advisor.record_given(suggestion, response, dose)[0] is None  # (warnings: AIM-94 logged it too)
    refusal = Response("declined", declined.ts, "bob", "nurse", None, "patient_refused", "asleep")
    assert store.record_response(declined, refusal) is None
    store.close()
    return folder


@pytest.fixture(scope="module")
def exported(state_dir):
    return [r for record in read_records(state_dir) for r in record_resources(DEVICE, record)]


def of(resources, kind):
    return [r for r in resources if r["resourceType"] == kind]


def test_every_resource_and_the_bundle_validate_as_fhir(exported):
    for resource in exported:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    broken = {k: v for k, v in of(exported, "MedicationAdministration")[0].items() if k != "subject"}
    with pytest.raises(ValueError, match="subject"):  # the validator is not lenient
        get_fhir_model_class("MedicationAdministration").model_validate(broken)
    bundle = Bundle.model_validate(transaction(exported))
    assert bundle.type == "transaction" and all(e.request.method == "PUT" for e in bundle.entry)


def test_a_loinc_observation_per_reading_and_an_administration_per_dose(state_dir, exported):
    store = Store(state_dir / DATABASE_NAME)
    events = [e for p in store.patients() for e in store.events_for(p)]
    store.close()
    readings = [e for e in events if e.kind is Kind.GLUCOSE]
    doses = [e for e in events if e.kind is Kind.INSULIN]
    observations = of(exported, "Observation")
    assert len(observations) == len(readings) > 50
    assert all(
        o["code"]["coding"][0] == {**o["code"]["coding"][0], "system": "http://loinc.org", "code": "41653-7"}
        for o in observations
    )
    administrations = of(exported, "MedicationAdministration")
    assert len(administrations) == len(doses)
    assert all(a["dosage"]["dose"]["code"] == "[IU]" for a in administrations)
    assert len(of(exported, "Patient")) == 2


def test_who_gave_the_overrides_and_the_declines_are_in_the_record(exported):
    confirmed = [a for a in of(exported, "MedicationAdministration") if "performer" in a]
    assert [a["performer"][0]["actor"]["display"] for a in confirmed] == ["ann (nurse)", "ann (nurse)"]
    [override] = [a for a in confirmed if "note" in a]
    assert "override" in override["note"][0]["text"] and "clinicians order" in override["note"][0]["text"]
    requests = of(exported, "MedicationRequest")
    assert {r["intent"] for r in requests} == {"proposal"}
    [declined] = [r for r in requests if "declined" in r.get("statusReason", {}).get("text", "")]
    assert declined["status"] == "cancelled" and "bob (nurse)" in declined["statusReason"]["text"]
    assert "patient refused; asleep" in declined["statusReason"]["text"]
    requested = {r["request"]["reference"].split("/")[1] for r in confirmed}
    assert requested <= {r["id"] for r in requests if r["status"] == "completed"}


def test_a_second_export_updates_the_same_resources(state_dir, exported):
    again = [r for record in read_records(state_dir) for r in record_resources(DEVICE, record)]
    assert [r["id"] for r in again] == [r["id"] for r in exported]
    assert len({r["id"] for r in exported}) == len(exported)


def test_import_round_trips_readings_and_doses_exactly(state_dir, exported):
    store = Store(state_dir / DATABASE_NAME)
    stored = [e for p in store.patients() for e in store.events_for(p) if e.kind in (Kind.GLUCOSE, Kind.INSULIN)]
    store.close()
    imported = read_resources(exported)
    assert imported.refused == [] and imported.skipped == {"MedicationRequest": len(of(exported, "MedicationRequest"))}

    def key(e: Event):
        return (e.id, e.patient, e.ts, e.kind, e.mg_dl, e.context, e.insulin, e.units)

    assert sorted(map(key, imported.events), key=str) == sorted(map(key, stored), key=str)


def test_what_cannot_be_used_is_refused_one_by_one():
    patient = {"resourceType": "Patient", "id": "p1", "identifier": [{"system": "urn:x", "value": "mrn-1"}]}
    glucose = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "14743-9"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2026-12-01T08:00:00+01:00",
        "valueQuantity": {"value": 6.1, "unit": "mmol/L"},
    }
    no_unit = {**glucose, "id": "o2", "valueQuantity": {"value": 6.1}}
    other_code = {**glucose, "id": "o3", "code": {"coding": [{"system": "http://loinc.org", "code": "2160-0"}]}}
    stranger = {**glucose, "id": "o4", "subject": {"reference": "Patient/nobody"}}
    below_range = {**glucose, "id": "o5", "valueQuantity": {"value": 2.2, "unit": "mmol/L", "comparator": "<"}}
    resources = [patient, glucose, no_unit, other_code, stranger, below_range, {"resourceType": "Encounter"}]
    other_system = read_resources(resources)  # urn:x is not the advisor's own patient system: nobody is matched
    assert other_system.events == [] and all("patient system" in line for line in other_system.refused[:1])
    out = read_resources(resources, system="urn:x")
    [event] = out.events
    assert (event.id, event.patient, round(event.reading, 2)) == ("fhir-o1", "mrn-1", 109.91)
    refused = [line.split(":")[0] for line in out.refused]
    assert refused == ["Observation/o2", "Observation/o3", "Observation/o4", "Observation/o5"]
    assert "outside the meter's range" in out.refused[3]
    assert "without a unit" in out.refused[0] and out.skipped == {"Encounter": 1}
    mapped = read_resources([patient, glucose], mapping={"mrn-2": "bed7-p2"}, system="urn:x")
    assert mapped.events == [] and "not on the patient list" in mapped.refused[0]


def test_sources_and_state_folders_that_cannot_be_read_say_why(tmp_path):
    bad = tmp_path / "bad.ndjson"
    bad.write_text('{"resourceType": "Patient"}\nnot json\n')
    with pytest.raises(SourceError, match=r"bad\.ndjson:2: not JSON"):
        read_source(bad)
    with pytest.raises(RecordError, match=r"advisor\.sqlite3 is missing"):
        read_records(tmp_path)


def test_export_command_writes_the_bundle_and_refuses_a_stranger(state_dir, tmp_path):
    out = tmp_path / "record.json"
    result = CliRunner().invoke(
        main, ["fhir", "export", "--state-dir", str(state_dir), "--device", DEVICE, "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "Observation" in result.output and len(read_source(out)) > 50
    Bundle.model_validate(json.loads(out.read_text()))  # the file written patient by patient is one Bundle
    since = ["--since", "2030-01-01T00:00+00:00", "--patient", "nobody"]
    refused = CliRunner().invoke(
        main, ["fhir", "export", "--state-dir", str(state_dir), "--device", DEVICE, "--out", str(out), *since]
    )
    assert refused.exit_code == 1 and "patient 'nobody' is not in the record" in refused.output


def test_import_into_a_device_then_export_round_trips(state_dir, exported, mosquitto, tmp_path):
    """A device's export, imported into a fresh device over MQTT and exported again: the same readings and doses."""
    source = tmp_path / "record.ndjson"
    source.write_text("\n".join(json.dumps(r) for r in exported) + "\n")
    device = DeviceProcess(tmp_path / "fresh", mosquitto.url, "bed9", clock="event").start()
    try:
        result = CliRunner().invoke(
            main, ["fhir", "import", str(source), "--device", "bed9", "--broker", mosquitto.url]
        )
    finally:
        device.stop()
    imported = read_resources(exported).events
    assert result.exit_code == 0, result.output
    assert f"{len(imported)} events to send, 0 resources refused" in result.output
    assert f"device bed9: {len(imported)} of {len(imported)} events taken" in result.output
    again = [r for record in read_records(tmp_path / "fresh") for r in record_resources(DEVICE, record)]

    def facts(resources):
        kept = ("Observation", "MedicationAdministration", "Patient")
        return sorted(
            (
                r["resourceType"],
                r["id"],
                json.dumps(r.get("valueQuantity") or r.get("dosage")),
                r.get("effectiveDateTime"),
            )
            for r in resources
            if r["resourceType"] in kept
        )

    assert facts(again) == facts(exported)


class FhirEndpoint(BaseHTTPRequestHandler):
    """A FHIR transaction endpoint for the push: it validates the Bundle with fhir.resources, answers
    201 for a new id and 200 for a known one, 503 once first, and 401 without the token. No real FHIR
    server installs from the registries here (HAPI's server is not served), so this stands in."""

    seen: ClassVar[set[str]] = set()
    calls: ClassVar[list[int]] = []

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        bundle = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.calls.append(len(bundle["entry"]))
        if self.headers.get("Authorization") != "Bearer s3cret":
            self._answer(401, {"resourceType": "OperationOutcome", "issue": [{"diagnostics": "token refused"}]})
            return
        if len(self.calls) == 1:
            self._answer(503, {"resourceType": "OperationOutcome", "issue": [{"diagnostics": "warming up"}]})
            return
        Bundle.model_validate(bundle)
        entries = []
        for entry in bundle["entry"]:
            url = entry["request"]["url"]
            entries.append({"response": {"status": "200 OK" if url in self.seen else "201 Created"}})
            self.seen.add(url)
        self._answer(200, {"resourceType": "Bundle", "type": "transaction-response", "entry": entries})


@pytest.mark.e2e
def test_push_retries_a_busy_server_and_a_second_push_updates(state_dir, exported, tmp_path, monkeypatch):
    monkeypatch.setattr("interop.fhir.push.time.sleep", lambda s: None)
    server = ThreadingHTTPServer(("127.0.0.1", 0), FhirEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/fhir"
    base = ["fhir", "export", "--state-dir", str(state_dir), "--device", DEVICE, "--out", str(tmp_path / "b.json")]
    try:
        first = CliRunner().invoke(main, [*base, "--fhir-url", url, "--token", "s3cret"])
        second = CliRunner().invoke(main, [*base, "--fhir-url", url, "--token", "s3cret"])
        refused = CliRunner().invoke(main, [*base, "--fhir-url", url, "--token", "wrong"])
        conditional = CliRunner().invoke(main, [*base, "--fhir-url", url, "--token", "s3cret", "--by-identifier"])
    finally:
        server.shutdown()
        server.server_close()
    total = len(exported)
    assert first.exit_code == 0 and f"{total} × 201" in first.output, first.output
    assert second.exit_code == 0 and f"{total} × 200" in second.output  # the same resources, updated
    assert (
        refused.exit_code == 1 and "push stopped: " in refused.output and "(HTTP 401: token refused)" in refused.output
    )
    one, two = FhirEndpoint.calls[1:3]  # a transaction per patient
    assert one + two == total
    assert FhirEndpoint.calls == [one, one, two, one, two, one, one, two]  # 503 retried; the 401 not, nothing after it
    assert conditional.exit_code == 0 and f"{total} × 201" in conditional.output  # found by identifier: new urls


def test_conditional_entries_refer_by_identifier_only(exported):
    entries = conditional_entries(exported)
    Bundle.model_validate({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    text = json.dumps(entries)
    assert '"reference": "Patient/' not in text and '"reference": "MedicationRequest/' not in text
    assert all("id" not in e["resource"] for e in entries)
    urls = [e["request"]["url"] for e in entries]
    assert len(set(urls)) == len(urls) and urls[0].startswith("Patient?identifier=urn:advisor:patient:bed7|")


def test_an_empty_record_is_a_bundle_without_entries(tmp_path):
    path = tmp_path / "empty.json"
    assert write_transaction(path, [[]]).total() == 0
    data = json.loads(path.read_text())
    assert "entry" not in data and Bundle.model_validate(data).type == "transaction"
