"""Visit-history encoding, ``patients`` payload validation and the classification metrics (pure logic)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.validation import ValidationError, decode_visit_history, decode_visit_history_bytes
from domain.visits import TIMELINE_FEATURES, Visit, VisitSpec
from domain.vocabulary import OOV, PAD, Vocabulary
from model import classification_metrics as cm

VOCAB = Vocabulary(("dx9:4280", "px9:3605", "rx:heparin"))
T0 = datetime(2130, 1, 1)


def visit(day: float, stay_days: float, *codes: str) -> Visit:
    admit = T0 + timedelta(days=day)
    return Visit(admit, admit + timedelta(days=stay_days), frozenset(codes))


def test_encoding_left_pads_and_marks_every_real_visit():
    spec = VisitSpec(VOCAB, max_visits=4, max_codes=3)
    x = spec.encode([visit(0, 3, "dx9:4280"), visit(20, 6, "rx:heparin", "dx9:never-seen")])
    assert x.codes.shape == (1, 4, 3) and x.timeline.shape == (1, 4, len(TIMELINE_FEATURES))
    assert x.codes.dtype == np.int32 and x.timeline.dtype == np.float32
    codes, timeline = x.codes[0], x.timeline[0]
    assert not codes[:2].any() and not timeline[:2].any()  # padding rows are exactly zero (the models mask them)
    index = {c: i + 2 for i, c in enumerate(VOCAB.codes)}
    assert codes[2].tolist() == [index["dx9:4280"], PAD, PAD]
    assert codes[3].tolist() == [OOV, index["rx:heparin"], PAD]  # an unknown code is the OOV index, once
    column = {n: timeline[:, i] for i, n in enumerate(TIMELINE_FEATURES)}
    assert column["present"].tolist() == [0, 0, 1, 1]
    assert column["first_visit"].tolist() == [0, 0, 1, 0]
    assert column["stay_days_of_30"][3] == pytest.approx(6 / 30)
    assert column["gap_days_of_365"][3] == pytest.approx(17 / 365)  # day 20 admit − day 3 discharge
    assert column["within_30d_of_previous"].tolist() == [0, 0, 0, 1]
    assert timeline.min() >= 0.0 and timeline.max() <= 1.0


def test_encoding_keeps_the_newest_visits_and_their_gaps():
    spec = VisitSpec(VOCAB, max_visits=2, max_codes=4)
    history = [visit(0, 1, "dx9:4280"), visit(100, 1, "px9:3605"), visit(500, 2, "rx:heparin")]
    x = spec.encode(history)
    gap = TIMELINE_FEATURES.index("gap_days_of_365")
    assert x.codes[0, 0, 0] == VOCAB.encode({"px9:3605"})[0] and x.codes[0, 1, 0] == VOCAB.encode({"rx:heparin"})[0]
    assert x.timeline[0, 0, TIMELINE_FEATURES.index("first_visit")] == 0.0  # the dropped visit still counts as earlier
    assert x.timeline[0, 0, gap] == pytest.approx(99 / 365)
    assert x.timeline[0, 1, gap] == 1.0  # capped at a year


def test_a_full_visit_keeps_diagnoses_then_procedures_then_drugs():
    vocabulary = Vocabulary(("dx10:I509", "dx9:4280", "px9:3605", "rx:aspirin", "rx:heparin"))
    spec = VisitSpec(vocabulary, max_visits=1, max_codes=3)
    x = spec.encode([visit(0, 1, "rx:heparin", "rx:aspirin", "px9:3605", "dx9:4280")])
    assert [spec.vocabulary.codes[i - 2] for i in x.codes[0, 0]] == ["dx9:4280", "px9:3605", "rx:aspirin"]


def test_a_visit_shared_by_many_histories_is_encoded_once_and_alike():
    spec = VisitSpec(VOCAB, max_visits=3, max_codes=4)
    shared = [visit(0, 2, "dx9:4280", "rx:heparin"), visit(40, 1, "px9:3605")]
    many = spec.encode_many([shared[:1], shared, shared])
    assert (many.codes[1] == many.codes[2]).all() and (many.codes[0, -1] == many.codes[1, -2]).all()
    assert many.take(np.array([2])).codes.shape == (1, 3, 4) and len(many) == 3
    assert many.inputs().keys() == {"codes", "timeline"}


def test_visit_spec_round_trips_and_refuses_foreign_specs():
    spec = VisitSpec(VOCAB, 7, 32)
    assert VisitSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    for bad in (
        {},
        {**spec.to_json(), "kind": "window"},
        {**spec.to_json(), "timeline": ["x"]},
        {**spec.to_json(), "max_visits": 0},
        {**spec.to_json(), "max_visits": True},
        {**spec.to_json(), "max_codes": 0},
    ):
        with pytest.raises(ValueError):
            VisitSpec.from_json(bad)
    with pytest.raises(ValueError, match="dense \\(multi-hot\\) visit input: retrain it"):
        VisitSpec.from_json({**spec.to_json(), "kind": "visit_sequence"})


def test_vocabulary_max_size_keeps_the_most_frequent_codes():
    visits = [{"a", "b"}, {"a", "c"}, {"a", "b"}, {"c", "b"}, {"d"}, {"d"}]
    assert Vocabulary.build(visits, min_count=2, max_size=2).codes == ("a", "b")
    assert Vocabulary.build(visits, min_count=2).codes == ("a", "b", "c", "d")


GOOD = {
    "patient": "p-7",
    "visits": [
        {"admit": "2130-01-05T10:00:00+00:00", "discharge": "2130-01-09T12:00:00+00:00", "codes": ["dx9:4280"]},
        {"admit": "2129-12-01T08:00:00+01:00", "discharge": "2129-12-03T08:00:00+01:00", "codes": []},
    ],
}


def test_a_valid_history_is_sorted_and_in_utc():
    history = decode_visit_history_bytes(json.dumps(GOOD).encode())
    assert history.patient == "p-7" and len(history.visits) == 2
    assert history.visits[0].admit == datetime(2129, 12, 1, 7, 0)  # oldest first, naive UTC
    assert history.visits[1].codes == frozenset({"dx9:4280"})


def _with(**changes):
    data = json.loads(json.dumps(GOOD))
    for path, value in changes.items():
        if path.startswith("v0_"):
            data["visits"][0][path[3:]] = value
        else:
            data[path] = value
    return data


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"[1, 2]", "JSON object"),
        (b"\xff\xfe", "UTF-8"),
        (b"{" * 50 + b"}" * 50, "nested"),
        (b'{"patient": "x", "visits": [' + b"1," * 200_000 + b"1]}", "bytes"),
        (json.dumps(_with(patient="../etc")).encode(), "'patient'"),
        (json.dumps(_with(visits=[])).encode(), "'visits'"),
        (json.dumps(_with(extra=1)).encode(), "unknown field"),
        (json.dumps(_with(v0_admit="yesterday")).encode(), "not an ISO 8601"),
        (json.dumps(_with(v0_admit="2130-01-05T10:00:00")).encode(), "UTC offset"),
        (json.dumps(_with(v0_admit="1850-01-01T00:00:00+00:00")).encode(), "1900"),
        (json.dumps(_with(v0_discharge="2130-01-01T00:00:00+00:00")).encode(), "discharged before"),
        (json.dumps(_with(v0_codes="dx9:4280")).encode(), "'codes'"),
        (json.dumps(_with(v0_codes=[42])).encode(), "printable"),
        (json.dumps(_with(v0_codes=["x" * 500])).encode(), "printable"),
        (json.dumps(_with(v0_codes=["bad\ncode"])).encode(), "printable"),
        (json.dumps(_with(v0_ward="icu")).encode(), "unknown field"),
    ],
)
def test_hostile_histories_are_rejected_with_a_reason(payload, reason):
    with pytest.raises(ValidationError) as caught:
        decode_visit_history_bytes(payload)
    assert reason in caught.value.reason


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=30),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
        max_leaves=20,
    )
)
def test_no_mapping_crashes_the_history_decoder(value):
    data = value if isinstance(value, dict) else {"patient": "p", "visits": value}
    try:
        history = decode_visit_history(data)
    except ValidationError as exc:
        assert exc.reason
    else:
        assert history.visits


def test_auroc_auprc_and_their_intervals():
    y = np.array([0, 0, 0, 1, 1, 0, 1, 0, 1, 1] * 5)
    perfect = y.astype(float)
    summary = cm.summary(y, perfect, resamples=200)
    assert summary["auroc"] == 1.0 and summary["auprc"] == 1.0 and summary["auroc_ci95"] == (1.0, 1.0)
    rng = np.random.default_rng(1)
    noisy = y + rng.normal(0, 0.8, len(y))
    summary = cm.summary(y, noisy, resamples=500)
    low, high = summary["auroc_ci95"]
    assert low < summary["auroc"] < high and 0.5 < summary["auroc"] < 1.0
    assert summary["prevalence"] == pytest.approx(0.5)
    assert np.isnan(cm.auroc(np.ones(5), np.arange(5.0)))  # one class: undefined, not a number


def test_threshold_reaches_the_target_sensitivity_and_the_confusion_adds_up():
    y = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.6, 0.5, 0.1, 0.05, 0.01])
    threshold = cm.threshold_for_sensitivity(y, p, 0.8)
    assert threshold == 0.3
    c = cm.confusion(y, p, threshold)
    assert (c["tp"], c["fn"], c["fp"], c["tn"]) == (4, 1, 2, 3)
    assert c["sensitivity"] == 0.8 and c["specificity"] == 0.6 and c["ppv"] == pytest.approx(4 / 6)


def test_skipgram_vectors_put_codes_that_share_visits_together():
    from model.skipgram import SkipGramConfig, train_vectors

    rng = np.random.default_rng(0)
    group_a, group_b = [f"a{i}" for i in range(50)], [f"b{i}" for i in range(50)]
    visits = [frozenset(rng.choice(group_a if k % 2 else group_b, 5, replace=False)) for k in range(400)]
    vocab = Vocabulary.build(visits)
    vectors = train_vectors(visits, vocab, SkipGramConfig(dim=16))
    assert vectors.shape == (len(vocab), 16) and not vectors[:2].any() and np.isfinite(vectors).all()
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)
    index = {c: i + 2 for i, c in enumerate(vocab.codes)}
    same = np.mean([unit[index[x]] @ unit[index[y]] for x in group_a for y in group_a if x != y])
    across = np.mean([unit[index[x]] @ unit[index[y]] for x in group_a for y in group_b])
    assert same > across + 0.2
