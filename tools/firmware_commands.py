"""``advisor export-c`` (and, later, the serial bridge): thin wrappers over ``firmware_bridge``."""

from __future__ import annotations

from pathlib import Path

import click

from .common import friendly, trusted_keys


@click.command("export-c")
@click.argument("bundle_path", type=click.Path(path_type=Path), required=False)
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True, help="Header file to write.")
@click.option("--model", "role", type=click.Choice(["int8", "float"]), default="int8", show_default=True)
@click.option("--trust", multiple=True, type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Extra trusted public key (repeatable).")
@friendly
def export_c(bundle_path: Path | None, out: Path, role: str, trust) -> None:
    """Write a verified bundle's TFLite model (default: the packaged one) as a C array for TFLite Micro."""
    from device import bundle as bundle_mod
    from firmware_bridge.c_export import header_text

    bundle = bundle_mod.open_bundle(bundle_path or bundle_mod.default_bundle_path("dose"), trusted_keys(trust))
    text = header_text(bundle, role)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    click.echo(f"{out}: {bundle.name} {bundle.version} {role}, {len(bundle.model_bytes(role))} bytes")
