"""MIMIC-III and MIMIC-IV tables → one visit/timeline model (standard library only).

Both layouts are read into :class:`MimicData`: patients, admissions (each a visit holding a
set of codes from diagnoses, procedures and prescriptions) and ICU stays.

* MIMIC-III: ``ADMISSIONS.csv``, ``PATIENTS.csv``, ``ICUSTAYS.csv``, ``DIAGNOSES_ICD.csv``,
  ``PROCEDURES_ICD.csv``, ``PRESCRIPTIONS.csv`` (optionally ``.gz``), in one folder; column
  names in either case. Ages come from ``dob`` (shifted to 300 years for patients over 89).
* MIMIC-IV: ``hosp/{patients,admissions,diagnoses_icd,procedures_icd,prescriptions}.csv.gz``
  and ``icu/icustays.csv.gz``; ages from ``anchor_age`` and ``anchor_year``; codes carry
  their ICD version. MIMIC-IV v1.x records no deaths after discharge, so 1-year mortality is
  refused there (:attr:`MimicData.out_of_hospital_deaths`).

Codes are prefixed by their source: ``dx9:4280``, ``dx10:I509``, ``px9:3605``, ``rx:Bisacodyl``.
Rows that cannot be joined (an ICU stay whose admission row is missing) and rows whose ids,
numbers or times do not parse are left out and counted in :attr:`MimicData.notes`, never fatal.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path


class MimicError(Exception):
    """The folder is not a readable MIMIC layout; the message says what is missing."""


@dataclass(frozen=True, slots=True)
class Patient:
    subject_id: int
    gender: str
    dod: datetime | None
    anchor_age: float | None = None  # MIMIC-IV: age in anchor_year
    anchor_year: int | None = None
    dob: datetime | None = None  # MIMIC-III

    def age_at(self, when: datetime) -> float:
        """Age in years at ``when`` (MIMIC-III from dob; MIMIC-IV from the anchor)."""
        if self.dob is not None:
            return (when - self.dob).days / 365.25
        if self.anchor_age is None or self.anchor_year is None:
            raise MimicError(f"patient {self.subject_id} has no date of birth or anchor age")
        return self.anchor_age + (when.year - self.anchor_year)


@dataclass(frozen=True, slots=True)
class Admission:
    """One hospital admission: a visit with its codes."""

    hadm_id: int
    subject_id: int
    admit: datetime
    discharge: datetime
    died_in_hospital: bool
    codes: frozenset[str]
    primary_dx: str | None  # first-sequence diagnosis, with its prefix


@dataclass(frozen=True, slots=True)
class IcuStay:
    stay_id: int
    subject_id: int
    hadm_id: int
    intime: datetime
    outtime: datetime


@dataclass
class MimicData:
    layout: str
    version: str | None
    patients: dict[int, Patient]
    admissions: dict[int, list[Admission]]  # by subject, in admission order
    icu_stays: list[IcuStay]
    out_of_hospital_deaths: bool
    notes: list[str] = field(default_factory=list)

    def admission(self, hadm_id: int) -> Admission | None:
        return self._by_hadm.get(hadm_id)

    def __post_init__(self) -> None:
        self._by_hadm = {a.hadm_id: a for rows in self.admissions.values() for a in rows}


def _find(folder: Path, *names: str) -> Path | None:
    """The first existing file among ``names`` (plain or ``.gz``), matching case-insensitively."""
    if not folder.is_dir():
        return None
    present = {p.name.lower(): p for p in folder.iterdir()}
    for name in names:
        for candidate in (name, name + ".gz"):
            if candidate.lower() in present:
                return present[candidate.lower()]
    return None


def _rows(path: Path):
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    reader = csv.DictReader(io.StringIO(raw.decode("utf-8")))
    reader.fieldnames = [name.lower() for name in (reader.fieldnames or [])]
    yield from reader


def _time(value: str | None) -> datetime | None:
    """A naive UTC time, or None when empty or unreadable."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


class _Skipped:
    """Counts rows left out per table because an id, number or time does not parse."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = defaultdict(int)

    def ints(self, table: str, row: dict, *keys: str) -> tuple[int, ...] | None:
        try:
            return tuple(int(row[k]) for k in keys)
        except (KeyError, TypeError, ValueError):
            self.counts[table] += 1
            return None

    def skip(self, table: str) -> None:
        self.counts[table] += 1

    def notes(self) -> list[str]:
        return [
            f"{n} row(s) of {table} left out: an id, number or time does not parse"
            for table, n in sorted(self.counts.items())
        ]


def _require(folder: Path, name: str, *aliases: str) -> Path:
    path = _find(folder, name, *aliases)
    if path is None:
        raise MimicError(f"{folder}: missing table {name} (.csv or .csv.gz)")
    return path


def read_mimic(folder: Path) -> MimicData:
    """Read either layout from ``folder``."""
    folder = Path(folder)
    if _find(folder / "hosp", "admissions.csv") is not None:
        return _read_iv(folder)
    if _find(folder, "ADMISSIONS.csv") is not None:
        return _read_iii(folder)
    raise MimicError(f"{folder}: neither MIMIC-III (ADMISSIONS.csv) nor MIMIC-IV (hosp/admissions.csv.gz) found")


def _codes(folder: Path, diag: str, proc: str, presc: str, iv: bool, skipped: _Skipped) -> tuple[dict, dict]:
    codes: dict[int, set[str]] = defaultdict(set)
    primary: dict[int, tuple[int, str]] = {}
    for table, prefix in ((diag, "dx"), (proc, "px")):
        for row in _rows(_require(folder, table)):
            code = ((row.get("icd_code") if iv else row.get("icd9_code")) or "").strip()
            version = ((row.get("icd_version") or "9") if iv else "9").strip()
            if not code or not row.get("hadm_id"):
                continue
            ids = skipped.ints(table, {**row, "seq_num": row.get("seq_num") or "999"}, "hadm_id", "seq_num")
            if ids is None:
                continue
            hadm, seq = ids
            tagged = f"{prefix}{version}:{code}"
            codes[hadm].add(tagged)
            if prefix == "dx" and (hadm not in primary or seq < primary[hadm][0]):
                primary[hadm] = (seq, tagged)
    presc_path = _find(folder, presc)
    if presc_path is not None:
        for row in _rows(presc_path):
            drug = (row.get("drug") or "").strip()
            if drug and row.get("hadm_id"):
                ids = skipped.ints(presc, row, "hadm_id")
                if ids is not None:
                    codes[ids[0]].add("rx:" + re.sub(r"\s+", " ", drug.lower()))
    return codes, {h: code for h, (_, code) in primary.items()}


def _admissions(rows, codes: dict, primary: dict, skipped: _Skipped) -> dict[int, list[Admission]]:
    by_subject: dict[int, list[Admission]] = defaultdict(list)
    for row in rows:
        admit, discharge = _time(row.get("admittime")), _time(row.get("dischtime"))
        ids = skipped.ints("admissions", row, "hadm_id", "subject_id")
        if ids is None:
            continue
        if admit is None or discharge is None:
            skipped.skip("admissions")
            continue
        hadm, subject = ids
        died = bool(row.get("deathtime")) or row.get("hospital_expire_flag") == "1"
        by_subject[subject].append(
            Admission(hadm, subject, admit, discharge, died, frozenset(codes.get(hadm, ())), primary.get(hadm))
        )
    for rows_ in by_subject.values():
        rows_.sort(key=lambda a: a.admit)
    return dict(by_subject)


def _stays(rows, stay_key: str, skipped: _Skipped) -> list[IcuStay]:
    stays = []
    for row in rows:
        intime, outtime = _time(row.get("intime")), _time(row.get("outtime"))
        if not row.get("hadm_id"):
            continue
        ids = skipped.ints("icustays", row, stay_key, "subject_id", "hadm_id")
        if ids is None:
            continue
        if intime is None or outtime is None:
            skipped.skip("icustays")
            continue
        stay_id, subject_id, hadm_id = ids
        stays.append(IcuStay(stay_id, subject_id, hadm_id, intime, outtime))
    return stays


def _note_orphans(data: MimicData) -> MimicData:
    orphans = [s for s in data.icu_stays if data.admission(s.hadm_id) is None]
    if orphans:
        shown = ", ".join(f"subject {s.subject_id} hadm {s.hadm_id}" for s in orphans[:5])
        data.notes.append(f"{len(orphans)} ICU stay(s) without an admission row, left out: {shown}")
    return data


def _read_iii(folder: Path) -> MimicData:
    skipped = _Skipped()
    codes, primary = _codes(folder, "DIAGNOSES_ICD.csv", "PROCEDURES_ICD.csv", "PRESCRIPTIONS.csv", False, skipped)
    patients = {}
    for row in _rows(_require(folder, "PATIENTS.csv")):
        ids, dob = skipped.ints("patients", row, "subject_id"), _time(row.get("dob"))
        if ids is None:
            continue
        if dob is None:
            skipped.skip("patients")
            continue
        patients[ids[0]] = Patient(ids[0], row.get("gender", ""), _time(row.get("dod")), dob=dob)
    admissions = _admissions(_rows(_require(folder, "ADMISSIONS.csv")), codes, primary, skipped)
    stays = _stays(_rows(_require(folder, "ICUSTAYS.csv")), "icustay_id", skipped)
    data = MimicData("MIMIC-III", None, patients, admissions, stays, out_of_hospital_deaths=True)
    data.notes.extend(skipped.notes())
    return _note_orphans(data)


def _iv_version(folder: Path) -> str | None:
    for candidate in (folder.name, *(p.name for p in folder.iterdir())):
        match = re.search(r"(?:^|[^0-9])v?(\d+\.\d+)(?:[^0-9]|$)", candidate)
        if match and ("mimic" in candidate.lower() or candidate.lower().startswith(("v", "version"))):
            return match.group(1)
    version_file = _find(folder, "VERSION", "version.txt")
    if version_file is not None:
        return version_file.read_text().strip() or None
    return None


def _read_iv(folder: Path) -> MimicData:
    hosp, icu = folder / "hosp", folder / "icu"
    skipped = _Skipped()
    codes, primary = _codes(hosp, "diagnoses_icd.csv", "procedures_icd.csv", "prescriptions.csv", True, skipped)
    patients = {}
    for row in _rows(_require(hosp, "patients.csv")):
        ids = skipped.ints("patients", row, "subject_id", "anchor_age", "anchor_year")
        if ids is None:
            continue
        sid, age, year = ids
        patients[sid] = Patient(
            sid, row.get("gender", ""), _time(row.get("dod")), anchor_age=float(age), anchor_year=year
        )
    admissions = _admissions(_rows(_require(hosp, "admissions.csv")), codes, primary, skipped)
    stays = _stays(_rows(_require(icu, "icustays.csv")), "stay_id", skipped)
    version = _iv_version(folder)
    deaths_after_discharge = version is None or not version.startswith("1.")
    data = MimicData("MIMIC-IV", version, patients, admissions, stays, deaths_after_discharge)
    data.notes.extend(skipped.notes())
    if version is None:
        data.notes.append(
            "MIMIC-IV version not named by the folder; assumed v2.0 or later (deaths after discharge recorded)"
        )
    return _note_orphans(data)
