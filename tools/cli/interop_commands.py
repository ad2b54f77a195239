"""``advisor bridge hl7``: thin wrappers over ``interop`` (HL7 v2, FHIR, Nightscout)."""

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
    from interop.hl7.listener import Hl7Bridge, Hl7Server, parse_listen
    from interop.hl7.messages import LOINC_GLUCOSE, Hl7Config

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
