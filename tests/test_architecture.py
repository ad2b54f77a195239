"""docs/architecture.md against the tree: every module on the map, and no import running back up."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("domain", "preprocessing", "model", "insilico", "device", "firmware_bridge", "interop", "tools")
MAY_IMPORT = {  # the layers of docs/architecture.md
    "domain": set(),
    "preprocessing": {"domain"},
    "device": {"domain"},
    "model": {"domain", "preprocessing", "device"},
    "insilico": {"domain", "device"},
    "firmware_bridge": {"domain", "device"},
    "interop": {"domain", "device"},
    "tools": {"domain", "preprocessing", "device", "model", "insilico", "firmware_bridge", "interop"},
}
FLOORS = {  # inside a package, bottom up: a part imports only its own floor's parts and those below
    "device": ["contract", "rules", "config", "state", "models", "advisor", "mqtt", "page", "service"],
    "tools": ["mqtt_kit", "ward", "rigs", "data", "cli"],
}


def _modules() -> set[str]:
    found = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*"):
            if path.suffix in (".py", ".sh") and path.name != "__init__.py" and "__pycache__" not in path.parts:
                found.add(path.relative_to(ROOT).as_posix())
    return found


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import of the project's packages in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path.relative_to(ROOT)}:{node.lineno}: relative import"
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] in MAY_IMPORT]


def _floor(package: str, dotted: list[str]) -> int | None:
    """The floor of a module (its dotted path below the package), None for the package itself."""
    return FLOORS[package].index(dotted[0]) if dotted and dotted[0] in FLOORS[package] else None


def test_every_module_is_on_the_map_and_every_entry_exists():
    text = (ROOT / "docs" / "architecture.md").read_text()
    listed = set(re.findall(r"^- `([^`]+)` — \S", text[text.index("## Every module") :], re.MULTILINE))
    modules = _modules()
    assert not modules - listed, f"not on docs/architecture.md: {sorted(modules - listed)}"
    assert not listed - modules, f"on docs/architecture.md but not in the tree: {sorted(listed - modules)}"


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_runs_back_up(package):
    wrong = []
    for path in (ROOT / package).rglob("*.py"):
        for line, name in _imports(path):
            top = name.split(".")[0]
            if top != package and top not in MAY_IMPORT[package]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("package", sorted(FLOORS))
def test_no_import_runs_back_up_inside_a_package(package):
    parts = {p.stem if p.suffix else p.name for p in (ROOT / package).iterdir() if p.suffix == ".py" or p.is_dir()}
    assert parts - {"__init__", "__pycache__", "default_bundles", "keys"} == set(FLOORS[package]), "floors vs tree"
    wrong = []
    for path in (ROOT / package).rglob("*.py"):
        here = _floor(package, list(path.relative_to(ROOT / package).with_suffix("").parts))
        for line, name in _imports(path):
            dotted = name.split(".")
            if dotted[0] != package:
                continue
            there = _floor(package, dotted[1:])
            if here is not None and there is not None and there > here:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {name} from a floor above")
    assert not wrong, "\n".join(wrong)
