"""The bedside workflow's pure rules, case by case: next checks, acting on a suggestion once,
doses given with reasons, the ward overview and its alerts, PINs and roles, signed-in sessions."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from device.config import ConfigError, DeviceConfig
from device.contract.messages import GlucoseNow, Response
from device.page.auth import PageSessions, SignInGuard
from device.page.users import Identity, UserError, check_user, hash_pin, verify_pin
from device.rules.check_schedule import CheckSchedule, ScheduleError, next_check
from device.rules.dose_responses import (
    ActionConflict,
    actionability,
    check_current,
    check_reason,
    check_units_given,
    expires_at,
)
from device.rules.safety import SafetyProfile
from device.rules.ward import check_overdue_alert, patient_row

from . import event_factory

WARD = ZoneInfo("Europe/Berlin")
T0 = datetime(2026, 11, 22, 11, 20, tzinfo=WARD)


# ------------------------------------------------------------------ next check
@pytest.mark.parametrize(
    ("reading", "expected"),
    [
        ("07:10", "11:30"),  # a pre-breakfast reading counts for 07:30; next: before lunch
        ("06:55", "07:30"),  # too early to count for breakfast
        ("11:05", "17:30"),  # within 30 min of the lunch check: it counts for it
        ("10:55", "11:30"),
        ("11:20", "17:30"),
        ("21:45", "07:30"),  # the bedtime check counted: next morning
        ("23:50", "07:30"),
    ],
)
def test_the_next_check_follows_the_schedule(reading, expected):
    hour, minute = map(int, reading.split(":"))
    at = T0.replace(hour=hour, minute=minute)
    due = CheckSchedule().next_after(at, WARD)
    assert due.strftime("%H:%M") == expected and due > at and due - at < timedelta(hours=12)


def test_a_low_s_recheck_comes_before_the_schedule():
    recheck = T0 + timedelta(minutes=15)
    assert next_check(T0, recheck, CheckSchedule(), WARD) == recheck
    assert next_check(T0, None, CheckSchedule(), WARD).strftime("%H:%M") == "17:30"


def test_the_schedule_is_read_in_ward_time_across_a_clock_change():
    spring = datetime(2026, 3, 28, 22, 30, tzinfo=WARD)  # the clocks go forward overnight
    due = CheckSchedule(("07:00", "22:00")).next_after(spring, WARD)
    assert due.strftime("%H:%M %z") == "07:00 +0200" and due.astimezone(UTC) - spring.astimezone(UTC) == timedelta(
        hours=7, minutes=30
    )


def test_check_schedules_in_the_config_are_checked():
    config = DeviceConfig.from_mapping(
        {"checks": {"times": ["08:00", "20:00"], "patients": {"p-3": {"times": ["03:00"]}}}}
    )
    assert config.checks.for_patient("p-3").times == ("03:00",)
    assert config.checks.for_patient("other").times == ("08:00", "20:00")
    for bad, message in [
        ({"times": ["8"]}, "must be HH:MM"),
        ({"times": []}, "at least one time"),
        ({"timez": []}, "unknown setting"),
        ({"patients": {"p": {"size": 1}}}, "'times' and 'basal_time' only"),
    ]:
        with pytest.raises(ConfigError, match=message):
            DeviceConfig.from_mapping({"checks": bad})
    with pytest.raises(ScheduleError):
        CheckSchedule(("24:00",))


# ------------------------------------------------------- acting on a suggestion
def dose(units=4.0, at=T0, age=2.0, status="suggest"):
    return replace(event_factory.suggestion("g1", units=units), ts=at.isoformat(), glucose_age_min=age, status=status)


PROFILE = SafetyProfile()


def test_a_suggestion_expires_with_its_reading_or_its_age():
    s = dose(age=10.0)
    assert expires_at(s, 900, PROFILE) == T0 + timedelta(minutes=5)  # the reading turns 15 min old
    assert expires_at(dose(age=0.0), 600, PROFILE) == T0 + timedelta(minutes=10)


@pytest.mark.parametrize(
    ("minutes_later", "response", "broker_problem", "actionable", "why"),
    [
        (1, None, None, True, None),
        (14, None, None, False, "expired at"),
        (1, Response("given", T0.isoformat(), "ann", "nurse", units=4.0), None, False, "already given by ann"),
        (1, None, "connection refused", False, "not linked to its broker"),
    ],
)
def test_actionability(minutes_later, response, broker_problem, actionable, why):
    state = actionability(dose(age=2.0), T0 + timedelta(minutes=minutes_later), response, 900, PROFILE, broker_problem)
    assert state.actionable is actionable
    assert (state.why_not is None) if why is None else (why in state.why_not)


def test_only_the_current_suggestion_can_be_acted_on():
    old, new = dose(), replace(dose(), id="s-g2")
    ok = actionability(old, T0, None, 900, PROFILE, None)
    check_current(old, old, ok)
    with pytest.raises(ActionConflict, match="newer answer"):
        check_current(old, new, ok)
    with pytest.raises(ActionConflict, match="expired"):
        check_current(old, old, actionability(old, T0 + timedelta(hours=1), None, 900, PROFILE, None))


@pytest.mark.parametrize(
    ("units", "reason", "error"),
    [
        (4.0, None, None),
        (3.5, "not_eating", None),
        (3.5, None, "give a reason"),
        (8.0, None, "give a reason"),
        (4.3, "other", "pen steps"),
        (25.0, "clinicians_order", "single-dose limit of 20"),
        (0.0, None, "positive"),
        (float("nan"), None, "positive"),
    ],
)
def test_units_given(units, reason, error):
    if error is None:
        check_units_given(units, dose(), reason, PROFILE)
    else:
        with pytest.raises(ValueError, match=error):
            check_units_given(units, dose(), reason, PROFILE)


def test_a_one_unit_pen_and_reasons():
    with pytest.raises(ValueError, match="1 U pen steps"):
        check_units_given(3.5, dose(), "not_eating", SafetyProfile(pen_step_units=1.0))
    check_reason("other", "vomiting")
    with pytest.raises(ValueError, match="needs a note"):
        check_reason("other", "  ")
    with pytest.raises(ValueError, match="reason must be one of"):
        check_reason("tired", None)
    with pytest.raises(ValueError, match="at most 200"):
        check_reason("patient_refused", "x" * 201)


# ----------------------------------------------------------- the ward overview
def test_a_ward_row_and_its_overdue_alert():
    s = replace(dose(), next_check_at=(T0 + timedelta(hours=1)).isoformat())
    glucose = GlucoseNow(180.0, T0.isoformat(), 2.0)
    state = actionability(s, T0, None, 900, PROFILE, None)
    row = patient_row("p", T0, glucose, s, None, state, 1)
    assert (row.dose_pending, row.check_overdue, row.units, row.lows_24h) == (True, False, 4.0, 1)
    assert check_overdue_alert(s, T0 + timedelta(minutes=59)) is None
    later = T0 + timedelta(hours=1, minutes=20)
    alert = check_overdue_alert(s, later)
    assert alert is not None and alert.id == "overdue-s-g1" and "20 min ago" in alert.message
    given = Response("given", T0.isoformat(), "ann", "nurse", units=4.0)
    assert patient_row("p", later, glucose, s, given, state, 0).check_overdue
    assert not patient_row("p", later, glucose, s, given, state, 0).dose_pending
    recheck = (T0 + timedelta(minutes=15)).isoformat()
    low = replace(s, status="withhold", rules=["low_glucose"], recheck_at=recheck, next_check_at=recheck)
    assert "recheck after a low" in check_overdue_alert(low, T0 + timedelta(minutes=16)).message
    high = replace(s, status="no_dose_due", rules=["no_dose_due", "insulin_on_board"], recheck_at=recheck)
    assert (
        "p: glucose recheck was due"
        in check_overdue_alert(replace(high, next_check_at=recheck), T0 + timedelta(minutes=16)).message
    )


# ---------------------------------------------------------- users and sessions
def test_pins_are_scrypt_hashes_and_roles_are_checked():
    stored = hash_pin("4711")
    assert stored.startswith("scrypt$") and "4711" not in stored and stored != hash_pin("4711")  # salted
    assert verify_pin("4711", stored) and not verify_pin("4712", stored) and not verify_pin("4711", "garbage")
    with pytest.raises(UserError, match="4–64"):
        hash_pin("12")
    with pytest.raises(UserError, match="role"):
        check_user("ann", "doctor")
    with pytest.raises(UserError, match="reserved"):
        check_user("bedside", "nurse")
    assert Identity("ann", "nurse").may("see_risk") and not Identity("pat", "patient").may("see_risk")
    assert Identity("pat", "patient").may("record") and not Identity("v", "viewer").may("record")


def test_a_signed_in_session_locks_when_unused():
    now = [0.0]
    sessions = PageSessions(clock=lambda: now[0])
    token = sessions.issue()
    assert sessions.identity(token, 300) is None
    assert not sessions.sign_in("forged", Identity("ann", "nurse"))
    assert sessions.sign_in(token, Identity("ann", "nurse"))
    now[0] = 200.0
    assert sessions.identity(token, 300) == Identity("ann", "nurse")  # used: the idle time starts again
    now[0] = 450.0
    assert sessions.identity(token, 300, touch=False) is not None
    now[0] = 501.0
    assert sessions.identity(token, 300) is None  # 301 s unused: locked
    assert sessions.valid(token)  # the page session itself lives on; a user signs in again
    sessions.sign_in(token, Identity("ann", "nurse"))
    sessions.sign_out(token)
    assert sessions.identity(token, 300) is None


def test_wrong_pins_on_one_page_do_not_lock_a_nurse_on_another():
    now = [0.0]
    guard = SignInGuard(clock=lambda: now[0])
    for _ in range(4):
        assert guard.failed("page-a", "10.0.0.9", "nurse", "wrong PIN").status == 401
    locked = guard.failed("page-a", "10.0.0.9", "nurse", "wrong PIN")
    assert locked.status == 429 and locked.reason == "too many wrong PINs from this page: locked for 60 s"
    assert guard.locked("page-a", "10.0.0.9", "ann") is not None, "the page that failed is locked, for any user"
    assert guard.locked("page-b", "10.0.0.7", "nurse") is None, "the real nurse on another page signs in"
    assert guard.locked("page-c", "10.0.0.9", "ann") is None, "another page on the same address too"
    now[0] = 61.0
    assert guard.locked("page-a", "10.0.0.9", "nurse") is None


def test_an_account_and_an_address_lock_after_more_tries_from_anywhere():
    now = [0.0]
    guard = SignInGuard(clock=lambda: now[0])
    for i in range(9):  # fresh pages, another address each: only the account counts up
        assert guard.failed(f"page-{i}", f"10.0.1.{i}", "ann", "wrong PIN").status == 401
    account = guard.failed("page-9", "10.0.1.9", "ann", "wrong PIN")
    assert account.status == 429 and "anywhere for user ann" in account.reason
    assert guard.locked("page-x", "10.0.2.1", "bob") is None
    for i in range(20):  # one address reloading for fresh sessions, several accounts
        decision = guard.failed(f"fresh-{i}", "10.0.3.3", f"user{i % 3}", "wrong PIN")
    assert decision.status == 429 and "this address (10.0.3.3)" in decision.reason
    assert guard.locked("fresh-new", "10.0.3.3", "carl") is not None
    guard.succeeded("page-ok", "10.0.4.4", "dora")
    assert guard.locked("page-ok", "10.0.4.4", "dora") is None


# ---------------------------------------------------------- the clinician's day
def test_the_day_summary_counts_doses_reasons_and_lows():
    import re
    import zlib

    from device.page.summary_pdf import summary_pdf
    from device.rules.daily_summary import adherence, summarise
    from domain.events import Event, Insulin, Kind

    day = T0.date()
    at = [T0.replace(hour=h, minute=0) for h in (7, 12, 18, 22)]
    events = [
        event_factory.glucose("r1", "p", at[0], 150),
        event_factory.glucose("r2", "p", at[1], 210),
        event_factory.glucose("r3", "p", at[2], 62),
        event_factory.glucose("r4", "p", at[2] + timedelta(minutes=16), 95),
        Event("lantus", "p", at[3], Kind.INSULIN, insulin=Insulin.NPH, units=12.0),
        event_factory.glucose("yesterday", "p", at[0] - timedelta(days=1), 40),
    ]
    s1 = replace(dose(units=4.0, at=at[0]), id="s-r1", event_id="r1")
    s2 = replace(dose(units=6.0, at=at[1]), id="s-r2", event_id="r2")
    s3 = replace(
        dose(units=5.0, at=at[2]), id="s-r3", event_id="r3", status="withhold", carbs_g=15.0, rules=["low_glucose"]
    )
    s3 = replace(s3, recheck_at=(at[2] + timedelta(minutes=15)).isoformat())
    responses = {
        "s-r1": Response("given", at[0].isoformat(), "ann", "nurse", units=4.0, event_id="bed-given-1"),
        "s-r2": Response(
            "given",
            at[1].isoformat(),
            "ann",
            "nurse",
            units=5.0,
            reason="other",
            note="cover lunch, half eaten before the dose, and the afternoon snack",
        ),
        "s-r3": Response("acknowledged", at[2].isoformat(), "bob", "patient"),
    }
    summary = summarise("p", day, WARD, events, [s1, s2, s3], responses)
    assert (summary.readings, summary.mean_mg_dl, summary.in_range_share) == (4, 129.2, 0.5)
    assert [d.response for d in summary.doses] == ["given", "given"]
    assert summary.adherence.followed == 1 and summary.adherence.given_different == 1
    assert summary.adherence.followed_share == 0.5 and summary.adherence.reasons == {"other": 1}
    low = summary.lows[0]
    assert (low.mg_dl, low.carbs_g, low.acknowledged_by, low.next_reading_mg_dl) == (62.0, 15.0, "bob", 95.0)
    assert [d.insulin for d in summary.other_doses] == ["nph"]
    assert summary.rules["low_glucose"] == 1 and summary.answers == {"suggest": 2, "withhold": 1}
    assert summary.rule_words["low_glucose"] == "low glucose: withheld and treated"
    none = adherence([s1, s2], {})
    assert (none.unanswered, none.followed_share) == (2, 0.0)

    pdf = summary_pdf(summary, "bed-7")
    assert pdf.startswith(b"%PDF-")
    text = b"".join(zlib.decompress(m.group(1)) for m in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.S))
    for expected in (b"Daily summary: patient p", b"Adherence: 1 of 2", b"Decision support", b"withheld and treated"):
        assert expected in text, expected
    words = set(re.findall(rb"\(([^()]*)\) ?Tj", text)) | set(re.findall(rb"\(([^()]*)\)", text))
    printed = b" ".join(words)
    for word in b"cover lunch, half eaten before the dose, and the afternoon snack".split():
        assert word in printed, f"the note is printed whole: {word!r} is missing"
    assert b"low_glucose" not in text, "rules in words, not codes"


def test_ward_adherence_by_patient_and_in_all():
    from device.rules.daily_summary import DoseAnswer, ward_adherence

    ts = T0.isoformat()
    a1, a2, b1 = DoseAnswer("s-a1", "a", ts, 4.0), DoseAnswer("s-a2", "a", ts, 2.0), DoseAnswer("s-b1", "b", ts, 6.0)
    given = Response("given", T0.isoformat(), "ann", "nurse", units=4.0)
    declined = Response("declined", T0.isoformat(), "ann", "nurse", reason="patient_refused")
    ward = ward_adherence(T0.date(), WARD, [(a1, given), (a2, None), (b1, declined)])
    assert (ward.patients["a"].followed, ward.patients["a"].unanswered, ward.patients["a"].followed_share) == (
        1,
        1,
        0.5,
    )
    assert ward.patients["b"].reasons == {"patient_refused": 1}
    assert (ward.total.suggested, ward.total.followed, ward.total.declined) == (3, 1, 1)


def test_an_answer_replaced_before_anyone_acted_is_not_counted_as_unanswered():
    from device.contract.messages import Retired
    from device.rules.daily_summary import summarise

    at = [T0.replace(hour=12, minute=m) for m in (0, 5, 40)]
    a = replace(dose(units=4.0, at=at[0]), id="s-a", event_id="a")
    b = replace(dose(units=3.0, at=at[1]), id="s-b", event_id="b")  # a newer answer 5 min later replaced a
    c = replace(dose(units=2.0, at=at[2]), id="s-c", event_id="c")  # a pen dose retired c
    pen = Retired("s-c", "pen-1", "insulin", at[2].isoformat(), "2 U of regular insulin was recorded at 12:41")
    summary = summarise("p", T0.date(), WARD, [], [a, b, c], {}, {"s-c": pen}, 900)
    assert [d.replaced for d in summary.doses] == [
        "a newer answer at 12:05 replaced it",
        None,
        "2 U of regular insulin was recorded at 12:41",
    ]
    assert (summary.adherence.replaced, summary.adherence.unanswered) == (2, 1)


# ---------------------------------------------------------------- who may record what
@pytest.mark.parametrize("pin", ["0000", "1111", "1234", "9876", "0123456", "aaaa", "123"])
def test_pins_anyone_would_try_first_are_refused(pin):
    from device.page.users import check_pin

    with pytest.raises(UserError):
        check_pin(pin)


@pytest.mark.parametrize("pin", ["4711", "2468", "1357", "9021", "hunter22"])
def test_other_pins_are_accepted(pin):
    from device.page.users import check_pin

    check_pin(pin)


def test_a_patient_user_belongs_to_one_patient():
    with pytest.raises(UserError, match="give --patient"):
        check_user("pat", "patient")
    with pytest.raises(UserError, match="not tied to a patient"):
        check_user("ann", "nurse", "p-1")
    check_user("pat", "patient", "p-1")
    pat = Identity("pat", "patient", "p-1")
    assert pat.refusal_for("p-1") is None
    assert pat.refusal_for("p-2") == "pat is the patient user of 'p-1' and records only for that patient"
    assert Identity("ann", "nurse").refusal_for("p-2") is None
    assert Identity("bedside", "patient").refusal_for("p-2") is None, "the shared PIN of a one-bed set-up"
    assert "no patient" in Identity("old", "patient").refusal_for("p-1")


def test_user_names_are_unique_regardless_of_case_and_keep_their_patient(tmp_path):
    from device.state.store import Store

    store = Store(tmp_path / "s.sqlite3")
    assert store.add_user("ann", "nurse", hash_pin("4711"))
    assert not store.add_user("Ann", "nurse", hash_pin("4712")), "'Ann' is 'ann'"
    assert store.add_user("pat", "patient", hash_pin("4711"), "p-1")
    assert store.user("pat").patient == "p-1" and store.user("ann").patient is None
    assert [u[0] for u in store.users()] == ["ann", "pat"]
