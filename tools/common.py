"""Helpers shared by the CLI's command modules."""

from __future__ import annotations

import functools
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


def default_aim94_dir() -> Path | None:
    value = os.environ.get("ADVISOR_AIM94_DIR")
    return Path(value) if value else None


def trusted_keys(trust: tuple[Path, ...]):
    """The packaged release keys plus the given public-key files."""
    from device import bundle as bundle_mod
    from device import signing

    return bundle_mod.packaged_trusted_keys() + [signing.load_public(p) for p in trust]
