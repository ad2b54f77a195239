"""Every risk answer names the codes that moved it: occlusion on the real packaged bundles (LiteRT)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from device.models import bundle as bundle_mod
from device.models.companion import UNKNOWN_CODES, RiskModel
from device.models.risk import RiskAssessor
from domain.validation import decode_visit_history

from . import event_factory

HISTORY = decode_visit_history(event_factory.heart_failure_history("p-why").to_payload())


@pytest.fixture(scope="module", params=["mortality", "readmission"])
def model(request) -> RiskModel:
    return RiskModel(bundle_mod.open_bundle(bundle_mod.default_bundle_path(request.param)))


def _without(code: str):
    return [replace(v, codes=frozenset(c for c in v.codes if c != code)) for v in HISTORY.visits]


def test_each_contribution_is_the_change_when_its_code_is_taken_out(model):
    contributions = model.contributions(HISTORY.visits, top=50)
    full = model.predict(HISTORY.visits)
    known = [c for c in contributions if c.code != UNKNOWN_CODES]
    assert known, "the history's known codes are explained"
    for contribution in known:
        assert contribution.change == pytest.approx(full - model.predict(_without(contribution.code)), abs=1e-4)
    changes = [abs(c.change) for c in contributions]
    assert changes == sorted(changes, reverse=True)
    assert {c.code for c in known} <= {code for v in HISTORY.visits for code in v.codes}


def test_codes_outside_the_vocabulary_are_taken_out_together(model):
    contributions = {c.code: c.change for c in model.contributions(HISTORY.visits, top=50)}
    assert "dx9:never-seen-code" not in contributions
    assert UNKNOWN_CODES in contributions
    full = model.predict(HISTORY.visits)
    without = model.predict(_without("dx9:never-seen-code"))
    assert contributions[UNKNOWN_CODES] == pytest.approx(full - without, abs=1e-4)


def test_every_risk_answer_carries_the_top_codes_of_each_model():
    models = {
        name: RiskModel(bundle_mod.open_bundle(bundle_mod.default_bundle_path(name)))
        for name in ("mortality", "readmission")
    }
    risk = RiskAssessor(models).score(HISTORY)
    assert set(risk.contributions) == {"mortality", "readmission"}
    for name, top in risk.contributions.items():
        assert 1 <= len(top) <= 5
        assert top == models[name].contributions(HISTORY.visits)
    again = type(risk).from_json(risk.to_json())
    assert again == risk
