"""docs/architecture.md against the tree: every module on the map, and no import running back up."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("preprocessing", "model", "device", "firmware_bridge", "tools")
MAY_IMPORT = {  # the layers of docs/architecture.md
    "preprocessing": set(),
    "device": {"preprocessing"},
    "model": {"preprocessing", "device"},
    "firmware_bridge": {"preprocessing", "device"},
    "tools": {"preprocessing", "device", "model", "firmware_bridge"},
}


def _modules() -> set[str]:
    found = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*"):
            if path.suffix in (".py", ".sh") and path.name != "__init__.py" and "__pycache__" not in path.parts:
                found.add(path.relative_to(ROOT).as_posix())
    return found


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
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in MAY_IMPORT and top != package and top not in MAY_IMPORT[package]:
                    wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert not wrong, "\n".join(wrong)
