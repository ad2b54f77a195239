"""``advisor users``: the bedside page's users — add, list, change a PIN, remove.

Users live in the device's state database (``state_dir/advisor.sqlite3``); a PIN is stored as a
scrypt hash only. Run it on the device, with the same ``--config`` or ``--state-dir`` as
``advisor device run``; a running device sees changes at once. Each command names the database
it used; without either option it also says that was the default folder, and how to choose another.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from tools.cli.common import friendly

ROLE_HELP = (
    "nurse: records and sees companion risk; patient: records the entries and doses of one patient (--patient); "
    "viewer: reads only."
)


def _store(config_file: Path | None, state_dir: Path | None):
    """The device's state database: ``--state-dir``, else ``--config``'s state_dir, else the default folder.

    Without either option it says on standard error which folder it used and how to choose another.
    """
    from device.config import load_config
    from device.state.store import DATABASE_NAME, Store

    folder = state_dir or load_config(config_file).state_dir
    if config_file is None and state_dir is None:
        click.echo(
            f"no --state-dir or --config: using the default state folder {folder} (the one 'advisor device run' "
            "uses without them); choose the device's with --state-dir DIR or --config FILE",
            err=True,
        )
    return Store(folder / DATABASE_NAME)


def _pin(pin_stdin: bool) -> str:
    if pin_stdin:
        return sys.stdin.readline().rstrip("\n")
    return str(click.prompt("PIN", hide_input=True, confirmation_prompt=True))


_config_option = click.option(
    "--config", "config_file", type=click.Path(path_type=Path, dir_okay=False), help="The device's config file."
)
_state_option = click.option(
    "--state-dir", type=click.Path(path_type=Path, file_okay=False), help="The device's state directory."
)
_pin_option = click.option("--pin-stdin", is_flag=True, help="Read the PIN from one line of standard input.")


@click.group()
def users() -> None:
    """Who may use the bedside page: per-user PINs with roles (nurse, patient, viewer)."""


@users.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["nurse", "patient", "viewer"]), required=True, help=ROLE_HELP)
@click.option("--patient", help="The one patient a patient user records for (required with --role patient).")
@_pin_option
@_config_option
@_state_option
@friendly
def users_add(
    name: str, role: str, patient: str | None, pin_stdin: bool, config_file: Path | None, state_dir: Path | None
) -> None:
    """Add user NAME (a name or badge number) with a role and a PIN (asked twice, or --pin-stdin).

    A PIN of one repeated character or of consecutive digits (0000, 1234) is refused; names are
    unique regardless of case ('Ann' is 'ann').
    """
    from device.page.users import check_user, hash_pin

    check_user(name, role, patient)
    store = _store(config_file, state_dir)
    if store.user(name) is not None:
        raise click.UsageError(f"user {name!r} exists already; use 'advisor users set-pin' or remove it first")
    if not store.add_user(name, role, hash_pin(_pin(pin_stdin)), patient):
        raise click.UsageError(f"a user named {name!r} in other letter case exists already: names ignore case")
    click.echo(f"added {name} ({role}{f' of patient {patient}' if patient else ''}) to {store.path}")


@users.command("list")
@_config_option
@_state_option
@friendly
def users_list(config_file: Path | None, state_dir: Path | None) -> None:
    """List the users and their roles (never the PINs)."""
    store = _store(config_file, state_dir)
    rows = store.users()
    if not rows:
        click.echo(f"no users in {store.path}: the page works with the shared page PIN (or on this machine only)")
        return
    click.echo(f"users in {store.path}:")
    for name, role, created, patient in rows:
        of = f"of {patient}" if patient else ""
        click.echo(f"{name:24} {role:8} {of:16} added {created[:16].replace('T', ' ')} UTC")


@users.command("set-pin")
@click.argument("name")
@_pin_option
@_config_option
@_state_option
@friendly
def users_set_pin(name: str, pin_stdin: bool, config_file: Path | None, state_dir: Path | None) -> None:
    """Give user NAME a new PIN."""
    from device.page.users import hash_pin

    store = _store(config_file, state_dir)
    if store.user(name) is None:
        raise click.UsageError(f"no user {name!r} (see 'advisor users list')")
    store.set_user_pin(name, hash_pin(_pin(pin_stdin)))
    click.echo(f"new PIN set for {name} in {store.path}")


@users.command("remove")
@click.argument("name")
@_config_option
@_state_option
@friendly
def users_remove(name: str, config_file: Path | None, state_dir: Path | None) -> None:
    """Remove user NAME (the audit trail keeps what they did)."""
    store = _store(config_file, state_dir)
    if not store.remove_user(name):
        raise click.UsageError(f"no user {name!r} in {store.path} (see 'advisor users list')")
    click.echo(f"removed {name} from {store.path}")
