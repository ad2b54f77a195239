"""The commands that run or talk to devices: ``device run|check-config``, ``demo``, ``bench``, ``flash``,
``replay``, ``load``, ``station``, ``publish`` and ``monitor`` — thin wrappers over ``device`` and ``tools``."""

from __future__ import annotations

import io
import json
import signal
import sys
from pathlib import Path

import click

from tools.cli.common import (
    CREDENTIALS_OPTION,
    broker_config,
    broker_options,
    configure_logging,
    default_aim94_dir,
    friendly,
    require_bundle_folder,
    role_logins,
    tls_options,
)

CONFIG_HELP = "Config file (TOML, or .json); command-line options override it."


PROFILE_BROKER_OPTION = click.option(
    "--tls",
    is_flag=True,
    help="Run the private broker with the deployment profile (TLS, passwords, ACL) instead of plain TCP.",
)


@click.group()
def device() -> None:
    """Run the bedside device runtime."""


def _device_config(config_file: Path | None, given: dict[str, object], trust, risk_bundles):
    """The config file with the settings given on the command line (by dotted name) put in, so one
    parser checks both; the keys and bundles given are added to the file's."""
    from dataclasses import replace

    from device.config import HttpConfig, load_config

    overrides = {key: str(v) if isinstance(v, Path) else v for key, v in given.items() if v is not None}
    http = overrides.pop("http", None)
    if http is not None:
        parsed = HttpConfig.parse(str(http))
        overrides |= {"http.host": parsed.host, "http.port": parsed.port}
    config = load_config(config_file, overrides)
    return replace(config, trust=config.trust + tuple(trust), risk_bundles=tuple(risk_bundles) + config.risk_bundles)


@device.command("run")
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False), help=CONFIG_HELP)
@click.option("--broker", help="mqtt://[user:password@]host:port or mqtts://… (default mqtt://127.0.0.1:1883).")
@click.option("--username", help="Broker user (or $ADVISOR_MQTT_USERNAME).")
@click.option("--password", help="Broker password (or $ADVISOR_MQTT_PASSWORD); never logged.")
@click.option("--protocol", type=click.Choice(["5", "3.1.1"]), help="MQTT protocol version (default 5).")
@click.option("--device-id", help="This device's id: topics are advisor/<id>/…")
@click.option("--http", help="Bedside page address HOST:PORT (default 127.0.0.1:8080).")
@click.option(
    "--state-dir", type=click.Path(path_type=Path, file_okay=False), help="SQLite state and installed bundles."
)
@click.option("--bundle", type=click.Path(path_type=Path), help="Dose bundle (default: the packaged one).")
@click.option(
    "--shadow-bundle",
    type=click.Path(path_type=Path),
    help="A candidate dose bundle that answers beside the live one on 'shadow', never shown (shadow mode).",
)
@click.option(
    "--clock",
    type=click.Choice(["wall", "event"]),
    help="wall for live use; event takes each event's timestamp as now (log replay).",
)
@click.option(
    "--trust",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Extra trusted bundle-signing public key (repeatable).",
)
@click.option(
    "--allow-downgrade", is_flag=True, default=None, help="Accept flashed bundles older than the running one."
)
@click.option(
    "--risk-bundle",
    "risk_bundles",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Companion (mortality/readmission) bundle to use instead of the packaged one (repeatable).",
)
@click.option("-v", "--verbose", is_flag=True, help="Also show the libraries' log lines and debug lines.")
@friendly
def device_run(
    config_file,
    broker,
    username,
    password,
    protocol,
    device_id,
    http,
    state_dir,
    bundle,
    shadow_bundle,
    clock,
    trust,
    allow_downgrade,
    risk_bundles,
    verbose,
) -> None:
    """Run the device: MQTT events in, supervised suggestions out, bedside page served."""
    from device.service import DeviceService

    configure_logging(verbose)
    given = {
        "broker.url": broker,
        "broker.username": username,
        "broker.password": password,
        "broker.protocol": protocol,
        "device_id": device_id,
        "http": http,
        "state_dir": state_dir,
        "bundle": bundle,
        "shadow_bundle": shadow_bundle,
        "clock": clock,
        "allow_downgrade": allow_downgrade,
    }
    config = _device_config(config_file, given, trust, risk_bundles)
    service = DeviceService(config)
    click.echo(f"device {config.device_id}: broker {config.broker.display_url}, state {config.state_dir}", err=True)
    service.run_forever()


@device.command("check-config")
@click.argument("config_file", type=click.Path(path_type=Path, dir_okay=False))
@friendly
def device_check_config(config_file: Path) -> None:
    """Validate CONFIG_FILE and print the effective settings (secrets hidden)."""
    from device.config import load_config

    config = load_config(config_file)
    missing = [
        f"{what} {path} does not exist"
        for what, paths in (
            ("trust key", config.trust),
            ("risk bundle", config.risk_bundles),
            ("bundle", (config.bundle,)),
        )
        for path in paths
        if path is not None and not path.exists()
    ]
    if missing:
        raise click.ClickException(f"{config_file}: " + "; ".join(missing))
    click.echo(f"{config_file}: valid")
    click.echo(f"  device_id  {config.device_id}")
    click.echo(
        f"  broker     {config.broker.display_url} (MQTT {config.broker.protocol}, "
        f"user {'set' if config.broker.credentials[0] else 'none'})"
    )
    click.echo(
        f"  http       {config.http.host}:{config.http.port}"
        + (" (exposed; actions need the page token)" if config.http.exposed else " (this machine only)")
    )
    click.echo(f"  state_dir  {config.state_dir}")
    click.echo(f"  bundle     {config.bundle or 'packaged default'}")
    click.echo(f"  clock      {config.clock}")
    click.echo(f"  checks     {', '.join(config.checks.default.times)} (ward time {config.timezone})")
    for patient, schedule in config.checks.patients.items():
        click.echo(f"             {patient}: {', '.join(schedule.times)}")
    click.echo(f"  safety     default {config.safety.default.to_dict()}")
    for patient, profile in config.safety.patients.items():
        click.echo(f"             {patient}: {profile.to_dict()}")


@click.command()
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=default_aim94_dir,
    help="AIM-94 folder (default $ADVISOR_AIM94_DIR); without it a synthetic patient is replayed.",
)
@click.option("--patient", type=click.IntRange(1, 70), default=1, show_default=True, help="AIM-94 patient number.")
@click.option("--http", default="127.0.0.1:8080", show_default=True, help="Bedside page address HOST:PORT.")
@click.option("--broker", help="Use this broker instead of starting one.")
@click.option("--embedded-broker", is_flag=True, help="Start the built-in broker even when Mosquitto is installed.")
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Device state (default: a fresh temporary folder).",
)
@click.option(
    "--interval",
    type=click.FloatRange(0.0, 60.0),
    default=2.0,
    show_default=True,
    help="Seconds between events of the replayed last day (earlier history goes at full speed).",
)
@click.option("--exit-after-replay", is_flag=True, help="Stop when the replay is done instead of waiting for Ctrl-C.")
@click.option("-v", "--verbose", is_flag=True, help="Also show the libraries' log lines and debug lines.")
@friendly
def demo(data_dir, patient, http, broker, embedded_broker, state_dir, interval, exit_after_replay, verbose) -> None:
    """Broker + device + replay + bedside page on this machine, one command. Ctrl-C stops it."""
    from device.config import HttpConfig
    from tools.ward import demo as demo_mod

    configure_logging(verbose)
    demo_mod.run_demo(
        demo_mod.DemoOptions(
            data_dir=data_dir,
            patient=patient,
            http=HttpConfig.parse(http),
            broker_url=broker,
            embedded_broker=embedded_broker,
            state_dir=state_dir,
            interval_s=interval,
            exit_after_replay=exit_after_replay,
        ),
        echo=lambda msg: click.echo(msg, err=True),
    )


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.option(
    "--repeats",
    type=click.IntRange(100, 1_000_000),
    default=2000,
    show_default=True,
    help="Timed inferences per model and runtime.",
)
@click.option(
    "--events",
    type=click.IntRange(10, 1_000_000),
    default=1000,
    show_default=True,
    help="Readings sent 10 ms apart for the steady-rate latency.",
)
@click.option(
    "--idle-events",
    type=click.IntRange(10, 10_000),
    default=100,
    show_default=True,
    help="Readings sent 200 ms apart, as on a quiet ward.",
)
@click.option(
    "--sustained",
    type=click.IntRange(100, 1_000_000),
    default=10_000,
    show_default=True,
    help="Readings sent back to back for events per second.",
)
@click.option(
    "--patients",
    type=click.IntRange(1, 1000),
    default=50,
    show_default=True,
    help="Patients the readings are spread over.",
)
@PROFILE_BROKER_OPTION
@click.option(
    "--drift",
    "drift_cost",
    is_flag=True,
    help="Instead: the device with drift tracking off and on, alternating twice (--events, --patients).",
)
@friendly
def bench(
    as_json: bool,
    repeats: int,
    events: int,
    idle_events: int,
    sustained: int,
    patients: int,
    tls: bool,
    drift_cost: bool,
) -> None:
    """Measure the device in one run: inference per model and runtime, latency, throughput, RSS, size.

    Starts its own Mosquitto on loopback (so no --broker or --ca-file); --tls makes it the
    ward's set-up. What each figure means: docs/evaluation.md, "Device performance".
    """
    import json as json_mod
    from dataclasses import asdict

    from tools.rigs import bench as bench_mod
    from tools.rigs import bench_inference

    if drift_cost:
        runs = bench_mod.measure_drift_cost(events, patients, progress=lambda msg: click.echo(msg, err=True))
        click.echo(json_mod.dumps([asdict(r) for r in runs], indent=2) if as_json else bench_mod.drift_table(runs))
        return

    click.echo(f"inference: {repeats} timed calls per model and runtime", err=True)
    timings = bench_inference.measure_inference(repeats=repeats)
    sizes = bench_inference.bundle_sizes()
    figures = bench_mod.measure_device(
        events=events,
        patients=patients,
        idle_events=idle_events,
        sustained_events=sustained,
        progress=lambda msg: click.echo(msg, err=True),
        tls=tls,
    )
    if as_json:
        click.echo(
            json_mod.dumps(
                {
                    "inference": bench_inference.to_rows(timings),
                    "not_measured": bench_inference.not_measured(timings),
                    "device": asdict(figures),
                    "bundle": sizes,
                },
                indent=2,
            )
        )
        return
    click.echo(bench_inference.table(timings))
    click.echo("")
    click.echo(bench_mod.device_table(figures))
    click.echo("")
    kib = {key: value / 1024 for key, value in sizes.items()}
    click.echo(
        f"bundle on disk: {kib['bundle_bytes']:.1f} KiB (int8 model {kib['int8_tflite_bytes']:.1f} KiB, "
        f"float model {kib['float_tflite_bytes']:.1f} KiB)"
    )


@click.command()
@click.argument("bundle_path", type=click.Path(path_type=Path, exists=True))
@click.option("--broker", help="mqtt://[user:password@]host:port of the device's broker.")
@click.option("--device", "device_id", help="Device id to flash over MQTT.")
@click.option(
    "--to",
    "to_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Install into this device state directory (e.g. an SD card) instead.",
)
@click.option(
    "--key",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Sign the bundle with this Ed25519 private key before sending.",
)
@click.option("--protocol", type=click.Choice(["5", "3.1.1"]), default="5", show_default=True)
@click.option(
    "--timeout",
    type=click.FloatRange(1, 3600),
    default=60.0,
    show_default=True,
    help="Seconds to wait for the device's answer.",
)
@click.option(
    "--trust",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="With --to: extra trusted public key (repeatable).",
)
@click.option("--allow-downgrade", is_flag=True, help="With --to: install an older version.")
@tls_options
@friendly
def flash(
    bundle_path,
    broker,
    device_id,
    to_dir,
    key,
    protocol,
    timeout,
    trust,
    allow_downgrade,
    ca_file,
    client_cert,
    client_key,
) -> None:
    """Deliver a signed BUNDLE to a device over MQTT (or with --to into a state directory)."""
    from device.models import bundle as bundle_mod
    from tools.mqtt_kit import flash as flash_mod

    if (to_dir is None) == (broker is None or device_id is None):
        raise click.UsageError("give either --broker and --device, or --to DIR")
    target = None if broker is None else broker_config(broker, protocol, ca_file, client_cert, client_key)
    require_bundle_folder(bundle_path)
    archive = flash_mod.bundle_archive(bundle_path, key)
    if to_dir is not None or target is None:
        version = flash_mod.flash_to_directory(archive, to_dir, bundle_mod.trusted_keys(trust), allow_downgrade)
        click.echo(f"installed dose {version} into {to_dir}")
        return
    try:
        answer = flash_mod.flash_over_mqtt(
            archive, target, device_id, timeout, progress=lambda message: click.echo(message, err=True)
        )
    except flash_mod.FlashError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"accepted: device {device_id} now runs {answer.name} {answer.version}")


def _speed(ctx: click.Context, param: click.Parameter, value: str) -> float | None:
    """``--speed``: a positive number (times real time) or ``max``, checked before any data is read."""
    if value == "max":
        return None
    try:
        speed = float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number (times real time) or 'max'", param=param) from None
    if not speed > 0:
        raise click.BadParameter("must be positive", param=param)
    return speed


@click.command()
@click.option(
    "--data",
    "data_path",
    type=click.Path(path_type=Path, exists=True),
    default=default_aim94_dir,
    required=True,
    help="AIM-94 folder (with --patient) or a JSONL file of events.",
)
@click.option("--patient", type=click.IntRange(1, 70), help="AIM-94 patient number.")
@click.option("--device", "device_id", required=True, help="Device id (running with --clock event).")
@click.option(
    "--speed",
    default="max",
    show_default=True,
    callback=_speed,
    help="Times real time (3600 = an hour per second) or max.",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the JSON report here and the per-decision CSV beside it.",
)
@click.option("--via-serial", "serial_port", help="Send through the firmware bridge on this serial port/PTY.")
@click.option(
    "--run-id", help="Replay under fresh ids: event ids get '.RUN', patients '-RUN', so the device decides them afresh."
)
@click.option("--fresh-ids", is_flag=True, help="Like --run-id with a run id made from the current time.")
@click.option(
    "--timeout",
    type=click.FloatRange(1, 3600),
    default=120.0,
    show_default=True,
    help="Seconds to wait for the broker, and for the last suggestions.",
)
@broker_options("the device's")
@friendly
def replay(data_path, patient, broker, device_id, speed, report_path, serial_port, run_id, fresh_ids, timeout) -> None:
    """Replay a recorded log into a device and report what it suggested (hardware in the loop)."""
    import json as json_mod
    from datetime import UTC, datetime

    from tools.rigs import replay as hil

    target = broker
    try:
        if fresh_ids and not run_id:
            run_id = "r" + datetime.now(UTC).strftime("%m%d%H%M%S")
        if run_id:
            hil.with_run_id([], run_id)  # a bad run id is named before the log is read
        events, source = hil.load_log(data_path, patient)
        if run_id:
            events = hil.with_run_id(events, run_id)
            source += f", run {run_id}"
        steps = hil.plan(events)
        bar_file = sys.stderr if sys.stderr.isatty() else io.StringIO()  # no stray label in a log or a pipe
        with click.progressbar(length=len(steps), label="events", file=bar_file) as bar:
            send, close = (None, lambda: None)
            if serial_port:
                from firmware_bridge.emulator import FirmwareEmulator
                from firmware_bridge.links import SerialLink

                emulator = FirmwareEmulator(SerialLink(serial_port))
                send, close = emulator.send_event, emulator.close
            try:
                report = hil.run_replay(
                    steps, target, device_id, source, speed, send, timeout, progress=lambda done, total: bar.update(1)
                )
            finally:
                close()
    except hil.ReplayError as exc:
        raise click.ClickException(str(exc)) from None
    if report_path:
        json_path, csv_path = hil.write_report(report, report_path)
        click.echo(f"report: {json_path}, decisions: {csv_path}", err=True)
    click.echo(json_mod.dumps(report.to_json(), indent=2))
    if report.lost:
        raise click.ClickException(
            f"{report.not_acknowledged} events not acknowledged by the broker, {report.unanswered} readings or "
            "requests not answered" + (f" ({report.hint})" if report.hint else "")
        )


@click.command()
@click.option(
    "--patients",
    type=click.IntRange(1, 1_000_000),
    default=50,
    show_default=True,
    help="Patients the load is spread over, each with its own history.",
)
@click.option(
    "--history-days",
    type=click.IntRange(0, 14),
    default=14,
    show_default=True,
    help="Days of history sent for each patient first (0: every patient is new, as in a flood of ids).",
)
@click.option(
    "--burst",
    type=click.IntRange(100, 1_000_000),
    default=10_000,
    show_default=True,
    help="Readings sent back to back across the patients.",
)
@click.option("--soak-minutes", type=click.FloatRange(0.1, 24 * 60), default=10.0, show_default=True)
@click.option(
    "--soak-rate",
    type=click.FloatRange(0.1, 1000),
    default=20.0,
    show_default=True,
    help="Readings per second during the soak.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@PROFILE_BROKER_OPTION
@click.option(
    "--via",
    type=click.Choice(["mqtt", "hl7"]),
    default="mqtt",
    show_default=True,
    help="Send the readings over MQTT as a sensor, or as HL7 ORU^R01 over MLLP through the HL7 bridge.",
)
@friendly
def load(
    patients: int,
    history_days: int,
    burst: int,
    soak_minutes: float,
    soak_rate: float,
    as_json: bool,
    tls: bool,
    via: str,
) -> None:
    """Load and soak a real device on a private Mosquitto: events/s, latency, lost, memory.

    Starts its own Mosquitto on loopback (so no --broker or --ca-file); --tls makes it the ward's set-up.
    """
    import json

    from tools.rigs import load as load_mod

    figures = load_mod.run_load(
        patients,
        burst,
        soak_minutes,
        soak_rate,
        progress=lambda msg: click.echo(msg, err=True),
        history_days=history_days,
        tls=tls,
        via=via,
    )
    click.echo(json.dumps(load_mod.to_json(figures), indent=2) if as_json else load_mod.table(figures))
    if figures.burst_lost or figures.soak_lost:
        raise SystemExit(1)


@click.group()
def shadow() -> None:
    """Shadow mode: a candidate bundle answering beside the live one (device run --shadow-bundle)."""


@shadow.command("report")
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    required=True,
    help="The device's state folder (read only; a copy will do).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@friendly
def shadow_report(state_dir: Path, as_json: bool) -> None:
    """Compare the candidate's answers with the live ones, answer by answer, by status and rule."""
    from dataclasses import asdict

    from device.state.store import DATABASE_NAME, Store
    from tools.rigs.shadow_report import compare, table

    store = Store(state_dir / DATABASE_NAME)
    try:
        pairs = [(live, answer) for answer in store.shadow_answers() if (live := store.suggestion(answer.live_id))]
    finally:
        store.close()
    if not pairs:
        raise click.ClickException(f"{state_dir} holds no shadow answers: run the device with --shadow-bundle first")
    report = compare(pairs)
    click.echo(json.dumps(asdict(report), indent=2) if as_json else table(report))


@click.command()
@click.option("--ward", help="Only the devices whose config names this ward.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@click.option(
    "--drift", "pooled", is_flag=True, help="Only the drift of each ward's devices read together (per model)."
)
@broker_options("the ward's")
@friendly
def fleet(broker, ward: str | None, as_json: bool, pooled: bool) -> None:
    """Every device that publishes a status: models, online since when, problems, the last hour, drift."""
    from datetime import UTC, datetime

    from tools.ward.fleet import read_statuses
    from tools.ward.fleet_board import fleet_rows, fleet_table, ward_drift, ward_drift_lines

    statuses, unreadable = read_statuses(broker)
    rows = fleet_rows(statuses, datetime.now(UTC), ward)
    for topic in unreadable:
        click.echo(f"{topic}: not a status this tool can read (a device of another version?)", err=True)
    if pooled:
        readings = ward_drift(statuses, ward)
        if as_json:
            click.echo(json.dumps([r.to_payload() for r in readings], indent=2))
        elif readings:
            click.echo(ward_drift_lines(readings))
        else:
            click.echo("no device reports drift counts (drift off, no reference, or another version)", err=True)
        return
    if as_json:
        click.echo(json.dumps([r.to_payload() for r in rows], indent=2))
    elif rows:
        click.echo(fleet_table(rows))
        readings = ward_drift(statuses, ward)
        if readings:
            click.echo("\n" + ward_drift_lines(readings))
    else:
        where = f" of ward {ward}" if ward else ""
        click.echo(f"no device{where} has published a status on {broker.display_url}", err=True)


@click.command()
@click.option(
    "--device", "devices", multiple=True, required=True, help="A device id to show; repeat for several devices."
)
@click.option("--http", default="127.0.0.1:8090", show_default=True, help="Station page address HOST:PORT.")
@broker_options("the ward's")
@friendly
def station(broker, devices: tuple[str, ...], http: str) -> None:
    """A read-only nurses' station: every patient of several devices at a glance, from their MQTT topics."""
    import threading

    from device.contract.topics import check_device_id
    from tools.ward.station import Station

    for device_id in devices:
        try:
            check_device_id(device_id)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--device") from None
    host, _, port = http.rpartition(":")
    if not port.isdigit() or int(port) > 65535:
        raise click.BadParameter(f"must be HOST:PORT, got {http!r}", param_hint="--http")
    try:
        board = Station(broker, list(devices), host.strip("[]") or "127.0.0.1", int(port))
    except OSError as exc:
        raise click.ClickException(f"cannot serve the station page on {http}: {exc.strerror}") from None
    board.start()
    click.echo(f"station page: {board.url} ({len(devices)} device(s), read-only)", err=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    board.stop()
    click.echo("station stopped", err=True)


@click.command()
@click.argument("event", required=False)
@click.option(
    "--file", "event_file", type=click.Path(path_type=Path, dir_okay=False, exists=True), help="JSON or JSONL."
)
@click.option("--device", "device_id", required=True, help="The device whose events topic receives them.")
@click.option("--wait", "wait_s", type=click.FloatRange(0.5, 600), default=10.0, show_default=True, help="Seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print each answer as a JSON line.")
@CREDENTIALS_OPTION
@broker_options("the device's")
@friendly
def publish(event, event_file, broker, device_id, wait_s, as_json, credentials_file) -> None:
    """Validate EVENT (or --file) as the device would, send it as a sensor does, print the answer.

    An event without "ts" is sent with the time of sending, in the device's time zone (from its
    status). Each answer is one line; the device's warnings about an event (its time zone
    offset, a patient id like a known one) follow it, one line each. After the events it sends
    an end marker the device refuses (dated 2999, nothing stored): once its refusal is back,
    every event was handled, and a reading the device did not answer is a repeat of one it holds.

    With --credentials, it sends as the bed's sensor and reads the answers as the ward's monitor
    (a sensor may not read them); else the --broker URL's user does both.
    """
    from tools.mqtt_kit import publish as publish_mod

    logins = role_logins(credentials_file, [device_id], ("sensor", "monitor"), broker)
    sender, reader = logins["sensor"], logins["monitor"]
    try:
        text, where = publish_mod.read_source(event, event_file)
        outgoing = publish_mod.read_events(text, where)
        answers = publish_mod.publish(outgoing, sender, device_id, wait_s, reader)
    except publish_mod.PublishError as exc:
        raise click.ClickException(str(exc)) from None
    described = "\n".join(publish_mod.describe(a, reader.credentials[0]) for a in answers)
    click.echo(publish_mod.as_json(answers) if as_json else described)
    trouble = publish_mod.summary(answers)
    if trouble:
        raise click.ClickException(trouble)


@click.command()
@click.option("--device", "devices", multiple=True, required=True, help="A device id to follow; repeat for several.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message (device, topic, payload).")
@click.option("--seconds", type=click.FloatRange(0.1, None), help="Stop after this long (default: Ctrl-C).")
@click.option("--count", type=click.IntRange(1, None), help="Stop after this many messages.")
@CREDENTIALS_OPTION
@broker_options("the ward's")
@friendly
def monitor(broker, devices, as_json, seconds, count, credentials_file) -> None:
    """Follow devices' answers, errors, status, alerts, risk and model acks as readable lines.

    With --credentials, it reads as the ward's monitor user from credentials.txt; else as the
    --broker URL's user.
    """
    from device.contract.topics import check_device_id
    from tools.mqtt_kit.monitor import follow, render

    for device_id in devices:
        try:
            check_device_id(device_id)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--device") from None
    target = role_logins(credentials_file, list(devices), ("monitor",), broker)["monitor"]
    ready = lambda: click.echo(f"following {', '.join(devices)} on {target.display_url}", err=True)  # noqa: E731
    try:
        for device_id, leaf, payload, decoded in follow(target, list(devices), seconds, count, ready):
            click.echo(render(device_id, leaf, payload, decoded, as_json))
    except KeyboardInterrupt:
        pass
