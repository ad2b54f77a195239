"""Helpers shared by the CLI's command modules."""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import click

from . import errors


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


def broker_config(url: str, protocol: str = "5"):
    """The broker of a ``--broker`` option, or a usage error naming the option."""
    from device.config import BrokerConfig, ConfigError

    try:
        return BrokerConfig(url=url, protocol=protocol)
    except ConfigError as exc:
        raise click.BadParameter(str(exc).replace("broker.url ", ""), param_hint="--broker") from None


OUT_OPTION = click.option(
    "--out", "out", type=click.Path(path_type=Path), required=True, help="Bundle directory to write."
)
KEY_OPTION = click.option(
    "--key",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Ed25519 private key to sign the bundle (see 'advisor keygen').",
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
