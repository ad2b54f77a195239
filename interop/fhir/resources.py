"""The device's record as FHIR R4 resources, and FHIR readings and doses back as events (pure).

Out: ``Patient`` (the device's patient id as an identifier), a glucose ``Observation`` (LOINC
41653-7, mg/dL) per reading, a ``MedicationAdministration`` per dose given (who gave it when it
was confirmed on the page, units in UCUM ``[IU]``, the preparation), and a ``MedicationRequest``
(intent ``proposal``) per answer with its reasons and what was done with it: given, declined
with the reason, replaced, or nothing recorded. Resource ids are derived from the device and the
record's own ids, so a second export of the same record updates the same resources (``PUT``).

In: glucose ``Observation``s (any of the LOINC glucose codes of docs/contract.md, mg/dL or
mmol/L) and insulin ``MedicationAdministration``s, each through the device's validation.
Field by field: docs/contract.md, "FHIR R4".
"""

from __future__ import annotations

import hashlib
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from device.contract.messages import Response, Retired, Suggestion
from domain.events import Event, Insulin, Kind
from domain.validation import ValidationError, event_from_mapping, is_identifier
from interop.codes import GLUCOSE_UNITS, LOINC_GLUCOSE

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"
PATIENT_SYSTEM = "urn:advisor:patient"  # + ":<device id>"
EVENT_SYSTEM = "urn:advisor:event"
SUGGESTION_SYSTEM = "urn:advisor:suggestion"
INSULIN_SYSTEM = "urn:advisor:insulin"
CONTEXT_EXTENSION = "urn:advisor:glucose-context"
GLUCOMETER = ("41653-7", "Glucose [Mass/volume] in Capillary blood by Glucometer")
SUBCUTANEOUS = {"system": SNOMED, "code": "34206005", "display": "Subcutaneous route"}
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


@dataclass(frozen=True)
class PatientRecord:
    """What one device holds about one patient: events (requests excluded), answers, and what was
    done with them (``responses`` and ``retirements`` by suggestion id)."""

    patient: str
    events: list[Event]
    suggestions: list[Suggestion] = field(default_factory=list)
    responses: Mapping[str, Response] = field(default_factory=dict)
    retirements: Mapping[str, Retired] = field(default_factory=dict)


def resource_id(device_id: str, kind: str, own_id: str) -> str:
    """A stable FHIR id (``[A-Za-z0-9.-]``, at most 64) for one record item of one device."""
    return "adv-" + hashlib.sha256(f"{device_id}|{kind}|{own_id}".encode()).hexdigest()[:40]


def _quantity_iu(units: float) -> dict:
    return {"value": units, "unit": "U", "system": UCUM, "code": "[IU]"}


def _insulin_concept(insulin: Insulin) -> dict:
    label = f"{insulin.label} insulin"
    return {"coding": [{"system": INSULIN_SYSTEM, "code": insulin.value, "display": label}], "text": label}


def patient_resource(device_id: str, patient: str) -> dict:
    return {
        "resourceType": "Patient",
        "id": resource_id(device_id, "patient", patient),
        "identifier": [{"system": f"{PATIENT_SYSTEM}:{device_id}", "value": patient}],
        "active": True,
    }


def glucose_observation(device_id: str, event: Event, subject: str) -> dict:
    resource: dict = {
        "resourceType": "Observation",
        "id": resource_id(device_id, "event", event.id),
        "identifier": [{"system": EVENT_SYSTEM, "value": event.id}],
        "status": "final",
        "category": [{"coding": [{"system": CATEGORY, "code": "laboratory", "display": "Laboratory"}]}],
        "code": {"coding": [{"system": LOINC, "code": GLUCOMETER[0], "display": GLUCOMETER[1]}]},
        "subject": {"reference": subject},
        "effectiveDateTime": event.ts.isoformat(),
        "valueQuantity": {"value": event.reading, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"},
    }
    if event.context and event.context != "unspecified":
        resource["extension"] = [{"url": CONTEXT_EXTENSION, "valueCode": event.context}]
    return resource


def _who(response: Response) -> str:
    return f"{response.user} ({response.role})"


def _why(response: Response) -> str:
    reason = (response.reason or "").replace("_", " ")
    return "; ".join(part for part in (reason, response.note or "") if part)


def administration(device_id: str, event: Event, subject: str, answered: tuple[Suggestion, Response] | None) -> dict:
    """A dose given; ``answered``: the suggestion it was confirmed for on the page, and the response."""
    assert event.insulin is not None
    resource: dict = {
        "resourceType": "MedicationAdministration",
        "id": resource_id(device_id, "event", event.id),
        "identifier": [{"system": EVENT_SYSTEM, "value": event.id}],
        "status": "completed",
        "medicationCodeableConcept": _insulin_concept(event.insulin),
        "subject": {"reference": subject},
        "effectiveDateTime": event.ts.isoformat(),
        "dosage": {"route": {"coding": [SUBCUTANEOUS]}, "dose": _quantity_iu(event.dose)},
    }
    if answered is not None:
        suggestion, response = answered
        resource["performer"] = [{"actor": {"display": _who(response)}}]
        resource["request"] = {"reference": f"MedicationRequest/{resource_id(device_id, 'suggestion', suggestion.id)}"}
        if abs(event.dose - suggestion.units) > 1e-9:
            why = _why(response) or "no reason"
            text = f"override: {event.dose:g} U given where {suggestion.units:g} U was suggested ({why})"
            resource["note"] = [{"text": text}]
    return resource


def proposal(
    device_id: str, suggestion: Suggestion, subject: str, response: Response | None, retired: Retired | None
) -> dict:
    """One answer of the advisor as a ``MedicationRequest`` of intent ``proposal``."""
    insulin = Insulin(suggestion.insulin)
    resource: dict = {
        "resourceType": "MedicationRequest",
        "id": resource_id(device_id, "suggestion", suggestion.id),
        "identifier": [{"system": SUGGESTION_SYSTEM, "value": suggestion.id}],
        "intent": "proposal",
        "medicationCodeableConcept": _insulin_concept(insulin),
        "subject": {"reference": subject},
        "authoredOn": suggestion.ts,
        "requester": {"display": f"insulin advisor, device {device_id} (decision support, not a certified device)"},
        "reasonCode": [{"text": reason} for reason in suggestion.reasons] or [{"text": suggestion.status}],
        "note": [{"text": f"status {suggestion.status}; rules: {', '.join(suggestion.rules) or 'none'}"}],
    }
    if suggestion.status == "suggest" and suggestion.units > 0:
        resource["dosageInstruction"] = [
            {
                "text": f"{suggestion.units:g} U {insulin.label} insulin",
                "doseAndRate": [{"doseQuantity": _quantity_iu(suggestion.units)}],
            }
        ]
    else:
        resource["doNotPerform"] = True  # an answer that proposes no insulin now
    if response is not None and response.action == "declined":
        resource["status"] = "cancelled"
        resource["statusReason"] = {"text": f"declined by {_who(response)} at {response.at}: {_why(response)}"}
    elif response is not None:
        resource["status"] = "completed"
        resource["note"].append({"text": f"{response.action} by {_who(response)} at {response.at}"})
    elif retired is not None:
        resource["status"] = "cancelled"
        resource["statusReason"] = {"text": f"replaced before anyone acted: {retired.reason}"}
    else:
        resource["status"] = "unknown"  # nothing recorded: whether it was acted on is not known here
    return resource


def record_resources(device_id: str, record: PatientRecord) -> list[dict]:
    """Every resource of one patient's record: the Patient, readings, answers, then doses (each
    resource after those it refers to, so a push in several transactions never refers ahead)."""
    patient = patient_resource(device_id, record.patient)
    subject = f"Patient/{patient['id']}"
    found = [patient]
    by_dose = {r.event_id: sid for sid, r in record.responses.items() if r.action == "given" and r.event_id}
    suggestions = {s.id: s for s in record.suggestions}
    found += [glucose_observation(device_id, e, subject) for e in record.events if e.kind is Kind.GLUCOSE]
    for suggestion in record.suggestions:  # before the doses that refer to them: a push in parts resolves
        found.append(
            proposal(
                device_id,
                suggestion,
                subject,
                record.responses.get(suggestion.id),
                record.retirements.get(suggestion.id),
            )
        )
    for event in record.events:
        if event.kind is Kind.INSULIN:
            sid = by_dose.get(event.id)
            answered = (suggestions[sid], record.responses[sid]) if sid in suggestions else None
            found.append(administration(device_id, event, subject, answered))
    return found


def entry(resource: dict) -> dict:
    """A transaction entry that ``PUT``s ``resource`` at its stable id (create or update)."""
    return {"resource": resource, "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}}


def transaction(resources: Iterable[dict], exported_at: datetime | None = None) -> dict:
    """A FHIR ``Bundle`` of type transaction of these resources."""
    stamp = (exported_at or datetime.now(UTC)).isoformat()
    bundle: dict = {"resourceType": "Bundle", "type": "transaction", "timestamp": stamp}
    entries = [entry(r) for r in resources]
    if entries:  # FHIR JSON has no empty arrays
        bundle["entry"] = entries
    return bundle


def _search(resource: dict) -> str:
    """``<type>?identifier=<system>|<value>``: the resource found by its (first) identifier."""
    identifier = resource["identifier"][0]
    system, value = (urllib.parse.quote(str(identifier[k]), safe=":") for k in ("system", "value"))
    return f"{resource['resourceType']}?identifier={system}|{value}"


def _rewritten(value: object, searches: Mapping[str, str]) -> object:
    """``value`` with every ``reference`` to one of ``searches``' keys replaced by its search."""
    if isinstance(value, dict):
        return {
            k: searches.get(v, v) if k == "reference" and isinstance(v, str) else _rewritten(v, searches)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_rewritten(v, searches) for v in value]
    return value


def conditional_entries(resources: list[dict]) -> list[dict]:
    """Transaction entries that create or update each resource by its identifier (a conditional
    ``PUT``), referring to the others by identifier too: for a server that assigns its own ids.
    ``resources`` must hold every resource the others refer to (one patient's record does)."""
    searches = {f"{r['resourceType']}/{r['id']}": _search(r) for r in resources}
    found = []
    for resource in resources:
        body = _rewritten({k: v for k, v in resource.items() if k != "id"}, searches)
        found.append({"resource": body, "request": {"method": "PUT", "url": _search(resource)}})
    return found


# ------------------------------------------------------------------------------------ in
class FhirRefusal(ValueError):
    """Why one resource is not used (the others still are)."""


def _usable(identifier: object, system: str | None) -> bool:
    """An identifier of the patient system: ``system`` when given, else one of this advisor's devices."""
    if not isinstance(identifier, dict) or not identifier.get("value"):
        return False
    found = str(identifier.get("system", ""))
    return found == system if system is not None else found.startswith(f"{PATIENT_SYSTEM}:")


def _patient_ids(resources: list[dict], system: str | None) -> dict[str, str]:
    """``Patient/<id>`` -> the identifier of each Patient resource with exactly one in the patient system."""
    found: dict[str, str] = {}
    for r in resources:
        if isinstance(r, dict) and r.get("resourceType") == "Patient" and isinstance(r.get("id"), str):
            values = {str(i["value"]) for i in r.get("identifier", []) if _usable(i, system)}
            if len(values) == 1:
                found[f"Patient/{r['id']}"] = values.pop()
    return found


def _subject(resource: dict, patients: Mapping[str, str], mapping: Mapping[str, str] | None, system: str | None) -> str:
    subject = resource.get("subject")
    if not isinstance(subject, dict):
        raise FhirRefusal("no subject: the resource names no patient")
    identifier = None
    wanted = system or f"{PATIENT_SYSTEM}:<device>"
    if isinstance(subject.get("identifier"), dict):
        if not _usable(subject["identifier"], system):
            raise FhirRefusal(
                f"the subject's identifier is not of the patient system {wanted} (see --identifier-system)"
            )
        identifier = subject["identifier"].get("value")
    elif isinstance(subject.get("reference"), str):
        identifier = patients.get(subject["reference"])
        if identifier is None:
            raise FhirRefusal(
                f"subject {subject['reference'][:60]!r} is not a Patient in this file with one identifier of "
                f"the patient system {wanted} (see --identifier-system)"
            )
    if not isinstance(identifier, str) or not identifier:
        raise FhirRefusal("the subject has no patient identifier")
    if mapping is not None:
        if identifier not in mapping:
            raise FhirRefusal(f"patient {identifier!r} is not on the patient list")
        return mapping[identifier]
    return identifier


def _event_id(resource: dict) -> str:
    for identifier in resource.get("identifier", []):
        if isinstance(identifier, dict) and identifier.get("system") == EVENT_SYSTEM:
            return str(identifier.get("value"))
    own = resource.get("id")
    if isinstance(own, str) and is_identifier(f"fhir-{own}"):
        return f"fhir-{own}"
    raise FhirRefusal("no usable id (an identifier of system urn:advisor:event, or a resource id)")


def _coding(concept: object) -> list[dict]:
    return [c for c in concept.get("coding", []) if isinstance(c, dict)] if isinstance(concept, dict) else []


def _glucose(resource: dict, patient: str, now: datetime) -> Event:
    codes = [c.get("code") for c in _coding(resource.get("code")) if c.get("system") == LOINC]
    if not any(code in LOINC_GLUCOSE for code in codes):
        raise FhirRefusal(f"Observation code {codes[:1] or 'none'} is not a LOINC glucose code")
    if resource.get("status") not in ("final", "amended", "corrected"):
        raise FhirRefusal(f"Observation status {resource.get('status')!r} is not final")
    quantity = resource.get("valueQuantity")
    if not isinstance(quantity, dict) or "value" not in quantity:
        raise FhirRefusal("Observation has no valueQuantity")
    if quantity.get("comparator"):
        raise FhirRefusal(
            f"the value is {quantity['comparator']} {quantity['value']}: outside the meter's range, not a reading"
        )
    unit = str(quantity.get("code") or quantity.get("unit") or "")
    if unit.lower() not in GLUCOSE_UNITS:
        raise FhirRefusal(
            f"unit {unit[:20]!r} is not mg/dL or mmol/L" if unit else "a value without a unit is not used"
        )
    payload = {
        "id": _event_id(resource),
        "patient": patient,
        "ts": resource.get("effectiveDateTime"),
        "kind": "glucose",
        "value": quantity["value"],
        "unit": GLUCOSE_UNITS[unit.lower()],
    }
    for extension in resource.get("extension", []):
        if isinstance(extension, dict) and extension.get("url") == CONTEXT_EXTENSION:
            payload["context"] = extension.get("valueCode")
    return _validated(payload, now)


def _insulin(concept: object) -> str:
    for coding in _coding(concept):
        if coding.get("system") == INSULIN_SYSTEM:
            return str(coding.get("code"))
    raise FhirRefusal("the medication is not coded as an insulin preparation (system urn:advisor:insulin)")


def _dose(resource: dict, patient: str, now: datetime) -> Event:
    if resource.get("status") != "completed":
        raise FhirRefusal(f"MedicationAdministration status {resource.get('status')!r} is not completed")
    dose = resource.get("dosage", {}).get("dose") if isinstance(resource.get("dosage"), dict) else None
    if not isinstance(dose, dict) or "value" not in dose:
        raise FhirRefusal("MedicationAdministration has no dosage.dose")
    if dose.get("code") != "[IU]" and str(dose.get("unit", "")).upper() not in ("U", "IU", "[IU]"):
        raise FhirRefusal(f"dose unit {dose.get('code') or dose.get('unit')!r} is not [IU]")
    payload = {
        "id": _event_id(resource),
        "patient": patient,
        "ts": resource.get("effectiveDateTime"),
        "kind": "insulin",
        "insulin": _insulin(resource.get("medicationCodeableConcept")),
        "units": dose["value"],
    }
    return _validated(payload, now)


def _validated(payload: dict, now: datetime) -> Event:
    try:
        return event_from_mapping(payload, now)
    except ValidationError as exc:
        raise FhirRefusal(exc.reason) from None


@dataclass
class Imported:
    """The events read from a file, what was refused (with the resource and why), what was skipped."""

    events: list[Event] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)


def read_resources(
    resources: list[dict],
    mapping: Mapping[str, str] | None = None,
    now: datetime | None = None,
    system: str | None = None,
) -> Imported:
    """Events from glucose Observations and insulin MedicationAdministrations; Patients resolve
    subjects; other resource types are counted in ``skipped``. A patient is named only by an
    identifier of ``system`` (None: of this advisor's devices, ``urn:advisor:patient:<device>``)."""
    now = now or datetime.now(UTC)
    patients = _patient_ids(resources, system)
    out = Imported()
    for position, resource in enumerate(resources, start=1):
        kind = resource.get("resourceType") if isinstance(resource, dict) else None
        if kind not in ("Observation", "MedicationAdministration"):
            if kind != "Patient":
                out.skipped[str(kind)] = out.skipped.get(str(kind), 0) + 1
            continue
        try:
            patient = _subject(resource, patients, mapping, system)
            read = _glucose if kind == "Observation" else _dose
            out.events.append(read(resource, patient, now))
        except FhirRefusal as exc:
            out.refused.append(f"{kind}/{resource.get('id', f'#{position}')}: {exc}")
    return out
