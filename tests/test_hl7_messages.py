"""HL7 v2 in (pure): MLLP framing, ORU^R01 / ADT mapping, refusals and the ACK, read back by hl7apy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hl7apy.parser import parse_message

from domain.events import MG_DL_PER_MMOL_L, Kind
from interop.hl7.messages import Hl7Config, Refusal, acknowledgement, escape, parse, read_message
from interop.hl7.mllp import END, START, MllpError, MllpReader, frame

from .hl7_kit import adt, event_id, oru

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def read(text: str, config: Hl7Config | None = None):
    return read_message(parse(text), config or Hl7Config(), NOW)


def refusal(text: str, config: Hl7Config | None = None) -> Refusal:
    with pytest.raises(Refusal) as caught:
        read(text, config)
    return caught.value


# ------------------------------------------------------------------------- MLLP
def test_mllp_cuts_messages_however_the_bytes_arrive():
    stream = b"noise" + frame("MSH|one") + frame("MSH|two") + frame("MSH|three")
    for size in (1, 2, 7, len(stream)):
        reader = MllpReader()
        found = [m for i in range(0, len(stream), size) for m in reader.feed(stream[i : i + size])]
        assert found == [b"MSH|one", b"MSH|two", b"MSH|three"]
        assert reader.discarded == len(b"noise")


def test_mllp_refuses_a_frame_without_end_past_the_limit():
    reader = MllpReader(max_bytes=100)
    with pytest.raises(MllpError, match="longer than 100 bytes"):
        reader.feed(START + b"x" * 101)
    with pytest.raises(MllpError, match="longer than the 100"):
        MllpReader(max_bytes=100).feed(START + b"x" * 150 + END)


# ---------------------------------------------------------------------- ORU^R01
def test_a_glucometer_result_becomes_one_glucose_event_of_the_mrn():
    inbound = read(oru())
    [event] = inbound.events
    assert (inbound.control_id, inbound.message_type) == ("MSG0001", "ORU^R01")
    assert (event.id, event.patient, event.kind, event.mg_dl) == (event_id("MSG0001"), "MRN123", Kind.GLUCOSE, 182.0)
    assert event.ts == datetime(2026, 12, 4, 10, 10, tzinfo=timezone(timedelta(hours=1)))


def test_mmol_per_litre_converts_at_the_one_documented_factor():
    [event] = read(oru(value="7.2", unit="mmol/L", code="14743-9^Glucose^LN")).events
    assert event.mg_dl == pytest.approx(7.2 * MG_DL_PER_MMOL_L)


def test_a_cgm_value_and_several_results_in_one_message():
    extra = [("150", "mg/dL", "20261204101500+0100")]
    inbound = read(oru(code="99504-3^Glucose interstitial^LN", extra=extra))
    assert [(e.id, e.mg_dl) for e in inbound.events] == [(event_id("MSG0001"), 182.0), (event_id("MSG0001", 2), 150.0)]


@pytest.mark.parametrize(
    "text, code, reason",
    [
        (oru(unit=""), "AE", "OBX-6 of result 1 is empty: a result without a unit is not used"),
        (oru(unit="mg"), "AE", "unit 'mg' is not mg/dL or mmol/L"),
        (oru(code="2160-0^Creatinine^LN"), "AE", "code '2160-0' (LN) is not a glucose code"),
        (oru(observed="2026-12-04 10:10"), "AE", "is not YYYYMMDDHHMM[SS][+ZZZZ]"),
        (oru(observed="202613041010+0100"), "AE", "is not a real date and time"),
        (oru(observed="202612041010"), "AE", "has no UTC offset (+hhmm)"),
        (oru(value="HIGH"), "AE", "OBX-5 of result 1: 'HIGH' is not a number"),
        (oru(value="2000"), "AE", "outside the plausible range"),
        (oru(status="P"), "AE", "'P' (preliminary): only final (F) results are used"),
        (oru(patient="555^^^SSA^SS"), "AE", "PID-3 has no patient identifier of type MR"),
        (oru(observed="203012041010+0100"), "AE", "in the future"),
        (oru(extra=[("150", "", "20261204101500+0100")]), "AE", "OBX-6 of result 2 is empty"),
    ],
)
def test_a_result_the_device_cannot_use_is_refused_with_its_reason(text, code, reason):
    found = refusal(text)
    assert found.code == code
    assert reason in found.reason


def test_a_time_without_offset_takes_the_configured_zone_not_a_guess():
    [event] = read(oru(observed="202607041010"), Hl7Config(timezone=ZoneInfo("Europe/Vienna"))).events
    assert event.ts.utcoffset() == timedelta(hours=2)  # summer time in Vienna on that day


def test_patients_are_matched_only_by_exact_identifier_through_the_map():
    config = Hl7Config(patients={"MRN123": "bed7-p1"})
    assert read(oru(), config).events[0].patient == "bed7-p1"
    found = refusal(oru(patient="mrn123^^^HOSP^MR"), config)
    assert (found.code, found.error) == ("AE", 204) and "not on this bridge's patient list" in found.reason
    authority = Hl7Config(authority="OTHER")
    assert "type MR from OTHER" in refusal(oru(), authority).reason


def test_an_unsupported_message_type_and_non_hl7_are_rejected():
    text = oru().replace("ORU^R01^ORU_R01", "ORM^O01^ORM_O01")
    assert (refusal(text).code, refusal(text).error) == ("AR", 200)
    with pytest.raises(Refusal, match="does not start with MSH"):
        parse("hello")


# -------------------------------------------------------------------------- ADT
def test_an_admission_starts_the_profile_with_weight_and_age():
    inbound = read(adt(weight="180", unit="[lb_av]"))
    [event] = inbound.events
    assert event.kind is Kind.PROFILE and event.profile is not None
    assert event.profile.weight_kg == pytest.approx(81.6)
    assert event.profile.age_years == pytest.approx(66.7)


def test_an_update_carries_weight_and_height_and_nothing_else():
    [event] = read(adt(trigger="A08", weight="79.5", height=("1.72", "m"))).events
    assert event.profile is not None
    assert (event.profile.weight_kg, event.profile.height_cm) == (79.5, 172.0)
    assert event.profile.steroids is None and event.profile.diabetes_type is None  # kept from before by the device
    [inches] = read(adt(trigger="A04", height=("68", "[in_i]"))).events
    assert inches.profile is not None and inches.profile.height_cm == pytest.approx(172.7)


def test_a_measure_in_another_unit_or_out_of_range_is_refused():
    found = refusal(adt(trigger="A08", height=("172", "ft")))
    assert (found.code, found.error, found.where) == ("AE", 103, "OBX^2^6")
    assert "height unit 'ft' is not cm, m or [in_i]" in found.reason
    assert "height_cm" in refusal(adt(height=("17.2", "m"))).reason


def test_a_message_without_weight_and_other_adt_events_record_nothing_and_say_so():
    assert "no body weight" in read(adt(weight=None)).note
    assert "no body weight" in read(adt(trigger="A08", weight=None, height=("170", "cm"))).note
    transfer = read(adt(trigger="A02"))
    assert transfer.events == [] and "ADT^A02 is not used" in transfer.note


# -------------------------------------------------------------------------- ACK
def test_the_ack_reads_back_in_an_independent_parser():
    message = parse(oru())
    found = Refusal("OBX-6 of result 1 is empty | not ^used^", where="OBX^1^6", error=101)
    text = acknowledgement(message, "AE", found.reason, found, now=NOW)
    ack = parse_message(text, find_groups=False)
    assert ack.msh.msh_9.value == "ACK^R01^ACK"
    assert (ack.msh.msh_3.value, ack.msh.msh_5.value) == ("ADVISOR", "GLUCOMETER")  # sender and receiver swapped
    assert (ack.msa.msa_1.value, ack.msa.msa_2.value) == ("AE", "MSG0001")
    assert ack.err.err_3.value == "101^Required field missing^HL70357"
    assert parse(text).segment("ERR")[8][0] == escape(found.reason)
    assert "\\F\\" in escape("a|b") and escape("x\r\ny") == "x y"


def test_an_accept_ack_has_no_error_segment():
    text = acknowledgement(parse(oru()), "AA", "1 event(s) sent", now=NOW)
    assert [s.split("|")[0] for s in text.strip("\r").split("\r")] == ["MSH", "MSA"]


# ------------------------------------------------------------- what must never be guessed
def test_one_patient_per_message_and_production_messages_only():
    second = oru().replace("\rOBR", "\rPID|||B2^^^HOSP^MR\rOBR")
    assert "more than one PID segment" in refusal(second).reason and refusal(second).code == "AR"
    training = oru().replace("|P|2.5.1", "|T|2.5.1")
    assert "is not P (production)" in refusal(training).reason


def test_offsets_and_clock_changes_are_refused_not_guessed():
    assert "not a real offset" in refusal(oru(observed="202612041010+0199")).reason
    assert "not a real offset" in refusal(oru(observed="202612041010+9999")).reason
    vienna = Hl7Config(timezone=ZoneInfo("Europe/Vienna"))
    for twice_or_never in ("202610250230", "202603290230"):
        assert "falls in a clock change" in refusal(oru(observed=twice_or_never), vienna).reason


def test_the_same_control_id_from_another_sender_is_another_reading():
    other = oru().replace("|GLUCOMETER|WARD7|", "|GLUCOMETER|WARD9|")
    assert read(other).events[0].id != read(oru()).events[0].id


def test_a_frame_broken_off_is_dropped_not_joined_to_the_next():
    reader = MllpReader()
    found = reader.feed(START + b"MSH|first, cut off" + frame("MSH|second"))
    assert found == [b"MSH|second"] and reader.discarded == len(b"MSH|first, cut off") + 1


def test_a_long_reason_is_cut_before_escaping():
    text = acknowledgement(parse(oru()), "AE", "x" * 199 + "|tail", now=NOW)
    msa = next(line for line in text.split("\r") if line.startswith("MSA"))
    assert msa.endswith("x" * 199 + "\\F\\")
