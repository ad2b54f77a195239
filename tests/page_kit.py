"""What the bedside page tests share: the screen sizes, reading the device's SQLite, waiting for the page.

The ``bedside`` fixture (a device process, a sensor and a watcher on a real Mosquitto) is in conftest.py.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta

from . import event_factory

DEVICE = "bed2"
SMALL = {"width": 800, "height": 480}  # the bedside display
PHONE = {"width": 390, "height": 844}


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


def rows(device, sql: str, *params) -> list[tuple]:
    with sqlite3.connect(device.state_dir / "advisor.sqlite3") as db:
        return db.execute(sql, params).fetchall()


def wait_text(page, selector: str, predicate_js: str, timeout: int = 20000) -> None:
    """Wait until ``predicate_js`` (a JS expression over ``t``, the element's text) holds.

    The bound is generous (20 s): a busy machine (a trial or a training run beside the tests) can
    take seconds to render what an idle one shows at once; a wait that succeeds returns at once.
    """
    page.wait_for_function(
        f"() => {{ const el = document.querySelector({json.dumps(selector)}); const t = el ? el.textContent : '';"
        f" return el && !el.hidden && ({predicate_js}); }}",
        timeout=timeout,
    )


def sign_in(page, user: str, pin: str) -> None:
    """Sign in on the page's dialog and wait until the header names the user."""
    page.get_by_role("button", name="Sign in").click()
    page.get_by_label("User or badge").fill(user)
    page.get_by_label("PIN").fill(pin)
    page.get_by_role("button", name="Sign in", exact=True).last.click()
    wait_text(page, "#user-button", f"t === 'Sign out {user}'")


def dose_waiting(device, publisher, watcher, patient: str, event_id: str, mg_dl: float = 180, age_min: float = 0):
    """A patient's history, then a pre-meal reading: the device answers with a dose."""
    now = datetime.now(UTC)
    for event in event_factory.history(patient, now):
        publisher.publish(event)
    publisher.publish(event_factory.glucose(event_id, patient, now - timedelta(minutes=age_min), mg_dl))
    assert watcher.wait_for(lambda w: w.suggestion_for(event_id), 8)
    return watcher.suggestion_for(event_id)
