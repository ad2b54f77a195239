"""``advisor replay``: hardware-in-the-loop replay of a recorded log into a running device.

The log (one AIM-94 patient, or a JSONL file of events as docs/contract.md describes them) is sent in time order. At
every decision point — a logged regular-insulin dose — a ``request`` event is sent first,
carrying the dose's timestamp, so the device decides with exactly what was known then; its
suggestion is compared with the dose actually given. The device must run with
``--clock event`` so the log's timestamps are "now".
"""

from __future__ import annotations

import csv
import json
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from device.config import BrokerConfig
from domain.events import Event, Kind, within_timestamp_rank
from domain.validation import ValidationError, event_from_mapping, is_identifier, parse_json_object
from tools.mqtt_kit.client import DeviceWatcher, EndMarker, EventPublisher
from tools.rigs.figures import percentile

STATUS_WAIT_S = 5.0  # a device that is running has a retained status: it arrives with the subscription


class ReplayError(Exception):
    """The replay cannot run or could not finish; the message says why."""


@dataclass(frozen=True, slots=True)
class Step:
    """One message of the replay: an event, or a request standing for a decision point."""

    event: Event
    actual_units: float | None = None  # set on requests: the dose that was logged


@dataclass
class ReplayReport:
    source: str
    device: str
    events_sent: int = 0
    events_acked: int = 0
    decision_points: int = 0
    suggestions: int = 0
    not_acknowledged: int = 0  # events the broker never took
    unanswered: int = 0  # readings and requests the device sent no answer for
    lost: int = 0  # the two together
    hint: str | None = None
    mae: float | None = None
    mae_suggested: float | None = None
    withheld: dict[str, int] = field(default_factory=dict)
    insufficient: dict[str, int] = field(default_factory=dict)
    latency_ms_p50: float | None = None
    latency_ms_p99: float | None = None
    round_trip_ms_p50: float | None = None
    round_trip_ms_p99: float | None = None
    duration_s: float = 0.0
    rows: list[dict] = field(default_factory=list, repr=False)

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("rows")
        return data


def read_jsonl(path: Path) -> list[Event]:
    """Events from a JSONL file, one event payload per line; a bad line is an error with its number."""
    events = []
    far_future = datetime(9000, 1, 1, tzinfo=UTC)  # a log is history: no future check
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            events.append(event_from_mapping(parse_json_object(line), far_future))
        except ValidationError as exc:
            raise ReplayError(f"{path}:{number}: {exc.reason}") from None
    return events


def load_log(data: Path, patient: int | None) -> tuple[list[Event], str]:
    """The events of one AIM-94 patient (a folder) or of a JSONL file, and a description."""
    if data.is_file():
        events = read_jsonl(data)
        return events, f"{data} ({len(events)} events)"
    if patient is None:
        raise ReplayError("--patient is required with an AIM-94 folder")
    from preprocessing import aim94

    logs = aim94.read_folder(data, patients=(patient,))
    if not logs:
        raise ReplayError(f"AIM-94 patient {patient} not found in {data}")
    return list(logs[0].events), f"AIM-94 patient {patient} from {data}"


def with_run_id(events: Iterable[Event], run: str) -> list[Event]:
    """The events under fresh ids for a run: ``<id>.<run>`` and patient ``<patient>-<run>``.

    A device recognises a replayed event by its id and never answers it twice; a run id makes a
    second replay into the same device a new set of events of new patients, decided afresh.
    """
    if not is_identifier(run) or len(run) > 16:
        raise ReplayError(f"run id {run!r} must be 1–16 letters, digits, '.', '_' or '-'")
    return [replace(e, id=f"{e.id}.{run}", patient=f"{e.patient}-{run}") for e in events]


def plan(events: Iterable[Event]) -> list[Step]:
    """Time order (insulin last within a timestamp) with a request before each decision point."""
    ordered = sorted(events, key=lambda e: (e.ts, within_timestamp_rank(e)))
    steps: list[Step] = []
    requested: set[tuple[str, object]] = set()
    for event in ordered:
        if event.is_regular_dose and (event.patient, event.ts) not in requested:
            requested.add((event.patient, event.ts))
            dose = sum(e.dose for e in ordered if e.is_regular_dose and e.patient == event.patient and e.ts == event.ts)
            request = Event(id=f"{event.id}-request", patient=event.patient, ts=event.ts, kind=Kind.REQUEST)
            steps.append(Step(request, dose))
        steps.append(Step(event))
    return steps


def run_replay(
    steps: list[Step],
    broker: BrokerConfig,
    device_id: str,
    source: str,
    speed: float | None,
    send: Callable[[Event], str | None] | None = None,
    timeout_s: float = 120.0,
    progress: Callable[[int, int], None] = lambda _d, _t: None,
) -> ReplayReport:
    """Send the steps, collect every suggestion, and measure the result.

    ``speed`` is the time compression (3600: an hour of log per second; ``None``: as fast as
    possible). ``send`` replaces MQTT publishing (the serial bridge path); it returns the id
    the event was delivered under (the bridge assigns its own), or None if it was refused.
    """
    report = ReplayReport(source=source, device=device_id)
    watcher = DeviceWatcher(broker, device_id)
    publisher = EventPublisher(broker, device_id, client_id=f"advisor-replay-{device_id}")
    try:
        publisher.wait_connected(timeout_s)
        online = min(STATUS_WAIT_S, timeout_s)  # a running device's status is retained: it comes at once
        if not watcher.subscribed.wait(timeout_s) or not watcher.wait_for(lambda w: bool(w.status), online):
            raise ReplayError(f"device {device_id} has published no status on {broker.display_url}; is it running?")
        status = watcher.status[-1]
        if status.state != "online":
            raise ReplayError(f"device {device_id} is {status.state}")
        if status.clock != "event":
            raise ReplayError(
                f"device {device_id} runs on the {status.clock} clock; start it with --clock event to replay a log"
            )
        via_mqtt = send is None

        def publish(event: Event) -> str:
            publisher.publish(event)
            return event.id  # confirmed by the broker at the flush below

        deliver = send or publish
        sent_at: dict[str, float] = {}
        delivered_as: dict[str, str] = {}
        started = time.perf_counter()
        previous = None
        for done, step in enumerate(steps):
            if speed and previous is not None:
                time.sleep(max(0.0, (step.event.ts - previous).total_seconds() / speed))
            previous = step.event.ts
            started_one = time.perf_counter()
            event_id = deliver(step.event)
            if event_id is not None:
                delivered_as[step.event.id] = event_id
                sent_at[event_id] = started_one
            progress(done + 1, len(steps))
        report.events_sent = len(steps)
        marker = EndMarker.new("replay") if via_mqtt else None
        if marker is not None:  # over MQTT the device handles the log in order: the marker comes back last
            publisher.flush(timeout_s)
            publisher.publish(marker.payload)
            publisher.flush(timeout_s)
        report.events_acked = len(delivered_as)
        expecting = {
            delivered_as.get(s.event.id, s.event.id) for s in steps if s.event.kind in (Kind.GLUCOSE, Kind.REQUEST)
        }
        watcher.wait_for(
            lambda w: expecting <= {x.event_id for x in w.suggestions} or (marker is not None and marker.seen(w)),
            timeout_s,
        )
        report.duration_s = round(time.perf_counter() - started, 3)
    finally:
        publisher.close()
        watcher.close()
    _measure(report, steps, watcher, sent_at, expecting, delivered_as)
    return report


def _measure(
    report: ReplayReport,
    steps: list[Step],
    watcher: DeviceWatcher,
    sent_at: dict[str, float],
    expecting: set[str],
    delivered_as: dict[str, str],
) -> None:
    by_event = {s.event_id: s for s in watcher.suggestions}
    arrived = watcher.arrival
    report.suggestions = len({k for k in by_event if k in expecting})
    report.not_acknowledged = report.events_sent - report.events_acked
    report.unanswered = len(expecting) - report.suggestions
    report.lost = report.not_acknowledged + report.unanswered
    if report.unanswered and report.unanswered == len(expecting):
        report.hint = (
            "no reading or request was answered: if this log was replayed into this device before, its events "
            "are repeats the device rightly does not answer again; replay with --fresh-ids"
        )
    model_errors, suggested_errors = [], []
    withheld: Counter[str] = Counter()
    insufficient: Counter[str] = Counter()
    for step in steps:
        if step.actual_units is None:
            continue
        report.decision_points += 1
        s = by_event.get(delivered_as.get(step.event.id, ""))
        row = {
            "event_id": step.event.id,
            "patient": step.event.patient,
            "ts": step.event.ts.isoformat(),
            "actual_units": step.actual_units,
            "status": None,
            "units": None,
            "model_units": None,
            "rules": "",
            "latency_ms": None,
        }
        if s is not None:
            row.update(
                status=s.status,
                units=s.units,
                model_units=s.model_units,
                rules=" ".join(s.rules),
                latency_ms=s.latency_ms,
            )
            if s.model_units is not None:
                model_errors.append(abs(s.model_units - step.actual_units))
            suggested_errors.append(abs(s.units - step.actual_units))
            cause = (s.rules or ["unknown"])[0]
            if s.status == "withhold":
                withheld[cause] += 1
            elif s.status == "insufficient_data":
                insufficient[cause] += 1
        report.rows.append(row)
    report.mae = round(statistics.fmean(model_errors), 4) if model_errors else None
    report.mae_suggested = round(statistics.fmean(suggested_errors), 4) if suggested_errors else None
    report.withheld, report.insufficient = dict(withheld), dict(insufficient)
    latencies = [s.latency_ms for k, s in by_event.items() if k in expecting and s.latency_ms is not None]
    trips = [(arrived[k] - sent_at[k]) * 1000.0 for k in by_event if k in expecting and k in arrived]
    if latencies:
        report.latency_ms_p50 = round(statistics.median(latencies), 3)
        report.latency_ms_p99 = round(percentile(latencies, 99), 3)
    if trips:
        report.round_trip_ms_p50 = round(statistics.median(trips), 3)
        report.round_trip_ms_p99 = round(percentile(trips, 99), 3)


def write_report(report: ReplayReport, path: Path) -> tuple[Path, Path]:
    """``path`` (JSON) and the per-decision CSV beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    rows_path = path.with_suffix(".csv")
    with open(rows_path, "w", newline="") as handle:
        writer = csv.DictWriter(
            handle,
            fieldnames=[
                "event_id",
                "patient",
                "ts",
                "actual_units",
                "status",
                "units",
                "model_units",
                "rules",
                "latency_ms",
            ],
        )
        writer.writeheader()
        writer.writerows(report.rows)
    return path, rows_path
