"""Every third-party module the shipped packages import comes from a declared distribution.

Reads the imports with ``ast`` (including the lazy ones inside functions), maps each to the
distribution that installs it, and checks that distribution is declared in pyproject.toml:
the device side (every module ``device`` and ``firmware_bridge`` import, following first-party
imports through ``domain``) by the core or ``device`` extra alone, since that is all a
Raspberry Pi installs; the rest by any extra. The lock files in
requirements/ must pin every declared distribution at a version the declaration allows.
"""

from __future__ import annotations

import ast
import importlib.metadata
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.test_architecture import PACKAGES

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = {*PACKAGES, "tests"}
DEVICE_ROOTS = ("device", "firmware_bridge")
SHIPPED = PACKAGES
OPTIONAL_IMPORTS = {
    "tflite_runtime",  # the device runs on it when ai-edge-litert is absent
    "tflite_micro",  # export-c runs TFLite Micro's check only when the firmware extra is installed
}
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _declared(*extras: str) -> dict[str, Requirement]:
    requirements = [Requirement(r) for r in PROJECT["dependencies"]]
    for extra in extras:
        requirements += [Requirement(r) for r in PROJECT["optional-dependencies"][extra]]
    return {canonicalize_name(r.name): r for r in requirements}


def _imported_names(path: Path) -> list[tuple[str, int]]:
    """(absolute module name, line) of every import in ``path``, relative ones resolved."""
    package = list(path.relative_to(ROOT).with_suffix("").parts[:-1])
    if path.name == "__init__.py":
        package = list(path.relative_to(ROOT).parts[:-1])
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.append((module, node.lineno))
            names += [(f"{module}.{alias.name}", node.lineno) for alias in node.names]
    return names


def _module_file(module: str) -> Path | None:
    path = ROOT.joinpath(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _device_side_files() -> list[Path]:
    """Every first-party file the device can import: the closure of device/ and firmware_bridge/."""
    todo = [path for root in DEVICE_ROOTS for path in sorted((ROOT / root).rglob("*.py"))]
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module, _ in _imported_names(path):
            if module.split(".")[0] in FIRST_PARTY - {"tests"}:
                found = _module_file(module)
                if found is not None:
                    todo.append(found)
    return sorted(seen)


def _imports(files: list[Path]) -> dict[str, str]:
    """Top-level third-party module → one file that imports it."""
    found: dict[str, str] = {}
    for path in files:
        for module, _ in _imported_names(path):
            top = module.split(".")[0]
            if top and top not in sys.stdlib_module_names and top not in FIRST_PARTY:
                found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def _package_files(packages: tuple[str, ...]) -> list[Path]:
    return [path for package in packages for path in sorted((ROOT / package).rglob("*.py"))]


DISTRIBUTIONS = importlib.metadata.packages_distributions()


def _problems(files: list[Path], declared: dict[str, Requirement]) -> list[str]:
    problems = []
    for module, where in sorted(_imports(files).items()):
        if module in OPTIONAL_IMPORTS:
            continue
        providers = {canonicalize_name(d) for d in DISTRIBUTIONS.get(module, [])}
        if not providers:
            problems.append(f"import {module} ({where}): no installed distribution provides it")
        elif not providers & set(declared):
            problems.append(f"import {module} ({where}): {', '.join(sorted(providers))} is not declared")
    return problems


def test_device_side_imports_are_declared_by_the_device_extra():
    files = _device_side_files()
    assert ROOT / "domain" / "validation.py" in files  # the closure reaches shared modules
    assert _problems(files, _declared("device")) == []


def test_every_shipped_import_is_declared():
    assert _problems(_package_files(SHIPPED), _declared(*PROJECT["optional-dependencies"])) == []


def _pins(lock: Path) -> dict[str, list[str]]:
    pins: dict[str, list[str]] = {}
    for line in lock.read_text().splitlines():
        spec = line.split("#")[0].strip()
        if spec and not spec.startswith("-"):
            requirement = Requirement(spec)
            version = next(iter(requirement.specifier)).version
            pins.setdefault(canonicalize_name(requirement.name), []).append(version)
    return pins


@pytest.mark.parametrize(
    "lock, extras",
    [("device.txt", ("device",)), ("train.txt", ("device", "train")), ("ci.txt", ("device", "train", "demo", "dev"))],
)
def test_lock_files_pin_every_declared_distribution(lock, extras):
    pins = _pins(ROOT / "requirements" / lock)
    for name, requirement in _declared(*extras).items():
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue  # for another platform
        assert name in pins, f"requirements/{lock} does not pin {name} (run bash requirements/refresh.sh)"
        assert any(requirement.specifier.contains(v) for v in pins[name]), (
            f"requirements/{lock} pins {name} {pins[name]}, outside {requirement.specifier}"
        )
