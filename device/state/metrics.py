"""The device's running figures and their Prometheus text exposition (pure: no sockets, no clock).

Counted from every message the device publishes (:meth:`DeviceMetrics.observe`, called by the
MQTT link for each one): answers by status and their latency from arrival to answer, errors and
warnings by reason. The rest — broker link, store health, models — is read from the device's
status when a scrape asks (:func:`exposition`). Format: Prometheus text exposition 0.0.4.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from device.contract.messages import Activity, ErrorMessage, Message, PageStatus, Suggestion

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
ACTIVITY_WINDOW_S = 3600
LOWERED_BY_UNITS = 0.5  # a dose answer this far below the model's number was lowered, not rounded
MAX_REASONS = 50  # distinct error reasons kept as labels; the rest are counted as "other"
VARIABLE = re.compile(r"'[^']*'|\"[^\"]*\"|\d+(?:[.:]\d+)*")  # ids, values and times inside a reason


def reason_label(reason: str) -> str:
    """An error's reason with its particulars (quoted text, numbers, times) taken out: one label per
    kind of error, not per event."""
    return VARIABLE.sub("…", reason)[:100]


@dataclass
class Histogram:
    """Cumulative buckets, sum and count, as Prometheus reads a histogram."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bound: observations at most that
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = self.counts or [0] * len(self.bounds)

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.count += 1


class DeviceMetrics:
    """Counters of what the device published since it started (thread-safe)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._recent: deque[tuple[float, str]] = deque()  # (time, answer status, "lowered" or "error")
        self.answers: Counter[str] = Counter()
        self.latency = Histogram(LATENCY_BUCKETS_S)
        self.errors: Counter[tuple[str, str]] = Counter()  # (level, reason label)

    def observe(self, message: Message) -> None:
        """Count one published message."""
        with self._lock:
            now = self._clock()
            if isinstance(message, Suggestion):
                self.answers[message.status] += 1
                self._recent.append((now, message.status))
                if message.model_units is not None and message.units + LOWERED_BY_UNITS < message.model_units:
                    self._recent.append((now, "lowered"))
                if message.latency_ms is not None:
                    self.latency.observe(message.latency_ms / 1000.0)
            elif isinstance(message, ErrorMessage):
                if message.level == "refused":
                    self._recent.append((now, "error"))
                label = reason_label(message.reason)
                known = {reason for _, reason in self.errors}
                if label not in known and len(known) >= MAX_REASONS:
                    label = "other"
                self.errors[(message.level, label)] += 1

    def activity(self) -> Activity:
        """What was answered in the last :data:`ACTIVITY_WINDOW_S`."""
        with self._lock:
            start = self._clock() - ACTIVITY_WINDOW_S
            while self._recent and self._recent[0][0] < start:
                self._recent.popleft()
            kinds = Counter(kind for _, kind in self._recent)
        lowered, errors = kinds.pop("lowered", 0), kinds.pop("error", 0)
        return Activity(ACTIVITY_WINDOW_S, dict(sorted(kinds.items())), lowered, errors)

    def exposition(self, status: PageStatus) -> str:
        """Every figure in Prometheus text format, the device's state read from ``status``."""
        with self._lock:
            answers = sorted(self.answers.items())
            errors = sorted(self.errors.items())
            latency = Histogram(self.latency.bounds, list(self.latency.counts), self.latency.total, self.latency.count)
        lines: list[str] = []
        family(lines, "advisor_answers_total", "counter", "Answers published, by status.")
        lines += [sample("advisor_answers_total", {"status": s}, n) for s, n in answers]
        family(lines, "advisor_answer_latency_seconds", "histogram", "From an event's arrival to its answer.")
        for bound, n in zip(latency.bounds, latency.counts, strict=True):
            lines.append(sample("advisor_answer_latency_seconds_bucket", {"le": f"{bound:g}"}, n))
        lines.append(sample("advisor_answer_latency_seconds_bucket", {"le": "+Inf"}, latency.count))
        lines.append(sample("advisor_answer_latency_seconds_sum", {}, latency.total))
        lines.append(sample("advisor_answer_latency_seconds_count", {}, latency.count))
        family(lines, "advisor_errors_total", "counter", "Inputs refused or accepted with a warning, by reason.")
        lines += [sample("advisor_errors_total", {"level": lv, "reason": r}, n) for (lv, r), n in errors]
        gauges = (
            ("advisor_online", "1 while subscribed and answering.", status.state == "online"),
            ("advisor_broker_connected", "1 while linked to the broker.", status.broker_connected),
            ("advisor_store_healthy", "1 while the database takes writes.", status.storage_problem is None),
            ("advisor_model_healthy", "1 while a valid dose model answers.", status.model_problem is None),
            ("advisor_clock_healthy", "1 while the wall clock looks right.", status.clock_problem is None),
            ("advisor_events_held_in_memory", "Events waiting for the database.", status.held_in_memory),
            ("advisor_checks_overdue", "Patients whose glucose check is past due.", len(status.checks_overdue)),
        )
        for name, words, value in gauges:
            family(lines, name, "gauge", words)
            lines.append(sample(name, {}, float(value)))
        drift = status.drift
        family(lines, "advisor_drift_alert", "gauge", "1 while a watched feature's PSI is over the alert line.")
        lines.append(sample("advisor_drift_alert", {}, 1 if drift is not None and drift.drifted else 0))
        family(lines, "advisor_drift_decisions", "gauge", "Decisions the drift reading counts (-1: not measured).")
        lines.append(sample("advisor_drift_decisions", {}, -1 if drift is None else drift.decisions))
        family(lines, "advisor_feature_psi", "gauge", "Population stability index of each model input.")
        for feature_name, psi in sorted((drift.psi if drift is not None and drift.psi else {}).items()):
            lines.append(sample("advisor_feature_psi", {"feature": feature_name}, psi))
        week = status.outcomes
        outcome_gauges = (
            ("advisor_ward_readings", "Readings in the outcomes period.", week.readings if week else None),
            (
                "advisor_ward_below_70_share",
                "Share of those readings below 70 mg/dL.",
                week.below_70_share if week else None,
            ),
            (
                "advisor_ward_below_54_share",
                "Share of those readings below 54 mg/dL.",
                week.below_54_share if week else None,
            ),
            (
                "advisor_ward_followed_share",
                "Share of dose suggestions given as suggested.",
                week.followed_share if week else None,
            ),
            (
                "advisor_ward_given_minus_model_mae_units",
                "Mean absolute difference between the dose given and the model's number.",
                week.given_minus_model_mae_units if week else None,
            ),
            (
                "advisor_ward_outcome_alerts",
                "Outcome alerts raised (lows over their line).",
                len(week.alerts) if week else 0,
            ),
        )
        for name, words, figure in outcome_gauges:
            if figure is not None:
                family(lines, name, "gauge", words)
                lines.append(sample(name, {}, figure))
        family(lines, "advisor_started_timestamp_seconds", "gauge", "When the device started (Unix time).")
        lines.append(
            sample("advisor_started_timestamp_seconds", {}, datetime.fromisoformat(status.started_at).timestamp())
        )
        family(lines, "advisor_model_info", "gauge", "The models the device runs (value 1).")
        for model in status.models:
            labels = {"kind": "dose", "name": model.name, "version": model.version or "", "sha256": model.sha256 or ""}
            lines.append(sample("advisor_model_info", labels, 1))
        for name, risk in sorted(status.risk_models.items()):
            lines.append(sample("advisor_model_info", {"kind": "risk", "name": name, "version": risk.version}, 1))
        return "\n".join(lines) + "\n"


def family(lines: list[str], name: str, kind: str, words: str) -> None:
    """The HELP and TYPE lines of a metric family."""
    lines += [f"# HELP {name} {words}", f"# TYPE {name} {kind}"]


def sample(name: str, labels: dict[str, str], value: float) -> str:
    """One sample line, label values escaped as the format says."""
    number = str(int(value)) if float(value).is_integer() else repr(float(value))
    if not labels:
        return f"{name} {number}"
    text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return f"{name}{{{text}}} {number}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
