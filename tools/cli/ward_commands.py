"""Setting up a ward: ``advisor broker-profile`` writes the broker's files, ``advisor doctor``
checks each device end to end once it runs, ``advisor rollout`` brings a new bundle to its devices."""

from __future__ import annotations

from pathlib import Path

import click

from tools.cli.common import (
    CREDENTIALS_OPTION,
    TRACKING_OPTION,
    broker_options,
    device_credentials,
    friendly,
    require_modules,
)


def _device_ids(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[str]:
    from device.contract.topics import check_device_id

    ids = [v.strip() for item in value for v in item.split(",") if v.strip()]
    if not ids:
        raise click.BadParameter("give at least one device id", param=param)
    if len(set(ids)) != len(ids):
        raise click.BadParameter("a device id is given twice", param=param)
    for device_id in ids:
        try:
            check_device_id(device_id)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param=param) from None
    return ids


@click.command("broker-profile")
@click.option(
    "--device-id",
    "devices",
    multiple=True,
    required=True,
    callback=_device_ids,
    help="A device this broker serves (topics advisor/<id>/…); repeat or comma-separate for a ward.",
)
@click.option("--ward", help="Name of the ward-wide flasher and monitor users (default: the device id, or 'ward').")
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Folder for mosquitto.conf, acl, passwd, certificates and credentials.txt.",
)
@click.option(
    "--host",
    "hosts",
    multiple=True,
    default=("localhost", "127.0.0.1"),
    show_default=True,
    help="Name or IP address clients use to reach the broker (repeatable; goes into the certificate).",
)
@click.option("--port", type=click.IntRange(1, 65535), default=8883, show_default=True, help="TLS listener port.")
@click.option("--bind", default="0.0.0.0", show_default=True, help="Address the TLS listener binds to.")
@friendly
def broker_profile(
    devices: list[str], ward: str | None, out: Path, hosts: tuple[str, ...], port: int, bind: str
) -> None:
    """Write a locked-down Mosquitto profile for one device or a ward: TLS only, passwords, an ACL per role."""
    from device.contract.topics import check_device_id
    from tools.ward.broker_profile import AUTOSAVE_S, write_profile

    if ward is not None:
        try:
            check_device_id(ward)
        except ValueError as exc:
            raise click.BadParameter(str(exc).replace("device id", "ward name"), param_hint="--ward") from None
    profile = write_profile(out, devices, list(hosts), port, bind, ward=ward)
    users = {c.role: c.username for c in reversed(profile.credentials)}
    beds = f"device {devices[0]}" if len(devices) == 1 else f"{len(devices)} devices ({', '.join(devices)})"
    click.echo(f"Mosquitto profile for {beds} in {profile.folder}:")
    click.echo(f"  mosquitto.conf  TLS listener {bind}:{port}, no anonymous access")
    click.echo(
        f"  acl             per device: device-<id>, sensor-<id>; ward-wide: {users['flasher']}, {users['monitor']}"
        " — each only its topics"
    )
    click.echo(f"  passwd          {len(profile.credentials)} hashed passwords (mosquitto_passwd)")
    click.echo("  ca.crt          give to every client (broker.ca_file); keep ca.key offline")
    click.echo("  credentials.txt role, device, user and password per line (mode 600): hand out, then delete")
    click.echo(f"  persistence     written every {AUTOSAVE_S // 60} min and at a clean stop (kind to an SD card)")
    if profile.owner:
        click.echo(f"  ownership       passwd, server.key and the folder belong to {profile.owner}, who runs Mosquitto")
    else:
        click.echo(
            f"  ownership       before starting Mosquitto as root: sudo chown -R mosquitto: {profile.folder} "
            "(it drops to the mosquitto user and must read passwd and server.key)"
        )
    click.echo(
        f"Check each device once it runs: advisor doctor --broker mqtts://HOST:{port} --device ID "
        f"--ca-file {profile.ca_file} --credentials {profile.folder / 'credentials.txt'}"
    )
    click.echo("See docs/deployment.md.")


@click.command()
@click.option("--device", "device_id", required=True, help="The device to check.")
@CREDENTIALS_OPTION
@click.option("--expect-version", help="The dose bundle version the device should run.")
@click.option(
    "--timeout", "timeout_s", type=click.FloatRange(0.5, 120), default=5.0, show_default=True, help="Seconds per check."
)
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@broker_options("the device's")
@friendly
def doctor(broker, device_id, credentials_file, expect_version, timeout_s, as_json) -> None:
    """Check a device end to end and say what is wrong and how to fix it.

    Broker reachable, TLS, each role's login, the device's status and models, an answer
    round-trip, the clock, and (with --credentials) what each role may read and write.
    Exit 1 when a check fails.
    """
    from device.contract.topics import check_device_id
    from tools.ward.doctor import Doctor
    from tools.ward.doctor import as_json as findings_json

    try:
        check_device_id(device_id)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--device") from None
    roles = device_credentials(credentials_file, device_id)
    findings = Doctor(broker, device_id, roles, timeout_s, expect_version).examine()
    if as_json:
        click.echo(findings_json(findings))
    else:
        click.echo(f"doctor: device {device_id} at {broker.display_url}")
        for finding in findings:
            for line in finding.lines():
                click.echo(f"  {line}")
    failed = [f for f in findings if f.ok is False]
    if failed:
        names = ", ".join(f.check for f in failed)
        raise click.ClickException(f"{len(failed)} of {len(findings)} checks failed: {names}")
    if not as_json:
        click.echo(f"all {sum(f.ok is True for f in findings)} checks passed")


def _duration(ctx: click.Context, param: click.Parameter, value: str) -> float:
    """``30s``, ``10m``, ``2h`` or plain seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (value[:-1], value[-1]) if value and value[-1] in units else (value, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a duration like 30s, 10m or 2h", param=param) from None
    if not 1 <= seconds <= 7 * 86400:
        raise click.BadParameter("must be between 1 s and 7 days", param=param)
    return seconds


@click.command()
@click.argument("bundle_path", required=False, type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option(
    "--promoted",
    "alias",
    help="Roll out the dose bundle the MLflow registry's ALIAS points at (advisor bundle promote) instead of BUNDLE.",
)
@TRACKING_OPTION
@click.option(
    "--devices",
    "devices",
    multiple=True,
    required=True,
    callback=_device_ids,
    help="Comma-separated device ids, in order.",
)
@click.option(
    "--canary", type=click.IntRange(1), default=1, show_default=True, help="Devices flashed and soaked first."
)
@click.option(
    "--soak", "soak_s", default="10m", show_default=True, callback=_duration, help="How long each wave is watched."
)
@click.option("--wave", type=click.IntRange(1), help="Devices per wave after the canaries (default: the rest at once).")
@click.option(
    "--previous",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="The bundle the devices run now, to roll back to (default: the packaged one).",
)
@click.option(
    "--log",
    "log_path",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="The rollout log (JSON lines); the same --log resumes a killed rollout.",
)
@click.option(
    "--trust",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="A public key the devices trust besides the packaged one (repeatable): the bundles are checked first.",
)
@broker_options("the ward's")
@friendly
def rollout(broker, bundle_path, alias, tracking_uri, devices, canary, soak_s, wave, previous, log_path, trust) -> None:
    """Roll BUNDLE out in stages: canaries, a soak, then waves; halt and roll back when one degrades."""
    from device.models.bundle import default_bundle_path
    from tools.ward import rollout as rollout_mod

    if (bundle_path is None) == (alias is None):
        raise click.UsageError("give either BUNDLE or --promoted ALIAS")
    if alias is not None:
        require_modules("train", "mlflow")
        from model import tracking

        try:
            bundle_path = tracking.promoted_bundle("dose", alias, tracking.tracking_uri(tracking_uri))
        except tracking.TrackingError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"the dose bundle promoted to '{alias}': {bundle_path}", err=True)
    if canary > len(devices):
        raise click.BadParameter(f"{canary} canaries but {len(devices)} device(s)", param_hint="--canary")
    plan = rollout_mod.Rollout(
        bundle_path, previous or default_bundle_path("dose"), devices, canary, soak_s, wave, log_path, tuple(trust)
    )
    try:
        state = rollout_mod.run(plan, broker, progress=lambda message: click.echo(message, err=True))
    except rollout_mod.RolloutError as exc:
        raise click.ClickException(str(exc)) from None
    if state.halted:
        back = ", ".join(state.rolled_back) or "none needed"
        raise click.ClickException(f"rollout halted: {state.halted}; rolled back: {back}")
    click.echo(f"rollout done: {state.version} on {', '.join(state.devices)}")
