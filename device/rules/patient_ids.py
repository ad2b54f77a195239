"""Patient ids that could be mistaken for one another (pure logic).

A wrong-patient dose often starts with two ids a person reads as one. The rules
(docs/contract.md, "Event"):

* ids are exact strings, compared whole (``"p1\\n"`` is not an id at all);
* a new id that differs from a known one **only in letter case** (``P1`` beside ``p1``) is
  refused: the sender almost surely meant the known patient;
* a new id whose *skeleton* equals a known one's is accepted with a warning on ``errors`` and
  on the page. The skeleton ignores case and the separators ``_ . : -`` and reads the
  look-alike characters ``0/o``, ``1/l/i``, ``5/s``, ``8/b``, ``2/z`` and ``rn/m`` as one.
"""

from __future__ import annotations

SEPARATORS = str.maketrans("", "", "_.:-")
LOOKALIKES = str.maketrans({"0": "o", "1": "l", "i": "l", "5": "s", "8": "b", "2": "z"})


def folded(patient: str) -> str:
    """The id with letter case ignored."""
    return patient.casefold()


def skeleton(patient: str) -> str:
    """What a hurried reader sees: case, separators and look-alike characters ignored."""
    return folded(patient).translate(SEPARATORS).replace("rn", "m").translate(LOOKALIKES)


def case_twin(new: str, known: list[str]) -> str | None:
    """A known id equal to ``new`` but for letter case, if any."""
    return next((k for k in known if k != new and folded(k) == folded(new)), None)


def lookalike(new: str, known: list[str]) -> str | None:
    """A known id a person could read as ``new`` (same skeleton), if any."""
    return next((k for k in known if k != new and skeleton(k) == skeleton(new)), None)
