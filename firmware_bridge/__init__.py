"""Serial firmware <-> MQTT bridge and the export of bundles as C arrays for microcontrollers."""
