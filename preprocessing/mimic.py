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

The tables are read by DuckDB, which streams ``.csv``/``.csv.gz`` files without loading them
whole: the code tables (millions of rows in MIMIC-IV) are reduced to one row per admission in
SQL — the distinct codes and the primary diagnosis — and only the small tables (patients,
admissions, ICU stays) come to Python row by row, in batches. Each code string is kept once
and shared by every admission that has it. The same SQL runs wherever MIMIC-IV is hosted as
tables (BigQuery, a Postgres copy) with only the ``read_csv`` sources changed.

Past one machine the read splits by patient (:class:`Shard`): shard ``k`` of ``n`` holds the
patients whose ``subject_id`` modulo ``n`` is ``k - 1``, their admissions and ICU stays, and
the code rows of those admissions. Every cohort step counts patients or their samples, so the
cohorts of the ``n`` shards add up to the cohorts of the whole (:func:`preprocessing.cohorts.merge_counts`).
A row whose ``subject_id`` or ``hadm_id`` does not parse belongs to shard 1, so it is counted once.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
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
    race: str = ""  # as recorded on the admission (MIMIC-III ``ethnicity``, MIMIC-IV ``race``)
    insurance: str = ""


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


CSV = "header = true, all_varchar = true, normalize_names = true, quote = '\"', escape = '\"'"
BATCH_ROWS = 20_000
DUCKDB_MEMORY = "2GB"  # DuckDB spills to disk beyond this; Python's share is the visit model itself


@dataclass(frozen=True)
class Shard:
    """Part ``number`` of ``count`` of a patient-partitioned read (1-based, as ``--shard 2/4`` names it)."""

    number: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.number <= self.count:
            raise MimicError(f"shard {self.number}/{self.count}: the part must be from 1 to {self.count}")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"K/N"`` → part K of N."""
        number, slash, count = text.partition("/")
        if not slash or not number.strip().isdigit() or not count.strip().isdigit():
            raise MimicError(f"shard {text!r}: expected K/N, such as 2/4")
        return cls(int(number), int(count))

    def __str__(self) -> str:
        return f"{self.number}/{self.count}"

    def subjects(self, column: str = "subject_id") -> str:
        """SQL: the row's patient is in this shard (an unreadable id belongs to shard 1)."""
        n = self.count
        return f"coalesce(((TRY_CAST({column} AS BIGINT) % {n}) + {n}) % {n}, 0) = {self.number - 1}"


class _Filter:
    """The SQL conditions that keep one shard's rows (all rows without a shard)."""

    def __init__(self, con, shard: Shard | None, admissions: Path) -> None:
        self.shard = shard
        if shard is None:
            return
        hadm = "TRY_CAST(hadm_id AS BIGINT)"
        source = f"FROM read_csv(?, {CSV}) WHERE {hadm} IS NOT NULL"
        con.execute(
            f"CREATE TEMP TABLE shard_admissions AS SELECT DISTINCT {hadm} AS hadm {source} AND {shard.subjects()}",
            [str(admissions)],
        )
        if shard.number == 1:
            con.execute(
                f"CREATE TEMP TABLE known_admissions AS SELECT DISTINCT {hadm} AS hadm {source}", [str(admissions)]
            )

    def subjects(self) -> str:
        return "true" if self.shard is None else self.shard.subjects()

    def admissions(self) -> str:
        """Code rows of the shard's admissions; rows of no known admission belong to shard 1."""
        if self.shard is None:
            return "true"
        hadm = "TRY_CAST(hadm_id AS BIGINT)"
        mine = f"{hadm} IN (SELECT hadm FROM shard_admissions)"
        if self.shard.number > 1:
            return mine
        return f"({mine} OR {hadm} IS NULL OR {hadm} NOT IN (SELECT hadm FROM known_admissions))"


def _connect():
    """An in-memory DuckDB with a memory cap and a spill folder."""
    import tempfile

    import duckdb

    return duckdb.connect(
        config={"memory_limit": DUCKDB_MEMORY, "temp_directory": tempfile.gettempdir() + "/advisor-duckdb"}
    )


def _stream(cursor) -> Iterator[tuple]:
    while batch := cursor.fetchmany(BATCH_ROWS):
        yield from batch


def _rows(con, path: Path, where: str = "true") -> Iterator[dict[str, str]]:
    """The rows of one table (those ``where`` keeps) as dicts of strings (empty fields as ''), lower-case names."""
    cursor = con.execute(f"SELECT * FROM read_csv(?, {CSV}) WHERE {where}", [str(path)])
    columns = [d[0].lower() for d in cursor.description]
    for values in _stream(cursor):
        yield {c: "" if v is None else v for c, v in zip(columns, values, strict=True)}


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
            if not all(row[k].isascii() for k in keys):  # int() reads other scripts' digits; SQL does not
                raise ValueError
            return tuple(int(row[k]) for k in keys)
        except (KeyError, TypeError, ValueError, AttributeError):
            self.counts[table] += 1
            return None

    def skip(self, table: str) -> None:
        self.counts[table] += 1

    def notes(self) -> list[str]:
        return [
            f"{n} row(s) of {table} left out: an id, number or time does not parse"
            for table, n in sorted(self.counts.items())
            if n
        ]


def _require(folder: Path, name: str, *aliases: str) -> Path:
    path = _find(folder, name, *aliases)
    if path is None:
        raise MimicError(f"{folder}: missing table {name} (.csv or .csv.gz)")
    return path


def read_mimic(folder: Path, shard: Shard | None = None) -> MimicData:
    """Read either layout from ``folder``: every patient, or one ``shard`` of them."""
    folder = Path(folder)
    if _find(folder / "hosp", "admissions.csv") is not None:
        read = _read_iv
    elif _find(folder, "ADMISSIONS.csv") is not None:
        read = _read_iii
    else:
        raise MimicError(f"{folder}: neither MIMIC-III (ADMISSIONS.csv) nor MIMIC-IV (hosp/admissions.csv.gz) found")
    import duckdb

    con = _connect()
    try:
        data = read(folder, con, shard)
    except duckdb.Error as exc:  # a table DuckDB cannot parse at all
        raise MimicError(f"{folder}: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()
    if shard is not None:
        data.notes = [f"shard {shard}: {note}" for note in data.notes]
    return data


def _strip(column: str) -> str:
    """SQL of Python's ``str.strip()`` on a column (NULL as '')."""
    return f"regexp_replace(coalesce({column}, ''), '^\\s+|\\s+$', '', 'g')"


def _codes(
    folder: Path, diag: str, proc: str, presc: str, iv: bool, skipped: _Skipped, con, keep: _Filter
) -> tuple[dict, dict]:
    """Per admission: its distinct codes (shared strings) and its first-sequence diagnosis."""
    parts, params = [], []
    for table, prefix in ((diag, "dx"), (proc, "px")):
        path = str(_require(folder, table))
        code = _strip("icd_code" if iv else "icd9_code")
        version = _strip("coalesce(nullif(icd_version, ''), '9')") if iv else "'9'"
        seq = "coalesce(nullif(seq_num, ''), '999')"
        present = f"{code} <> '' AND coalesce(hadm_id, '') <> '' AND {keep.admissions()}"
        readable = f"TRY_CAST(hadm_id AS BIGINT) IS NOT NULL AND TRY_CAST({seq} AS BIGINT) IS NOT NULL"
        unreadable = f"SELECT count(*) FROM read_csv(?, {CSV}) WHERE {present} AND NOT ({readable})"
        skipped.counts[table] += con.execute(unreadable, [path]).fetchone()[0]
        params.append(path)
        parts.append(
            f"SELECT CAST(hadm_id AS BIGINT) AS hadm, CAST({seq} AS BIGINT) AS seq, "
            f"'{prefix}' || {version} || ':' || {code} AS code FROM read_csv(?, {CSV}) WHERE {present} AND {readable}"
        )
    presc_path = _find(folder, presc)
    if presc_path is not None:
        drug = _strip("drug")
        present = f"{drug} <> '' AND coalesce(hadm_id, '') <> '' AND {keep.admissions()}"
        skipped.counts[presc] += con.execute(
            f"SELECT count(*) FROM read_csv(?, {CSV}) WHERE {present} AND TRY_CAST(hadm_id AS BIGINT) IS NULL",
            [str(presc_path)],
        ).fetchone()[0]
        params.append(str(presc_path))
        parts.append(
            f"SELECT CAST(hadm_id AS BIGINT) AS hadm, NULL AS seq, "
            f"'rx:' || regexp_replace(lower({drug}), '\\s+', ' ', 'g') AS code "
            f"FROM read_csv(?, {CSV}) WHERE {present} AND TRY_CAST(hadm_id AS BIGINT) IS NOT NULL"
        )
    shared: dict[str, str] = {}
    primary: dict[int, str] = {}
    dx_query, dx_path = parts[0], params[:1]
    for hadm, first in _stream(con.execute(f"SELECT hadm, min_by(code, seq) FROM ({dx_query}) GROUP BY hadm", dx_path)):
        primary[hadm] = shared.setdefault(first, first)
    # DISTINCT and ORDER BY spill to disk beyond the memory cap; a list aggregate would not.
    cursor = con.execute(f"SELECT DISTINCT hadm, code FROM ({' UNION ALL '.join(parts)}) ORDER BY hadm", params)
    codes: dict[int, frozenset[str]] = {}
    current: int | None = None
    bucket: list[str] = []
    for hadm, code in _stream(cursor):
        if hadm != current:
            if current is not None:
                codes[current] = frozenset(bucket)
            current, bucket = hadm, []
        bucket.append(shared.setdefault(code, code))
    if current is not None:
        codes[current] = frozenset(bucket)
    return codes, primary


def _admissions(rows, codes: dict, primary: dict, skipped: _Skipped) -> dict[int, list[Admission]]:
    by_subject: dict[int, list[Admission]] = defaultdict(list)
    shared: dict[str, str] = {}  # each race and insurance string kept once
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
        race = (row.get("race") or row.get("ethnicity") or "").strip()
        insurance = (row.get("insurance") or "").strip()
        by_subject[subject].append(
            Admission(
                hadm,
                subject,
                admit,
                discharge,
                died,
                frozenset(codes.get(hadm, ())),
                primary.get(hadm),
                shared.setdefault(race, race),
                shared.setdefault(insurance, insurance),
            )
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


def _read_iii(folder: Path, con, shard: Shard | None) -> MimicData:
    skipped = _Skipped()
    admissions_path = _require(folder, "ADMISSIONS.csv")
    keep = _Filter(con, shard, admissions_path)
    tables = ("DIAGNOSES_ICD.csv", "PROCEDURES_ICD.csv", "PRESCRIPTIONS.csv")
    codes, primary = _codes(folder, *tables, False, skipped, con, keep)
    patients = {}
    for row in _rows(con, _require(folder, "PATIENTS.csv"), keep.subjects()):
        ids, dob = skipped.ints("patients", row, "subject_id"), _time(row.get("dob"))
        if ids is None:
            continue
        if dob is None:
            skipped.skip("patients")
            continue
        patients[ids[0]] = Patient(ids[0], row.get("gender", ""), _time(row.get("dod")), dob=dob)
    admissions = _admissions(_rows(con, admissions_path, keep.subjects()), codes, primary, skipped)
    stays = _stays(_rows(con, _require(folder, "ICUSTAYS.csv"), keep.subjects()), "icustay_id", skipped)
    data = MimicData("MIMIC-III", None, patients, admissions, stays, out_of_hospital_deaths=True)
    data.notes.extend(skipped.notes())
    return _note_orphans(data)


def _iv_version(folder: Path) -> str | None:
    """The release: a ``VERSION``/``version.txt`` file says it outright; else a name like ``mimic-iv-3.1``."""
    version_file = _find(folder, "VERSION", "version.txt")
    if version_file is not None and (written := version_file.read_text().strip()):
        return written
    for candidate in (folder.name, *(p.name for p in folder.iterdir())):
        match = re.search(r"(?:^|[^0-9])v?(\d+\.\d+)(?:[^0-9]|$)", candidate)
        if match and ("mimic" in candidate.lower() or candidate.lower().startswith(("v", "version"))):
            return match.group(1)
    return None


def _read_iv(folder: Path, con, shard: Shard | None) -> MimicData:
    hosp, icu = folder / "hosp", folder / "icu"
    skipped = _Skipped()
    admissions_path = _require(hosp, "admissions.csv")
    keep = _Filter(con, shard, admissions_path)
    tables = ("diagnoses_icd.csv", "procedures_icd.csv", "prescriptions.csv")
    codes, primary = _codes(hosp, *tables, True, skipped, con, keep)
    patients = {}
    for row in _rows(con, _require(hosp, "patients.csv"), keep.subjects()):
        ids = skipped.ints("patients", row, "subject_id", "anchor_age", "anchor_year")
        if ids is None:
            continue
        sid, age, year = ids
        patients[sid] = Patient(
            sid, row.get("gender", ""), _time(row.get("dod")), anchor_age=float(age), anchor_year=year
        )
    admissions = _admissions(_rows(con, admissions_path, keep.subjects()), codes, primary, skipped)
    stays = _stays(_rows(con, _require(icu, "icustays.csv"), keep.subjects()), "stay_id", skipped)
    version = _iv_version(folder)
    deaths_after_discharge = version is None or not version.startswith("1.")
    data = MimicData("MIMIC-IV", version, patients, admissions, stays, deaths_after_discharge)
    data.notes.extend(skipped.notes())
    if version is None:
        data.notes.append(
            "MIMIC-IV version not named by the folder; assumed v2.0 or later (deaths after discharge recorded)"
        )
    return _note_orphans(data)
