"""The safety supervisor, case by case: inputs, expected status and units, expected reason."""

from __future__ import annotations

import math

import pytest

from device.safety import INSUFFICIENT, SUGGEST, WITHHOLD, DecisionInputs, ProfileError, SafetyProfile, supervise

BASE = dict(
    model_units=8.2,
    glucose_mg_dl=160.0,
    glucose_age_min=2.0,
    hypo_symptoms_age_min=None,
    iob_units=0.0,
    regular_24h_units=10.0,
    usual_units=8.0,
)

# (name, overrides, expected status, expected units, words expected in the reasons)
# Every verdict that is not a plain suggestion also names its rule codes (checked below).
CASES = [
    ("plain suggestion, rounded down to pen step", {}, SUGGEST, 8.0, "pen step"),
    ("exact step needs no rounding", {"model_units": 7.5}, SUGGEST, 7.5, "within every safety limit"),
    ("low glucose withholds", {"glucose_mg_dl": 55.0}, WITHHOLD, 0.0, "below 70"),
    ("glucose exactly at the limit is allowed", {"glucose_mg_dl": 70.0}, SUGGEST, 8.0, None),
    ("recent hypo symptoms withhold", {"hypo_symptoms_age_min": 90.0}, WITHHOLD, 0.0, "hypoglycaemia symptoms"),
    ("old hypo symptoms do not", {"hypo_symptoms_age_min": 300.0}, SUGGEST, 8.0, None),
    (
        "low glucose with symptoms and insulin on board",
        {"glucose_mg_dl": 62.0, "hypo_symptoms_age_min": 10.0, "iob_units": 3.0},
        WITHHOLD,
        0.0,
        "below 70",
    ),
    ("stale glucose", {"glucose_age_min": 16.0}, INSUFFICIENT, 0.0, "minutes old"),
    ("no glucose known", {"glucose_mg_dl": None, "glucose_age_min": None}, INSUFFICIENT, 0.0, "no glucose"),
    (
        "stale beats low: ask for a fresh reading",
        {"glucose_mg_dl": 50.0, "glucose_age_min": 200.0},
        INSUFFICIENT,
        0.0,
        "measure glucose again",
    ),
    ("nan model output", {"model_units": math.nan}, INSUFFICIENT, 0.0, "no valid model output"),
    ("infinite model output", {"model_units": math.inf}, INSUFFICIENT, 0.0, "no valid model output"),
    ("missing model", {"model_units": None}, INSUFFICIENT, 0.0, "no valid model output"),
    ("negative model output", {"model_units": -1.0}, INSUFFICIENT, 0.0, "negative"),
    ("no dosing history", {"usual_units": None}, INSUFFICIENT, 0.0, "too little history"),
    ("cap above usual dose", {"model_units": 14.0}, SUGGEST, 11.0, "above the usual dose"),
    ("insulin on board lowers", {"iob_units": 2.0}, SUGGEST, 6.0, "still active"),
    ("tiny insulin on board ignored", {"iob_units": 0.3}, SUGGEST, 8.0, None),
    ("insulin on board can remove everything", {"iob_units": 9.0}, WITHHOLD, 0.0, "no insulin remains"),
    ("daily maximum", {"regular_24h_units": 46.0}, SUGGEST, 4.0, "last 24 h"),
    ("daily maximum reached", {"regular_24h_units": 50.0}, WITHHOLD, 0.0, "last 24 h"),
    ("single maximum", {"model_units": 24.0, "usual_units": 22.0}, SUGGEST, 15.0, "maximum single dose"),
    ("zero model output", {"model_units": 0.0}, WITHHOLD, 0.0, "no insulin remains"),
    (
        "very old glucose is described as at least 72 hours",
        {"glucose_age_min": 4320.0},
        INSUFFICIENT,
        0.0,
        "at least 72 hours",
    ),
    (
        "hypo symptoms win over a high model number and high glucose",
        {"glucose_mg_dl": 250.0, "hypo_symptoms_age_min": 30.0, "model_units": 14.0},
        WITHHOLD,
        0.0,
        "lock-out",
    ),
    (
        "cap, then insulin on board, then daily room, each explained",
        {"model_units": 14.0, "iob_units": 2.0, "regular_24h_units": 42.0},
        SUGGEST,
        8.0,
        "above the usual dose",
    ),
    ("insulin on board then rounding", {"model_units": 8.0, "iob_units": 1.3}, SUGGEST, 6.5, "rounded down"),
]


@pytest.mark.parametrize("name, overrides, status, units, words", CASES, ids=[c[0] for c in CASES])
def test_supervisor_case(name, overrides, status, units, words):
    verdict = supervise(DecisionInputs(**(BASE | overrides)), SafetyProfile())
    assert verdict.status == status
    assert verdict.units == pytest.approx(units)
    assert verdict.reasons, "every verdict explains itself"
    if words:
        assert words.lower() in " ".join(verdict.reasons).lower()


@pytest.mark.parametrize("model_units", [0.0, 0.4, 3.3, 7.9, 8.0, 11.2, 19.9, 40.0, 99.0])
@pytest.mark.parametrize("iob", [0.0, 0.6, 4.0])
@pytest.mark.parametrize("given_24h", [0.0, 30.0, 49.0])
def test_supervisor_never_raises_the_model_number(model_units, iob, given_24h):
    verdict = supervise(
        DecisionInputs(**(BASE | {"model_units": model_units, "iob_units": iob, "regular_24h_units": given_24h})),
        SafetyProfile(),
    )
    assert 0.0 <= verdict.units <= model_units
    assert verdict.units <= SafetyProfile().max_single_units
    assert verdict.units + given_24h <= SafetyProfile().max_daily_regular_units + 1e-9
    assert verdict.units / SafetyProfile().pen_step_units == pytest.approx(
        round(verdict.units / SafetyProfile().pen_step_units)
    )


def test_profile_overrides_apply():
    strict = SafetyProfile(low_glucose_mg_dl=90.0, max_single_units=5.0, pen_step_units=1.0)
    verdict = supervise(DecisionInputs(**(BASE | {"glucose_mg_dl": 85.0})), strict)
    assert verdict.status == WITHHOLD
    verdict = supervise(DecisionInputs(**BASE), strict)
    assert verdict.units == 5.0


@pytest.mark.parametrize(
    "bad",
    [
        {"low_glucose_mg_dl": 50.0},  # under the hard floor
        {"max_single_units": 31.0},  # over the hard cap
        {"max_daily_regular_units": 500.0},
        {"stale_glucose_min": 120.0},
        {"pen_step_units": 0.0},
        {"max_above_usual_units": -1.0},
        {"iob_ignore_below_units": float("nan")},
    ],
)
def test_profile_cannot_exceed_hard_limits(bad):
    with pytest.raises(ProfileError):
        SafetyProfile(**bad)


def test_profile_from_dict_rejects_unknown_keys():
    assert SafetyProfile.from_dict({"max_single_units": 10}).max_single_units == 10
    with pytest.raises(ProfileError, match="unknown safety setting"):
        SafetyProfile.from_dict({"max_singel_units": 10})


def test_each_lowering_rule_names_itself_in_the_chain():
    verdict = supervise(
        DecisionInputs(**(BASE | {"model_units": 14.0, "iob_units": 2.0, "regular_24h_units": 42.0})), SafetyProfile()
    )
    text = " ".join(verdict.reasons)
    assert "above the usual dose" in text and "still active" in text
    assert verdict.units == 8.0  # 14 -> cap 11 -> minus 2 IOB = 9 -> daily room 8
    assert "last 24 h" in text


RULE_CASES = [
    ({"glucose_mg_dl": 55.0}, ["low_glucose"]),
    ({"glucose_age_min": 16.0}, ["stale_glucose"]),
    ({"hypo_symptoms_age_min": 30.0}, ["hypo_symptoms"]),
    ({"usual_units": None}, ["no_history"]),
    ({"model_units": math.nan}, ["model_invalid"]),
    ({"model_units": -2.0}, ["model_negative"]),
    ({"glucose_mg_dl": None, "glucose_age_min": None}, ["no_glucose"]),
    (
        {"model_units": 14.0, "iob_units": 2.0, "regular_24h_units": 42.0},
        ["above_usual_cap", "insulin_on_board", "max_daily"],
    ),
    ({"iob_units": 9.0}, ["nothing_left", "insulin_on_board"]),
    ({}, ["pen_step"]),
    ({"model_units": 7.5}, []),
]


@pytest.mark.parametrize("overrides, rules", RULE_CASES)
def test_rule_codes(overrides, rules):
    assert supervise(DecisionInputs(**(BASE | overrides)), SafetyProfile()).rules == rules
