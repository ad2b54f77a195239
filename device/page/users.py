"""The page's users: PINs kept as scrypt hashes, roles and what each role may do (pure logic).

Roles (docs/contract.md, "Users and roles"):

* ``nurse`` — every entry and action, and the companion risk;
* ``patient`` — belongs to one patient: enters that patient's readings, meals, symptoms,
  exercise and doses (now, within their limits), confirms, declines and acknowledges for them;
  no companion risk;
* ``viewer`` — reads the page, records nothing.

Without any user (a one-bed home set-up) the page works as before: on loopback, or with the
single shared page PIN, a person acts with the patient's rights as ``bedside``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import secrets
from dataclasses import dataclass
from typing import Final, Literal

from device.contract.messages import Role
from domain.validation import is_identifier

ROLES: Final[tuple[Role, ...]] = ("nurse", "patient", "viewer")
Permission = Literal["record", "see_risk"]
PERMISSIONS: Final[dict[str, frozenset[str]]] = {
    "nurse": frozenset({"record", "see_risk"}),
    "patient": frozenset({"record"}),
    "viewer": frozenset(),
}
SHARED_USER = "bedside"  # who acts when no users are configured (loopback or the shared page PIN)
MIN_PIN_CHARS = 4
MAX_PIN_CHARS = 64
_N, _R, _P = 2**14, 8, 1  # scrypt cost: about 50 ms on a Raspberry Pi 4


class UserError(ValueError):
    """A user name, role or PIN is not acceptable; the message says which."""


@dataclass(frozen=True)
class Identity:
    """Who a page session acts as; ``patient``: the one patient a patient user belongs to."""

    user: str
    role: Role
    patient: str | None = None

    def may(self, permission: Permission) -> bool:
        return permission in PERMISSIONS[self.role]

    def refusal_for(self, patient: str) -> str | None:
        """Why this person may not record for ``patient``, or None when they may."""
        if self.role != "patient" or self.user == SHARED_USER:  # the shared PIN of a one-bed set-up
            return None
        if self.patient is None:
            return f"{self.user} is a patient user with no patient: add one again with --patient"
        if patient != self.patient:
            return f"{self.user} is the patient user of '{self.patient}' and records only for that patient"
        return None


def check_user(name: str, role: str, patient: str | None = None) -> None:
    if not is_identifier(name) or len(name) > 64:
        raise UserError("a user name is 1–64 letters, digits, '.', '_' or '-'")
    if name == SHARED_USER:
        raise UserError(f"'{SHARED_USER}' is reserved for the shared page PIN")
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}")
    if role == "patient" and (patient is None or not is_identifier(patient)):
        raise UserError("a patient user belongs to one patient: give --patient ID")
    if role != "patient" and patient is not None:
        raise UserError(f"--patient is for patient users; a {role} is not tied to a patient")


def check_pin(pin: str) -> None:
    """Refuse a PIN anyone would try first: too short or long, one repeated character, a run (1234, 9876)."""
    if not MIN_PIN_CHARS <= len(pin) <= MAX_PIN_CHARS:
        raise UserError(f"a PIN is {MIN_PIN_CHARS}–{MAX_PIN_CHARS} characters")
    if len(set(pin)) == 1:
        raise UserError("a PIN of one repeated character (such as 0000) is the first one tried: choose another")
    if pin.isdigit():
        steps = {int(b) - int(a) for a, b in itertools.pairwise(pin)}
        if steps in ({1}, {-1}):
            raise UserError("a PIN of consecutive digits (such as 1234) is among the first tried: choose another")


def hash_pin(pin: str) -> str:
    """A salted scrypt hash of ``pin``: ``scrypt$n$r$p$salt$hash`` (base64); a weak PIN is refused."""
    check_pin(pin)
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(pin.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return "$".join(
        ["scrypt", str(_N), str(_R), str(_P), base64.b64encode(salt).decode(), base64.b64encode(digest).decode()]
    )


def verify_pin(pin: str, stored: str) -> bool:
    """Whether ``pin`` matches a :func:`hash_pin` value (constant-time compare)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(
            pin.encode()[: MAX_PIN_CHARS * 4], salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=32
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)
