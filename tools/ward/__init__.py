"""Setting up and watching a ward of devices.

``broker`` starts a local broker (demo, tests); ``broker_profile`` writes a locked-down Mosquitto
deployment; ``doctor`` checks one device end to end; ``station`` and ``station_board`` show the
ward at a glance; ``demo`` runs the whole system on one machine.
"""
