"""docs/contract.md against device/contract/messages.py: every topic, endpoint, field and type matches."""

from __future__ import annotations

import dataclasses
import enum
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import pytest

from device.contract import manifest, messages, schema
from device.contract.topics import Topics
from domain import validation
from domain.visits import Visit
from tests.test_architecture import PACKAGES

DOC = Path(__file__).resolve().parents[1] / "docs" / "contract.md"
INTEROP = (
    "HL7 v2",
    "FHIR R4",
    "Nightscout",
)  # mapping tables of other standards (docs/contract.md, "Interoperability")
NAMES_ONLY = {"Event", "VisitHistory", "Visit"}  # decoded by domain/validation.py with rules of their own


def _tables(text: str) -> dict[str, list[list[str]]]:
    """Rows of the first table under each heading, cells stripped of backticks."""
    tables: dict[str, list[list[str]]] = {}
    heading = None
    for line in text.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("|") and heading is not None:
            cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
            if set("".join(cells)) <= set("-: "):
                continue
            tables.setdefault(heading, []).append(cells)
    return {h: rows[1:] for h, rows in tables.items()}  # without the header row


TABLES = _tables(DOC.read_text())


def render(hint: Any) -> str:
    """A type hint in the document's words."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        named = [render(a) for a in args if a is not type(None)]
        return " or ".join(named) + (" or null" if type(None) in args else "")
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (list, tuple):
        return f"list of {render(args[0])}"
    if origin is dict:
        return f"map of {render(args[1])}"
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + ", ".join(str(m.value) for m in hint)
    if dataclasses.is_dataclass(hint):
        return hint.__name__
    return {str: "string", int: "integer", float: "number", bool: "boolean", Any: "any"}[hint]


def test_topic_table_matches_the_code():
    rows = TABLES["MQTT topics"]
    documented = [
        (leaf, direction, name, int(qos), retained == "yes") for leaf, direction, name, qos, retained, _ in rows
    ]
    declared = [(t.leaf, t.direction, t.schema.__name__, t.qos, t.retained) for t in messages.MQTT_CONTRACT]
    assert documented == declared
    topics = Topics("bed7")
    for contract in messages.MQTT_CONTRACT:  # every leaf is a topic the device really uses
        attribute = contract.leaf.replace("/", "_")
        assert getattr(topics, attribute) == f"advisor/bed7/{contract.leaf}"


def test_endpoint_table_matches_the_code():
    rows = TABLES["HTTP endpoints (the bedside page)"]
    documented = [(method, path, request, response) for method, path, request, response, _ in rows]
    declared = [
        (e.method, e.path, e.request.__name__ if e.request else "—", e.response.__name__ if e.response else "—")
        for e in messages.HTTP_CONTRACT
    ]
    assert documented == declared


def test_every_schema_is_documented_and_nothing_else():
    documented = {h for h in TABLES if h not in ("MQTT topics", "HTTP endpoints (the bedside page)")}
    documented = {h for h in documented if not h.startswith(INTEROP)}
    declared = {s.__name__ for s in (*messages.ALL_SCHEMAS, *manifest.SCHEMAS)} | {"Visit"}
    assert documented == declared


@pytest.mark.parametrize("cls", [*messages.ALL_SCHEMAS, *manifest.SCHEMAS, Visit], ids=lambda c: c.__name__)
def test_fields_and_types_match(cls):
    rows = TABLES[cls.__name__]
    names = [row[0] for row in rows]
    if cls.__name__ == "Event":
        expected = list(validation.COMMON_FIELDS)
        for kind_fields in validation.KIND_FIELDS.values():
            expected += [f for f in kind_fields if f not in expected]
        assert names == expected
        return
    if cls.__name__ == "VisitHistory":
        assert names == list(validation.HISTORY_FIELDS)
        return
    if cls.__name__ == "Visit":
        assert names == list(validation.VISIT_FIELDS)
        return
    assert names == list(schema.field_names(cls))
    hints = typing.get_type_hints(cls)
    for name, kind, _meaning in rows:
        assert kind == render(hints[name]), f"{cls.__name__}.{name}"


def test_hl7_code_table_matches_the_bridge():
    from interop.codes import LOINC_GLUCOSE

    assert {row[0]: row[1] for row in TABLES["HL7 v2 glucose codes"]} == LOINC_GLUCOSE


def test_every_documented_schema_round_trips():
    """A payload the document describes parses into the schema and back unchanged."""
    ack = {"transfer": "t1", "accepted": False, "reason": "bad signature", "name": None, "version": None}
    assert messages.ModelAck.from_payload(ack).to_payload() == ack
    with pytest.raises(schema.SchemaError, match="unknown field"):
        messages.ModelAck.from_payload({**ack, "colour": "red"})
    with pytest.raises(schema.SchemaError, match="accepted must be true or false"):
        messages.ModelAck.from_payload({**ack, "accepted": "yes"})


def test_names_in_the_prose_exist():
    """Every `Name` the prose mentions that looks like a schema is one."""
    mentioned = set(re.findall(r"`([A-Z][a-z]+[A-Za-z]*)`", DOC.read_text()))
    known = {s.__name__ for s in messages.ALL_SCHEMAS} | {"Visit"} | {"Host", "Origin", "Server"}  # HTTP headers
    assert mentioned <= known, mentioned - known


def test_code_cites_only_the_projects_own_documents():
    """Docstrings and comments point at docs/ in this repository, and every cited document exists."""
    root = DOC.parents[1]
    outside = re.compile(r"\b(SPEC|EVALUATION|SOURCE)\.md\b")
    cited = re.compile(r"\bdocs/[\w-]+(?:/[\w-]+)*\.md\b")
    for package in (*PACKAGES, "tests"):
        for path in (root / package).rglob("*.py"):
            text = path.read_text()
            assert not outside.search(text), f"{path.relative_to(root)} cites a document outside the repository"
            for name in cited.findall(text):
                assert (root / name).is_file(), f"{path.relative_to(root)} cites {name}, which does not exist"
