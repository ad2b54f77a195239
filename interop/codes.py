"""Codes and units every interoperability flow shares (docs/contract.md, "Interoperability")."""

from __future__ import annotations

LOINC_GLUCOSE: dict[str, str] = {  # LOINC code -> what it is
    "41653-7": "glucose, capillary blood, glucometer (mass/volume)",
    "14743-9": "glucose, capillary blood, glucometer (moles/volume)",
    "99504-3": "glucose, interstitial fluid, continuous monitor",
    "2339-0": "glucose, blood (mass/volume)",
    "15074-8": "glucose, blood (moles/volume)",
    "2345-7": "glucose, serum or plasma (mass/volume)",
    "14749-6": "glucose, serum or plasma (moles/volume)",
}
GLUCOSE_UNITS = {"mg/dl": "mg/dL", "mmol/l": "mmol/L"}  # lower-cased as sent -> the event's unit
