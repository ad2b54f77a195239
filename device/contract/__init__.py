"""The device's contract: every message it exchanges and every topic, one typed schema each.

``schema`` converts dataclasses to and from JSON-like mappings strictly; ``messages`` holds the
schemas (docs/contract.md is tested against them); ``topics`` builds a device's MQTT topics.
The bottom layer of ``device``: imports nothing else of it.
"""
