"""The bedside page in a real headless Chromium (Debian package), driven by Playwright.

Events go in over MQTT through a real Mosquitto to a real device process; the test checks
what a nurse sees, uses the buttons, and saves an 800×480 screenshot as a test artifact.
"""

from __future__ import annotations

import math
import sqlite3
from datetime import UTC, datetime

import pytest

from device.config import BrokerConfig
from device.messages import ActionDone
from tools.replay import DeviceWatcher, EventPublisher

from . import event_factory
from .device_process import DeviceProcess

DEVICE = "bed2"


@pytest.fixture()
def bedside(mosquitto, tmp_path):
    broker = BrokerConfig(url=mosquitto.url)
    device = DeviceProcess(tmp_path / "state", mosquitto.url, DEVICE).start()
    publisher = EventPublisher(broker, DEVICE, client_id="page-sensor")
    watcher = DeviceWatcher(broker, DEVICE)
    publisher.wait_connected()
    assert watcher.subscribed.wait(5)
    yield device, publisher, watcher
    publisher.close()
    watcher.close()
    device.stop()


def contrast(rgb_a: str, rgb_b: str) -> float:
    """WCAG contrast ratio of two ``rgb(r, g, b)`` CSS colours."""

    def luminance(css: str) -> float:
        r, g, b = (int(v) / 255 for v in css[css.index("(") + 1 : css.index(")")].split(",")[:3])
        lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    a, b = sorted((luminance(rgb_a), luminance(rgb_b)), reverse=True)
    return (a + 0.05) / (b + 0.05)


def colours(page, selector: str) -> tuple[str, str]:
    return page.eval_on_selector(
        selector,
        """el => {
        let bg = 'rgba(0, 0, 0, 0)', node = el;
        while (node && (bg === 'rgba(0, 0, 0, 0)' || bg === 'transparent')) {
            bg = getComputedStyle(node).backgroundColor; node = node.parentElement; }
        return [getComputedStyle(el).color, bg === 'rgba(0, 0, 0, 0)' ? 'rgb(255, 255, 255)' : bg];
    }""",
    )


def test_bedside_page_shows_and_records(browser, bedside, artifacts):
    device, publisher, watcher = bedside
    now = datetime.now(UTC)
    for event in event_factory.history("p-1", now):
        publisher.publish(event)
    publisher.publish(event_factory.glucose("g-now", "p-1", now, 180))
    assert watcher.wait_for(lambda w: w.suggestion_for("g-now"), 5)
    suggestion = watcher.suggestion_for("g-now")
    assert suggestion.status == "suggest"
    publisher.publish_visit_history(
        event_factory.visit_history(
            "p-1", ("2131-03-02T08:00:00+00:00", "2131-03-09T15:00:00+00:00", ["dx9:4280", "rx:furosemide"])
        )
    )
    assert watcher.wait_for(lambda w: w.risk, 5)
    risk = watcher.risk[-1]

    page = browser.new_page(viewport={"width": 800, "height": 480})
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(device.url + "?patient=p-1")
    page.wait_for_function("() => document.getElementById('status-word').textContent === 'Suggested dose'")
    assert page.inner_text("#units") == f"{suggestion.units:.1f} U"
    assert page.inner_text("#glucose") == "180 mg/dL"
    assert "min ago" in page.inner_text("#glucose-age")
    assert page.inner_text("#usual") == "7.0 U"
    assert "Model estimate" in page.inner_text("#reasons")
    assert suggestion.model.version in page.inner_text("#model")
    page.wait_for_function("() => document.getElementById('broker-text').textContent === 'broker connected'")
    assert "not a certified medical device" in page.inner_text("body")
    assert page.inner_text("#risk-mortality") == f"{math.floor(100 * risk.mortality_1y + 0.5)} %"
    assert page.inner_text("#risk-readmission") == f"{math.floor(100 * risk.readmission_30d + 0.5)} %"
    assert "does not change the dose" in page.inner_text("#risk-title").lower()
    assert risk.models["mortality"].version in page.inner_text("#risk-models")
    assert page.inner_text("#risk-title").lower() == "demo-trained risk · does not change the dose"
    assert risk.models["readmission"].version in page.inner_text("#risk-models")
    assert page.locator("#chart circle").count() == 1  # one reading in the last 24 h
    assert page.locator("#chart rect").count() == 0

    # accessibility: real buttons with names, labelled inputs, readable contrast
    assert page.get_by_role("button", name="Dose given").is_enabled()
    assert page.get_by_role("button", name="Acknowledge").is_hidden()  # only the action that fits
    assert page.get_by_label("Units given").input_value() == f"{suggestion.units:g}"
    assert page.get_by_label("Patient").input_value() == "p-1"
    for selector in ("#status-word", "#units", "#reasons", "#glucose", ".notice", "#risk-mortality", "#risk-models"):
        fg, bg = colours(page, selector)
        assert contrast(fg, bg) >= 4.5, f"{selector}: {fg} on {bg}"
    page.screenshot(path=str(artifacts / "bedside-800x480.png"))
    page.screenshot(path=str(artifacts / "bedside-800x480-full.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollHeight") <= 480 + 2, "800×480 needs no scrolling"

    page.get_by_role("button", name="mg/dL").click()
    page.wait_for_function("() => document.getElementById('glucose').textContent === '10.0 mmol/L'")

    # a nurse confirms the dose: an insulin event is published, stored and audited
    page.get_by_role("button", name="Dose given").click()
    page.wait_for_function("() => document.getElementById('message').textContent.startsWith('Recorded')")
    page.wait_for_function("() => document.querySelectorAll('#chart rect').length === 1", timeout=5000)
    with sqlite3.connect(device.state_dir / "advisor.sqlite3") as db:
        given = db.execute("SELECT payload FROM events WHERE id LIKE 'bed2-given-%'").fetchall()
        audit = db.execute("SELECT action, suggestion_id FROM audit WHERE action = 'dose_confirmed'").fetchall()
    assert len(given) == 1 and f'"units": {suggestion.units}' in given[0][0]
    assert audit == [("dose_confirmed", suggestion.id)]

    # live update: a low reading arrives; the page turns to withhold without a reload
    publisher.publish(event_factory.glucose("g-low", "p-1", datetime.now(UTC), 55))
    page.wait_for_function("() => document.getElementById('status-word').textContent === 'Withhold insulin'")
    assert page.inner_text("#units") == "No insulin now"
    assert "below 70" in page.inner_text("#reasons") and "15 g" in page.inner_text("#reasons")
    assert page.inner_text("#carbs") == "Give 15 g of fast-acting carbohydrate now"
    assert page.inner_text("#recheck").startswith("Recheck glucose by")  # the rule of 15: recheck in 15 min
    assert "(in 15 min)" in page.inner_text("#recheck") or "(in 14 min)" in page.inner_text("#recheck")
    assert page.get_by_role("button", name="Dose given").is_hidden()
    fg, bg = colours(page, "#status-word")
    assert contrast(fg, bg) >= 4.5
    page.screenshot(path=str(artifacts / "bedside-800x480-withhold.png"))
    page.get_by_role("button", name="Acknowledge").click()
    page.wait_for_function("() => document.getElementById('message').textContent === 'Acknowledged.'")
    with sqlite3.connect(device.state_dir / "advisor.sqlite3") as db:
        acks = db.execute("SELECT suggestion_id FROM audit WHERE action = 'acknowledged'").fetchall()
    assert acks == [("s-g-low",)]

    assert all(url.startswith(device.url) for url in requests), "the page contacted another origin"
    page.close()


def test_page_fits_a_phone(browser, bedside):
    device, publisher, watcher = bedside
    now = datetime.now(UTC)
    publisher.publish(event_factory.glucose("g-phone", "p-9", now, 140))
    assert watcher.wait_for(lambda w: w.suggestion_for("g-phone"), 5)
    page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    page.goto(device.url)  # no patient named: the page asks, it never picks one from the events it saw
    page.wait_for_function("() => document.getElementById('status-word').textContent === 'Choose a patient'")
    assert page.get_by_role("button", name="Dose given").is_hidden()
    page.get_by_label("Patient", exact=True).select_option("p-9")
    page.wait_for_function("() => document.getElementById('status-word').textContent === 'Not enough data'")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert page.get_by_role("button", name="Acknowledge").is_enabled()
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
    assert post("api/patients/p-3/acknowledge", b'{"suggestion_id": 7}')[1].error == "suggestion_id must be a string"
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(device.url + "api/patients/unknown", timeout=5)
