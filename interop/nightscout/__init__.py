"""Nightscout: a CGM user's entries and treatments in, the device's record out in Nightscout's shape.

``mapping`` turns entries and treatments into events and events into Nightscout JSON (pure);
``client`` reads a Nightscout site's API v1 page by page.
"""
