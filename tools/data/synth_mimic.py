"""A synthetic MIMIC-IV folder of the real shape and size, for scale tests of the companion pipeline.

``advisor data synth-mimic --out DIR --scale 0.1 --version 3.1`` writes ``hosp/patients``,
``hosp/admissions``, ``hosp/diagnoses_icd``, ``hosp/procedures_icd``, ``hosp/prescriptions``
and ``icu/icustays`` as ``.csv.gz`` with every column of the real tables, row counts of the
release times ``scale``, and ``version.txt``. Nothing in it is real: codes and drug names are
made up, but they follow a Zipf-like frequency over vocabularies of realistic size (ICD-9 and
ICD-10 diagnoses and procedures, thousands of drugs), some patients are heart-failure patients
readmitted more often, deaths happen in hospital and within a year after discharge, and dates
lie in MIMIC's shifted years (2110–2210). A little signal is planted (patients who die and
admissions followed by a readmission carry codes from small "risk" sets) so a model has
something to find.

Written in chunks of patients, so memory stays flat whatever the scale.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

# Row counts of the releases (hosp and icu modules; MIMIC-IV v2.2 and v3.1 release notes).
RELEASES: dict[str, dict[str, int]] = {
    "2.2": {
        "patients": 299_712,
        "admissions": 431_231,
        "diagnoses_icd": 4_756_326,
        "procedures_icd": 669_186,
        "prescriptions": 15_416_708,
        "icustays": 73_181,
    },
    "3.1": {
        "patients": 364_627,
        "admissions": 546_028,
        "diagnoses_icd": 6_364_488,
        "procedures_icd": 859_655,
        "prescriptions": 20_292_611,
        "icustays": 94_458,
    },
}
YEAR_GROUPS = {
    "2.2": ("2008 - 2010", "2011 - 2013", "2014 - 2016", "2017 - 2019"),
    "3.1": ("2008 - 2010", "2011 - 2013", "2014 - 2016", "2017 - 2019", "2020 - 2022"),
}
VOCABULARY = {"dx9": 9_000, "dx10": 18_000, "px9": 2_000, "px10": 11_000, "rx": 9_000}
COLUMNS = {
    "patients": ("subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"),
    "admissions": (
        "subject_id",
        "hadm_id",
        "admittime",
        "dischtime",
        "deathtime",
        "admission_type",
        "admit_provider_id",
        "admission_location",
        "discharge_location",
        "insurance",
        "language",
        "marital_status",
        "race",
        "edregtime",
        "edouttime",
        "hospital_expire_flag",
    ),
    "diagnoses_icd": ("subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"),
    "procedures_icd": ("subject_id", "hadm_id", "seq_num", "chartdate", "icd_code", "icd_version"),
    "prescriptions": (
        "subject_id",
        "hadm_id",
        "pharmacy_id",
        "poe_id",
        "poe_seq",
        "order_provider_id",
        "starttime",
        "stoptime",
        "drug_type",
        "drug",
        "formulary_drug_cd",
        "gsn",
        "ndc",
        "prod_strength",
        "form_rx",
        "dose_val_rx",
        "dose_unit_rx",
        "form_val_disp",
        "form_unit_disp",
        "doses_per_24_hrs",
        "route",
    ),
    "icustays": ("subject_id", "hadm_id", "stay_id", "first_careunit", "last_careunit", "intime", "outtime", "los"),
}
ADMITTED_SHARE = 0.6  # patients with at least one admission (the rest appear in ED or outpatient tables only)
HF_PATIENT_SHARE = 0.08
HF_PRIMARY_SHARE = 0.45  # of a heart-failure patient's admissions
IN_HOSPITAL_DEATH = 0.05  # at a patient's last admission
DEATH_WITHIN_YEAR = 0.10  # after the last discharge (MIMIC-IV records deaths up to a year after)
CHUNK_PATIENTS = 20_000
CARE_UNITS = (
    "Medical Intensive Care Unit (MICU)",
    "Surgical Intensive Care Unit (SICU)",
    "Cardiac Vascular Intensive Care Unit (CVICU)",
)
SALTS = ("Sodium", "HCl", "Sulfate", "Tartrate", "")
ROUTES = ("PO", "IV", "SC", "IH", "TP", "PO/NG")


@dataclass(frozen=True)
class Vocabularies:
    """Made-up code strings per source, most frequent first, and their Zipf-like cumulative weights."""

    codes: dict[str, list[str]]
    cumulative: dict[str, np.ndarray]
    drug_rows: list[str]  # drug … route columns of a prescription, per drug

    @classmethod
    def build(cls, rng: np.random.Generator) -> Vocabularies:
        codes = {
            "dx9": [f"{k:0{3 + k % 3}d}" for k in rng.permutation(100_000)[: VOCABULARY["dx9"]]],
            "dx10": [
                f"{chr(65 + k % 26)}{k // 26 % 100:02d}{k // 2600:02d}"
                for k in rng.permutation(260_000)[: VOCABULARY["dx10"]]
            ],
            "px9": [f"{k:04d}" for k in rng.permutation(10_000)[: VOCABULARY["px9"]]],
            "px10": [
                f"0{chr(65 + k % 26)}{k // 26 % 100:02d}{chr(48 + k // 2600 % 10)}Z{k % 7}"
                for k in rng.permutation(2_600_000)[: VOCABULARY["px10"]]
            ],
            "rx": [f"Drug {k:05d} {SALTS[k % len(SALTS)]}".rstrip() for k in range(VOCABULARY["rx"])],
        }
        codes["dx9"][:3] = ["4280", "42821", "42833"]  # heart failure among the commonest, as in MIMIC
        codes["dx10"][:3] = ["I509", "I5021", "I5033"]
        cumulative = {}
        for source, names in codes.items():
            weights = 1.0 / (np.arange(len(names)) + 5.0) ** 1.1
            cumulative[source] = np.cumsum(weights) / weights.sum()
        drug_rows = []
        for k, drug in enumerate(codes["rx"]):
            strength = (5, 10, 20, 25, 40, 50, 100, 250, 500)[k % 9]
            drug_rows.append(
                f'"{drug}",{drug[:4].upper()}{strength},{k:06d},{k * 7919 % 10**11:011d},"{strength}mg Tab",,'
                f"{strength},mg,1,TAB"
            )
        return cls(codes, cumulative, drug_rows)

    def draw(self, rng: np.random.Generator, source: str, count: int) -> np.ndarray:
        """``count`` code indices of ``source``, most frequent first more often."""
        return np.searchsorted(self.cumulative[source], rng.random(count))


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S")


@dataclass
class Counts:
    rows: dict[str, int]
    seconds: float


class _Writers:
    """One gzip text stream per table, header first."""

    def __init__(self, out: Path) -> None:
        self.files = {}
        for table, columns in COLUMNS.items():
            folder = out / ("icu" if table == "icustays" else "hosp")
            folder.mkdir(parents=True, exist_ok=True)
            handle = gzip.open(folder / f"{table}.csv.gz", "wt", compresslevel=1, newline="")  # noqa: SIM115
            handle.write(",".join(columns) + "\n")
            self.files[table] = handle
        self.rows = dict.fromkeys(COLUMNS, 0)

    def write(self, table: str, lines: list[str]) -> None:
        if lines:
            self.files[table].write("\n".join(lines) + "\n")
            self.rows[table] += len(lines)

    def close(self) -> None:
        for handle in self.files.values():
            handle.close()


def generate(
    out: Path, scale: float, version: str = "3.1", seed: int = 0, progress: Callable[[str], None] = lambda _m: None
) -> Counts:
    """Write the synthetic release to ``out``; returns the rows written per table."""
    if version not in RELEASES:
        raise ValueError(f"version must be one of {', '.join(RELEASES)}")
    if not 0 < scale <= 2:
        raise ValueError("scale must be above 0 and at most 2")
    started = time.perf_counter()
    release = RELEASES[version]
    rng = np.random.default_rng(seed)
    vocab = Vocabularies.build(rng)
    n_patients = max(20, round(release["patients"] * scale))
    per_admission = {
        t: release[t] / release["admissions"] for t in ("diagnoses_icd", "procedures_icd", "prescriptions")
    }
    admissions_per_admitted = release["admissions"] / (release["patients"] * ADMITTED_SHARE)
    icu_share = release["icustays"] / release["admissions"]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "version.txt").write_text(f"{version}\n")
    writers = _Writers(out)
    ids = {"hadm": 20_000_000, "stay": 30_000_000, "pharmacy": 0}
    try:
        for first in range(0, n_patients, CHUNK_PATIENTS):
            chunk = range(first, min(first + CHUNK_PATIENTS, n_patients))
            tables: dict[str, list[str]] = {t: [] for t in COLUMNS}
            shape = (admissions_per_admitted, per_admission, icu_share)
            for index in chunk:
                _patient(rng, vocab, YEAR_GROUPS[version], 10_000_000 + index, ids, tables, shape)
            for table, lines in tables.items():
                writers.write(table, lines)
            progress(f"{chunk.stop:,} of {n_patients:,} patients")
    finally:
        writers.close()
    return Counts(writers.rows, time.perf_counter() - started)


def _patient(
    rng: np.random.Generator,
    vocab: Vocabularies,
    groups: tuple[str, ...],
    subject: int,
    ids: dict[str, int],
    tables: dict[str, list[str]],
    shape: tuple[float, dict[str, float], float],
) -> None:
    """One patient's rows in every table; ``shape``: admissions per admitted patient, rows per admission, ICU share."""
    admissions_per_admitted, per_admission, icu_share = shape
    group = groups[int(rng.integers(len(groups)))]
    anchor_year = 2110 + int(rng.integers(0, 98))
    anchor_age = int(min(91, max(18, rng.normal(58, 19))))
    gender = "F" if rng.random() < 0.52 else "M"
    icd = "10" if int(group[:4]) >= 2014 and rng.random() < 0.85 else "9"
    count = int(rng.geometric(1 / admissions_per_admitted)) if rng.random() < ADMITTED_SHARE else 0
    heart_failure = rng.random() < HF_PATIENT_SHARE
    dod = ""
    when = datetime(anchor_year, 1, 1) + timedelta(days=float(rng.uniform(0, 3 * 365)))
    dies_after = count > 0 and rng.random() < DEATH_WITHIN_YEAR + 0.002 * (anchor_age - 58)
    for number in range(count):
        last = number == count - 1
        hadm = ids["hadm"] = ids["hadm"] + 1 + int(rng.integers(0, 3))
        stay = timedelta(days=float(rng.lognormal(1.2, 0.8)), hours=float(rng.uniform(0, 23)))
        admit, discharge = when, when + stay
        died = last and rng.random() < IN_HOSPITAL_DEATH
        readmit_soon = rng.random() < (0.32 if heart_failure else 0.18)
        gap = timedelta(days=float(rng.uniform(1, 30) if readmit_soon else rng.exponential(300) + 31))
        when = discharge + gap
        primary_hf = heart_failure and rng.random() < HF_PRIMARY_SHARE
        tables["admissions"].append(
            f"{subject},{hadm},{_stamp(admit)},{_stamp(discharge)},{_stamp(discharge) if died else ''},"
            f"EW EMER.,P{subject % 99999:05d},EMERGENCY ROOM,{'DIED' if died else 'HOME'},Medicare,ENGLISH,"
            f"MARRIED,WHITE,{_stamp(admit - timedelta(hours=3))},{_stamp(admit)},{int(died)}"
        )
        marks = (primary_hf, readmit_soon and not last, dies_after and last)
        _codes(rng, vocab, tables, ids, (subject, hadm), icd, admit, per_admission, marks)
        if rng.random() < icu_share:
            intime = admit + (discharge - admit) * float(rng.uniform(0, 0.5))
            outtime = intime + (discharge - intime) * float(rng.uniform(0.2, 1.0))
            unit = CARE_UNITS[int(rng.integers(len(CARE_UNITS)))]
            ids["stay"] += 1
            los = (outtime - intime).total_seconds() / 86400
            tables["icustays"].append(
                f'{subject},{hadm},{ids["stay"]},"{unit}","{unit}",{_stamp(intime)},{_stamp(outtime)},{los:.4f}'
            )
        if died:
            dod = discharge.strftime("%Y-%m-%d")
        elif last and dies_after:
            dod = (discharge + timedelta(days=float(rng.uniform(1, 365)))).strftime("%Y-%m-%d")
    tables["patients"].append(f"{subject},{gender},{anchor_age},{anchor_year},{group},{dod}")


RISK_DX = slice(40, 60)  # planted: codes at these frequency ranks mark a death within a year
READMIT_DX = slice(60, 80)  # … and a readmission within 30 days


def _codes(
    rng: np.random.Generator,
    vocab: Vocabularies,
    tables: dict[str, list[str]],
    ids: dict[str, int],
    admission: tuple[int, int],
    icd: str,
    admit: datetime,
    per_admission: dict[str, float],
    marks: tuple[bool, bool, bool],
) -> None:
    """One admission's diagnoses, procedures and prescriptions; ``marks``: primary heart failure,
    readmitted within 30 days, dies within a year (the last two plant their risk codes)."""
    (subject, hadm), (primary_hf, readmitted, dies) = admission, marks
    dx, px = f"dx{icd}", f"px{icd}"
    diagnoses = list(vocab.draw(rng, dx, 1 + int(rng.poisson(per_admission["diagnoses_icd"] - 1))))
    if primary_hf:
        diagnoses.insert(0, int(rng.integers(0, 3)))
    elif diagnoses[0] < 3:
        diagnoses[0] = 3 + diagnoses[0]  # heart failure as the primary diagnosis only for heart-failure patients
    for planted, marked in ((RISK_DX, dies), (READMIT_DX, readmitted)):
        if marked and rng.random() < 0.6:
            diagnoses.append(int(rng.integers(planted.start, planted.stop)))
    seen = set()
    seq = 0
    for code in diagnoses:
        if code in seen:
            continue
        seen.add(code)
        seq += 1
        tables["diagnoses_icd"].append(f"{subject},{hadm},{seq},{vocab.codes[dx][code]},{icd}")
    chart = admit.strftime("%Y-%m-%d")
    for seq, code in enumerate(
        dict.fromkeys(vocab.draw(rng, px, int(rng.poisson(per_admission["procedures_icd"])))), 1
    ):
        tables["procedures_icd"].append(f"{subject},{hadm},{seq},{chart},{vocab.codes[px][code]},{icd}")
    drugs = int(rng.poisson(per_admission["prescriptions"] / 0.75)) if rng.random() < 0.75 else 0
    start, stop = _stamp(admit), _stamp(admit + timedelta(days=2))
    for seq, code in enumerate(vocab.draw(rng, "rx", drugs), 1):
        ids["pharmacy"] += 1
        tables["prescriptions"].append(
            f"{subject},{hadm},{ids['pharmacy']},{subject}-{hadm % 10000}-{seq},{seq},P{code:05d},{start},{stop},MAIN,"
            f"{vocab.drug_rows[code]},,{ROUTES[code % len(ROUTES)]}"
        )
