"""FHIR R4: the device's record out as a transaction ``Bundle``, readings and doses in.

``resources`` maps the record to resources and resources back to events (pure); ``record``
reads one device's state folder into per-patient records.
"""
