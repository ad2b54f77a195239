"""Hostile files for the data readers (hypothesis): no input crashes them, every rejection has a reason."""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.events import Event
from preprocessing import aim94
from preprocessing.mimic import MimicError, read_mimic

REASONS = {
    aim94.BAD_DATETIME,
    aim94.UNDOCUMENTED_CODE,
    aim94.NON_NUMERIC_VALUE,
    aim94.IMPLAUSIBLE_REGULAR,
    aim94.GLUCOSE_METER_HI,
    aim94.OUT_OF_RANGE,
    aim94.MALFORMED_LINE,
    aim94.DUPLICATE,
}

fields = st.one_of(
    st.text(max_size=12),
    st.integers(-(10**6), 10**6).map(str),
    st.sampled_from(["04-21-1991", "9:09", "33", "58", "501", "0Hi", "", "\x00", "99:99"]),
)
lines = st.lists(fields, min_size=0, max_size=6).map("\t".join)


@settings(max_examples=400, deadline=None)
@given(lines)
def test_any_aim94_line_is_an_event_or_a_known_reason(line):
    result = aim94.parse_line(line, "aim94-01", "x")
    assert isinstance(result, Event) or result in REASONS


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(lines, st.binary(max_size=80).map(lambda b: b.decode("latin-1"))), max_size=40))
def test_any_aim94_file_accounts_for_every_line(rows):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data-07"
        path.write_bytes("\n".join(rows).encode("latin-1", errors="replace"))
        log = aim94.read_patient_file(path)
        assert len(log.events) + len(log.rejections) == log.lines
        assert all(r.reason in REASONS for r in log.rejections)


MIMIC_TABLES = {
    "PATIENTS.csv": ["subject_id", "gender", "dob", "dod"],
    "ADMISSIONS.csv": ["subject_id", "hadm_id", "admittime", "dischtime", "deathtime", "hospital_expire_flag"],
    "ICUSTAYS.csv": ["subject_id", "hadm_id", "icustay_id", "intime", "outtime"],
    "DIAGNOSES_ICD.csv": ["subject_id", "hadm_id", "seq_num", "icd9_code"],
    "PROCEDURES_ICD.csv": ["subject_id", "hadm_id", "seq_num", "icd9_code"],
    "PRESCRIPTIONS.csv": ["subject_id", "hadm_id", "drug"],
}
cells = st.one_of(
    st.sampled_from(
        [
            "1",
            "2",
            "100",
            "-4",
            "2130-01-01 10:00:00",
            "2130-02-30",
            "",
            "x",
            "1e9",
            "2200-12-31 23:59:59",
            "F",
            "4280",
            "99999999999999999999999",
        ]
    ),
    st.text(max_size=8),
)


@st.composite
def mimic_folder(draw):
    tables = {}
    for name, columns in MIMIC_TABLES.items():
        rows = draw(st.lists(st.fixed_dictionaries(dict.fromkeys(columns, cells)), max_size=6))
        tables[name] = (columns, rows)
    return tables


def write_tables(folder: Path, tables: dict) -> None:
    """A drawn ``mimic_folder`` as CSV files in ``folder``."""
    for name, (columns, rows) in tables.items():
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        (folder / name).write_text(buffer.getvalue())


@pytest.mark.slow
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mimic_folder())
def test_any_mimic_tables_are_read_or_refused_with_a_reason(tables):
    from preprocessing.cohorts import mortality_cohort, readmission_cohort

    with tempfile.TemporaryDirectory() as tmp:
        write_tables(Path(tmp), tables)
        try:
            data = read_mimic(Path(tmp))
        except MimicError as exc:
            assert str(exc)
            return
        for build in (mortality_cohort, readmission_cohort):
            try:
                cohort = build(data)
            except MimicError as exc:
                assert str(exc)
                continue
            assert cohort.steps and cohort.positives <= len(cohort.samples)
