"""``advisor users``: every command says which database it changed; the README's command works as written."""

from __future__ import annotations

import shlex
from pathlib import Path

from click.testing import CliRunner

from device.config import DeviceConfig
from tools.cli.main import main

README = Path(__file__).resolve().parents[1] / "README.md"


def test_users_commands_name_the_database_they_change(tmp_path):
    state = tmp_path / "state"
    database = state / "advisor.sqlite3"
    run = CliRunner()
    added = run.invoke(
        main, ["users", "add", "ann", "--role", "nurse", "--pin-stdin", "--state-dir", str(state)], "2468\n"
    )
    assert added.exit_code == 0, added.output
    assert added.stdout == f"added ann (nurse) to {database}\n" and "default" not in added.stderr
    listed = run.invoke(main, ["users", "list", "--state-dir", str(state)])
    assert listed.stdout.splitlines()[0] == f"users in {database}:" and listed.stdout.splitlines()[1].startswith("ann")
    changed = run.invoke(main, ["users", "set-pin", "ann", "--pin-stdin", "--state-dir", str(state)], "1357\n")
    assert changed.stdout == f"new PIN set for ann in {database}\n"
    removed = run.invoke(main, ["users", "remove", "ann", "--state-dir", str(state)])
    assert removed.stdout == f"removed ann from {database}\n"
    empty = run.invoke(main, ["users", "list", "--state-dir", str(state)])
    assert empty.stdout.startswith(f"no users in {database}: the page works with the shared page PIN")


def test_without_state_dir_or_config_the_default_folder_is_named_with_how_to_choose(tmp_path, monkeypatch):
    default = tmp_path / "default-state"
    monkeypatch.setattr("device.config.load_config", lambda path: DeviceConfig(state_dir=default))
    added = CliRunner().invoke(main, ["users", "add", "bo", "--role", "viewer", "--pin-stdin"], "2468\n")
    assert added.exit_code == 0, added.output
    assert added.stdout == f"added bo (viewer) to {default / 'advisor.sqlite3'}\n"
    assert added.stderr == (
        f"no --state-dir or --config: using the default state folder {default} (the one 'advisor device run' uses "
        "without them); choose the device's with --state-dir DIR or --config FILE\n"
    )


def test_the_readme_users_command_works_as_written(tmp_path, monkeypatch):
    readme = README.read_text()
    line = next(x for x in readme.splitlines() if x.startswith("advisor users add "))
    device_section = readme.split("## Running a device", 1)[1].split("\n## ", 1)[0]
    assert "--state-dir /var/lib/advisor" in line and "--state-dir /var/lib/advisor" in device_section
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "var-lib-advisor"  # the README's folder, moved out of the real /var/lib
    args = [str(folder) if a == "/var/lib/advisor" else a for a in shlex.split(line, comments=True)[1:]]
    added = CliRunner().invoke(main, args, "2468\n2468\n")
    assert added.exit_code == 0, added.output
    assert f"added ann (nurse) to {folder / 'advisor.sqlite3'}" in added.stdout
