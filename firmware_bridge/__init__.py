"""Serial firmware <-> MQTT bridge and C export of bundles (built in a later issue)."""
