"""One live answer per need, and a screen that never invites a second dose — in a real Chromium.

A dose recorded another way or symptoms entered at the bedside retire the answer on the screen and
in the API; every dialog fits the bedside display and a phone; times are ward time whatever the
browser's zone; a reload keeps the nurse signed in. Real device process, real Mosquitto, the rows
checked in SQLite; screenshots go to test-artifacts/ (the key ones are in docs/bedside/).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from device.config import BrokerConfig
from device.contract.messages import ConfirmDose
from domain.events import Event, Insulin, Kind
from tools.mqtt_kit.client import DeviceWatcher, EventPublisher
from tools.ward.station import Station

from . import event_factory
from .device_process import DeviceProcess
from .page_kit import PHONE, SMALL, dose_waiting, rows, sign_in, wait_text

pytestmark = pytest.mark.e2e
ENTRY_KINDS = ("glucose", "meal", "hypo_symptoms", "exercise", "insulin", "nutrition", "profile")
OUTSIDE = """(w, h) => [...document.querySelectorAll('dialog[open] button, dialog[open] input, header > *')]
    .filter((e) => e.offsetParent !== null && !e.classList.contains('visually-hidden'))
    .filter((e) => { const r = e.getBoundingClientRect();
                     const dy = e.closest('dialog') ? 0 : window.scrollY;  // the header: where it is on the page
                     return r.left < 0 || r.top + dy < 0 || r.right > w + 0.5 || r.bottom + dy > h + 0.5
                            || e.scrollWidth > e.clientWidth + 1; })
    .map((e) => e.id || e.textContent.trim())"""


def test_a_dose_recorded_another_way_greys_the_suggestion(browser, bedside, artifacts):
    device, publisher, watcher = bedside
    suggestion = dose_waiting(device, publisher, watcher, "p-pen", "g-pen")
    assert suggestion.status == "suggest"
    page = browser.new_page(viewport=SMALL)
    page.goto(device.url + "?patient=p-pen")
    wait_text(page, "#status-word", "t === 'Suggested dose'")
    assert page.get_by_role("button", name="Dose given").is_visible()

    now = datetime.now(UTC)  # another nurse's pen dose, published by a sensor
    publisher.publish(Event("pen-6", "p-pen", now, Kind.INSULIN, insulin=Insulin.REGULAR, units=6.0))
    wait_text(page, "#status-word", "t === 'Suggested dose — no longer valid'")
    assert page.get_by_role("button", name="Dose given").is_hidden(), "nothing invites a second dose"
    assert page.inner_text("#state-line").startswith("Do not act on this: 6 U of regular insulin was recorded at")
    assert page.eval_on_selector("#suggestion", "b => b.className") == "expired"
    assert page.eval_on_selector("#units", "e => getComputedStyle(e).textDecorationLine") == "line-through"
    page.screenshot(path=str(artifacts / "bedside-800x480-retired.png"))

    view = device.view("p-pen")
    assert not view.actionable and view.retired is not None and view.retired.event_id == "pen-6"
    status, answer = device.post("api/patients/p-pen/confirm", ConfirmDose(suggestion.id, suggestion.units))
    assert status == 409 and "6 U of regular insulin was recorded" in answer.error
    assert rows(device, "SELECT count(*) FROM responses")[0][0] == 0, "nothing was recorded"
    assert rows(device, "SELECT event_id FROM audit WHERE action = 'retired'") == [("pen-6",)]
    page.get_by_role("button", name="Ward").click()
    wait_text(page, "#ward-rows", "t.includes('p-pen') && t.includes('no longer valid')")
    wait_text(page, "#adherence-rows", "t.includes('p-pen')")
    pen_row = next(r for r in page.inner_text("#adherence-rows").splitlines() if r.startswith("p-pen"))
    assert pen_row.split("\t")[1:7] == ["1", "0 (0 %)", "0", "0", "1", "0"], "replaced, not 'not answered'"
    page.close()


def test_symptoms_entered_replace_the_dose_with_a_withhold_at_once(browser, bedside, artifacts):
    device, publisher, watcher = bedside
    suggestion = dose_waiting(device, publisher, watcher, "p-hypo", "g-hypo")
    page = browser.new_page(viewport=SMALL)
    page.goto(device.url + "?patient=p-hypo")
    wait_text(page, "#status-word", "t === 'Suggested dose'")
    page.get_by_role("button", name="Symptoms").click()
    assert page.locator("#entry-number-row").is_hidden() and page.locator("#keypad").is_hidden(), "no Value field"
    assert page.locator("#entry-patient-row").is_hidden(), "the patient is chosen: no Patient id field"
    page.get_by_role("button", name="Record").click()

    wait_text(page, "#status-word", "t === 'Withhold insulin'")
    assert page.inner_text("#replaced").startswith("Replaces the earlier answer: hypoglycaemia symptoms were recorded")
    assert page.get_by_role("button", name="Dose given").is_hidden()
    assert page.inner_text("#next-check").startswith("Measure glucose now"), page.inner_text("#next-check")
    assert "measure glucose now" in page.inner_text("#reasons")
    page.screenshot(path=str(artifacts / "bedside-800x480-symptoms.png"))
    entered = rows(device, "SELECT id FROM events WHERE patient = 'p-hypo' AND kind = 'hypo_symptoms'")
    assert len(entered) == 1
    answer = watcher.suggestion_for(entered[0][0])
    assert answer is not None and answer.replaces is not None and answer.replaces.suggestion_id == suggestion.id
    status, refused = device.post("api/patients/p-hypo/confirm", ConfirmDose(suggestion.id, suggestion.units))
    assert status == 409 and "hypoglycaemia symptoms were recorded" in refused.error
    assert rows(device, "SELECT count(*) FROM responses")[0][0] == 0
    page.close()


@pytest.mark.parametrize("viewport", [SMALL, PHONE], ids=["800x480", "390x844"])
def test_every_dialog_and_the_header_fit_the_screen(browser, bedside, artifacts, viewport):
    """The SYNTHETIC badge and a signed-in nurse in the header; each entry, the reason and sign-in dialogs."""
    device, publisher, watcher = bedside
    device.add_user("nurse", "nurse", "2468")
    dose_waiting(device, publisher, watcher, "synthetic-fit", "g-fit")
    page = browser.new_page(viewport=viewport)
    page.goto(device.url + "?patient=synthetic-fit")
    wait_text(page, "#status-word", "t === 'Suggested dose'")
    assert page.locator("#synthetic").is_visible()
    assert page.inner_text("#patient-id") == "synthetic-fit", "the answer names its patient in full, as typed"
    assert page.eval_on_selector("#patient-id", "e => e.scrollWidth <= e.clientWidth + 1")
    width, height = viewport["width"], viewport["height"]
    name = f"{width}x{height}"

    page.get_by_role("button", name="Sign in").click()
    assert page.evaluate(OUTSIDE, [width, height]) == [], "the sign-in dialog"
    page.get_by_label("User or badge").fill("nurse")
    page.get_by_label("PIN").fill("2468")
    page.get_by_role("button", name="Sign in", exact=True).last.click()
    wait_text(page, "#user-button", "t === 'Sign out nurse'")
    assert page.evaluate(OUTSIDE, [width, height]) == [], "the header with the badge and the user"
    page.reload()  # a reload keeps the nurse signed in on this tab
    wait_text(page, "#user-button", "t === 'Sign out nurse'")
    wait_text(page, "#patient-id", "t === 'synthetic-fit'")

    for kind in ENTRY_KINDS:
        page.locator(f"[data-entry={kind}]").click()
        page.locator("#entry-dialog").wait_for(state="visible")
        assert page.evaluate(OUTSIDE, [width, height]) == [], f"the {kind} dialog"
        assert page.locator("#entry-patient-row").is_hidden()
        if kind in ("hypo_symptoms", "exercise", "nutrition"):
            assert page.locator("#keypad").is_hidden() and page.locator("#entry-number-row").is_hidden()
        if kind == "meal":
            page.screenshot(path=str(artifacts / f"bedside-{name}-meal-entry.png"))
        page.get_by_role("button", name="Cancel").click()
    page.get_by_role("button", name="Not given").click()
    page.locator("#reason-dialog").wait_for(state="visible")
    assert page.evaluate(OUTSIDE, [width, height]) == [], "the reason dialog"
    page.get_by_role("button", name="Cancel").click()
    page.screenshot(path=str(artifacts / f"bedside-{name}-nurse-header.png"))
    page.close()


def test_the_ward_on_a_phone_shows_every_cell(browser, bedside, artifacts):
    device, publisher, watcher = bedside
    dose_waiting(device, publisher, watcher, "p-w1", "g-w1")
    dose_waiting(device, publisher, watcher, "p-w2", "g-w2", mg_dl=60)
    page = browser.new_page(viewport=PHONE, is_mobile=True)
    page.goto(device.url + "?view=ward")
    wait_text(page, "#ward-rows", "t.includes('p-w1') && t.includes('p-w2')")
    wait_text(page, "#adherence-rows", "t.includes('All patients')")
    cut = page.evaluate(
        """() => [...document.querySelectorAll('#ward td')].filter((td) => td.getBoundingClientRect().right > 390.5
            || td.scrollWidth > td.clientWidth + 1).map((td) => td.textContent)"""
    )
    assert cut == [] and page.evaluate("document.documentElement.scrollWidth") <= 390
    # each cell is labelled on a phone; the rows are re-rendered on every refresh, so read a rendered one
    page.wait_for_function(
        """() => { const td = document.querySelector('#ward-rows td');
            return td && getComputedStyle(td, '::before').content === '"Patient: "'; }""",
        timeout=20000,
    )
    page.screenshot(path=str(artifacts / "ward-phone.png"), full_page=True)
    page.close()


def test_times_are_ward_time_whatever_the_browser_s_zone(browser, mosquitto, tmp_path, artifacts):
    """A Berlin ward seen from a New York browser: entries are not flagged, the station shows Berlin times."""
    config = tmp_path / "device.toml"
    config.write_text('timezone = "Europe/Berlin"\n')
    device = DeviceProcess(tmp_path / "state", mosquitto.url, "berlin1", extra=("--config", str(config))).start()
    broker = BrokerConfig(url=mosquitto.url)
    publisher, watcher = EventPublisher(broker, "berlin1"), DeviceWatcher(broker, "berlin1")
    station = Station(broker, ["berlin1"], "127.0.0.1", 0)
    station.start()
    try:
        publisher.wait_connected()
        assert watcher.subscribed.wait(5) and station.subscriber.subscribed.wait(5)
        publisher.publish(event_factory.glucose("g-b0", "p-ber", datetime.now(ZoneInfo("Europe/Berlin")), 140))
        assert watcher.wait_for(lambda w: w.suggestion_for("g-b0"), 8)
        context = browser.new_context(viewport=SMALL, timezone_id="America/New_York")
        page = context.new_page()
        page.goto(device.url + "?patient=p-ber")
        wait_text(page, "#glucose", "t === '140 mg/dL'")
        page.get_by_role("button", name="Glucose", exact=True).click()
        page.locator("#entry-choices .choice").last.click()
        for key in ("1", "2", "0"):
            page.get_by_role("button", name=key, exact=True).click()
        page.get_by_role("button", name="Record").click()
        wait_text(page, "#glucose", "t === '120 mg/dL'")
        (event_id, payload) = rows(device, "SELECT id, payload FROM events WHERE id LIKE 'page-%'")[0]
        assert watcher.wait_for(lambda w: w.suggestion_for(event_id), 8)
        assert watcher.error_for_id(event_id) is None, "a page entry is in ward time: no wrong-zone warning"
        assert json.loads(payload)["ts"].endswith("+01:00")
        answer = watcher.suggestion_for(event_id)
        assert answer is not None and answer.next_check_at is not None
        due = datetime.fromisoformat(answer.next_check_at)
        berlin, new_york = (
            due.astimezone(ZoneInfo(z)).strftime("%H:%M") for z in ("Europe/Berlin", "America/New_York")
        )
        assert berlin != new_york
        wait_text(page, "#next-check", f"t.includes('by {berlin}')")

        screen = context.new_page()
        screen.goto(station.url)
        wait_text(screen, "#devices", f"t.includes('p-ber') && t.includes('by {berlin}')")
        assert f"by {new_york}" not in screen.inner_text("#devices")
        assert "ward time Europe/Berlin" in screen.inner_text("#updated")
        screen.screenshot(path=str(artifacts / "station-new-york-browser.png"))
        context.close()
    finally:
        station.stop()
        publisher.close()
        watcher.close()
        device.stop()


def test_the_day_page_lists_every_insulin_and_reads_plainly(browser, bedside, artifacts):
    device, publisher, watcher = bedside
    dose_waiting(device, publisher, watcher, "p-day", "g-day")
    now = datetime.now(UTC)
    for event_id, insulin, units in (("d-reg", Insulin.REGULAR, 8.0), ("d-nph", Insulin.NPH, 14.0)):
        publisher.publish(Event(event_id, "p-day", now, Kind.INSULIN, insulin=insulin, units=units))
    assert watcher.wait_for(lambda w: len(rows(device, "SELECT 1 FROM events WHERE id LIKE 'd-%'")) == 2, 8)
    page = browser.new_page(viewport=SMALL)
    responses: list[tuple[int, str]] = []
    page.on("response", lambda r: responses.append((r.status, r.url)))
    page.goto(device.url + "?patient=p-day&view=day")
    wait_text(page, "#day-other", "t.includes('NPH 14.0 U') && t.includes('regular 8.0 U')")
    today = datetime.now(UTC).date()
    assert page.input_value("#day-date") == today.isoformat(), "the date reads YYYY-MM-DD in any browser locale"
    assert "_" not in page.inner_text("#day-rules"), "rules in words, not codes"
    page.get_by_role("button", name="Previous day").click()
    wait_text(page, "#day-other", "t.includes('regular 7.0 U') && !t.includes('NPH')")  # yesterday's routine dose
    assert page.input_value("#day-date") == (today - timedelta(days=1)).isoformat()
    page.get_by_role("button", name="Next day").click()
    wait_text(page, "#day-other", "t.includes('NPH 14.0 U')")
    page.screenshot(path=str(artifacts / "day-summary-other-insulin-800x480.png"))
    assert [r for r in responses if r[0] >= 400] == [], "no request fails, the icon included"
    page.close()


@pytest.mark.parametrize(
    ("ward_time", "offered", "context"),
    [("21:58", ["Bedtime or night"], "unspecified"), ("12:25", ["Before lunch", "Not before a meal"], "pre_lunch")],
)
def test_a_reading_is_before_a_meal_only_when_said_and_never_at_night(
    browser, mosquitto, tmp_path, ward_time, offered, context
):
    """At 21:58 a reading is a bedtime one (no meal dose due); at 12:25 the nurse must say "before lunch"."""
    device = DeviceProcess(tmp_path / "state", mosquitto.url, "bed-ctx", clock="event").start()
    broker = BrokerConfig(url=mosquitto.url)
    publisher, watcher = EventPublisher(broker, "bed-ctx"), DeviceWatcher(broker, "bed-ctx")
    try:
        publisher.wait_connected()
        assert watcher.subscribed.wait(5)
        hour, minute = (int(x) for x in ward_time.split(":"))
        t0 = datetime(2026, 11, 20, hour, minute, tzinfo=UTC)
        for event in event_factory.history("p-ctx", t0):
            publisher.publish(event)
        publisher.publish(event_factory.glucose("g-ctx", "p-ctx", t0, 150, "unspecified"))
        assert watcher.wait_for(lambda w: w.suggestion_for("g-ctx"), 8)
        page = browser.new_page(viewport=SMALL)
        page.goto(device.url + "?patient=p-ctx")
        wait_text(page, "#glucose", "t === '150 mg/dL'")
        page.get_by_role("button", name="Glucose", exact=True).click()
        choices = page.locator("#entry-choices .choice")
        assert choices.all_inner_texts() == offered
        pressed = [b.get_attribute("aria-pressed") for b in choices.all()]
        assert pressed == (["true"] if len(offered) == 1 else ["false", "false"]), "never a meal by default"
        for key in ("1", "6", "5"):
            page.get_by_role("button", name=key, exact=True).click()
        if len(offered) > 1:
            page.get_by_role("button", name="Record").click()
            assert page.inner_text("#entry-error") == "Say whether the reading is before a meal."
            choices.first.click()
        page.get_by_role("button", name="Record").click()
        wait_text(page, "#glucose", "t === '165 mg/dL'")
        stored = rows(device, "SELECT payload FROM events WHERE id LIKE 'page-%'")
        assert json.loads(stored[0][0])["context"] == context
        page.close()
    finally:
        publisher.close()
        watcher.close()
        device.stop()


def test_the_page_says_recorded_only_for_what_the_device_stored(browser, bedside, artifacts):
    """A case twin typed as a new patient is refused in the dialog; a second dose is recorded with a check."""
    device, publisher, watcher = bedside
    suggestion = dose_waiting(device, publisher, watcher, "p-ok", "g-ok")
    page = browser.new_page(viewport=SMALL)
    page.goto(device.url)
    wait_text(page, "#status-word", "t === 'Choose a patient'")
    page.get_by_role("button", name="Glucose", exact=True).click()
    page.get_by_label("Patient id").fill("P-OK")
    page.locator("#entry-choices .choice").last.click()
    for key in ("1", "2", "0"):
        page.get_by_role("button", name=key, exact=True).click()
    page.get_by_role("button", name="Record").click()
    wait_text(page, "#entry-error", "t.startsWith('not recorded: patient \\'P-OK\\' differs from the known patient')")
    assert page.locator("#entry-dialog").evaluate("d => d.open"), "the dialog stays open: nothing was recorded"
    assert rows(device, "SELECT count(*) FROM events WHERE patient = 'P-OK'")[0][0] == 0
    page.get_by_role("button", name="Cancel").click()

    page.goto(device.url + "?patient=p-ok")
    wait_text(page, "#status-word", "t === 'Suggested dose'")
    page.get_by_role("button", name="Dose given").click()
    wait_text(page, "#message", "t.startsWith('Recorded:')")
    page.get_by_role("button", name="Manual dose").click()
    page.get_by_label("Units", exact=True).fill(f"{suggestion.units:g}")
    page.get_by_role("button", name="Record").click()
    wait_text(page, "#message", "t.includes('⚠ Check: likely duplicate dose')")
    page.screenshot(path=str(artifacts / "bedside-800x480-second-dose-check.png"))
    assert rows(
        device, "SELECT count(*) FROM events WHERE patient = 'p-ok' AND kind = 'insulin' AND id LIKE 'page-%'"
    ) == [(1,)]
    page.close()


def test_a_patient_user_is_tied_to_one_patient_over_http(bedside):
    device, publisher, watcher = bedside
    device.add_user("ann", "nurse", "4711")
    device.add_user("pat", "patient", "4711", patient="p-own")
    mine = dose_waiting(device, publisher, watcher, "p-own", "g-own")
    theirs = dose_waiting(device, publisher, watcher, "p-other", "g-other")
    session = device.signed_in("pat", "4711")
    status, refused = device.post(
        "api/patients/p-other/confirm", ConfirmDose(theirs.id, 20.0, reason="clinicians_order"), session=session
    )
    assert status == 403 and "records only for that patient" in refused.error
    back = event_factory.raw(
        Event(
            "page-back",
            "p-own",
            datetime.now(UTC) - timedelta(days=6),
            Kind.INSULIN,
            insulin=Insulin.REGULAR,
            units=5.0,
        )
    )
    status, refused = device.post("api/events", back, session=session)
    assert status == 403 and "needs a nurse" in refused.error
    status, done = device.post(
        "api/patients/p-own/confirm", ConfirmDose(mine.id, mine.units, eating=True), session=session
    )
    assert status == 200 and done.ok
    assert rows(device, "SELECT suggestion_id FROM responses") == [(mine.id,)]
    with pytest.raises(AssertionError, match="consecutive digits"):
        device.add_user("bob", "nurse", "1234")
    with pytest.raises(AssertionError, match="other letter case"):
        device.add_user("ANN", "nurse", "4712")


def test_a_nurse_gives_a_reason_for_a_dose_above_the_limit(browser, bedside):
    device, publisher, watcher = bedside
    device.add_user("ann", "nurse", "4711")
    dose_waiting(device, publisher, watcher, "p-big", "g-big")
    page = browser.new_page(viewport=SMALL)
    page.goto(device.url + "?patient=p-big")
    wait_text(page, "#status-word", "t === 'Suggested dose'")
    sign_in(page, "ann", "4711")
    asked: list[str] = []

    def answer(dialog) -> None:
        asked.append(dialog.message)
        dialog.accept("surgery team's order, written")

    page.on("dialog", answer)
    page.get_by_role("button", name="Manual dose").click()
    page.get_by_label("Units", exact=True).fill("25")
    page.get_by_role("button", name="Record").click()
    wait_text(page, "#message", "t.startsWith('Recorded: dose given')")
    assert asked and "above this patient's single-dose limit of 20 U" in asked[0]
    entered = rows(device, "SELECT detail FROM audit WHERE action = 'entered'")
    assert json.loads(entered[-1][0])["reason"] == "surgery team's order, written"
    page.close()


def test_a_nurse_starts_a_new_patient_from_the_weight(browser, bedside):
    """No history on the device: the weight entered on the page gives the first meal reading a dose."""
    device, publisher, watcher = bedside
    device.add_user("ann", "nurse", "4711")
    page = browser.new_page(viewport=SMALL)
    page.goto(device.url + "?patient=p-new")
    sign_in(page, "ann", "4711")
    page.get_by_role("button", name="Weight (profile)").click()
    page.get_by_label("Body weight, kg").fill("72")
    page.get_by_role("button", name="Type 2").click()
    page.get_by_role("button", name="Record").click()
    wait_text(page, "#message", "t.startsWith('Recorded:')")
    stored = rows(device, "SELECT payload FROM events WHERE patient = 'p-new' AND kind = 'profile'")
    assert [json.loads(p)["weight_kg"] for (p,) in stored] == [72] and json.loads(stored[0][0])[
        "diabetes_type"
    ] == "type2"
    now = datetime.now(UTC)
    publisher.publish(Event("m-new", "p-new", now, Kind.MEAL, size="typical"))
    # 120 mg/dL: a first reading of the morning is the fasting one, and in 100-140 it moves no basal
    publisher.publish(event_factory.glucose("g-new", "p-new", now, 120))
    assert watcher.wait_for(lambda w: w.suggestion_for("g-new"), 8)
    answer = watcher.suggestion_for("g-new")
    assert answer.status == "suggest" and answer.rules[0] == "plan_meal" and answer.units > 0, answer.reasons
    wait_text(page, "#status-word", "t === 'Suggested dose'")
    assert page.inner_text("#plan-line").startswith("Plan: basal 18.0 U a day; breakfast 6.0 U")
    page.get_by_role("button", name="Eating or not").click()
    page.get_by_role("button", name="Nothing by mouth").click()
    page.get_by_role("button", name="Record").click()
    wait_text(page, "#replaced", "t.includes('nothing by mouth')")  # the dose is replaced: no meal insulin
    assert page.inner_text("#units") == "No insulin now"
    wait_text(page, "#plan-line", "t.endsWith('· nothing by mouth')")
    page.close()
