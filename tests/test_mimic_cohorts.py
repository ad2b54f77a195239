"""MIMIC readers and cohorts on the real MIMIC-III demo, and on a MIMIC-IV-shaped copy of it.

The MIMIC-IV fixture is built here from the demo tables (lower-case ``hosp/`` and ``icu/``
``.csv.gz`` files, ``anchor_age``/``anchor_year`` instead of ``dob``, ``icd_code`` with
``icd_version``); both layouts must give the same cohorts.
"""

from __future__ import annotations

import csv
import gzip
import io
from datetime import timedelta

import pytest

from preprocessing.cohorts import is_heart_failure, mortality_cohort, readmission_cohort, readmission_labels
from preprocessing.mimic import MimicError, read_mimic
from preprocessing.vocabulary import OOV, Vocabulary


@pytest.fixture(scope="module")
def demo(mimic_dir):
    return read_mimic(mimic_dir)


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


@pytest.fixture(scope="module")
def mimic_iv(mimic_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("mimic-iv") / "mimic-iv-2.2"
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
        patients.append({"subject_id": row["subject_id"], "gender": row["gender"], "anchor_age": age,
                         "anchor_year": year, "dod": row["dod"][:10]})
    write_gz(root / "hosp" / "patients.csv.gz", ["subject_id", "gender", "anchor_age", "anchor_year", "dod"],
             patients)
    write_gz(root / "hosp" / "admissions.csv.gz",
             ["subject_id", "hadm_id", "admittime", "dischtime", "deathtime", "hospital_expire_flag"],
             [{k: r[k] for k in ("subject_id", "hadm_id", "admittime", "dischtime", "deathtime",
                                 "hospital_expire_flag")} for r in admissions])
    for name in ("diagnoses_icd", "procedures_icd"):
        rows = read_table(mimic_dir / f"{name.upper()}.csv")
        write_gz(root / "hosp" / f"{name}.csv.gz", ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"],
                 [{"subject_id": r["subject_id"], "hadm_id": r["hadm_id"], "seq_num": r["seq_num"],
                   "icd_code": r["icd9_code"], "icd_version": "9"} for r in rows])
    prescriptions = read_table(mimic_dir / "PRESCRIPTIONS.csv")
    write_gz(root / "hosp" / "prescriptions.csv.gz", ["subject_id", "hadm_id", "drug"],
             [{k: r[k] for k in ("subject_id", "hadm_id", "drug")} for r in prescriptions])
    write_gz(root / "icu" / "icustays.csv.gz", ["subject_id", "hadm_id", "stay_id", "intime", "outtime"],
             [{"subject_id": r["subject_id"], "hadm_id": r["hadm_id"], "stay_id": r["icustay_id"],
               "intime": r["intime"], "outtime": r["outtime"]} for r in read_table(mimic_dir / "ICUSTAYS.csv")])
    return root


def test_demo_tables_and_the_missing_admission(demo):
    assert demo.layout == "MIMIC-III" and len(demo.patients) == 100
    assert sum(len(rows) for rows in demo.admissions.values()) == 128  # 129 official rows, one missing here
    assert len(demo.icu_stays) == 136
    assert demo.notes == ["1 ICU stay(s) without an admission row, left out: subject 10043 hadm 168674"]
    visit = demo.admissions[10006][0]
    assert visit.primary_dx == "dx9:99591" and any(c.startswith("rx:") for c in visit.codes)
    assert any(c.startswith("px9:") for rows in demo.admissions.values() for a in rows for c in a.codes)


def test_mortality_cohort_counts_and_labels(demo):
    cohort = mortality_cohort(demo)
    counts = [s["count"] for s in cohort.steps]
    assert counts == sorted(counts[:-1], reverse=True) + [counts[-1]]  # every step narrows
    assert cohort.steps[0] == {"step": "patients", "count": 100}
    assert cohort.to_json()["size"] == len(cohort.samples) == cohort.steps[-2]["count"]
    for sample in cohort.samples:
        stays = sorted((s for s in demo.icu_stays if s.subject_id == sample.subject_id
                        and demo.admission(s.hadm_id)), key=lambda s: s.intime)
        index = demo.admission(stays[0].hadm_id)
        assert sample.index_hadm == index.hadm_id and not index.died_in_hospital
        assert demo.patients[sample.subject_id].age_at(index.admit) >= 18
        dod = demo.patients[sample.subject_id].dod
        expected = int(dod is not None and timedelta(0) < dod - stays[0].outtime <= timedelta(days=365))
        assert sample.label == expected
        # the leak fix: the input stops at the index admission
        assert sample.visits[-1] == index.codes
        assert len(sample.visits) == sum(1 for a in demo.admissions[sample.subject_id] if a.admit <= index.admit)


def test_readmission_cohorts(demo):
    hf = readmission_cohort(demo, "hf")
    for sample in hf.samples:
        rows = demo.admissions[sample.subject_id]
        last_hf = max(i for i, a in enumerate(rows) if is_heart_failure(a))
        assert rows[last_hf].hadm_id == sample.index_hadm and len(sample.visits) == last_hf + 1
        assert sample.label == readmission_labels(rows)[last_hf]
    assert 0 < len(hf.samples) < 20  # few heart-failure stays in the demo
    every = readmission_cohort(demo, "all")
    assert len(every.samples) == 128 and 0 < every.positives < 128
    with pytest.raises(ValueError):
        readmission_cohort(demo, "some")


def test_readmission_label_rule(demo):
    rows = next(r for r in demo.admissions.values() if len(r) >= 3)
    labels = readmission_labels(rows)
    assert labels[-1] == 0 and len(labels) == len(rows)
    for cur, nxt, label in zip(rows, rows[1:], labels):
        assert label == int(nxt.admit - cur.discharge <= timedelta(days=30))


def test_mimic_iv_layout_gives_the_same_cohorts(demo, mimic_iv):
    iv = read_mimic(mimic_iv)
    assert iv.layout == "MIMIC-IV" and iv.version == "2.2" and iv.out_of_hospital_deaths
    assert iv.notes == demo.notes
    for build in (mortality_cohort, readmission_cohort, lambda d: readmission_cohort(d, "all")):
        a, b = build(demo).to_json(), build(iv).to_json()
        assert a == b


def test_mimic_iv_v1_refuses_mortality(mimic_iv, tmp_path):
    v1 = tmp_path / "mimic-iv-1.0"
    v1.symlink_to(mimic_iv, target_is_directory=True)
    data = read_mimic(v1)
    assert data.version == "1.0" and not data.out_of_hospital_deaths
    with pytest.raises(MimicError, match="no deaths after discharge"):
        mortality_cohort(data)
    assert readmission_cohort(data).samples  # readmission needs no death dates


def test_not_a_mimic_folder(tmp_path):
    with pytest.raises(MimicError, match="neither MIMIC-III"):
        read_mimic(tmp_path)


def test_vocabulary_maps_rare_and_unseen_codes_to_oov(demo):
    cohort = mortality_cohort(demo)
    vocab = Vocabulary.build((v for s in cohort.samples for v in s.visits), min_count=2)
    assert len(vocab) > 2
    visit = next(iter(cohort.samples)).visits[-1]
    encoded = vocab.encode(visit | {"dx9:never-seen"})
    assert OOV in encoded and all(0 < i < len(vocab) for i in encoded)
    assert Vocabulary.from_json(vocab.to_json()) == vocab
    with pytest.raises(ValueError):
        Vocabulary.from_json({"codes": "x"})


def test_data_cohorts_command(mimic_dir, tmp_path):
    import json

    from click.testing import CliRunner

    from tools.cli import main

    result = CliRunner().invoke(main, ["data", "cohorts", "--mimic", str(mimic_dir), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    names = [c["name"] for c in report["cohorts"]]
    assert names == ["mortality_1y", "readmission_30d", "readmission_30d_all_admissions"]
    assert "subject 10043" in report["notes"][0]
    bad = CliRunner().invoke(main, ["data", "cohorts", "--mimic", str(tmp_path)])
    assert bad.exit_code == 1 and "neither MIMIC-III" in bad.output
