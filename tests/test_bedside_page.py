"""The bedside page in a real headless Chromium (Debian package), driven by Playwright.

Events go in over MQTT through a real Mosquitto to a real device process; each test follows one
nurse's flow on the page, checks what the screen says and the rows the device wrote in SQLite,
and saves screenshots as test artifacts (800×480, the bedside display, and a phone).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest

from device.config import BrokerConfig
from device.contract.messages import ActionDone, ConfirmDose
from tools.mqtt_kit.client import DeviceWatcher, EventPublisher
from tools.ward.station import Station

from . import event_factory
from .device_process import DeviceProcess, configured_device
from .page_kit import SMALL, colours, contrast, dose_waiting, rows, wait_text

pytestmark = pytest.mark.e2e


def test_a_dose_is_given_once_and_the_page_says_by_whom(browser, bedside, artifacts):
    device, publisher, watcher = bedside
    suggestion = dose_waiting(device, publisher, watcher, "p-1", "g-now")
    assert suggestion.status == "suggest" and suggestion.next_check_at

    page = browser.new_page(viewport=SMALL)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(device.url + "?patient=p-1")
    wait_text(page, "#status-word", "t === 'Suggested dose'")
    assert page.inner_text("#units") == f"{suggestion.units:.1f} U"
    assert page.inner_text("#glucose") == "180 mg/dL"
    assert page.inner_text("#usual") == "7.0 U"
    assert "Model estimate" in page.inner_text("#reasons")
    assert page.inner_text("#next-check").startswith("Next check by")
    assert page.inner_text("#valid").startswith(" · valid until") or "VALID UNTIL" in page.inner_text("#valid")
    assert "not a certified medical device" in page.inner_text("body")
    assert page.is_hidden("#risk"), "companion risk is for signed-in clinicians only"
    assert "regular insulin (U)" in page.inner_text(".legend")
    for selector in ("#status-word", "#units", "#reasons", "#glucose", ".notice", "#next-check", "#suggestion-title"):
        fg, bg = colours(page, selector)
        assert contrast(fg, bg) >= 4.5, f"{selector}: {fg} on {bg}"
    page.screenshot(path=str(artifacts / "bedside-800x480-suggest-full.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollHeight") <= 480 + 2, "800×480 needs no scrolling"
    header = page.eval_on_selector("header", "h => h.getBoundingClientRect().height")
    assert header < 48, "the header stays on one line at 800×480"
    footer = page.eval_on_selector("footer", "f => f.getBoundingClientRect().bottom")
    assert footer <= 480, "the footer is on the screen"
    page.screenshot(path=str(artifacts / "bedside-800x480-suggest.png"))

    page.get_by_role("button", name="mg/dL").click()
    wait_text(page, "#glucose", "t === '10.0 mmol/L'")
    assert "mg/dL" not in page.inner_text("#reasons"), "reasons follow the chosen unit"
    page.get_by_role("button", name="mmol/L").click()
    wait_text(page, "#glucose", "t === '180 mg/dL'")

    heights = page.eval_on_selector_all(
        "button.action", "bs => bs.filter(b => b.offsetParent).map(b => b.offsetHeight)"
    )
    assert heights and min(heights) >= 44, f"touch targets: {heights}"
    page.focus("#given-units")  # by keyboard: the units, Tab to "Dose given", Enter
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "confirm"
    page.keyboard.press("Enter")
    wait_text(page, "#response", f"t.startsWith('{suggestion.units:.1f} U given at') && t.endsWith('by bedside')")
    assert page.get_by_role("button", name="Dose given").is_hidden(), "a dose is given once"
    page.screenshot(path=str(artifacts / "bedside-800x480-given.png"))
    page.reload()
    wait_text(page, "#response", "t.includes('given at')")  # still shown after a reload
    assert page.get_by_role("button", name="Dose given").is_hidden()

    given = rows(device, "SELECT payload FROM events WHERE id LIKE 'bed2-given-%'")
    assert len(given) == 1 and json.loads(given[0][0])["units"] == suggestion.units
    audit = rows(device, "SELECT action, suggestion_id, detail FROM audit WHERE action = 'dose_given'")
    assert [(a, s) for a, s, _ in audit] == [("dose_given", suggestion.id)]
    assert json.loads(audit[0][2])["user"] == "bedside"
    again = device.post("api/patients/p-1/confirm", ConfirmDose(suggestion.id, suggestion.units))
    assert again[0] == 409 and "already given by bedside" in again[1].error
    assert len(rows(device, "SELECT 1 FROM events WHERE id LIKE 'bed2-given-%'")) == 1

    # a low arrives: withhold, carbohydrate, recheck in 15 min, the next check is the recheck
    publisher.publish(event_factory.glucose("g-low", "p-1", datetime.now(UTC), 55))
    wait_text(page, "#status-word", "t === 'Withhold insulin'")
    assert page.inner_text("#units") == "No insulin now"
    assert page.inner_text("#carbs") == "Give 15 g of fast-acting carbohydrate now"
    assert page.inner_text("#recheck").startswith("Recheck glucose by")
    assert "(in 14 min)" in page.inner_text("#next-check") or "(in 15 min)" in page.inner_text("#next-check")
    page.screenshot(path=str(artifacts / "bedside-800x480-withhold.png"))
    page.get_by_role("button", name="Acknowledge").click()
    wait_text(page, "#response", "t.startsWith('Acknowledged at') && t.endsWith('by bedside')")
    assert rows(device, "SELECT suggestion_id FROM responses WHERE action = 'acknowledged'") == [("s-g-low",)]
    assert all(url.startswith(device.url) for url in requests), "the page contacted another origin"
    page.close()


def test_a_late_answer_for_the_patient_before_never_shows_under_the_next(browser, bedside):
    """The nurse steps from p-a to p-b while p-a's view is still on its way: p-a's dose must not appear."""
    device, publisher, watcher = bedside
    dose = dose_waiting(device, publisher, watcher, "p-a", "g-a")
    assert dose.status == "suggest"
    publisher.publish(event_factory.glucose("g-b", "p-b", datetime.now(UTC), 120, context="unspecified"))
    assert watcher.wait_for(lambda w: w.suggestion_for("g-b"), 8)
    page = browser.new_page(viewport=SMALL)
    page.goto(device.url + "?patient=p-b")
    page.wait_for_function("() => document.getElementById('suggestion').dataset.patient === 'p-b'")
    page.wait_for_function("() => [...document.querySelectorAll('#patient option')].some(o => o.value === 'p-a')")
    held = []
    page.route("**/api/patients/p-a", lambda route: held.append(route))
    with page.expect_request("**/api/patients/p-a"):
        page.select_option("#patient", "p-a")
    page.select_option("#patient", "p-b")
    page.wait_for_function("() => document.getElementById('suggestion').dataset.patient === 'p-b'")
    with page.expect_response("**/api/patients/p-a") as late:
        held[0].continue_()
    late.value.finished()
    page.evaluate("() => new Promise((done) => setTimeout(done, 100))")  # let the page handle what arrived
    assert page.eval_on_selector("#suggestion", "el => el.dataset.patient") == "p-b"
    assert page.input_value("#patient") == "p-b" and page.inner_text("#status-word") != "Suggested dose"
    page.close()


def test_a_different_dose_or_none_needs_a_reason(browser, bedside, artifacts):
    device, publisher, watcher = bedside
    suggestion = dose_waiting(device, publisher, watcher, "p-2", "g-a")
    status, answer = device.post("api/patients/p-2/confirm", ConfirmDose(suggestion.id, suggestion.units - 0.5))
    assert status == 400 and "give a reason" in answer.error
    status, answer = device.post(
        "api/patients/p-2/confirm", ConfirmDose(suggestion.id, suggestion.units + 0.3, reason="not_eating")
    )
    assert status == 400 and "pen steps" in answer.error

    page = browser.new_page(viewport=SMALL)
    page.goto(device.url + "?patient=p-2")
    wait_text(page, "#status-word", "t === 'Suggested dose'")
    assert suggestion.meal_first, "a pre-meal reading with no meal recorded"
    assert page.is_visible("#eating-ask") and "is the patient eating this meal?" in page.inner_text("#eating-ask")
    assert page.inner_text("#confirm") == "Eating: dose given"
    page.get_by_label("Units given").fill(f"{suggestion.units - 0.5:g}")
    page.get_by_role("button", name="Dose given").click()
    dialog = page.locator("#reason-dialog")
    dialog.wait_for(state="visible")
    page.screenshot(path=str(artifacts / "bedside-800x480-reason.png"))
    page.get_by_role("button", name="Record").click()
    assert page.inner_text("#reason-error") == "Choose a reason."
    page.get_by_role("button", name="Not eating").click()
    page.get_by_role("button", name="Record").click()
    wait_text(page, "#response", "t.includes('given at') && t.includes('(not eating)')")
    given, suggested = f"{suggestion.units - 0.5:.1f} U given", f"Suggested {suggestion.units:.1f} U at"
    assert page.inner_text("#units") == given, "what was given is the big line, not the suggestion"
    assert page.inner_text("#status-word") == "Dose given" and page.inner_text("#suggested-line").startswith(suggested)
    assert page.eval_on_selector("#units", "e => parseFloat(getComputedStyle(e).fontSize)") > 40
    page.screenshot(path=str(artifacts / "bedside-800x480-given-other-units.png"))
    stored = rows(device, "SELECT action, payload FROM responses WHERE suggestion_id = ?", suggestion.id)
    assert stored[0][0] == "given"
    assert json.loads(stored[0][1])["reason"] == "not_eating"
    assert json.loads(stored[0][1])["units"] == suggestion.units - 0.5
    meals = rows(device, "SELECT kind FROM events WHERE patient = 'p-2' AND kind = 'meal'")
    assert meals == [("meal",)], "the meal the nurse confirmed is recorded with the dose"

    # the clinician's day: the dose, its reason and the adherence, on the page and as a PDF
    page.get_by_role("button", name="Day", exact=True).click()
    wait_text(page, "#day-doses", "t.includes('not eating')")
    assert "Followed 0 of 1 suggested doses (0 %); 1 with other units" in page.inner_text("#day-adherence")
    page.screenshot(path=str(artifacts / "day-summary-800x480.png"))
    with page.expect_download() as download:
        page.get_by_role("link", name="PDF").click()
    pdf = download.value.path().read_bytes()
    assert pdf.startswith(b"%PDF-") and len(pdf) > 1000
    page.get_by_role("button", name="Day", exact=True).click()

    # another patient's dose is declined: the patient refused
    later = dose_waiting(device, publisher, watcher, "p-2b", "g-b", mg_dl=200)
    page.goto(device.url + "?patient=p-2b")
    wait_text(page, "#status-word", "t === 'Suggested dose'")
    page.get_by_role("button", name="Not given").click()
    page.get_by_role("button", name="Patient refused").click()
    page.get_by_label("Note").fill("wants to eat first")
    page.get_by_role("button", name="Record").click()
    wait_text(
        page, "#response", "t.startsWith('Not given: declined') && t.includes('patient refused: wants to eat first')"
    )
    assert page.inner_text("#units") == "Not given" and page.inner_text("#status-word") == "Dose not given"
    assert page.eval_on_selector("#suggestion", "b => b.className") == "declined"
    page.screenshot(path=str(artifacts / "bedside-800x480-declined.png"))
    declined = rows(device, "SELECT detail FROM audit WHERE action = 'dose_declined' AND suggestion_id = ?", later.id)
    assert json.loads(declined[0][0])["note"] == "wants to eat first"

    # adherence over the ward, by patient and by reason
    page.get_by_role("button", name="Ward").click()
    wait_text(page, "#adherence-rows", "t.includes('All patients')")
    lines = {r.split("\t")[0]: r.split("\t") for r in page.inner_text("#adherence-rows").splitlines()}
    assert lines["p-2"][1:] == ["1", "0 (0 %)", "1", "0", "0", "0", "not eating 1"]
    assert lines["p-2b"][1:] == ["1", "0 (0 %)", "0", "1", "0", "0", "patient refused 1"]
    assert lines["All patients"][1:4] == ["2", "0 (0 %)", "1"]
    page.screenshot(path=str(artifacts / "ward-adherence-800x480.png"))
    page.close()


def test_a_dose_not_given_in_time_expires_visibly(browser, mosquitto, tmp_path, artifacts):
    """The reading behind a suggestion turns 16 min old (limit 15): the page greys it out, the API refuses it."""
    device = DeviceProcess(tmp_path / "state", mosquitto.url, "bed-x", clock="event").start()
    broker = BrokerConfig(url=mosquitto.url)
    publisher, watcher = EventPublisher(broker, "bed-x"), DeviceWatcher(broker, "bed-x")
    try:
        publisher.wait_connected()
        assert watcher.subscribed.wait(5)
        t0 = datetime(2026, 11, 20, 11, 20, tzinfo=UTC)
        for event in event_factory.history("p-old", t0):
            publisher.publish(event)
        publisher.publish(event_factory.glucose("g-old", "p-old", t0, 180))
        assert watcher.wait_for(lambda w: w.suggestion_for("g-old"), 8)
        suggestion = watcher.suggestion_for("g-old")
        assert suggestion.status == "suggest"
        page = browser.new_page(viewport=SMALL)
        page.goto(device.url + "?patient=p-old")
        wait_text(page, "#status-word", "t === 'Suggested dose'")
        assert page.get_by_role("button", name="Dose given").is_visible()
        publisher.publish(event_factory.glucose("other", "p-other", t0 + timedelta(minutes=16), 120))  # time moves on
        assert watcher.wait_for(lambda w: w.suggestion_for("other"), 8)
        page.reload()
        wait_text(page, "#status-word", "t === 'Suggested dose — expired'")
        assert page.get_by_role("button", name="Dose given").is_hidden()
        assert page.inner_text("#state-line").startswith("Do not act on this: expired at 11:35")
        assert page.inner_text("#next-check") == "Measure glucose now for a new answer (the dose expired at 11:35)"
        assert page.eval_on_selector("#suggestion", "b => b.className") == "expired"
        page.screenshot(path=str(artifacts / "bedside-800x480-expired.png"))
        status, answer = device.post("api/patients/p-old/confirm", ConfirmDose(suggestion.id, suggestion.units))
        assert status == 409 and "expired at 11:35" in answer.error
        assert rows(device, "SELECT count(*) FROM responses")[0][0] == 0
        page.close()
    finally:
        publisher.close()
        watcher.close()
        device.stop()


def test_entries_at_the_bedside_take_the_sensor_s_path(browser, bedside, artifacts):
    device, _publisher, watcher = bedside
    page = browser.new_page(viewport=SMALL)
    page.goto(device.url)
    wait_text(page, "#status-word", "t === 'Choose a patient'")
    page.get_by_role("button", name="Glucose", exact=True).click()
    page.get_by_label("Patient id").fill("p-new")
    page.locator("#entry-choices .choice").last.click()  # not before a meal (or, at night, the only choice)
    for key in ("1", "5", "0"):
        page.get_by_role("button", name=key, exact=True).click()
    page.screenshot(path=str(artifacts / "bedside-800x480-entry.png"))
    page.get_by_role("button", name="Record").click()
    wait_text(page, "#glucose", "t === '150 mg/dL'")
    assert page.get_by_label("Patient", exact=True).input_value() == "p-new"
    stored = rows(device, "SELECT id, payload FROM events WHERE patient = 'p-new' AND kind = 'glucose'")
    assert len(stored) == 1 and stored[0][0].startswith("page-") and json.loads(stored[0][1])["mg_dl"] == 150
    assert watcher.wait_for(lambda w: w.suggestion_for(stored[0][0]), 5), "the device answered the entry"
    wait_text(page, "#status-word", "t === 'No dose due now'")  # a first reading, not before a meal
    assert page.inner_text("#units") == "No insulin now"
    entered = rows(device, "SELECT detail FROM audit WHERE action = 'entered' AND event_id = ?", stored[0][0])
    assert json.loads(entered[0][0])["user"] == "bedside"

    # a meal with grams, then a manual dose (the physician's plan), in mmol/L mode a reading
    page.get_by_role("button", name="Meal", exact=True).click()
    page.get_by_role("button", name="Larger than usual").click()
    for key in ("6", "0"):
        page.get_by_role("button", name=key, exact=True).click()
    page.get_by_role("button", name="Record").click()
    page.wait_for_function("() => !document.getElementById('entry-dialog').open")
    page.get_by_role("button", name="Manual dose").click()
    page.get_by_label("Units", exact=True).fill("4")
    page.get_by_role("button", name="Record").click()
    page.wait_for_function("() => !document.getElementById('entry-dialog').open")
    page.get_by_role("button", name="mg/dL").click()
    page.get_by_role("button", name="Glucose", exact=True).click()
    page.get_by_label("Glucose (mmol/L)").fill("4.5")
    page.locator("#entry-choices .choice").last.click()  # not before a meal (or, at night, the only choice)
    page.get_by_role("button", name="Record").click()
    wait_text(page, "#glucose", "t === '4.5 mmol/L'")
    kinds = rows(device, "SELECT kind, payload FROM events WHERE patient = 'p-new' ORDER BY seq")
    meal = json.loads(next(p for k, p in kinds if k == "meal"))
    dose = json.loads(next(p for k, p in kinds if k == "insulin"))
    assert (meal["size"], meal["carbs_g"]) == ("more", 60) and (dose["insulin"], dose["units"]) == ("regular", 4)
    assert json.loads(kinds[-1][1])["mg_dl"] == pytest.approx(4.5 * 18.0182, abs=0.5)
    page.get_by_role("button", name="Symptoms").click()
    page.get_by_role("button", name="Record").click()
    page.wait_for_function("() => !document.getElementById('entry-dialog').open")
    page.get_by_role("button", name="Exercise").click()
    page.get_by_role("button", name="Harder than usual").click()
    page.get_by_role("button", name="Record").click()
    page.wait_for_function("() => !document.getElementById('entry-dialog').open")
    page.get_by_role("button", name="Glucose", exact=True).click()
    page.get_by_label("Glucose (mmol/L)").fill("45")  # mg/dL typed on a mmol/L page: caught at entry
    page.locator("#entry-choices .choice").last.click()  # not before a meal (or, at night, the only choice)
    page.get_by_role("button", name="Record").click()
    wait_text(page, "#entry-error", "t.startsWith('45 mmol/L is above what a meter shows (33.3 mmol/L)')")
    page.get_by_label("Glucose (mmol/L)").fill("25")
    page.get_by_role("button", name="Record").click()
    wait_text(page, "#glucose", "t === '25.0 mmol/L'")
    wait_text(page, "#chart .off-scale", "t === '▲25.0'")  # above the chart's 400 mg/dL: marked, not clipped silently
    kinds = [k for (k,) in rows(device, "SELECT kind FROM events WHERE patient = 'p-new' ORDER BY seq")]
    assert "hypo_symptoms" in kinds and "exercise" in kinds
    status, answer = device.post("api/events", b'{"id": "x", "patient": "p-new", "kind": "glucose"}')
    assert status == 400 and "'ts'" in answer.error
    page.close()


def test_users_roles_and_companion_risk_for_nurses_only(browser, bedside, artifacts):
    device, publisher, watcher = bedside
    device.add_user("ann", "nurse", "4711")
    device.add_user("vic", "viewer", "2468")
    suggestion = dose_waiting(device, publisher, watcher, "p-r", "g-r")
    publisher.publish_visit_history(
        event_factory.visit_history(
            "p-r", ("2131-03-02T08:00:00+00:00", "2131-03-09T15:00:00+00:00", ["dx9:4280", "rx:furosemide"])
        )
    )
    assert watcher.wait_for(lambda w: w.risk, 8)
    assert device.view("p-r").risk is None, "no risk without a signed-in nurse"
    assert device.view("p-r", device.signed_in("ann", "4711")).risk is not None
    status, answer = device.post("api/patients/p-r/confirm", ConfirmDose(suggestion.id, suggestion.units))
    assert status == 401 and "sign in" in answer.error
    viewer = device.signed_in("vic", "2468")
    status, answer = device.post(
        "api/patients/p-r/confirm", ConfirmDose(suggestion.id, suggestion.units), session=viewer
    )
    assert status == 403 and "viewer" in answer.error

    page = browser.new_page(viewport=SMALL)
    page.goto(device.url + "?patient=p-r")
    wait_text(page, "#status-word", "t === 'Suggested dose'")
    assert page.is_hidden("#risk")
    page.get_by_role("button", name="Dose given").click()  # not signed in: the page asks who
    page.locator("#sign-in-dialog").wait_for(state="visible")
    page.get_by_label("User or badge").fill("ann")
    page.get_by_label("PIN").fill("0000")
    page.get_by_role("button", name="Sign in", exact=True).last.click()
    wait_text(page, "#sign-in-error", "t === 'unknown user or wrong PIN'")
    page.get_by_label("PIN").fill("4711")
    page.get_by_role("button", name="Sign in", exact=True).last.click()
    wait_text(page, "#response", "t.endsWith('by ann')")
    wait_text(page, "#user-button", "t === 'Sign out ann'")
    wait_text(page, "#risk-demo", "t.startsWith('Demo-trained')")
    assert "does not change the dose" in page.inner_text("#risk-title").lower()
    top = watcher.risk[-1].contributions["mortality"][0]  # the code that moved the figure most, as the topic says
    wait_text(page, "#risk-why", "t.startsWith('Codes that moved it most: mortality: ')")
    assert top.code in page.inner_text("#risk-why")
    page.screenshot(path=str(artifacts / "bedside-800x480-nurse.png"))
    assert page.evaluate("document.documentElement.scrollHeight") <= 480 + 2, "the nurse's view fits 800×480 too"
    assert page.eval_on_selector("#user-button", "b => b.getBoundingClientRect().right") <= 800
    audit = rows(device, "SELECT detail FROM audit WHERE action = 'dose_given'")
    assert json.loads(audit[0][0])["user"] == "ann" and json.loads(audit[0][0])["role"] == "nurse"
    page.get_by_role("button", name="Sign out ann").click()
    wait_text(page, "#user-button", "t === 'Sign in'")
    page.wait_for_function("() => document.getElementById('risk').hidden")
    assert rows(device, "SELECT count(*) FROM audit WHERE action = 'signed_in'")[0][0] >= 2
    assert "4711" not in (device.state_dir / "advisor.sqlite3").read_bytes().decode("latin-1")
    page.close()


def test_the_ward_at_a_glance_and_an_overdue_check(browser, mosquitto, tmp_path, artifacts):
    config = 'alert_check_s = 1\n[checks]\ntimes = ["07:30", "11:30", "17:30", "22:00"]\n'
    with configured_device(mosquitto.url, tmp_path, "ward1", config) as (device, publisher, watcher):
        _ward_and_station(browser, mosquitto, device, publisher, watcher, artifacts)


def _ward_and_station(browser, mosquitto, device, publisher, watcher, artifacts) -> None:
    station = Station(BrokerConfig(url=mosquitto.url), ["ward1", "ward2"], "127.0.0.1", 0)
    station.start()
    try:
        assert station.subscriber.subscribed.wait(5)
        t0 = datetime(2026, 11, 20, 11, 0, tzinfo=UTC)
        for event in event_factory.history("bed-a", t0):
            publisher.publish(event)
        publisher.publish(event_factory.glucose("a-1", "bed-a", t0, 190))
        publisher.publish(event_factory.glucose("b-1", "bed-b", t0 + timedelta(minutes=5), 60))
        assert watcher.wait_for(lambda w: w.suggestion_for("b-1"), 8)
        first = watcher.suggestion_for("a-1")
        assert first.next_check_at == "2026-11-20T17:30:00+00:00"
        # the event clock moves past bed-a's 17:30 check: one alert, once
        publisher.publish(event_factory.glucose("b-2", "bed-b", t0 + timedelta(hours=7), 120, context="unspecified"))
        assert watcher.wait_for(lambda w: any(a.patient == "bed-a" for a in w.alerts), 10), "no overdue alert"
        alert = next(a for a in watcher.alerts if a.patient == "bed-a")
        assert alert.kind == "check_overdue" and "was due at 17:30" in alert.message
        assert device.status().checks_overdue == ["bed-a"]
        overview = {r.patient: r for r in device.patients().rows}
        assert overview["bed-a"].check_overdue and overview["bed-a"].dose_pending is False  # expired by now
        assert overview["bed-b"].lows_24h == 1 and not overview["bed-b"].check_overdue

        page = browser.new_page(viewport=SMALL)
        page.goto(device.url + "?view=ward")
        wait_text(page, "#ward-rows", "t.includes('bed-a') && t.includes('bed-b')")
        assert "overdue since 17:30" in page.inner_text("#ward-rows")
        assert "Suggested dose — expired" in page.inner_text("#ward-rows")
        page.screenshot(path=str(artifacts / "ward-800x480.png"))
        page.locator("#ward-rows").get_by_role("cell", name="bed-a").click()
        wait_text(page, "#next-check", "t.startsWith('Check overdue since 17:30')")
        assert page.eval_on_selector("#next-check", "e => e.className") == "overdue"
        page.screenshot(path=str(artifacts / "bedside-800x480-overdue.png"))
        page.close()
        assert sum(a.patient == "bed-a" for a in watcher.alerts) == 1, "an overdue check is announced once"
        assert len(rows(device, "SELECT id FROM alerts")) == 1

        # the nurses' station: both beds of ward1 from the broker, ward2 not heard from, read-only
        screen = browser.new_page(viewport=SMALL)
        screen.goto(station.url)
        wait_text(screen, "#devices", "t.includes('bed-a') && t.includes('bed-b') && t.includes('Device ward2')")
        assert "Device ward1 · online" in screen.inner_text("#devices")
        screen.screenshot(path=str(artifacts / "station-800x480.png"))
        screen.close()
        request = urllib.request.Request(station.url + "api/overview", b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 405
    finally:
        station.stop()


def test_page_fits_a_phone(browser, bedside, artifacts):
    device, publisher, watcher = bedside
    now = datetime.now(UTC)
    publisher.publish(event_factory.glucose("g-phone", "p-9", now, 140))
    assert watcher.wait_for(lambda w: w.suggestion_for("g-phone"), 5)
    page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    page.goto(device.url)  # no patient named: the page asks, it never picks one from the events it saw
    wait_text(page, "#status-word", "t === 'Choose a patient'")
    assert page.get_by_role("button", name="Dose given").is_hidden()
    page.get_by_label("Patient", exact=True).select_option("p-9")
    wait_text(page, "#status-word", "t === 'Not enough data'")
    assert page.inner_text("#todo").endswith("record it with the Dose button below."), "names a button that exists"
    assert page.inner_text("#units") == "No suggestion"
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert page.get_by_role("button", name="Acknowledge").is_enabled()
    page.get_by_role("button", name="Glucose", exact=True).click()
    box = page.locator("#keypad").bounding_box()
    assert box is not None and box["x"] + box["width"] <= 390 and box["y"] + box["height"] <= 844
    page.screenshot(path=str(artifacts / "bedside-phone-entry.png"))
    page.close()


def test_a_dose_given_and_one_declined_on_a_phone(browser, bedside, artifacts):
    device, publisher, watcher = bedside
    first = dose_waiting(device, publisher, watcher, "p-ph", "g-ph1")
    page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page.goto(device.url + "?patient=p-ph")
    wait_text(page, "#status-word", "t === 'Suggested dose'")
    page.get_by_role("button", name="Dose given").tap()
    wait_text(page, "#response", "t.endsWith('by bedside')")
    assert rows(device, "SELECT action FROM responses WHERE suggestion_id = ?", first.id) == [("given",)]
    second = dose_waiting(device, publisher, watcher, "p-ph2", "g-ph2")
    page.goto(device.url + "?patient=p-ph2")
    wait_text(page, "#status-word", "t === 'Suggested dose'")
    page.get_by_role("button", name="Not given").tap()
    page.get_by_role("button", name="Clinician's order").tap()
    page.get_by_role("button", name="Record").tap()
    wait_text(page, "#response", 't.includes("clinician\'s order")')
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(artifacts / "bedside-phone-declined.png"))
    assert rows(device, "SELECT action FROM responses WHERE suggestion_id = ?", second.id) == [("declined",)]
    page.close()


def test_page_api_rejects_bad_actions(bedside):
    import urllib.error
    import urllib.request

    device, publisher, watcher = bedside
    publisher.publish(event_factory.glucose("g-api", "p-3", datetime.now(UTC), 140))
    assert watcher.wait_for(lambda w: w.suggestion_for("g-api"), 5)

    post = device.post
    status, body = post("api/patients/p-3/confirm", b'{"suggestion_id": "s-g-api", "units": 3}')
    assert status == 400 and "not a dose" in body.error  # insufficient data: nothing to confirm
    assert post("api/patients/p-3/confirm", b'{"suggestion_id": "s-g-api", "units": 1e9}')[0] == 400
    assert post("api/patients/p-3/confirm", b'{"suggestion_id": "nope", "units": 2}')[0] == 400
    assert post("api/patients/p-3/acknowledge", b"suggestion_id=s-g-api", content_type="text/plain")[0] == 415
    assert post("api/patients/..%2F..%2Fetc/acknowledge", b'{"suggestion_id": "x"}')[0] == 404
    assert post("api/patients/p-3/acknowledge", b'{"suggestion_id": "s-g-api"}') == (200, ActionDone(ok=True))
    assert post("api/patients/p-3/acknowledge", b'{"suggestion_id": "s-g-api"}')[0] == 409
    assert post("api/patients/p-3/acknowledge", b'{"suggestion_id": 7}')[1].error == "suggestion_id must be a string"
    assert post("api/patients/p-3/decline", b'{"suggestion_id": "s-g-api", "reason": "bored"}')[0] == 400
    assert (
        post("api/events", b'{"id": "r", "patient": "p-3", "ts": "2026-01-01T00:00:00+00:00", "kind": "request"}')[0]
        == 400
    )
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(device.url + "api/patients/unknown", timeout=5)


def test_odd_requests_get_a_4xx_with_a_reason_never_a_500(bedside):
    """Found by a security team: huge offsets, far dates, repeated JSON keys, a Host with user info, line breaks."""
    import http.client
    import urllib.error
    import urllib.request

    device, publisher, watcher = bedside
    suggestion = dose_waiting(device, publisher, watcher, "p-odd", "g-odd")
    for path in (
        "api/patients?offset=99999999999999999999",
        "api/adherence?date=9999-12-31",
        "api/patients/p-odd/summary.pdf?date=9999-12-31",
        "api/patients/p-odd/summary?date=0001-01-01",
    ):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(device.url + path, timeout=5)
        assert refused.value.code == 400, path
    twice = f'{{"suggestion_id": "{suggestion.id}", "units": {suggestion.units}, "units": 99}}'.encode()
    status, answer = device.post("api/patients/p-odd/confirm", twice)
    assert status == 400 and "the key 'units' appears twice" in answer.error
    event = event_factory.raw(event_factory.glucose("dup", "p-odd", datetime.now(UTC), 120))
    status, answer = device.post("api/events", event[:-1] + b', "mg_dl": 40}')
    assert status == 400 and "the key 'mg_dl' twice" in answer.error
    note = b'{"suggestion_id": "%s", "reason": "other", "note": "a\\nrow"}' % suggestion.id.encode()
    status, answer = device.post("api/patients/p-odd/decline", note)
    assert status == 400 and "one line" in answer.error
    assert rows(device, "SELECT count(*) FROM responses")[0][0] == 0 and not rows(
        device, "SELECT 1 FROM events WHERE id='dup'"
    )
    connection = http.client.HTTPConnection("127.0.0.1", device.port, timeout=5)
    connection.request("GET", "/api/status", headers={"Host": f"evil.example@127.0.0.1:{device.port}"})
    assert connection.getresponse().status == 421
    connection.close()
