"""Helpers shared by the CLI's command modules."""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import click

from tools.cli import errors


def friendly(func):
    """Turn the project's expected errors into one clear line and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except errors.user_errors() as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper


def _mimic_dir(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path:
    if value is None:
        raise click.BadParameter("give the MIMIC-III or MIMIC-IV folder, or set ADVISOR_MIMIC_DIR", param=param)
    return value


MIMIC_OPTION = click.option(
    "--mimic",
    "mimic_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=lambda: os.environ.get("ADVISOR_MIMIC_DIR"),
    callback=_mimic_dir,
    show_default="$ADVISOR_MIMIC_DIR",
    help="MIMIC-III or MIMIC-IV folder.",
)


def broker_config(
    url: str,
    protocol: str = "5",
    ca_file: Path | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
):
    """The broker of a ``--broker`` option and its TLS options, or a usage error naming the option."""
    from device.config import BrokerConfig, ConfigError

    if (ca_file or cert_file) and not url.startswith("mqtts://"):
        option = "--ca-file" if ca_file else "--client-cert"
        raise click.BadParameter("needs an mqtts:// broker URL (TLS)", param_hint=option)
    try:
        return BrokerConfig(url=url, protocol=protocol, ca_file=ca_file, cert_file=cert_file, key_file=key_file)
    except ConfigError as exc:
        message = str(exc)
        hint = "--broker"
        for key, option in (("ca_file", "--ca-file"), ("cert_file", "--client-cert"), ("key_file", "--client-key")):
            if f"broker.{key}" in message:
                hint = option
            message = message.replace(f"broker.{key}", option)
        raise click.BadParameter(message.replace("broker.url ", ""), param_hint=hint) from None


def broker_options(whose: str):
    """``--broker`` (required), ``--protocol`` and the TLS options of a command that talks to ``whose``
    broker ("the device's", "the ward's"); the command gets them as one ``broker``, a checked
    :class:`device.config.BrokerConfig` (a bad URL or TLS file is a usage error naming its option)."""

    def decorate(func):
        @functools.wraps(func)
        def command(*args, broker: str, protocol: str, ca_file, client_cert, client_key, **kwargs):
            return func(*args, broker=broker_config(broker, protocol, ca_file, client_cert, client_key), **kwargs)

        where = f"mqtt://[user:password@]host:port or mqtts://… of {whose} broker."
        command = click.option("--protocol", type=click.Choice(["5", "3.1.1"]), default="5", show_default=True)(command)
        command = click.option("--broker", required=True, help=where)(command)
        return tls_options(command)

    return decorate


def tls_options(func):
    """``--ca-file``, ``--client-cert`` and ``--client-key`` for a command that talks to the broker."""
    file_type = click.Path(path_type=Path, dir_okay=False, exists=True)
    for option in reversed(
        (
            click.option("--ca-file", type=file_type, help="The CA that signed the broker's certificate (mqtts://)."),
            click.option("--client-cert", type=file_type, help="Client certificate, when the broker asks for one."),
            click.option("--client-key", type=file_type, help="The client certificate's private key."),
        )
    ):
        func = option(func)
    return func


CREDENTIALS_OPTION = click.option(
    "--credentials",
    "credentials_file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="credentials.txt from advisor broker-profile: each role logs in as its own user.",
)


def device_credentials(credentials_file: Path | None, device_id: str) -> dict:
    """Per role, the credential of ``credentials_file`` that covers ``device_id`` (empty without a file)."""
    from tools.ward.broker_profile import credentials_for, read_credentials

    if credentials_file is None:
        return {}
    try:
        roles = credentials_for(read_credentials(credentials_file.read_text(), str(credentials_file)), device_id)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--credentials") from None
    if not roles:
        raise click.BadParameter(f"no credential in it covers device {device_id}", param_hint="--credentials")
    return roles


def role_logins(credentials_file: Path | None, device_ids: list[str], roles: tuple[str, ...], broker) -> dict:
    """Per role, ``broker`` logged in as that role's user in ``credentials_file``, the same user for every device.

    Without a file every role is ``broker`` itself (the ``--broker`` URL's user). A role the file
    lacks for a device, or gives different users for different devices, is a usage error naming
    ``--credentials``.
    """
    if credentials_file is None:
        return dict.fromkeys(roles, broker)
    found = {device_id: device_credentials(credentials_file, device_id) for device_id in device_ids}
    logins = {}
    for role in roles:
        lacking = [device_id for device_id in device_ids if role not in found[device_id]]
        if lacking:
            raise click.BadParameter(f"has no {role} user for {', '.join(lacking)}", param_hint="--credentials")
        users = sorted({found[device_id][role].username for device_id in device_ids})
        if len(users) > 1:
            raise click.BadParameter(
                f"the devices have different {role} users ({', '.join(users)}): give the devices of one ward",
                param_hint="--credentials",
            )
        logins[role] = found[device_ids[0]][role].login(broker)
    return logins


def require_bundle_folder(path: Path) -> None:
    """A folder given as a bundle must hold manifest.json; else one line saying so, and what it looks like."""
    if not path.is_dir() or (path / "manifest.json").is_file():
        return
    installed = sorted((path / "bundles").glob("*.tar.gz")) if (path / "bundles").is_dir() else []
    hint = (
        f"; it looks like a device state folder, whose installed bundles are {', '.join(map(str, installed))}"
        if installed
        else "; give a bundle folder (manifest.json, signature.json and the model files) or its .tar.gz"
    )
    raise click.ClickException(f"{path} is not a model bundle (no manifest.json){hint}")


OUT_OPTION = click.option(
    "--out", "out", type=click.Path(path_type=Path), required=True, help="Bundle directory to write."
)
KEY_OPTION = click.option(
    "--key",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Ed25519 private key to sign the bundle (see 'advisor keygen').",
)
TRACKING_OPTION = click.option(
    "--tracking-uri", help="MLflow tracking store or server for this run (default $MLFLOW_TRACKING_URI, else ./mlruns)."
)
REPORT_OPTION = click.option(
    "--report",
    "report_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where to write report.md and plots (default: OUT-report beside the bundle).",
)


def configure_logging(verbose: bool) -> None:
    """The project's own lines (``advisor.*``) at INFO, libraries' only from WARNING up.

    ``verbose`` shows the project's DEBUG lines and the libraries' INFO lines too.
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("advisor").setLevel(logging.DEBUG if verbose else logging.INFO)


def default_aim94_dir() -> Path | None:
    value = os.environ.get("ADVISOR_AIM94_DIR")
    return Path(value) if value else None


def require_modules(extra: str, *modules: str) -> None:
    """Stop with one line, before any slow work, when a command's optional dependencies are missing."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise click.ClickException(
            f"this command needs the '{extra}' extra ({', '.join(missing)} not installed): "
            f"pip install -e '.[{extra}]' (or pip install -r requirements/{extra}.txt)"
        )
