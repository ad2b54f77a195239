"""The advisor in the hospital's and the home's data flow: one folder per standard.

``hl7/`` takes HL7 v2 results and admissions over MLLP, ``fhir/`` writes the device's record as
FHIR R4 and reads FHIR readings and doses back, ``nightscout/`` pulls a CGM user's Nightscout
entries and treatments and writes the record in Nightscout's shape. Each folder keeps its
mapping as pure functions (text or JSON in, validated :class:`domain.events.Event` out, or a
reason) apart from the I/O that moves the messages; every event goes through the same
validation as the device's own ``events`` topic (docs/contract.md, "Interoperability").
"""
