"""``advisor export-c`` and ``advisor bridge serial``: thin wrappers over ``firmware_bridge``."""

from __future__ import annotations

from pathlib import Path

import click

from tools.cli.common import broker_options, configure_logging, friendly


@click.command("export-c")
@click.argument("bundle_path", type=click.Path(path_type=Path), required=False)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Folder for the firmware package (model header, golden vectors, check program, README).",
)
@click.option("--model", "role", type=click.Choice(["int8", "float"]), default="int8", show_default=True)
@click.option(
    "--trust",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Extra trusted public key (repeatable).",
)
@friendly
def export_c(bundle_path: Path | None, out: Path, role: str, trust) -> None:
    """Write a verified dose bundle (default: the packaged one) as a firmware package for TFLite Micro."""
    from device.models import bundle as bundle_mod
    from firmware_bridge.c_export import check_exportable, golden_vectors, package_files, tflm_outputs

    bundle = bundle_mod.open_bundle(
        bundle_path or bundle_mod.default_bundle_path("dose"), bundle_mod.trusted_keys(trust)
    )
    check_exportable(bundle)
    vectors = golden_vectors(bundle, role)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in package_files(bundle, role, vectors).items():
        (out / name).write_text(text)
        click.echo(f"{out / name}")
    click.echo(
        f"{bundle.name} {bundle.version} {role}: {len(bundle.model_bytes(role))} bytes, "
        f"{len(vectors)} golden vectors; check on a host: cd {out} && cc -std=c11 -O2 -o advisor_check "
        "advisor_check.c -lm && ./advisor_check"
    )
    micro = tflm_outputs(bundle.model_bytes(role), vectors)
    if micro is None:
        click.echo("TFLite Micro: not checked here (pip install tflite-micro to run the golden vectors through it)")
        return
    gaps = [abs(got - v.model_output) for got, v in zip(micro, vectors, strict=True)]
    unit = " step(s)" if role == "int8" else ""
    click.echo(
        f"TFLite Micro: ran the {len(vectors)} golden vectors; {sum(g == 0 for g in gaps)} outputs equal the "
        f"device's, the largest difference {max(gaps):g}{unit}"
    )
    if max(gaps) > (1 if role == "int8" else 1e-3):
        raise click.ClickException(f"TFLite Micro disagrees with the device by {max(gaps):g}{unit}: do not ship this")


@click.group()
def bridge() -> None:
    """Bridge microcontroller firmware (serial) and hospital systems (HL7 v2) to a device's events."""


@bridge.command("serial")
@click.option(
    "--port",
    required=True,
    help="Serial device (e.g. /dev/ttyUSB0), or 'pty' to create a pseudo-terminal and print its path.",
)
@click.option("--baud", type=int, default=115200, show_default=True)
@click.option("--device", "device_id", required=True, help="Device whose events topic receives the events.")
@click.option("--source", default="fw", show_default=True, help="Prefix of the event ids this bridge creates.")
@broker_options("the device's")  # a bad broker is named before the port opens
@friendly
def bridge_serial(port, baud, broker, device_id, source) -> None:
    """Turn firmware frames into events; acknowledge each once the broker has it. Ctrl-C stops."""
    import signal
    import threading

    from firmware_bridge.bridge import SerialBridge
    from firmware_bridge.links import Link, SerialLink, open_pty

    configure_logging(verbose=False)
    link: Link
    if port == "pty":
        link, path = open_pty()
        click.echo(f"serial port: {path}", err=True)
    else:
        link = SerialLink(port, baud)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    runner = SerialBridge(link, broker, device_id, source)
    click.echo(f"bridging {port} -> {broker.display_url} device {device_id}", err=True)
    runner.run(stop)
    stats = runner.stats
    click.echo(
        f"stopped: {stats.delivered} delivered, {stats.refused} refused, {stats.duplicates} duplicates, "
        f"{stats.gaps} gaps ({stats.missing} frames missing), frame errors {stats.frame_errors}",
        err=True,
    )
