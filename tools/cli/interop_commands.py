"""``advisor bridge hl7``, ``advisor fhir`` and ``advisor nightscout``: thin wrappers over ``interop``."""

from __future__ import annotations

import csv
from pathlib import Path

import click

from tools.cli.common import broker_options, configure_logging, friendly, require_modules


def _zone(ctx: click.Context, param: click.Parameter, value: str | None):
    if value is None:
        return None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise click.BadParameter(f"{value!r} is not an IANA time zone (e.g. Europe/Vienna)") from None


def _pairs(path: Path | None, what: str, param: str) -> dict[str, str] | None:
    """A two-column CSV (a header row is skipped when its first cell is not used as a key) as a dict."""
    if path is None:
        return None
    found: dict[str, str] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row or row[0].startswith("#"):
                continue
            if len(row) != 2 or not row[0].strip() or not row[1].strip():
                raise click.BadParameter(f"line {number} is not '{what}' (two columns)", param_hint=param)
            key, value = row[0].strip(), row[1].strip()
            if key in found and found[key] != value:
                raise click.BadParameter(f"line {number}: {key!r} is listed twice", param_hint=param)
            found[key] = value
    return found


@click.command("hl7")
@click.option("--listen", required=True, help="HOST:PORT to take MLLP connections on (port 0: any free port).")
@click.option("--device", "device_id", required=True, help="Device whose events topic receives the events.")
@click.option(
    "--timezone", "zone", callback=_zone, help="Time zone of times sent without an offset (default: refuse them)."
)
@click.option(
    "--patient-map",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="CSV 'hospital identifier,device patient id': only these patients are taken (default: the identifier).",
)
@click.option("--id-type", default="MR", show_default=True, help="PID-3 identifier type (CX-5) naming the patient.")
@click.option("--assigning-authority", help="Only PID-3 identifiers of this assigning authority (CX-4).")
@click.option(
    "--code-map",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="CSV 'code,description' of the OBX-3 codes taken as glucose (default: the LOINC glucose codes).",
)
@click.option("--source", default="hl7", show_default=True, help="Prefix of the event ids this bridge creates.")
@broker_options("the device's")
@friendly
def bridge_hl7(listen, device_id, zone, patient_map, id_type, assigning_authority, code_map, source, broker) -> None:
    """Take HL7 v2 ORU^R01 glucose results and ADT^A01/A04 weights over MLLP; answer each with an
    ACK (AA once the broker has the events). Ctrl-C stops."""
    require_modules("interop", "hl7")
    import signal
    import threading

    from device.contract.topics import check_device_id
    from interop.codes import LOINC_GLUCOSE
    from interop.hl7.listener import Hl7Bridge, Hl7Server, parse_listen
    from interop.hl7.messages import Hl7Config

    try:
        address = parse_listen(listen)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--listen") from None
    try:
        check_device_id(device_id)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--device") from None
    if not (source.isalnum() and len(source) <= 16):
        raise click.BadParameter("1–16 letters or digits", param_hint="--source")
    config = Hl7Config(
        codes=_pairs(code_map, "code,description", "--code-map") or dict(LOINC_GLUCOSE),
        id_type=id_type,
        authority=assigning_authority,
        patients=_pairs(patient_map, "hospital identifier,device patient id", "--patient-map"),
        timezone=zone,
        source=source,
    )
    configure_logging(verbose=False)
    bridge = Hl7Bridge(config, broker, device_id)
    try:
        server = Hl7Server(address, bridge)
    except OSError as exc:
        bridge.close()
        raise click.ClickException(f"cannot listen on {listen}: {exc.strerror or exc}") from None
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    thread = threading.Thread(target=server.serve_forever, name="hl7-listener", daemon=True)
    thread.start()
    click.echo(f"listening for HL7 (MLLP) on {address[0]}:{server.port} -> {broker.display_url} device {device_id}")
    stopped.wait()
    server.stop()
    bridge.close()
    s = bridge.stats
    refused = ", ".join(f"{n} {code}" for code, n in sorted(s.refused.items())) or "none"
    click.echo(f"stopped: {s.accepted} messages accepted ({s.events} events), {s.resends} resends, refused {refused}")


def _since(ctx: click.Context, param: click.Parameter, value: str | None):
    if value is None:
        return None
    from datetime import datetime

    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time (e.g. 2026-12-01T00:00+01:00)") from None
    if parsed.tzinfo is None:
        raise click.BadParameter(f"{value!r} has no UTC offset (add +01:00, Z, …)")
    return parsed


PUSH_ENTRIES = 1000  # entries per transaction pushed: servers limit a transaction's size


@click.group()
def fhir() -> None:
    """FHIR R4: the device's record out as a transaction Bundle; readings and doses in."""


@fhir.command("export")
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    required=True,
    help="The device's state folder (its advisor.sqlite3 is only read).",
)
@click.option(
    "--device", "device_id", required=True, help="The device's id (it names the patients' identifier system)."
)
@click.option("--patient", help="Only this patient (exact id).")
@click.option("--since", callback=_since, help="Only what happened from this time on (ISO 8601 with offset).")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True, help="The Bundle's JSON file.")
@click.option(
    "--fhir-url", help="Also POST the Bundle to this FHIR server's base address (retried on 500, 502-504, 429)."
)
@click.option("--token", envvar="ADVISOR_FHIR_TOKEN", help="Bearer token for --fhir-url (or $ADVISOR_FHIR_TOKEN).")
@click.option(
    "--by-identifier",
    is_flag=True,
    help="Push as conditional updates by identifier (for a server that assigns its own ids).",
)
@friendly
def fhir_export(
    state_dir: Path,
    device_id: str,
    patient: str | None,
    since,
    out: Path,
    fhir_url: str | None,
    token: str | None,
    by_identifier: bool,
) -> None:
    """Write the device's record as a FHIR R4 transaction Bundle (PUT at stable ids: a re-export updates).

    With --fhir-url each patient's resources are also POSTed as transactions of at most 1,000 entries:
    PUT at the same ids, or with --by-identifier conditional updates found by each resource's identifier."""
    import time
    from collections import Counter

    from device.contract.topics import check_device_id
    from interop.fhir.bundle_file import write_transaction
    from interop.fhir.push import PushError, push_bundle
    from interop.fhir.record import RecordError, iter_records
    from interop.fhir.resources import conditional_entries, entry, record_resources

    try:
        check_device_id(device_id)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--device") from None
    start = time.perf_counter()
    pushed: Counter[str] = Counter()
    problems: list[str] = []

    def batches():
        for record in iter_records(state_dir, patient, since):
            resources = record_resources(device_id, record)
            entries = conditional_entries(resources) if by_identifier else [entry(r) for r in resources]
            for i in range(0, len(entries), PUSH_ENTRIES):
                if not fhir_url or problems:
                    break
                bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries[i : i + PUSH_ENTRIES]}
                try:
                    answer = push_bundle(fhir_url, bundle, token)
                except PushError as exc:
                    problems.append(str(exc))
                    break
                pushed.update(str(e.get("response", {}).get("status", "?")).split()[0] for e in answer.get("entry", []))
            yield resources

    try:
        counts = write_transaction(out, batches())
    except RecordError as exc:
        raise click.ClickException(str(exc)) from None
    listed = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
    click.echo(f"{out}: {counts.total()} resources ({listed}) in {time.perf_counter() - start:.1f} s")
    if fhir_url:
        click.echo(
            f"{fhir_url}: " + (", ".join(f"{n} × {status}" for status, n in sorted(pushed.items())) or "nothing")
        )
    if problems:
        raise click.ClickException(f"the file is written; the push stopped: {problems[0]}")


@fhir.command("import")
@click.argument("source", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--device", "device_id", required=True, help="The device whose events topic receives the events.")
@click.option(
    "--patient-map",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="CSV 'patient identifier,device patient id': only these patients are taken (default: the identifier).",
)
@click.option(
    "--identifier-system",
    help="The patient identifier system naming patients (default: the advisor's own, urn:advisor:patient:<device>).",
)
@click.option("--wait", "wait_s", type=click.FloatRange(0.5, 3600), default=30.0, show_default=True, help="Seconds.")
@broker_options("the device's")
@friendly
def fhir_import(
    source: Path, device_id: str, patient_map: Path | None, identifier_system: str | None, wait_s: float, broker
) -> None:
    """Send the glucose Observations and insulin MedicationAdministrations of SOURCE (a Bundle or
    ndjson) to a device as events; what is refused is listed with the reason, the rest still goes."""
    from interop.fhir.resources import read_resources
    from interop.fhir.source import SourceError, read_source
    from tools.mqtt_kit import publish as publish_mod

    try:
        resources = read_source(source)
    except SourceError as exc:
        raise click.ClickException(str(exc)) from None
    mapping = _pairs(patient_map, "patient identifier,device patient id", "--patient-map")
    imported = read_resources(resources, mapping, system=identifier_system)
    for line in imported.refused:
        click.echo(f"refused {line}", err=True)
    skipped = ", ".join(f"{n} {kind}" for kind, n in sorted(imported.skipped.items()))
    click.echo(
        f"{source}: {len(imported.events)} events to send, {len(imported.refused)} resources refused"
        + (f", skipped {skipped}" if skipped else "")
    )
    answers = []
    if imported.events:
        outgoing = [publish_mod.Outgoing(event) for event in imported.events]
        try:
            answers = publish_mod.publish(outgoing, broker, device_id, wait_s)
        except publish_mod.PublishError as exc:
            raise click.ClickException(str(exc)) from None
        answered = sum(1 for a in answers if a.trouble is None)
        click.echo(f"device {device_id}: {answered} of {len(answers)} events taken")
    trouble = publish_mod.summary(answers)
    if trouble or imported.refused:
        raise click.ClickException(trouble or f"{len(imported.refused)} resources were refused (listed above)")


@fhir.command("sample-ward")
@click.option("--state-dir", type=click.Path(path_type=Path, file_okay=False), required=True, help="An empty folder.")
@click.option("--patients", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--days", type=click.IntRange(1, 60), default=14, show_default=True)
@click.option(
    "--cgm-minutes",
    type=click.IntRange(1, 60),
    help="Add a CGM reading every this many minutes (5: a real sensor); default fingersticks only.",
)
@friendly
def fhir_sample_ward(state_dir: Path, patients: int, days: int, cgm_minutes: int | None) -> None:
    """Write a synthetic ward's record into STATE-DIR through the device's own core, to try and time
    the export: three meals a day with readings, the advisor's answers, doses given and declined."""
    from datetime import UTC, datetime

    from tools.rigs.ward_record import build_ward_record

    try:
        made = build_ward_record(state_dir, patients, days, cgm_minutes, datetime.now(UTC))
    except FileExistsError as exc:
        raise click.BadParameter(str(exc), param_hint="--state-dir") from None
    click.echo(
        f"{state_dir}: {made.patients} patients × {made.days} days: {made.events} events, {made.answers} answers, "
        f"{made.doses_given} doses given, {made.declined} declined, in {made.seconds:.1f} s"
    )


NIGHTSCOUT_OVERLAP_HOURS = 3  # a follow poll reads this far back again: late entries, CGM backfill


@click.group()
def nightscout() -> None:
    """Nightscout: a CGM user's entries and treatments into a device; the record out as Nightscout JSON."""


@nightscout.command("pull")
@click.option("--url", required=True, help="The Nightscout site, e.g. https://me.example.org.")
@click.option("--api-secret", envvar="NIGHTSCOUT_API_SECRET", help="The site's API secret (or $NIGHTSCOUT_API_SECRET).")
@click.option("--token", envvar="NIGHTSCOUT_TOKEN", help="An access token instead (or $NIGHTSCOUT_TOKEN).")
@click.option("--patient", required=True, help="The device's patient id this site belongs to.")
@click.option("--device", "device_id", required=True, help="The device whose events topic receives the events.")
@click.option("--since", callback=_since, help="Start here (ISO 8601 with offset; default: 24 hours ago).")
@click.option(
    "--timezone",
    "zone",
    callback=_zone,
    help="The site's time zone, for items without utcOffset (default: refuse them).",
)
@click.option(
    "--bolus-insulin",
    type=click.Choice(["rapid", "regular"]),
    default="rapid",
    show_default=True,
    help="The insulin of the site's boluses (Nightscout does not record it).",
)
@click.option("--follow", is_flag=True, help="Keep pulling what is new until Ctrl-C.")
@click.option("--interval", type=click.FloatRange(5, 3600), default=60.0, show_default=True, help="Seconds.")
@click.option("--wait", "wait_s", type=click.FloatRange(0.5, 600), default=30.0, show_default=True, help="Seconds.")
@broker_options("the device's")
@friendly
def nightscout_pull(
    url, api_secret, token, patient, device_id, since, zone, bolus_insulin, follow, interval, wait_s, broker
) -> None:
    """Send a Nightscout site's readings, meals and boluses to a device as events; print what it took.

    With --follow each poll reads again the last 3 hours before the newest item seen and sends only
    items not seen before, so a bolus entered late or a CGM backfill is still taken."""
    import signal
    import threading
    from datetime import UTC, datetime, timedelta

    from domain.events import Insulin
    from domain.validation import is_identifier
    from interop.nightscout.client import NightscoutClient, NightscoutError, newest

    NIGHTSCOUT_OVERLAP = timedelta(hours=NIGHTSCOUT_OVERLAP_HOURS)
    from interop.nightscout.mapping import read_pulled
    from tools.mqtt_kit import publish as publish_mod

    if not is_identifier(patient):
        raise click.BadParameter("1–64 letters, digits, _ . : - (a device patient id)", param_hint="--patient")
    if not (api_secret or token):
        raise click.BadParameter(
            "give --api-secret or --token (or set NIGHTSCOUT_API_SECRET)", param_hint="--api-secret"
        )
    try:
        client = NightscoutClient(url, api_secret, token)
    except NightscoutError as exc:
        raise click.BadParameter(str(exc), param_hint="--url") from None
    stop = threading.Event()
    if follow:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    start = since or datetime.now(UTC) - timedelta(hours=24)  # never read before this
    entries_after = treatments_after = start
    seen: set[str] = set()  # the _id of every item already handled
    failed = False
    while True:
        try:
            entries = client.entries(max(start, entries_after - NIGHTSCOUT_OVERLAP))
            treatments = client.treatments(max(start, treatments_after - NIGHTSCOUT_OVERLAP))
        except NightscoutError as exc:
            if not follow:
                raise click.ClickException(str(exc)) from None
            click.echo(f"{exc}; trying again in {interval:g} s", err=True)
            entries, treatments = [], []
        now = datetime.now(UTC)
        entries_after = max(entries_after, newest(entries, "date", now) or entries_after)
        treatments_after = max(treatments_after, newest(treatments, "created_at", now) or treatments_after)
        entries = [e for e in entries if str(e.get("_id")) not in seen]
        treatments = [t for t in treatments if str(t.get("_id")) not in seen]
        seen.update(str(item.get("_id")) for item in (*entries, *treatments) if item.get("_id") is not None)
        pulled = read_pulled(entries, treatments, patient, Insulin(bolus_insulin), zone=zone)
        for line in pulled.refused:
            click.echo(f"refused {line}", err=True)
        if pulled.events:
            try:
                answers = publish_mod.publish(
                    [publish_mod.Outgoing(e) for e in pulled.events], broker, device_id, wait_s
                )
            except publish_mod.PublishError as exc:
                raise click.ClickException(str(exc)) from None
            taken = sum(1 for a in answers if a.trouble is None)
            skipped = ", ".join(f"{n} {kind}" for kind, n in sorted(pulled.skipped.items()))
            click.echo(
                f"{len(entries)} entries, {len(treatments)} treatments: {len(pulled.events)} events sent, {taken} taken"
                + (f"; skipped {skipped}" if skipped else "")
            )
            trouble = publish_mod.summary(answers)
            if trouble:
                click.echo(trouble, err=True)
                failed = True
        elif not follow:
            click.echo(f"{len(entries)} entries, {len(treatments)} treatments: nothing to send")
        failed = failed or bool(pulled.refused)
        if not follow or stop.wait(interval):
            break
    if failed:
        raise click.ClickException("some items were refused or not taken (listed above)")


@nightscout.command("export")
@click.option(
    "--state-dir", type=click.Path(path_type=Path, file_okay=False, exists=True), required=True, help="Device state."
)
@click.option("--device", "device_id", required=True, help="The device's id (named as the entries' device).")
@click.option("--patient", required=True, help="The patient (exact id).")
@click.option("--since", callback=_since, help="Only from this time on (ISO 8601 with offset).")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True, help="JSON file to write.")
@friendly
def nightscout_export(state_dir: Path, device_id: str, patient: str, since, out: Path) -> None:
    """Write one patient's record as Nightscout JSON: {"entries": [...], "treatments": [...]}; POST each
    list to the site's /api/v1/entries and /api/v1/treatments."""
    import json

    from interop.fhir.record import RecordError, read_records
    from interop.nightscout.mapping import record_to_nightscout

    try:
        [record] = read_records(state_dir, patient, since)
    except RecordError as exc:
        raise click.ClickException(str(exc)) from None
    data = record_to_nightscout(record.events, device_id)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1), encoding="utf-8")
    click.echo(f"{out}: {len(data['entries'])} entries, {len(data['treatments'])} treatments")
