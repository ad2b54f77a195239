"""Who each cohort sample is, for the companion report's fairness table.

Four attributes per sample, read from the patient and the sample's index admission:

* ``sex`` — ``female`` / ``male`` from the patient's recorded gender, else ``not recorded``;
* ``age_band`` — age at the index admission: 18–44, 45–64, 65–79, 80 and over (MIMIC-III
  shifts patients over 89 to about 300 years; they fall in the last band);
* ``race_ethnicity`` — the admission's race (MIMIC-IV) or ethnicity (MIMIC-III) text, grouped
  into the categories both releases share: White, Black, Hispanic/Latino, Asian, Other,
  Unknown or declined;
* ``insurance`` — the admission's payer as recorded (Medicare, Medicaid, Private, …).
"""

from __future__ import annotations

from collections.abc import Sequence

from preprocessing.cohorts import Sample
from preprocessing.mimic import MimicData

ATTRIBUTES = ("sex", "age_band", "race_ethnicity", "insurance")
ATTRIBUTE_LABELS = {"sex": "sex", "age_band": "age band", "race_ethnicity": "race/ethnicity", "insurance": "insurance"}
AGE_BANDS = ((80.0, "80+"), (65.0, "65–79"), (45.0, "45–64"), (0.0, "18–44"))
NOT_RECORDED = "not recorded"
UNKNOWN_RACE = "Unknown or declined"
_UNKNOWN_RACE_TEXT = ("UNKNOWN", "UNABLE TO OBTAIN", "PATIENT DECLINED", "DECLINED")
_RACE_GROUPS = (  # checked in order: "HISPANIC/LATINO - ..." before "WHITE", "BLACK/..." before "OTHER"
    (("HISPANIC", "LATINO", "SOUTH AMERICAN"), "Hispanic/Latino"),
    (("BLACK", "AFRICAN"), "Black"),
    (("ASIAN",), "Asian"),
    (("WHITE",), "White"),
)


def sex_group(gender: str) -> str:
    return {"F": "female", "M": "male"}.get(gender.strip().upper()[:1], NOT_RECORDED)


def age_band(age: float) -> str:
    return next(label for floor, label in AGE_BANDS if age >= floor)


def race_group(text: str) -> str:
    """The shared category of a MIMIC race/ethnicity text (``"WHITE - RUSSIAN"`` → White)."""
    upper = text.strip().upper()
    if not upper or upper.startswith(_UNKNOWN_RACE_TEXT):
        return UNKNOWN_RACE
    for words, group in _RACE_GROUPS:
        if any(word in upper for word in words):
            return group
    return "Other"


def insurance_group(text: str) -> str:
    cleaned = " ".join(text.split())
    return cleaned[:1].upper() + cleaned[1:] if cleaned else NOT_RECORDED


def sample_groups(data: MimicData, samples: Sequence[Sample]) -> dict[str, list[str]]:
    """Each attribute's group for every sample, in sample order."""
    groups: dict[str, list[str]] = {attribute: [] for attribute in ATTRIBUTES}
    for sample in samples:
        patient = data.patients.get(sample.subject_id)
        admission = data.admission(sample.index_hadm)
        groups["sex"].append(sex_group(patient.gender) if patient else NOT_RECORDED)
        groups["age_band"].append(
            age_band(patient.age_at(admission.admit)) if patient is not None and admission is not None else NOT_RECORDED
        )
        groups["race_ethnicity"].append(race_group(admission.race) if admission else UNKNOWN_RACE)
        groups["insurance"].append(insurance_group(admission.insurance) if admission else NOT_RECORDED)
    return groups
