"""``advisor load``: a burst of readings across many patients as fast as the device takes them,
then a soak at a steady rate; events per second, latency, losses and memory at start and end.

Runs a private Mosquitto and a real device process (the rig of :mod:`tools.rigs.measure`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from domain.events import Event
from tools.rigs.figures import machine_description, percentile, process_memory_mb
from tools.rigs.hl7_feed import Hl7Feed
from tools.rigs.measure import history_events, measurement_rig, reading, request, wait_online
from tools.ward.broker import free_port


@dataclass(frozen=True)
class LoadFigures:
    patients: int
    burst_events: int
    burst_events_per_s: float
    burst_lost: int
    soak_minutes: float
    soak_rate_per_s: float
    soak_events: int
    soak_lost: int
    soak_p50_ms: float
    soak_p99_ms: float
    rss_start_mb: float
    rss_after_burst_mb: float
    rss_end_mb: float
    machine: str
    broker: str
    via: str = "mqtt"
    hl7_acks: dict[str, int] | None = None


def run_load(
    patients: int = 50,
    burst: int = 10_000,
    soak_minutes: float = 10.0,
    soak_rate: float = 20.0,
    progress: Callable[[str], None] = lambda _m: None,
    history_days: int = 14,
    tls: bool = False,
    via: str = "mqtt",
) -> LoadFigures:
    """Burst, then soak; every reading must get its suggestion (``lost`` counts those that did not).

    ``via``: ``mqtt`` publishes the readings as a sensor does; ``hl7`` sends them as ``ORU^R01``
    messages through the HL7 bridge (:mod:`tools.rigs.hl7_feed`), history still over MQTT.
    """
    with measurement_rig("advisor-load-", "advisor-load-sensor", tls) as rig:
        publisher, timings = rig.publisher, rig.timings
        feed = Hl7Feed(publisher.broker, publisher.topics.device_id) if via == "hl7" else None

        def send(events: list[Event]) -> list[str]:
            """Send the readings the chosen way; the ids of the events the device will answer."""
            if feed is None:
                for event in events:
                    publisher.publish(event)
                publisher.flush(300)
                return [e.id for e in events]
            feed.send(events)
            return [feed.event_id(e.id) for e in events]

        port = free_port()
        rig.spawn(port)
        if not wait_online(port, 60):
            raise RuntimeError(f"the device did not come online; see {rig.log}")
        assert rig.device is not None
        names = [f"load-p{i:06d}" for i in range(patients)]
        progress(f"{history_days} days of history for {patients} patients")
        now = datetime.now(UTC)
        for name in names:
            for event in history_events(name, now, history_days):
                publisher.publish(event)
        publisher.publish(request("history-done", names[-1], now))
        if not timings.wait({"history-done"}, 300):
            raise RuntimeError("the device did not finish the history")
        rss_start = process_memory_mb(rig.device.pid)

        progress(f"burst: {burst} readings across {patients} patients, back to back")
        start = time.perf_counter()
        ids = send([reading(f"burst-{i:06d}", names[i % patients], 90.0 + i % 200) for i in range(burst)])
        timings.wait(set(ids), 900)
        got = [timings.arrived[k][0] for k in ids if k in timings.arrived]
        burst_rate = len(got) / (max(got) - start) if got else 0.0
        rss_burst = process_memory_mb(rig.device.pid)

        total = int(soak_minutes * 60 * soak_rate)
        progress(f"soak: {total} readings at {soak_rate:g}/s for {soak_minutes:g} min")
        sent: dict[str, float] = {}
        next_at = time.perf_counter()
        for i in range(total):
            at = time.perf_counter()
            [event_id] = send([reading(f"soak-{i:06d}", names[i % patients], 90.0 + i % 200)])
            sent[event_id] = at
            next_at += 1.0 / soak_rate
            time.sleep(max(0.0, next_at - time.perf_counter()))
        timings.wait(set(sent), 120)
        if feed is not None:
            feed.close()
        latencies = [(timings.arrived[k][0] - t) * 1000.0 for k, t in sent.items() if k in timings.arrived]
        return LoadFigures(
            patients=patients,
            burst_events=burst,
            burst_events_per_s=round(burst_rate, 1),
            burst_lost=burst - len(got),
            soak_minutes=soak_minutes,
            soak_rate_per_s=soak_rate,
            soak_events=total,
            soak_lost=total - len(latencies),
            soak_p50_ms=round(percentile(latencies, 50), 2) if latencies else float("nan"),
            soak_p99_ms=round(percentile(latencies, 99), 2) if latencies else float("nan"),
            rss_start_mb=round(rss_start, 1),
            rss_after_burst_mb=round(rss_burst, 1),
            rss_end_mb=round(process_memory_mb(rig.device.pid), 1),
            machine=machine_description(),
            broker=rig.description,
            via=via,
            hl7_acks=None if feed is None else dict(feed.acks),
        )


def table(f: LoadFigures) -> str:
    rows = [
        ("readings sent", "as HL7 v2 ORU^R01 over MLLP through advisor bridge hl7" if f.via == "hl7" else "over MQTT"),
        ("patients", f"{f.patients}"),
        (f"burst: {f.burst_events} readings back to back", f"{f.burst_events_per_s} events/s, lost {f.burst_lost}"),
        (
            f"soak: {f.soak_events} readings at {f.soak_rate_per_s:g}/s for {f.soak_minutes:g} min",
            f"p50 {f.soak_p50_ms} ms, p99 {f.soak_p99_ms} ms, lost {f.soak_lost}",
        ),
        ("device RSS: start / after burst / end", f"{f.rss_start_mb} / {f.rss_after_burst_mb} / {f.rss_end_mb} MB"),
    ]
    if f.hl7_acks is not None:
        rows.append(("HL7 acknowledgements", ", ".join(f"{n} {code}" for code, n in sorted(f.hl7_acks.items()))))
    table = ["| measure | result |", "|---|---|", *[f"| {a} | {b} |" for a, b in rows]]
    return "\n".join([*table, f"\n{f.broker}; {f.machine}."])


def to_json(f: LoadFigures) -> dict:
    return asdict(f)
