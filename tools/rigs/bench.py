"""``advisor bench``: the device figures measured on this machine, side by side in one run.

* cold start: a real ``advisor device run`` process is spawned while a glucose reading waits
  for it at the broker; the time from spawn to that reading's suggestion;
* event-to-suggestion latency through Mosquitto: seen by a client (publish → suggestion
  received, two broker hops included) and as reported by the device (``latency_ms``:
  arrival → suggestion ready, including the SQLite commit and inference);
* the bedside page's reads on that loaded device: the ward overview, the status, one
  patient's view, the ward's adherence and a day summary as PDF (median of repeated GETs);
* peak RSS of the device process (``VmHWM``).
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from statistics import median

from tools.mqtt_kit.client import EventPublisher
from tools.rigs.figures import machine_description, percentile, process_memory_mb
from tools.rigs.measure import SuggestionTimer, history_events, measurement_rig, reading, request, wait_online
from tools.ward.broker import free_port

PHASES = (("steady", 0.01), ("idle", 0.2))  # (name, seconds between readings)


@dataclass(frozen=True)
class LatencyPhase:
    """Latencies at one rate: through the device, inside it, and a plain broker relay for scale."""

    name: str
    gap_ms: float
    events: int
    client_ms_p50: float
    client_ms_p99: float
    device_ms_p50: float
    device_ms_p99: float
    relay_ms_p50: float
    relay_ms_p99: float
    lost: int


@dataclass(frozen=True)
class Throughput:
    """Events sent back to back; every one must get its suggestion."""

    events: int
    patients: int
    seconds: float
    events_per_s: float
    lost: int


PAGE_READS = (
    ("ward overview (GET /api/patients)", "api/patients"),
    ("device status (GET /api/status)", "api/status"),
    ("one patient's view", "api/patients/{patient}"),
    ("ward adherence today", "api/adherence"),
    ("day summary as PDF", "api/patients/{patient}/summary.pdf"),
)


@dataclass(frozen=True)
class DeviceFigures:
    patients: int
    phases: list[LatencyPhase]
    throughput: Throughput
    page_ms_p50: dict[str, float]
    cold_start_s: float
    peak_rss_mb: float
    machine: str
    broker: str


def _latency_phase(
    name: str, gap: float, count: int, patients: list[str], publisher: EventPublisher, timings: SuggestionTimer
) -> LatencyPhase:
    """Alternate device readings and plain relays at one rate; return the percentiles."""
    sent: dict[str, float] = {}
    relayed: dict[str, float] = {}
    for i in range(count):
        event_id = f"{name}-{i:05d}"
        event = reading(event_id, patients[i % len(patients)], 100.0 + i % 150)
        sent[event_id] = time.perf_counter()
        publisher.publish(event)
        time.sleep(gap / 2)
        relay_id = f"relay-{event_id}"
        relayed[relay_id] = time.perf_counter()
        timings.relay(relay_id)
        time.sleep(gap / 2)
    publisher.flush()
    timings.wait(set(sent) | set(relayed), 60)
    got = {k: v for k, v in timings.arrived.items() if k in sent}
    client_ms = [(got[k][0] - sent[k]) * 1000.0 for k in got]
    device_ms = [got[k][1] for k in got]
    relay_ms = [(timings.arrived[k][0] - relayed[k]) * 1000.0 for k in relayed if k in timings.arrived]

    def p(values: list[float], q: float) -> float:
        return round(percentile(values, q), 2) if values else float("nan")

    return LatencyPhase(
        name,
        gap * 1000.0,
        count,
        p(client_ms, 50),
        p(client_ms, 99),
        p(device_ms, 50),
        p(device_ms, 99),
        p(relay_ms, 50),
        p(relay_ms, 99),
        len(sent) - len(got),
    )


def _throughput(count: int, patients: list[str], publisher: EventPublisher, timings: SuggestionTimer) -> Throughput:
    ids = {f"load-{i:06d}" for i in range(count)}
    start = time.perf_counter()
    for i in range(count):
        publisher.publish(reading(f"load-{i:06d}", patients[i % len(patients)], 90.0 + i % 200))
    publisher.flush(120)
    timings.wait(ids, 600)
    got = [timings.arrived[k][0] for k in ids if k in timings.arrived]
    seconds = (max(got) - start) if got else float("nan")
    return Throughput(
        count, len(patients), round(seconds, 2), round(len(got) / seconds, 1) if got else 0.0, count - len(got)
    )


def measure_device(
    events: int = 1000,
    patients: int = 20,
    idle_events: int = 100,
    sustained_events: int = 10000,
    progress: Callable[[str], None] = lambda _m: None,
    tls: bool = False,
) -> DeviceFigures:
    """Run the device benchmark on a private Mosquitto (``tls``: the deployment profile); the figures."""
    with measurement_rig("advisor-bench-", "advisor-bench-sensor", tls) as rig:
        publisher, timings = rig.publisher, rig.timings
        log = rig.log
        progress("creating the device's broker session")
        port = free_port()
        rig.spawn(port)
        if not wait_online(port, 60):
            raise RuntimeError(f"the device did not come online; see {log}")
        publisher.publish(request("warm-0", "warm"))
        if not timings.wait({"warm-0"}, 60):
            raise RuntimeError(f"the device did not answer; see {log}")
        assert rig.device is not None
        rig.device.terminate()
        rig.device.wait(20)

        progress("cold start: spawning the device with a reading waiting at the broker")
        now = datetime.now(UTC)
        publisher.publish(reading("cold-0", "warm", 120.0))
        publisher.flush()
        started = time.perf_counter()
        rig.spawn(port)
        if not timings.wait({"cold-0"}, 60):
            raise RuntimeError(f"no suggestion after the cold start; see {log}")
        cold_start = timings.arrived["cold-0"][0] - started

        progress(f"history for {patients} patients")
        names = [f"bench-{i:02d}" for i in range(patients)]
        for name in names:
            for event in history_events(name, now):
                publisher.publish(event)
        publisher.publish(request("history-done", names[-1]))
        if not timings.wait({"history-done"}, 120):  # the device has worked through the backlog
            raise RuntimeError(f"the device did not finish the history; see {log}")
        phases = []
        for name, gap in PHASES:
            count = events if name == "steady" else idle_events
            progress(f"{name}: {count} fresh readings, one every {gap * 1000:g} ms, and as many broker relays")
            phases.append(_latency_phase(name, gap, count, names, publisher, timings))
        progress(f"sustained: {sustained_events} readings over {len(names)} patients, back to back")
        throughput = _throughput(sustained_events, names, publisher, timings)
        progress("the bedside page's reads on the loaded device")
        page = _page_reads(port, names[0])
        return DeviceFigures(
            patients=patients,
            phases=phases,
            throughput=throughput,
            page_ms_p50=page,
            cold_start_s=round(cold_start, 3),
            peak_rss_mb=round(process_memory_mb(rig.device.pid, "VmHWM"), 1),
            machine=machine_description(),
            broker=rig.description,
        )


def _page_reads(port: int, patient: str, repeats: int = 20) -> dict[str, float]:
    """Median milliseconds of each page read, over ``repeats`` GETs."""
    figures = {}
    for name, path in PAGE_READS:
        url = f"http://127.0.0.1:{port}/" + path.format(patient=patient)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            with urllib.request.urlopen(url, timeout=10) as response:
                response.read()
            times.append((time.perf_counter() - started) * 1000)
        figures[name] = round(percentile(times, 50), 2)
    return figures


def device_table(figures: DeviceFigures) -> str:
    """The README's table of device figures."""
    rows = []
    for ph in figures.phases:
        rate = f"{ph.name}, 1 reading per {ph.gap_ms:g} ms, {ph.events} readings"
        rows += [
            (
                f"event → suggestion seen by a client, p50 / p99 ({rate})",
                f"{ph.client_ms_p50:.2f} / {ph.client_ms_p99:.2f} ms",
                "p99 < 20 ms",
            ),
            (
                "  of which inside the device (arrival → suggestion committed), p50 / p99",
                f"{ph.device_ms_p50:.2f} / {ph.device_ms_p99:.2f} ms",
                "",
            ),
            (
                "  for scale: one plain broker relay, same clients, p50 / p99",
                f"{ph.relay_ms_p50:.2f} / {ph.relay_ms_p99:.2f} ms",
                "",
            ),
            ("  suggestions lost", str(ph.lost), "0"),
        ]
    t = figures.throughput
    rows += [
        (
            f"sustained: {t.events} readings back to back over {t.patients} patients",
            f"{t.events_per_s:.0f} events/s, {t.lost} lost",
            "lost = 0",
        ),
        *[
            (f"page: {name}, {figures.patients} patients, p50", f"{ms:.1f} ms", "< 200 ms")
            for name, ms in figures.page_ms_p50.items()
        ],
        ("cold start: process spawn → first suggestion", f"{figures.cold_start_s:.2f} s", "< 2 s"),
        ("device peak RSS (VmHWM)", f"{figures.peak_rss_mb:.0f} MB", "< 120 MB"),
    ]
    lines = ["| measure | result | target |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines.append(f"\n{figures.patients} patients with 14 days of history; {figures.broker}; {figures.machine}.")
    return "\n".join(lines)


def to_json(figures: DeviceFigures) -> str:
    return json.dumps({"device": asdict(figures)}, indent=2)


@dataclass(frozen=True)
class DriftCost:
    """One device run with drift tracking on or off: latency inside the device and peak RSS."""

    drift: bool
    round: int
    events: int
    device_ms_p50: float
    device_ms_p99: float
    peak_rss_mb: float
    drift_decisions: int | None


def measure_drift_cost(
    events: int = 500, patients: int = 10, rounds: int = 2, progress: Callable[[str], None] = lambda _m: None
) -> list[DriftCost]:
    """The device with drift tracking off and on, alternating ``rounds`` times on one machine: the
    same history and the same readings each time, a fresh device and broker per run."""
    results = []
    for round_no in range(1, rounds + 1):
        for drift in (False, True):
            progress(f"round {round_no}: drift tracking {'on' if drift else 'off'}")
            results.append(_drift_run(drift, round_no, events, patients))
    return results


def _drift_run(drift: bool, round_no: int, events: int, patients: int) -> DriftCost:
    with measurement_rig("advisor-drift-", "advisor-drift-sensor") as rig:
        config = rig.workdir / "drift.toml"
        config.write_text(f"[drift]\nenabled = {'true' if drift else 'false'}\nmin_decisions = 10\n")
        rig.device_args = (*rig.device_args, "--config", str(config))
        port = free_port()
        rig.spawn(port)
        if not wait_online(port, 60):
            raise RuntimeError(f"the device did not come online; see {rig.log}")
        now = datetime.now(UTC)
        names = [f"drift-{i:02d}" for i in range(patients)]
        for name in names:
            for event in history_events(name, now):
                rig.publisher.publish(event)
        rig.publisher.publish(request("history-done", names[-1]))
        if not rig.timings.wait({"history-done"}, 120):
            raise RuntimeError(f"the device did not finish the history; see {rig.log}")
        phase = _latency_phase("steady", 0.01, events, names, rig.publisher, rig.timings)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=10) as response:
            status = json.loads(response.read())
        assert rig.device is not None
        return DriftCost(
            drift=drift,
            round=round_no,
            events=events,
            device_ms_p50=phase.device_ms_p50,
            device_ms_p99=phase.device_ms_p99,
            peak_rss_mb=round(process_memory_mb(rig.device.pid, "VmHWM"), 1),
            drift_decisions=None if status.get("drift") is None else status["drift"]["decisions"],
        )


def drift_table(results: list[DriftCost]) -> str:
    """Drift tracking off and on, side by side per round, and the medians."""
    lines = [
        "| round | drift tracking | decisions counted | inside the device p50 / p99 | peak RSS |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        counted = "—" if r.drift_decisions is None else str(r.drift_decisions)
        lines.append(
            f"| {r.round} | {'on' if r.drift else 'off'} | {counted} | "
            f"{r.device_ms_p50:.2f} / {r.device_ms_p99:.2f} ms | {r.peak_rss_mb:.1f} MB |"
        )
    for drift in (False, True):
        runs = [r for r in results if r.drift is drift]
        lines.append(
            f"| median | {'on' if drift else 'off'} | | {median(r.device_ms_p50 for r in runs):.2f} / "
            f"{median(r.device_ms_p99 for r in runs):.2f} ms | {median(r.peak_rss_mb for r in runs):.1f} MB |"
        )
    return "\n".join(lines) + f"\n\n{results[0].events} readings per run, 1 every 10 ms; {machine_description()}."
