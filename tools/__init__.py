"""The ``advisor`` command-line interface and the rigs around the device, grouped by audience.

``cli`` (the entry point and thin command modules), ``mqtt_kit`` (clients that talk to a device:
publish, monitor, flash, the log publisher), ``ward`` (setting up and watching a ward: broker,
broker profile, doctor, station, demo), ``rigs`` (measurement: bench, load, hardware-in-the-loop
replay, the arm64 check) and ``data`` (data commands: cohort counts, synthetic MIMIC).
"""
