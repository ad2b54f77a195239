"""HL7 v2 messages for the bridge's tests, written by hl7apy: an encoder independent of the bridge's parser."""

from __future__ import annotations

import hashlib

from hl7apy.core import Message

TAG = hashlib.sha256(b"GLUCOMETER^WARD7").hexdigest()[:6]  # the bridge's tag of this kit's sender (MSH-3^MSH-4)
GLUCOMETER = "41653-7^Glucose [Mass/volume] in Capillary blood by Glucometer^LN"


def event_id(control_id: str, part: int = 1) -> str:
    """The id of the event the bridge makes of part ``part`` of this kit's message ``control_id``."""
    return f"hl7-{TAG}-{control_id}-{part}"


def oru(
    control_id: str = "MSG0001",
    value: str = "182",
    unit: str = "mg/dL^^UCUM",
    code: str = GLUCOMETER,
    patient: str = "MRN123^^^HOSP^MR",
    observed: str = "20261204101000+0100",
    status: str = "F",
    extra: list[tuple[str, str, str]] | None = None,
) -> str:
    """An ``ORU^R01`` with one glucose ``OBX`` (and ``extra`` (value, unit, time) ones) as ER7 text."""
    m = _header("ORU_R01", "ORU^R01^ORU_R01", control_id)
    result = m.add_group("ORU_R01_PATIENT_RESULT")
    result.add_group("ORU_R01_PATIENT").pid.pid_3 = patient
    order = result.add_group("ORU_R01_ORDER_OBSERVATION")
    order.obr.obr_4 = "41653-7^Glucose^LN"
    for number, (v, u, t) in enumerate([(value, unit, observed), *(extra or [])], start=1):
        obx = order.add_group("ORU_R01_OBSERVATION").obx
        obx.obx_1, obx.obx_2, obx.obx_3, obx.obx_5 = str(number), "NM", code, v
        if u:
            obx.obx_6 = u
        obx.obx_11 = status
        if t:
            obx.obx_14 = t
    return m.to_er7()


def adt(
    control_id: str = "ADM0001",
    trigger: str = "A01",
    weight: str | None = "82",
    unit: str = "kg",
    patient: str = "MRN123^^^HOSP^MR",
    born: str = "19600315",
    height: tuple[str, str] | None = None,
) -> str:
    """An ``ADT`` admission (or update) with the body weight and ``height`` (value, unit) in ``OBX``
    segments and the birth date in PID-7."""
    m = _header("ADT_A01", f"ADT^{trigger}^ADT_A01", control_id)
    m.pid.pid_3 = patient
    m.pid.pid_7 = born
    m.pv1.pv1_2 = "I"
    if weight is not None:
        obx = m.add_segment("OBX")
        obx.obx_1, obx.obx_2, obx.obx_3, obx.obx_5, obx.obx_6 = "1", "NM", "29463-7^Body weight^LN", weight, unit
        obx.obx_11 = "F"
    if height is not None:
        obx = m.add_segment("OBX")
        obx.obx_1, obx.obx_2, obx.obx_3 = "2", "NM", "8302-2^Body height^LN"
        obx.obx_5, obx.obx_6, obx.obx_11 = height[0], height[1], "F"
    return m.to_er7()


def _header(structure: str, kind: str, control_id: str) -> Message:
    m = Message(structure, version="2.5.1")
    m.msh.msh_3, m.msh.msh_4, m.msh.msh_5, m.msh.msh_6 = "GLUCOMETER", "WARD7", "ADVISOR", "HOSP"
    m.msh.msh_7 = "20261204101500+0100"
    m.msh.msh_9 = kind
    m.msh.msh_10 = control_id
    m.msh.msh_11 = "P"
    return m
