"""A MIMIC-IV-shaped copy of the MIMIC-III demo, for tests of the second layout.

Lower-case ``hosp/`` and ``icu/`` ``.csv.gz`` files, ``anchor_age``/``anchor_year`` instead of
``dob``, ``icd_code`` with ``icd_version``; both layouts must give the same cohorts.
"""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path


def read_table(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def write_gz(path, fieldnames, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fieldnames)
    writer.writeheader()
    writer.writerows(rows)
    path.write_bytes(gzip.compress(buffer.getvalue().encode()))


def build_mimic_iv(mimic_dir: Path, root: Path) -> Path:
    """Write the MIMIC-IV layout of the demo under ``root`` and return it."""
    admissions = read_table(mimic_dir / "ADMISSIONS.csv")
    first_admit = {}
    for row in admissions:
        sid = row["subject_id"]
        first_admit[sid] = min(first_admit.get(sid, row["admittime"]), row["admittime"])
    patients = []
    for row in read_table(mimic_dir / "PATIENTS.csv"):
        admit = first_admit.get(row["subject_id"], row["dob"])
        year = int(admit[:4])
        age = (int(admit[:4]) - int(row["dob"][:4])) - (1 if admit[5:10] < row["dob"][5:10] else 0)
        patients.append(
            {
                "subject_id": row["subject_id"],
                "gender": row["gender"],
                "anchor_age": age,
                "anchor_year": year,
                "dod": row["dod"][:10],
            }
        )
    write_gz(root / "hosp" / "patients.csv.gz", ["subject_id", "gender", "anchor_age", "anchor_year", "dod"], patients)
    write_gz(
        root / "hosp" / "admissions.csv.gz",
        ["subject_id", "hadm_id", "admittime", "dischtime", "deathtime", "hospital_expire_flag", "insurance", "race"],
        [
            {
                **{k: r[k] for k in ("subject_id", "hadm_id", "admittime", "dischtime", "deathtime")},
                "hospital_expire_flag": r["hospital_expire_flag"],
                "insurance": r["insurance"],
                "race": r["ethnicity"],  # MIMIC-IV v2 renamed the column
            }
            for r in admissions
        ],
    )
    for name in ("diagnoses_icd", "procedures_icd"):
        rows = read_table(mimic_dir / f"{name.upper()}.csv")
        write_gz(
            root / "hosp" / f"{name}.csv.gz",
            ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"],
            [
                {
                    "subject_id": r["subject_id"],
                    "hadm_id": r["hadm_id"],
                    "seq_num": r["seq_num"],
                    "icd_code": r["icd9_code"],
                    "icd_version": "9",
                }
                for r in rows
            ],
        )
    prescriptions = read_table(mimic_dir / "PRESCRIPTIONS.csv")
    write_gz(
        root / "hosp" / "prescriptions.csv.gz",
        ["subject_id", "hadm_id", "drug"],
        [{k: r[k] for k in ("subject_id", "hadm_id", "drug")} for r in prescriptions],
    )
    write_gz(
        root / "icu" / "icustays.csv.gz",
        ["subject_id", "hadm_id", "stay_id", "intime", "outtime"],
        [
            {
                "subject_id": r["subject_id"],
                "hadm_id": r["hadm_id"],
                "stay_id": r["icustay_id"],
                "intime": r["intime"],
                "outtime": r["outtime"],
            }
            for r in read_table(mimic_dir / "ICUSTAYS.csv")
        ],
    )
    return root
