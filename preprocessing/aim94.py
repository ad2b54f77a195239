"""AIM-94 diabetes log reader: raw lines -> typed events, every defect rejected with a reason.

The rules are docs/evaluation.md ("Dose model on AIM-94", "Records" and "Known defects"): a
record is kept only if its date and time parse (``MM-DD-YYYY``, ``H:MM`` or ``HH:MM``), its code
is documented, its value is a number and within plausible limits, and it is not an exact repeat
of a kept record.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from domain.events import Event, Insulin, Kind
from domain.limits import GLUCOSE_MG_DL, INSULIN_UNITS

FILE_PATTERN = re.compile(r"data-(\d{2})")
_DATE = re.compile(r"(\d{2})-(\d{2})-(\d{4})")
_TIME = re.compile(r"(\d{1,2}):(\d{2})")
_NUMBER = re.compile(r"\d+(\.\d+)?")

REGULAR_MAX_UNITS = 50.0
METER_HI_MG_DL = 501.0

GLUCOSE_CODES = {
    48: "unspecified",
    57: "unspecified",
    58: "pre_breakfast",
    59: "post_breakfast",
    60: "pre_lunch",
    61: "post_lunch",
    62: "pre_supper",
    63: "post_supper",
    64: "pre_snack",
}
INSULIN_CODES = {33: Insulin.REGULAR, 34: Insulin.NPH, 35: Insulin.ULTRALENTE}
MEAL_CODES = {66: "typical", 67: "more", 68: "less"}
EXERCISE_CODES = {69: "typical", 70: "more", 71: "less"}
HYPO_CODE = 65
SPECIAL_CODE = 72
DOCUMENTED_CODES = (
    set(GLUCOSE_CODES) | set(INSULIN_CODES) | set(MEAL_CODES) | set(EXERCISE_CODES) | {HYPO_CODE, SPECIAL_CODE}
)

# Rejection reasons, in the order they are checked.
MALFORMED_LINE = "malformed_line"
BAD_DATETIME = "bad_datetime"
UNDOCUMENTED_CODE = "undocumented_code"
NON_NUMERIC_VALUE = "non_numeric_value"
IMPLAUSIBLE_REGULAR = "implausible_regular_insulin"
GLUCOSE_METER_HI = "glucose_meter_hi"
OUT_OF_RANGE = "value_out_of_range"
DUPLICATE = "duplicate_record"
REASONS = (
    MALFORMED_LINE,
    BAD_DATETIME,
    UNDOCUMENTED_CODE,
    NON_NUMERIC_VALUE,
    IMPLAUSIBLE_REGULAR,
    GLUCOSE_METER_HI,
    OUT_OF_RANGE,
    DUPLICATE,
)


class Aim94Error(Exception):
    """The folder or a file cannot be read as AIM-94 at all."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """One line that was not kept, and why."""

    file: str
    line: int
    reason: str
    text: str


@dataclass(slots=True)
class PatientLog:
    """The kept events of one ``data-NN`` file, sorted by timestamp (file order breaks ties)."""

    number: int
    patient_id: str
    events: list[Event]
    lines: int
    rejections: list[Rejection] = field(default_factory=list)


def patient_id_for(number: int) -> str:
    """The event ``patient`` string used for AIM-94 file ``data-NN``."""
    return f"aim94-{number:02d}"


def parse_line(text: str, patient: str, event_id: str) -> Event | str:
    """Parse one raw record; return the event, or the rejection reason."""
    fields = text.rstrip("\r\n").split("\t")
    if len(fields) != 4:
        return MALFORMED_LINE
    date_s, time_s, code_s, value_s = (f.strip() for f in fields)
    ts = _parse_datetime(date_s, time_s)
    if ts is None:
        return BAD_DATETIME
    if not code_s.isdigit() or int(code_s) not in DOCUMENTED_CODES:
        return UNDOCUMENTED_CODE
    if not _NUMBER.fullmatch(value_s):
        return NON_NUMERIC_VALUE
    code, value = int(code_s), float(value_s)
    return _event_for(code, value, patient, event_id, ts)


def _parse_datetime(date_s: str, time_s: str) -> datetime | None:
    d, t = _DATE.fullmatch(date_s), _TIME.fullmatch(time_s)
    if d is None or t is None:
        return None
    month, day, year = (int(g) for g in d.groups())
    hour, minute = (int(g) for g in t.groups())
    try:
        return datetime(year, month, day, hour, minute, tzinfo=UTC)
    except ValueError:
        return None


def _event_for(code: int, value: float, patient: str, event_id: str, ts: datetime) -> Event | str:
    if code in GLUCOSE_CODES:
        if value == METER_HI_MG_DL:
            return GLUCOSE_METER_HI
        if not GLUCOSE_MG_DL.contains(value):
            return OUT_OF_RANGE
        return Event(event_id, patient, ts, Kind.GLUCOSE, mg_dl=value, context=GLUCOSE_CODES[code])
    if code in INSULIN_CODES:
        insulin = INSULIN_CODES[code]
        if insulin is Insulin.REGULAR and not 0.0 < value <= REGULAR_MAX_UNITS:
            return IMPLAUSIBLE_REGULAR
        if not INSULIN_UNITS.contains(value):
            return OUT_OF_RANGE
        return Event(event_id, patient, ts, Kind.INSULIN, insulin=insulin, units=value)
    if code in MEAL_CODES:
        return Event(event_id, patient, ts, Kind.MEAL, size=MEAL_CODES[code])
    if code in EXERCISE_CODES:
        return Event(event_id, patient, ts, Kind.EXERCISE, intensity=EXERCISE_CODES[code])
    if code == HYPO_CODE:
        return Event(event_id, patient, ts, Kind.HYPO_SYMPTOMS)
    return Event(event_id, patient, ts, Kind.SPECIAL)


def _identity(event: Event) -> tuple:
    return (event.ts, event.kind, event.mg_dl, event.context, event.insulin, event.units, event.size, event.intensity)


def _patient_number(path: Path) -> int:
    """NN of a ``data-NN`` file."""
    match = FILE_PATTERN.fullmatch(path.name)
    if match is None:
        raise Aim94Error(f"{path.name}: not an AIM-94 data file name (expected data-NN)")
    return int(match.group(1))


def read_patient_file(path: Path) -> PatientLog:
    """Read one ``data-NN`` file; every line ends up kept or rejected with a reason."""
    number = _patient_number(path)
    patient = patient_id_for(number)
    try:
        raw = path.read_bytes().decode("ascii", errors="replace")
    except OSError as exc:
        raise Aim94Error(f"{path}: cannot read ({exc.strerror})") from exc
    lines = raw.splitlines()
    kept: list[Event] = []
    rejections: list[Rejection] = []
    seen: set[tuple] = set()
    for line_no, text in enumerate(lines, start=1):
        result = parse_line(text, patient, f"{patient}-{line_no:05d}")
        if isinstance(result, Event):
            identity = _identity(result)
            if identity in seen:
                result = DUPLICATE
            else:
                seen.add(identity)
                kept.append(result)
                continue
        rejections.append(Rejection(path.name, line_no, result, text[:200]))
    kept.sort(key=lambda e: e.ts)  # stable: file order breaks ties
    return PatientLog(number, patient, kept, len(lines), rejections)


def data_files(folder: Path) -> list[Path]:
    """The ``data-NN`` files of an AIM-94 folder, in patient order."""
    if not folder.is_dir():
        raise Aim94Error(f"{folder}: not a directory")
    files = sorted(p for p in folder.iterdir() if FILE_PATTERN.fullmatch(p.name) and p.is_file())
    if not files:
        raise Aim94Error(f"{folder}: no AIM-94 data-NN files found")
    return files


def read_folder(folder: Path, patients: Collection[int] | None = None) -> list[PatientLog]:
    """Read every (or the chosen) patient file of an AIM-94 folder."""
    files = data_files(Path(folder))
    if patients is not None:
        wanted = set(patients)
        files = [f for f in files if _patient_number(f) in wanted]
        missing = wanted - {_patient_number(f) for f in files}
        if missing:
            raise Aim94Error(f"{folder}: no data file for patient(s) {sorted(missing)}")
    return [read_patient_file(f) for f in files]


@dataclass(frozen=True, slots=True)
class CheckReport:
    """What ``advisor data check`` prints."""

    files: int
    lines: int
    kept: int
    rejected: dict[str, int]
    decision_points: int
    per_file: dict[str, dict]

    def to_json(self) -> dict:
        return {
            "kept": self.kept,
            "rejected": self.rejected,
            "lines": self.lines,
            "files": self.files,
            "decision_points": self.decision_points,
            "per_file": self.per_file,
        }


def check(logs: list[PatientLog]) -> CheckReport:
    """Summarise kept and rejected records; kept + rejected accounts for every line."""
    totals: Counter[str] = Counter()
    per_file: dict[str, dict] = {}
    kept = lines = decisions = 0
    for log in logs:
        reasons = Counter(r.reason for r in log.rejections)
        totals.update(reasons)
        n_dp = sum(1 for e in log.events if e.is_regular_dose)
        per_file[f"data-{log.number:02d}"] = {
            "lines": log.lines,
            "kept": len(log.events),
            "rejected": dict(sorted(reasons.items())),
            "decision_points": n_dp,
        }
        kept += len(log.events)
        lines += log.lines
        decisions += n_dp
    rejected = {reason: totals[reason] for reason in REASONS if totals[reason]}
    return CheckReport(len(logs), lines, kept, rejected, decisions, per_file)
