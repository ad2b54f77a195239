"""Event validation (docs/contract.md, "Event"): every good payload accepted, every bad one named and explained."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.events import Insulin, Kind
from domain.validation import MAX_PAYLOAD_BYTES, ValidationError, decode_event

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
BASE = {"id": "bed7-000123", "patient": "p-21", "ts": "2026-11-21T09:09:00+00:00"}


def raw(**fields) -> bytes:
    return json.dumps(BASE | fields).encode()


GOOD = [
    (raw(kind="glucose", mg_dl=100), Kind.GLUCOSE, {"mg_dl": 100.0, "context": "unspecified"}),
    (
        raw(kind="glucose", value=5.5, unit="mmol/L", context="pre_lunch"),
        Kind.GLUCOSE,
        {"mg_dl": pytest.approx(99.1, abs=0.05), "context": "pre_lunch"},
    ),
    (raw(kind="insulin", insulin="regular", units=7), Kind.INSULIN, {"insulin": Insulin.REGULAR, "units": 7.0}),
    (raw(kind="insulin", insulin="nph", units=0), Kind.INSULIN, {"insulin": Insulin.NPH, "units": 0.0}),
    (raw(kind="meal", size="more", carbs_g=60), Kind.MEAL, {"size": "more", "carbs_g": 60.0}),
    (raw(kind="exercise", intensity="less"), Kind.EXERCISE, {"intensity": "less"}),
    (raw(kind="hypo_symptoms"), Kind.HYPO_SYMPTOMS, {}),
    (raw(kind="special", note="sick day"), Kind.SPECIAL, {"note": "sick day"}),
    (raw(kind="request"), Kind.REQUEST, {}),
    (raw(kind="glucose", mg_dl=100, ts="2026-11-21T12:04:00+00:00"), Kind.GLUCOSE, {}),  # 4 min ahead: clock skew
    (raw(kind="glucose", mg_dl=100, ts="1991-04-21T09:09:00-05:00"), Kind.GLUCOSE, {}),
]


@pytest.mark.parametrize("payload, kind, fields", GOOD)
def test_good_payloads(payload, kind, fields):
    event = decode_event(payload, NOW)
    assert event.kind is kind and event.id == BASE["id"] and event.patient == BASE["patient"]
    for name, value in fields.items():
        assert getattr(event, name) == value


def test_round_trip_through_the_payload():
    event = decode_event(raw(kind="meal", size="typical", carbs_g=45.5), NOW)
    assert decode_event(json.dumps(event.to_payload()).encode(), NOW) == event


# (payload, expected event id in the error, words of the reason)
BAD = [
    (b"{not json", None, "not valid JSON"),
    (b"\xff\xfe", None, "not UTF-8"),
    (b"[1, 2]", None, "JSON object"),
    (b'"text"', None, "JSON object"),
    (b"[" * 200 + b"]" * 200, None, "nested deeper"),
    (json.dumps({"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}}).encode(), None, "nested deeper"),
    (b" " * (MAX_PAYLOAD_BYTES + 1), None, "more than the limit"),
    (raw(kind="glucose", mg_dl=float("nan")), "bed7-000123", "finite"),
    (raw(kind="glucose", mg_dl=float("inf")), "bed7-000123", "finite"),
    (raw(kind="insulin", insulin="regular", units=float("-inf")), "bed7-000123", "finite"),
    (raw(kind="glucose", mg_dl="100"), "bed7-000123", "must be a number"),
    (raw(kind="glucose", mg_dl=True), "bed7-000123", "must be a number"),
    (raw(kind="glucose", mg_dl=5), "bed7-000123", "outside the plausible range"),
    (raw(kind="glucose", mg_dl=1e300), "bed7-000123", "outside the plausible range"),
    (raw(kind="glucose", value=5, unit="mg"), "bed7-000123", "'unit'"),
    (raw(kind="glucose", mg_dl=100, value=5.5, unit="mmol/L"), "bed7-000123", "either"),
    (raw(kind="glucose"), "bed7-000123", "missing field 'value'"),
    (raw(kind="glucose", mg_dl=100, context="after_dinner"), "bed7-000123", "'context'"),
    (raw(kind="insulin", insulin="regular", units=101), "bed7-000123", "outside the plausible range"),
    (raw(kind="insulin", insulin="regular", units=-1), "bed7-000123", "outside the plausible range"),
    (raw(kind="insulin", insulin="glargine", units=5), "bed7-000123", "'insulin'"),
    (raw(kind="insulin", units=5), "bed7-000123", "missing field 'insulin'"),
    (raw(kind="meal", size="huge"), "bed7-000123", "'size'"),
    (raw(kind="meal", size="typical", carbs_g=-5), "bed7-000123", "carbs_g"),
    (raw(kind="special", note="x" * 501), "bed7-000123", "note"),
    (raw(kind="dance"), "bed7-000123", "unknown kind"),
    (raw(kind=None), "bed7-000123", "unknown kind"),
    (raw(kind="glucose", mg_dl=100, dose=3), "bed7-000123", "unexpected field"),
    (raw(kind="request", mg_dl=100), "bed7-000123", "unexpected field"),
    (raw(kind="glucose", mg_dl=100, ts="2026-11-21T12:06:00+00:00"), "bed7-000123", "in the future"),
    (raw(kind="glucose", mg_dl=100, ts="3026-01-01T00:00:00+00:00"), "bed7-000123", "in the future"),
    (raw(kind="glucose", mg_dl=100, ts="1800-01-01T00:00:00+00:00"), "bed7-000123", "before 1900"),
    (raw(kind="glucose", mg_dl=100, ts="2026-11-21T09:09:00"), "bed7-000123", "UTC offset"),
    (raw(kind="glucose", mg_dl=100, ts="yesterday"), "bed7-000123", "not an ISO 8601"),
    (raw(kind="glucose", mg_dl=100, ts=1700000000), "bed7-000123", "ISO 8601"),
    (json.dumps({"patient": "p-1", "ts": BASE["ts"], "kind": "request"}).encode(), None, "missing field 'id'"),
    (raw(id="../../etc/passwd", kind="request"), None, "'id' must be"),
    (raw(patient="../../etc/passwd", kind="request"), "bed7-000123", "'patient' must be"),
    (raw(patient="a/b", kind="request"), "bed7-000123", "'patient' must be"),
    (raw(patient="p" * 65, kind="request"), "bed7-000123", "'patient' must be"),
    (raw(patient=7, kind="request"), "bed7-000123", "'patient' must be"),
    (raw(id="bad id", kind="request"), None, "'id' must be"),
]


@pytest.mark.parametrize("payload, event_id, words", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_payloads_are_rejected_with_id_and_reason(payload, event_id, words):
    with pytest.raises(ValidationError) as caught:
        decode_event(payload, NOW)
    assert caught.value.event_id == event_id
    assert words.lower() in caught.value.reason.lower()
    assert "\n" not in caught.value.reason


def test_future_limit_follows_the_clock():
    payload = raw(kind="glucose", mg_dl=100, ts=(NOW + timedelta(minutes=10)).isoformat())
    with pytest.raises(ValidationError):
        decode_event(payload, NOW)
    assert decode_event(payload, NOW + timedelta(minutes=6)).mg_dl == 100.0


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_crash(data):
    try:
        decode_event(data, NOW)
    except ValidationError as exc:
        assert exc.reason


@settings(max_examples=400, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "id": st.sampled_from(["e1", "", "../x", 5]) | st.text(max_size=70),
            "patient": st.sampled_from(["p-1", "a/b", None]) | st.text(max_size=70),
            "ts": st.sampled_from([BASE["ts"], "2026-11-21", "x", None]) | st.text(max_size=30),
            "kind": st.sampled_from([k.value for k in Kind] + ["x", None]),
            "mg_dl": json_values,
            "units": json_values,
            "insulin": json_values,
            "size": json_values,
            "value": json_values,
            "unit": json_values,
            "context": json_values,
            "note": json_values,
        },
    )
)
def test_arbitrary_objects_are_accepted_or_explained(obj):
    try:
        event = decode_event(json.dumps(obj).encode(), NOW)
    except ValidationError as exc:
        assert exc.reason and "\n" not in exc.reason
    else:
        assert event.kind.value == obj["kind"] and event.patient == obj["patient"]


@pytest.mark.parametrize("offset", ["+23:59", "-13:00", "+14:01", "+05:30:15"])
def test_offsets_no_time_zone_uses_are_refused(offset):
    with pytest.raises(ValidationError, match="no time zone uses"):
        decode_event(raw(kind="request", ts=f"2026-11-21T09:00:00{offset}"), NOW)
    assert decode_event(raw(kind="request", ts="2026-11-21T09:00:00+14:00"), NOW + timedelta(days=1)).kind.value


def test_ids_must_match_whole():
    for bad in ("p1\n", "p1\r\n", " p1", "p1 "):
        with pytest.raises(ValidationError, match="'patient' must be"):
            decode_event(raw(kind="request", patient=bad), NOW)
